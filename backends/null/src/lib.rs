//! kiln-backend-null: a backend that checks everything it is given and computes nothing.
//!
//! It is the porting template: copy this crate to `backends/<yours>`, keep the checks,
//! and replace each `// port:` line with your device's work until the conformance suite
//! (`tests/tests/conformance.rs`, one line per backend) passes. It also lets planner and
//! engine tests run without any device.

use kiln_ir::backend::{Backend, BackendError, BufferId, DeviceProperties, Step, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};

const NAME: &str = "null";

#[derive(Debug)]
pub struct NullBackend {
    properties: DeviceProperties,
    buffers: Vec<Option<usize>>, // port: device allocations instead of sizes
    plan: Option<Plan>,
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
            properties: DeviceProperties {
                name: "null".into(),
                compute_units: 1,
                subgroup_size: None,
                memory_bytes: None,
                has_f16: false,
            },
            buffers: Vec::new(),
            plan: None,
            executed: Vec::new(),
        }
    }

    fn size(&self, id: BufferId) -> Result<usize, BackendError> {
        self.buffers
            .get(id.0 as usize)
            .copied()
            .flatten()
            .ok_or_else(|| BackendError::BadStep {
                backend: NAME,
                reason: format!("unknown buffer {}", id.0),
            })
    }

    fn check_range(&self, id: BufferId, offset: usize, len: usize) -> Result<(), BackendError> {
        let size = self.size(id)?;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: format!("{len} bytes at {offset} outside a {size}-byte buffer"),
            });
        }
        Ok(())
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

    fn alloc(&mut self, bytes: usize) -> Result<BufferId, BackendError> {
        self.buffers.push(Some(bytes));
        Ok(BufferId(self.buffers.len() as u32 - 1))
    }

    fn upload(&mut self, id: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        self.check_range(id, offset, data.len()) // port: copy to the device
    }

    fn download(
        &mut self,
        id: BufferId,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        self.check_range(id, offset, out.len())?;
        Err(self.unsupported("download (the null backend holds no data)"))
    }

    fn free(&mut self, id: BufferId) {
        if let Some(slot) = self.buffers.get_mut(id.0 as usize) {
            *slot = None;
        }
    }

    fn load_plan(
        &mut self,
        plan: &Plan,
        weights: &dyn WeightSource,
        _kv: &KvLayout,
        _kv_page_count: usize,
    ) -> Result<(), BackendError> {
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
        self.plan = Some(plan.clone());
        Ok(())
    }

    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| self.unsupported("a step without a plan"))?;
        if step.token_ids.is_empty() || step.token_ids.len() > plan.max_tokens {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: format!(
                    "{} tokens (the plan takes 1..={})",
                    step.token_ids.len(),
                    plan.max_tokens
                ),
            });
        }
        // port: upload the step's ids, positions and block tables, then run each launch.
        self.executed
            .extend(plan.launches.iter().map(|l| l.kernel.clone()));
        Ok(())
    }

    fn read_logits(&mut self, _out: &mut [f32]) -> Result<(), BackendError> {
        Err(self.unsupported("logits (the null backend computes nothing)"))
    }

    fn copy_kv_page(&mut self, _src: u32, _dst: u32, _n_tokens: usize) -> Result<(), BackendError> {
        Ok(()) // port: copy one page of the KV pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_bounds_checked() {
        let mut b = NullBackend::new();
        let id = b.alloc(16).unwrap();
        assert!(b.upload(id, 8, &[0; 8]).is_ok());
        assert!(b.upload(id, 9, &[0; 8]).is_err());
        assert!(b.upload(id, usize::MAX, &[0; 2]).is_err());
        b.free(id);
        assert!(b.upload(id, 0, &[0; 1]).is_err());
        assert!(
            b.execute(&Step {
                token_ids: &[1],
                positions: &[0],
                token_seq: &[0],
                block_tables: &[&[0]],
                output_rows: &[0],
            })
            .is_err()
        );
    }
}
