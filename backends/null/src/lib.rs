//! kiln-backend-null: a backend that checks everything it is given and computes nothing.
//!
//! It is the porting template: copy this crate to `backends/<yours>`, keep the checks,
//! and replace each `// port:` line with your device's work until the conformance suite
//! (`tests/tests/conformance.rs`, over every backend of the registry) passes. It also
//! lets planner and engine tests run without any device.
//!
//! What a porter writes: this file is 85 lines of code (blank lines, comments and the
//! test not counted): a constructor and the 7 required methods of
//! `kiln_ir::backend::Backend`, the step and KV page checks already in them
//! (`kiln_ir::backend::StepLimits`). The device's work goes behind each `// port:` line;
//! for a GPU that runs the WGSL kernels, the wgpu backend shows how much that is: 520
//! lines of code (605 in all), every one a wgpu call or its bookkeeping, since the plan
//! (kiln-kernels-wgsl's `Program`) and the host logic (kiln-gpu-host: reading logits,
//! timers, the kernel cache) are shared. Then the backend is registered in
//! `backends/registry` (its Cargo.toml and one `registry!` line).

use kiln_ir::backend::{Backend, BackendError, DeviceProperties, Step, StepLimits, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};

const NAME: &str = "null";

#[derive(Debug)]
pub struct NullBackend {
    properties: DeviceProperties,
    /// The loaded plan and what its steps are checked against.
    plan: Option<(Plan, StepLimits)>,
    /// Launch names of every executed step, in order (what a real backend would run).
    pub executed: Vec<String>,
}

impl Default for NullBackend {
    fn default() -> Self {
        NullBackend::new()
    }
}

impl NullBackend {
    pub fn new() -> NullBackend {
        NullBackend {
            // port: what your device reports; its limits size what it runs.
            properties: DeviceProperties {
                name: "null".into(),
                compute_units: 1,
                ..DeviceProperties::default()
            },
            plan: None,
            executed: Vec::new(),
        }
    }

    fn loaded(&self) -> Result<&(Plan, StepLimits), BackendError> {
        self.plan.as_ref().ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: "no plan is loaded".into(),
        })
    }

    fn unsupported(&self, what: &str) -> BackendError {
        BackendError::Unsupported {
            backend: NAME,
            what: what.into(),
        }
    }
}

impl Backend for NullBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn properties(&self) -> &DeviceProperties {
        &self.properties
    }

    fn supports(&self, op: &Op, _graph: &Graph) -> bool {
        // port: a `match` over the ops (and the weight dtypes, params) your kernels cover;
        // `is_plain` is what kernels without Gemma 3's ops, NeoX RoPE and windowed,
        // rescaled or grouped attention take.
        op.is_plain()
    }

    fn load_plan(
        &mut self,
        plan: &Plan,
        weights: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<(), BackendError> {
        self.plan = None;
        for w in &plan.graph.weights {
            // port: upload (or map) each weight, repacked into your kernels' layout.
            weights
                .weight(&w.name)
                .ok_or_else(|| BackendError::Weight {
                    backend: NAME,
                    name: w.name.clone(),
                    reason: "not in the model".into(),
                })?;
        }
        // port: compile kernels, allocate the arena (plan.arena_bytes) and the KV pages.
        let limits = StepLimits::new(plan, kv, kv_page_count);
        self.plan = Some((plan.clone(), limits));
        Ok(())
    }

    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        let (plan, limits) = self.loaded()?;
        limits.check(step, NAME)?;
        // port: upload the step's ids, positions and block tables, then run each launch.
        let names: Vec<String> = plan.launches.iter().map(|l| l.kernel.clone()).collect();
        self.executed.extend(names);
        Ok(())
    }

    fn read_logits(&mut self, _out: &mut [f32]) -> Result<(), BackendError> {
        // port: check `out` against the last step's output rows, then read them back.
        Err(self.unsupported("logits (the null backend computes nothing)"))
    }

    fn copy_kv_page(&mut self, src: u32, dst: u32, _n_tokens: usize) -> Result<(), BackendError> {
        self.loaded()?.1.check_page_copy(src, dst, NAME)
        // port: copy the page's first n_tokens slots (or all of it) from src to dst.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_checked() {
        let mut b = NullBackend::new();
        let step = Step {
            token_ids: &[1],
            positions: &[0],
            token_seq: &[0],
            block_tables: &[&[0]],
            output_rows: &[0],
        };
        assert!(b.execute(&step).is_err(), "no plan yet");
        assert!(b.copy_kv_page(0, 1, 1).is_err(), "no plan yet");
        assert!(b.read_logits(&mut []).is_err());
    }
}
