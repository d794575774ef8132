//! kiln-ir: the vocabulary every other crate shares, and the compiler from a model
//! description to a backend's plan.
//!
//! - [`dtype`], [`quant`]: element types and weight block formats.
//! - [`op`], [`graph`], [`verify`]: a closed set of ops, the graph, the verifier.
//! - [`passes`]: fusion passes, each small and separately tested.
//! - [`plan`], [`planner`]: lowering to ordered launches and the activation arena.
//! - [`backend`], [`step`]: the Backend trait, and a step with the checks every backend runs.
//! - [`kv_layout`], [`kv_groups`]: the bytes of a KV page, and which layers share pages.

pub mod backend;
pub mod dtype;
pub mod graph;
pub mod kv_groups;
pub mod kv_layout;
pub mod op;
pub mod passes;
pub mod plan;
pub mod planner;
pub mod quant;
pub mod step;
pub mod verify;

pub use dtype::DType;
pub use graph::{Graph, Rows, ValueId, ValueType};
pub use op::{AttentionParams, Op, RopeMode, RopeParams, WeightId};
pub use plan::{Launch, Plan, lower};
pub use quant::QuantError;
pub use verify::{IrError, verify};

#[cfg(test)]
mod verify_tests;
