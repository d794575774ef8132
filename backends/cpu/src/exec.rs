//! Running a loaded plan: one step, launch by launch, over one f32 arena.

use std::time::Instant;

use kiln_ir::backend::{BackendError, LaunchTime, SharedBytes, Step, StepLimits, StepShape};
use kiln_ir::graph::ValueType;
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Op, Plan, ValueId, WeightId};

use crate::backend::NAME;
use crate::kernels::attention::{KvPages, attention};
use crate::kernels::kv_write::{kv_write, token_slots};
use crate::kernels::rope::{RopeTable, rope};
use crate::kernels::{self, WeightMatrix};

/// A plan with its weights (in the model's map), arena and KV pages.
pub(crate) struct Loaded {
    plan: Plan,
    weights: Vec<SharedBytes>,
    /// Vector weights (norms, RoPE factors) decoded to f32 once.
    vectors: Vec<Option<Vec<f32>>>,
    arena: Vec<f32>,
    kv_layout: KvLayout,
    kv_pages: Vec<u8>, // (kv_page_count, page_bytes)
    limits: StepLimits,
    /// Rows of Tokens and Outputs values in the last step.
    last: StepShape,
    times: Vec<f64>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("launches", &self.plan.launches.len())
            .field("arena_bytes", &self.plan.arena_bytes)
            .field("kv_bytes", &self.kv_pages.len())
            .finish()
    }
}

fn bad_step(reason: String) -> BackendError {
    BackendError::BadStep {
        backend: NAME,
        reason,
    }
}

impl Loaded {
    pub(crate) fn new(
        plan: Plan,
        weights: Vec<SharedBytes>,
        kv_layout: KvLayout,
        kv_page_count: usize,
    ) -> Result<Loaded, BackendError> {
        check_kv_geometry(&plan, &kv_layout)?;
        let vectors = plan
            .graph
            .weights
            .iter()
            .zip(&weights)
            .map(|(w, bytes)| {
                (w.rows == 1).then(|| {
                    let mut v = vec![0.0f32; w.cols];
                    kiln_ir::quant::dequantize_row(w.dtype, bytes.as_slice(), &mut v)
                        .expect("length checked in load_plan");
                    v
                })
            })
            .collect();
        let alloc = |bytes: usize| -> Result<(), BackendError> {
            Vec::<u8>::new()
                .try_reserve_exact(bytes)
                .map_err(|_| BackendError::OutOfMemory {
                    backend: NAME,
                    bytes: bytes as u64,
                })
        };
        let kv_bytes = kv_layout
            .page_bytes()
            .checked_mul(kv_page_count)
            .ok_or_else(|| bad_step(format!("{kv_page_count} KV pages overflow")))?;
        alloc(kv_bytes)?;
        alloc(plan.arena_bytes)?;
        Ok(Loaded {
            limits: StepLimits::new(&plan, &kv_layout, kv_page_count),
            arena: vec![0.0; plan.arena_bytes / 4],
            times: vec![0.0; plan.launches.len()],
            plan,
            weights,
            vectors,
            kv_layout,
            kv_pages: vec![0; kv_bytes],
            last: StepShape::default(),
        })
    }

    fn matrix(&self, id: WeightId) -> WeightMatrix<'_> {
        let w = &self.plan.graph.weights[id.0 as usize];
        WeightMatrix {
            dtype: w.dtype,
            rows: w.rows,
            cols: w.cols,
            bytes: self.weights[id.0 as usize].as_slice(),
        }
    }

    fn vector(&self, id: WeightId) -> &[f32] {
        self.vectors[id.0 as usize]
            .as_deref()
            .expect("verified as a vector weight")
    }

    pub(crate) fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        self.limits.check(step, NAME)?;
        self.last = step.shape();
        let slots = token_slots(
            step.positions,
            step.token_seq,
            step.block_tables,
            self.kv_layout.kv_page_size(),
        );
        let rope_table = self.plan.launches.iter().find_map(|l| match &l.op {
            Op::Rope { rope } | Op::RopeKvWrite { rope, .. } => {
                let factors = rope.freq_factors.map(|f| self.vector(f));
                Some(RopeTable::new(rope, factors, step.positions))
            }
            _ => None,
        });
        let mut arena = std::mem::take(&mut self.arena);
        let mut pages = std::mem::take(&mut self.kv_pages);
        let mut result = Ok(());
        for i in 0..self.plan.launches.len() {
            let start = Instant::now();
            result = self.launch(i, &mut arena, &mut pages, step, &slots, rope_table.as_ref());
            self.times[i] = start.elapsed().as_secs_f64();
            if result.is_err() {
                break;
            }
        }
        self.arena = arena;
        self.kv_pages = pages;
        result
    }

    /// The arena range of a value in this step.
    fn range(&self, v: ValueId) -> (usize, usize) {
        let offset = self.plan.offsets[v.0 as usize].expect("activations have arena offsets") / 4;
        let ty: &ValueType = &self.plan.graph.values[v.0 as usize];
        (offset, self.last.rows(ty.rows()) * ty.cols())
    }

    fn launch(
        &self,
        i: usize,
        arena: &mut [f32],
        pages: &mut [u8],
        step: &Step<'_>,
        slots: &[(usize, usize)],
        rope_table: Option<&RopeTable>,
    ) -> Result<(), BackendError> {
        let launch = &self.plan.launches[i];
        let ids = launch.inputs.iter().chain(&launch.outputs);
        let ranges: Vec<(usize, usize)> = ids
            .filter(|&&v| Some(v) != self.plan.graph.input)
            .map(|&v| self.range(v))
            .collect();
        let n_in = ranges.len() - launch.outputs.len();
        if ranges[n_in..].iter().any(|&(_, len)| len == 0) {
            return Ok(()); // no rows to compute (a step that wants no logits)
        }
        let mut views = disjoint_views(arena, &ranges)?;
        // Inputs first (token ids are not in the arena), then outputs.
        let (ins, outs) = views.split_at_mut(n_in);
        let input = |k: usize| -> &[f32] { ins[k] };
        let rope_table = || rope_table.expect("a plan with RoPE has a table");
        match &launch.op {
            Op::Embed { table } => {
                kernels::embed::embed(self.matrix(*table), step.token_ids, outs[0])
            }
            Op::RmsNorm { weight, eps } => {
                kernels::rmsnorm::rmsnorm(input(0), self.vector(*weight), *eps, outs[0])
            }
            Op::MatMul { weights } => {
                let ws: Vec<_> = weights.iter().map(|&w| self.matrix(w)).collect();
                kernels::matmul::matmul_multi(&ws, input(0), outs);
            }
            Op::Add => kernels::add::add(input(0), input(1), outs[0]),
            Op::SwiGlu => kernels::swiglu::swiglu(input(0), input(1), outs[0]),
            Op::Rope { rope: params } => rope(input(0), params.head_dim, rope_table(), outs[0]),
            Op::KvWrite { attention } => kv_write(
                pages,
                &self.kv_layout,
                attention.layer,
                slots,
                input(0),
                input(1),
            ),
            Op::Attention { attention: params } => attention(
                input(0),
                KvPages {
                    bytes: pages,
                    layout: &self.kv_layout,
                },
                params,
                step.positions,
                step.token_seq,
                step.block_tables,
                outs[0],
            ),
            Op::SelectRows => {
                let d = self.plan.graph.values[launch.outputs[0].0 as usize].cols();
                kernels::select_rows::select_rows(input(0), d, step.output_rows, outs[0]);
            }
            Op::RmsNormMatMul { norm, eps, weights } => {
                let ws: Vec<_> = weights.iter().map(|&w| self.matrix(w)).collect();
                kernels::rmsnorm_matmul::rmsnorm_matmul(
                    input(0),
                    self.vector(*norm),
                    *eps,
                    &ws,
                    outs,
                );
            }
            Op::MatMulSwiGlu { gate, up } => {
                kernels::matmul_swiglu::matmul_swiglu(
                    self.matrix(*gate),
                    self.matrix(*up),
                    input(0),
                    outs[0],
                );
            }
            Op::RmsNormMatMulSwiGlu {
                norm,
                eps,
                gate,
                up,
            } => kernels::rmsnorm_matmul_swiglu::rmsnorm_matmul_swiglu(
                input(0),
                self.vector(*norm),
                *eps,
                self.matrix(*gate),
                self.matrix(*up),
                outs[0],
            ),
            Op::MatMulAdd { weight } => {
                kernels::matmul_add::matmul_add(self.matrix(*weight), input(0), input(1), outs[0])
            }
            Op::RopeKvWrite { attention, .. } => kernels::rope_kv_write::rope_kv_write(
                input(0),
                input(1),
                input(2),
                rope_table(),
                pages,
                &self.kv_layout,
                attention.layer,
                slots,
                outs[0],
            ),
        }
        Ok(())
    }

    pub(crate) fn read_output(&self, out: &mut [f32]) -> Result<(), BackendError> {
        let output = self.plan.graph.output.expect("verified");
        let (offset, len) = self.range(output);
        if out.len() != len {
            return Err(bad_step(format!(
                "logits buffer of {} for {len} values",
                out.len()
            )));
        }
        out.copy_from_slice(&self.arena[offset..offset + len]);
        Ok(())
    }

    pub(crate) fn copy_kv_page(&mut self, src: u32, dst: u32) -> Result<(), BackendError> {
        self.limits.check_page_copy(src, dst, NAME)?;
        let (src, dst) = (src as usize, dst as usize);
        let pb = self.kv_layout.page_bytes();
        self.kv_pages
            .copy_within(src * pb..(src + 1) * pb, dst * pb);
        Ok(())
    }

    pub(crate) fn launch_times(&self) -> Vec<LaunchTime> {
        self.times
            .iter()
            .enumerate()
            .map(|(launch, &seconds)| LaunchTime { launch, seconds })
            .collect()
    }
}

/// Mutable views of `(offset, len)` ranges of the arena, in the order given. The memory
/// planner never lets two values that are live together share bytes; this checks it,
/// so a planner bug is an error rather than aliasing.
fn disjoint_views<'a>(
    arena: &'a mut [f32],
    ranges: &[(usize, usize)],
) -> Result<Vec<&'a mut [f32]>, BackendError> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].0);
    let mut views: Vec<Option<&'a mut [f32]>> = (0..ranges.len()).map(|_| None).collect();
    let mut rest = arena;
    let mut cursor = 0;
    for i in order {
        let (offset, len) = ranges[i];
        if offset < cursor || offset + len - cursor > rest.len() {
            return Err(bad_step(format!(
                "arena range {offset}+{len} overlaps another or overruns"
            )));
        }
        let (_, tail) = rest.split_at_mut(offset - cursor);
        let (view, tail) = tail.split_at_mut(len);
        views[i] = Some(view);
        rest = tail;
        cursor = offset + len;
    }
    Ok(views
        .into_iter()
        .map(|v| v.expect("every range placed"))
        .collect())
}

/// The KV layout must fit every layer's attention, and all layers must share one RoPE
/// geometry (the step's RoPE table is built once); refuse the plan otherwise.
fn check_kv_geometry(plan: &Plan, layout: &KvLayout) -> Result<(), BackendError> {
    let mut rope_seen = None;
    for launch in &plan.launches {
        let (attention, rope) = match &launch.op {
            Op::KvWrite { attention } | Op::Attention { attention } => (Some(attention), None),
            Op::RopeKvWrite { rope, attention } => (Some(attention), Some(rope)),
            Op::Rope { rope } => (None, Some(rope)),
            _ => (None, None),
        };
        if let Some(a) = attention
            && (a.layer >= layout.n_layers()
                || a.n_kv_heads != layout.n_kv_heads()
                || a.head_dim != layout.head_dim())
        {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: format!(
                    "layer {} attends over {} KV heads of {}, the KV layout holds {} layers of {} heads of {}",
                    a.layer,
                    a.n_kv_heads,
                    a.head_dim,
                    layout.n_layers(),
                    layout.n_kv_heads(),
                    layout.head_dim()
                ),
            });
        }
        if let Some(r) = rope
            && *rope_seen.get_or_insert(*r) != *r
        {
            return Err(BackendError::Unsupported {
                backend: NAME,
                what: "layers with different RoPE parameters".into(),
            });
        }
    }
    Ok(())
}
