//! Running a loaded plan: one step, launch by launch, over one f32 arena.

use std::time::Instant;

use kiln_ir::backend::{BackendError, LaunchTime, SharedBytes, Step, StepLimits, StepShape};
use kiln_ir::graph::ValueType;
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{AttentionParams, Op, Plan, RopeParams, ValueId, WeightId};

use crate::backend::NAME;
use crate::kernels::attention::{KvPages, attention};
use crate::kernels::kv_write::{KvTarget, kv_write, token_slots};
use crate::kernels::qk_norm_rope_kv_write::QkNorm;
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
        kv_geometry(&plan, &kv_layout)?;
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
        // Per KV group: each token's (page, slot in page).
        let n_seqs = step.block_tables.len() / self.limits.group_windows.len();
        let slots: Vec<Vec<(usize, usize)>> = step
            .block_tables
            .chunks(n_seqs.max(1))
            .map(|tables| {
                token_slots(
                    step.positions,
                    step.token_seq,
                    tables,
                    self.kv_layout.kv_page_size(),
                )
            })
            .collect();
        // One cos/sin table per RoPE geometry of the plan (Gemma's global and window
        // layers have different bases).
        let mut rope_tables: Vec<(RopeParams, RopeTable)> = Vec::new();
        for rope in self.plan.launches.iter().filter_map(|l| l.op.rope()) {
            if !rope_tables.iter().any(|(p, _)| p == rope) {
                let factors = rope.freq_factors.map(|f| self.vector(f));
                rope_tables.push((*rope, RopeTable::new(rope, factors, step.positions)));
            }
        }
        let ctx = StepContext {
            step,
            slots: &slots,
            rope_tables: &rope_tables,
        };
        let mut arena = std::mem::take(&mut self.arena);
        let mut pages = std::mem::take(&mut self.kv_pages);
        let mut result = Ok(());
        for i in 0..self.plan.launches.len() {
            let start = Instant::now();
            result = self.launch(i, &mut arena, &mut pages, &ctx);
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
        ctx: &StepContext<'_, '_>,
    ) -> Result<(), BackendError> {
        let step = ctx.step;
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
        let rope_table = |rope: &RopeParams| ctx.rope_table(rope);
        let target = |pages, a: &AttentionParams| KvTarget {
            pages,
            layout: &self.kv_layout,
            layer_slot: a.kv_slot,
            slots: &ctx.slots[a.kv_group],
        };
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
            Op::AddBias { bias } => {
                kernels::add_bias::add_bias(input(0), self.vector(*bias), outs[0])
            }
            Op::Scale { factor } => kernels::scale::scale(input(0), *factor, outs[0]),
            Op::HeadRmsNorm { weight, eps, .. } => {
                kernels::head_rmsnorm::head_rmsnorm(input(0), self.vector(*weight), *eps, outs[0])
            }
            Op::SwiGlu => kernels::swiglu::swiglu(input(0), input(1), outs[0]),
            Op::GeGlu => kernels::geglu::geglu(input(0), input(1), outs[0]),
            Op::Rope { rope: params } => {
                rope(input(0), params.head_dim, rope_table(params), outs[0])
            }
            Op::KvWrite { attention } => kv_write(target(pages, attention), input(0), input(1)),
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
            Op::MatMulGeGlu { gate, up } => kernels::matmul_geglu::matmul_geglu(
                self.matrix(*gate),
                self.matrix(*up),
                input(0),
                outs[0],
            ),
            Op::RmsNormMatMulGeGlu {
                norm,
                eps,
                gate,
                up,
            } => kernels::rmsnorm_matmul_geglu::rmsnorm_matmul_geglu(
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
            Op::RmsNormAdd { weight, eps } => kernels::rmsnorm_add::rmsnorm_add(
                input(0),
                input(1),
                self.vector(*weight),
                *eps,
                outs[0],
            ),
            Op::RopeKvWrite { rope, attention } => kernels::rope_kv_write::rope_kv_write(
                input(0),
                input(1),
                input(2),
                rope_table(rope),
                target(pages, attention),
                outs[0],
            ),
            Op::QkNormRopeKvWrite {
                q_norm,
                k_norm,
                eps,
                rope,
                attention,
            } => kernels::qk_norm_rope_kv_write::qk_norm_rope_kv_write(
                input(0),
                input(1),
                input(2),
                QkNorm {
                    q: self.vector(*q_norm),
                    k: self.vector(*k_norm),
                    eps: *eps,
                },
                rope_table(rope),
                target(pages, attention),
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

/// The KV layout must fit every layer's attention (its slot, group, heads and head size),
/// and the attentions of a KV group must share its window (the step check's
/// `StepLimits::group_windows` takes each group's first).
fn kv_geometry(plan: &Plan, layout: &KvLayout) -> Result<(), BackendError> {
    let mut windows: Vec<Option<Option<usize>>> = vec![None; layout.n_groups()];
    for launch in &plan.launches {
        let Some(a) = launch.op.attention() else {
            continue;
        };
        if a.kv_slot >= layout.n_layers()
            || a.kv_group >= layout.n_groups()
            || a.n_kv_heads != layout.n_kv_heads()
            || a.head_dim != layout.head_dim()
        {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: format!(
                    "layer {} attends over {} KV heads of {} in group {} slot {}, the KV layout holds {} groups of {} layers of {} heads of {}",
                    a.layer,
                    a.n_kv_heads,
                    a.head_dim,
                    a.kv_group,
                    a.kv_slot,
                    layout.n_groups(),
                    layout.n_layers(),
                    layout.n_kv_heads(),
                    layout.head_dim()
                ),
            });
        }
        if *windows[a.kv_group].get_or_insert(a.window) != a.window {
            return Err(BackendError::Unsupported {
                backend: NAME,
                what: format!("KV group {} with different sliding windows", a.kv_group),
            });
        }
    }
    Ok(())
}

/// What every launch of one step shares.
struct StepContext<'s, 'a> {
    step: &'s Step<'a>,
    /// Per KV group: each token's (page, slot in page).
    slots: &'s [Vec<(usize, usize)>],
    rope_tables: &'s [(RopeParams, RopeTable)],
}

impl StepContext<'_, '_> {
    fn rope_table(&self, rope: &RopeParams) -> &RopeTable {
        self.rope_tables
            .iter()
            .find_map(|(p, t)| (p == rope).then_some(t))
            .expect("a table for every RoPE of the plan")
    }
}
