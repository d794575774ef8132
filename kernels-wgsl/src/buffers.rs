//! The five buffers a [`Program`] binds ([`Resource`]), of a device API's buffer type:
//! their sizes, what they start with, and what each binding of a weights buffer's bind
//! group (descriptor set) covers, decided once for every WGSL backend.

use kiln_gpu_host::upload::{StagedCopies, Staging, Uploader};
use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, WeightSource};

use crate::run::STEP_BYTES;
use crate::{Program, Resource, weights};

/// A program's buffers on a device (`B`: the API's buffer).
#[derive(Debug)]
pub struct Buffers<B> {
    /// Every dispatch's params block, with room past the last one for a binding of
    /// `params_range` bytes.
    pub params: B,
    pub arena: B,
    /// Indexed like `program.weights.buffers`.
    pub weights: Vec<B>,
    pub kv: B,
    /// [`STEP_BYTES`] at first, replaced when a step needs more.
    pub step: B,
    /// The params binding's range: the largest params block.
    pub params_range: u64,
}

impl<B> Buffers<B> {
    /// Each buffer of `program` from `alloc(resource, label, bytes)`.
    pub fn new(
        program: &Program,
        mut alloc: impl FnMut(Resource, &str, u64) -> Result<B, BackendError>,
    ) -> Result<Buffers<B>, BackendError> {
        let params_range = program.max_params_block();
        let weights = (program.weights.buffers.iter())
            .map(|b| alloc(Resource::Weights, "weights", b.bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let params_bytes = program.params.len() as u64 + params_range;
        Ok(Buffers {
            params: alloc(Resource::Params, "params", params_bytes)?,
            arena: alloc(Resource::Arena, "arena", program.arena_bytes)?,
            weights,
            kv: alloc(Resource::Kv, "kv pages", program.kv_bytes)?,
            step: alloc(Resource::Step, "step", STEP_BYTES)?,
            params_range,
        })
    }

    /// Write what the buffers start with through the device's staged copies, made by
    /// `copies` for a staging area of the bytes it is given: every params block, then
    /// every weight of `plan` from `source` ([`weights::upload_each`]); everything is
    /// flushed when it returns.
    pub fn upload<C: StagedCopies<B>>(
        &self,
        program: &Program,
        plan: &Plan,
        source: &dyn WeightSource,
        backend: &'static str,
        copies: impl FnOnce(u64) -> Result<C, BackendError>,
    ) -> Result<(), BackendError> {
        let staging = Staging::new(program.weights.total + program.params.len() as u64);
        let mut up = Uploader::new(staging, copies(staging.capacity())?);
        up.write(&self.params, 0, &program.params)?;
        weights::upload_each(plan, &program.weights, source, backend, |b, at, bytes| {
            up.write(&self.weights[b], at, bytes)
        })?;
        up.finish().map(drop)
    }

    /// What binding `r` of weights buffer `i`'s bind group binds: its buffer and range
    /// from offset 0 (None: the whole buffer). The params block and the weights window
    /// are moved by dynamic offsets ([`crate::Run::dynamic_offsets`]); the window is the
    /// size every dispatch on buffer `i` binds (`program.weights_windows`).
    pub fn binding(&self, program: &Program, i: usize, r: Resource) -> (&B, Option<u64>) {
        match r {
            Resource::Params => (&self.params, Some(self.params_range)),
            Resource::Arena => (&self.arena, None),
            Resource::Weights => (&self.weights[i], Some(program.weights_windows[i])),
            Resource::Kv => (&self.kv, None),
            Resource::Step => (&self.step, None),
        }
    }

    /// Every binding of weights buffer `i`'s bind group (descriptor set), in binding
    /// order: the resource, its buffer and range ([`Buffers::binding`]).
    pub fn bind_group(&self, program: &Program, i: usize) -> [(Resource, &B, Option<u64>); 5] {
        Resource::ALL.map(|r| {
            let (buffer, range) = self.binding(program, i, r);
            (r, buffer, range)
        })
    }
}
