//! A plan made into a program for the WGSL kernels: the pipelines to build, and for each
//! launch of the plan its dispatches: which pipeline, what to bind, the params block, and
//! how many workgroups a step needs. A backend builds the pipelines and bind groups once
//! and, per step, writes the step buffer and records the dispatches in order.

use kiln_gpu_host::Output;
use kiln_ir::backend::{StepLimits, StepShape, WeightSource};
use kiln_ir::graph::{Graph, Rows};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{AttentionParams, DType, Op, Plan, RopeParams, ValueId, WeightId};

use crate::sources::{Variant, WEIGHT_DTYPES};
use crate::step::RopeTable;
use crate::weights::WeightLayout;
use crate::{Capabilities, KernelError};

/// The entry point of every kernel.
pub const ENTRY: &str = "main";

/// The buffers a backend owns; each is bound at `binding()` of group 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Uniform: this dispatch's params block (`params_offset`, `params_size`).
    Params,
    /// Storage, read-write: the f32 activation arena (`plan.arena_bytes`).
    Arena,
    /// Storage, read: every weight ([`WeightLayout`]).
    Weights,
    /// Storage: the KV pages (read-write for the writers, read for attention).
    Kv,
    /// Storage, read: the step buffer ([`crate::step`]).
    Step,
}

impl Resource {
    pub fn binding(self) -> u32 {
        self as u32
    }
}

/// The step header word the kernels read a row count from (prelude.wgsl:
/// STEP_N_TOKENS, STEP_N_OUTPUTS).
fn header_word(rows: Rows) -> u32 {
    match rows {
        Rows::Tokens => 0,
        Rows::Outputs => 1,
    }
}

/// How the workgroups of a dispatch follow the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// A workgroup per output column (x, then y past 65535) and tile of 8 rows (z).
    Matmul { rows: Rows, n: u32 },
    /// A workgroup per row.
    PerRow { rows: Rows },
    /// A thread per element of (rows, cols).
    Elementwise { rows: Rows, cols: u32 },
    /// `x` workgroups per token (y).
    PerToken { x: u32 },
    /// A workgroup per (head, row): `heads` (x) by rows (y).
    PerRowHead { rows: Rows, heads: u32 },
}

const WG: u32 = 64;
const TILE_T: u32 = 8;
const MAX_GRID: u32 = 65535;

fn split(n: u32) -> [u32; 2] {
    if n <= MAX_GRID {
        [n, 1]
    } else {
        [MAX_GRID, n.div_ceil(MAX_GRID)]
    }
}

impl Grid {
    /// Workgroups for a step of `n_tokens` tokens and `n_outputs` output rows; a zero
    /// means nothing to run.
    pub fn workgroups(&self, n_tokens: u32, n_outputs: u32) -> [u32; 3] {
        let shape = StepShape {
            tokens: n_tokens as usize,
            outputs: n_outputs as usize,
        };
        let resolve = |rows: Rows| shape.rows(rows) as u32;
        match *self {
            Grid::Matmul { rows, n } => {
                let [x, y] = split(n);
                [x, y, resolve(rows).div_ceil(TILE_T)]
            }
            Grid::PerRow { rows } => {
                let [x, y] = split(resolve(rows));
                [x, y, 1]
            }
            Grid::Elementwise { rows, cols } => {
                let threads = resolve(rows).saturating_mul(cols);
                let [x, y] = split(threads.div_ceil(WG));
                [x, y, 1]
            }
            Grid::PerToken { x } => [x, n_tokens, 1],
            Grid::PerRowHead { rows, heads } => [heads, resolve(rows), 1],
        }
    }
}

/// A compute pipeline to build: a kernel variant's WGSL, entry [`ENTRY`].
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub variant: Variant,
    pub name: String,
    pub source: String,
}

/// One dispatch of a launch.
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// Index into [`Program::pipelines`].
    pub pipeline: usize,
    /// What to bind, each at its `binding()`.
    pub resources: Vec<Resource>,
    /// This dispatch's params block within [`Program::params`].
    pub params_offset: u64,
    pub params_size: u64,
    /// Where this dispatch's window of the weights buffer starts (a multiple of
    /// [`WINDOW_ALIGN`]; 0 when the whole buffer fits one binding); the offsets in its
    /// params are relative to it.
    pub weights_base: u64,
    pub grid: Grid,
}

/// Alignment of a weights window's base (the largest storage offset alignment Vulkan
/// allows a device to ask for).
pub const WINDOW_ALIGN: u64 = 256;

/// Bytes past a matrix row that a unit's word loads may touch.
const ROW_SLACK: u64 = 16;

/// Everything a backend needs to run a plan on the WGSL kernels.
#[derive(Clone, Debug)]
pub struct Program {
    pub pipelines: Vec<Pipeline>,
    /// Per launch of the plan, its dispatches in order.
    pub launches: Vec<Vec<Dispatch>>,
    /// The params buffer: every dispatch's block at a `uniform_align` offset.
    pub params: Vec<u8>,
    pub weights: WeightLayout,
    /// Bytes of the weights buffer each dispatch binds (from its `weights_base`).
    pub weights_window: u64,
    pub arena_bytes: u64,
    pub kv_bytes: u64,
    pub limits: StepLimits,
    /// Each RoPE geometry of the plan (the step buffer's tables, in the order the
    /// kernels' params index them).
    pub rope: Vec<RopeTable>,
    /// KV groups of the plan's KV layout (block tables per sequence).
    pub kv_groups: usize,
    /// Where the plan's output (the logits) lies in the arena.
    pub output: Output,
}

/// Words of each kernel's params block (the `Params` struct of its file).
pub fn param_words(op: &str) -> usize {
    match op {
        "matmul"
        | "rmsnorm_matmul"
        | "matmul_swiglu"
        | "rmsnorm_matmul_swiglu"
        | "matmul_geglu"
        | "rmsnorm_matmul_geglu"
        | "matmul_add" => 12,
        "kv_write" | "rope_kv_write" | "qk_norm_rope_kv_write" | "attention" => 20,
        "rmsnorm_add" | "head_rmsnorm" => 8,
        "rmsnorm" => 6,
        "add" | "swiglu" | "geglu" | "scale" | "rope" => 5,
        "embed" => 6,
        "select_rows" => 3,
        _ => 0,
    }
}

/// Whether the kernels run `op` with the weights it names in `graph` (a `match`, as the
/// Backend trait asks) on a device that binds at most `max_binding` bytes: unfused ops
/// stay when a fused one is refused. A matmul or embedding larger than a binding runs in
/// chunks of rows (each binding its window of the weights buffer); an op that also reads
/// a second matrix or a norm vector does not, and is refused when its matrices take more
/// than half a binding.
pub fn supports(op: &Op, graph: &Graph, max_binding: u64) -> bool {
    let matrix_bytes: u64 = op
        .matrices()
        .iter()
        .filter_map(|&w| graph.weight(w))
        .filter_map(|w| w.dtype.bytes_for(w.rows as u64 * w.cols as u64))
        .sum();
    let chunked = matches!(
        op,
        Op::Embed { .. } | Op::MatMul { .. } | Op::MatMulAdd { .. }
    );
    if !chunked && matrix_bytes > max_binding / 2 {
        return false;
    }
    // Matmuls read whole units of 8 columns; an embedding of plain floats may end inside
    // one.
    let embed = matches!(op, Op::Embed { .. });
    let matrices_ok = op.matrices().iter().all(|&w| {
        graph.weight(w).is_some_and(|w| {
            WEIGHT_DTYPES.contains(&w.dtype)
                && (w.cols % 8 == 0 || (embed && !w.dtype.is_quantized()))
        })
    });
    let dtype = |w: &WeightId| graph.weight(*w).map(|w| w.dtype);
    matrices_ok
        && match op {
            Op::MatMulSwiGlu { gate, up }
            | Op::RmsNormMatMulSwiGlu { gate, up, .. }
            | Op::MatMulGeGlu { gate, up }
            | Op::RmsNormMatMulGeGlu { gate, up, .. } => dtype(gate) == dtype(up),
            Op::Attention { attention }
            | Op::KvWrite { attention }
            | Op::RopeKvWrite { attention, .. }
            | Op::QkNormRopeKvWrite { attention, .. } => attention_ok(attention),
            Op::HeadRmsNorm { head_dim, .. } => *head_dim > 0,
            // Qwen 2's bias add has no WGSL kernel yet.
            Op::AddBias { .. } => false,
            _ => true,
        }
}

/// Device bytes the Program of `plan` takes besides the arena and the KV pages: the
/// weights buffer (vectors as f32) and the params blocks (at most three dispatches a
/// launch, one `uniform_align` block each). What a backend's `load_bytes` starts from.
pub fn load_bytes(plan: &Plan, uniform_align: u64) -> u64 {
    let weights = WeightLayout::new(plan, u64::MAX).map_or(0, |l| l.total);
    weights + plan.launches.len() as u64 * 3 * uniform_align
}

fn attention_ok(a: &AttentionParams) -> bool {
    a.head_dim.is_multiple_of(4)
        && a.head_dim <= 256
        && a.n_kv_heads > 0
        && a.n_heads.is_multiple_of(a.n_kv_heads)
        && a.window.is_none_or(|w| w > 0 && w <= u32::MAX as usize)
        && a.scale.is_finite()
}

fn unsupported(what: String) -> KernelError {
    KernelError::Unsupported(what)
}

impl Program {
    pub fn new(
        plan: &Plan,
        source: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
        caps: &Capabilities,
    ) -> Result<Program, KernelError> {
        let weights = WeightLayout::new(plan, caps.max_buffer)?;
        // Every dispatch binds this many bytes of the weights buffer, from its own base.
        let window = weights.total.min(caps.max_storage_binding) / WINDOW_ALIGN * WINDOW_ALIGN;
        let max = caps.max_storage_binding.min(u64::from(u32::MAX));
        let arena_bytes = (plan.arena_bytes as u64).max(16);
        let kv_bytes = (kv.page_bytes() as u64)
            .checked_mul(kv_page_count as u64)
            .filter(|&b| b <= max)
            .ok_or_else(|| {
                unsupported(format!(
                    "{kv_page_count} KV pages of {} bytes in one binding (at most {max})",
                    kv.page_bytes()
                ))
            })?
            .max(16);
        if arena_bytes > max {
            return Err(unsupported(format!(
                "an arena of {arena_bytes} bytes in one binding (at most {max})"
            )));
        }
        if plan.max_tokens > MAX_GRID as usize {
            return Err(unsupported(format!(
                "steps of {} tokens (a grid dimension holds {MAX_GRID} workgroups)",
                plan.max_tokens
            )));
        }
        // Each RoPE geometry once (Gemma 3: one base for local layers, one for global).
        let mut ropes: Vec<RopeParams> = Vec::new();
        for r in plan.launches.iter().filter_map(|l| l.op.rope()) {
            if !ropes.contains(r) {
                ropes.push(*r);
            }
        }
        let mut b = Builder {
            plan,
            kv,
            caps,
            weights: &weights,
            window,
            base: 0,
            ropes: &ropes,
            pipelines: Vec::new(),
            params: Vec::new(),
        };
        let mut launches = Vec::with_capacity(plan.launches.len());
        for launch in &plan.launches {
            if !supports(&launch.op, &plan.graph, caps.max_storage_binding) {
                return Err(unsupported(format!("{} ({})", launch.kernel, launch.op)));
            }
            launches.push(b.launch(launch)?);
        }
        let rope = ropes
            .iter()
            .map(|&params| rope_table(plan, source, params))
            .collect::<Result<Vec<_>, _>>()?;
        let output =
            Output::of(plan).ok_or_else(|| unsupported("a plan without an output".into()))?;
        Ok(Program {
            pipelines: b.pipelines,
            launches,
            params: b.params,
            weights,
            weights_window: window,
            arena_bytes,
            kv_bytes,
            limits: StepLimits::new(plan, kv, kv_page_count),
            rope,
            kv_groups: kv.n_groups().max(1),
            output,
        })
    }
}

impl Program {
    /// The step buffer's bytes for a checked step (what a backend uploads before it).
    pub fn pack_step(&self, step: &kiln_ir::backend::Step<'_>) -> Result<Vec<u8>, KernelError> {
        crate::step::pack(step, &self.rope, self.kv_groups)
    }

    /// The dispatches of launch `launch` that have work in a step of `shape`: each one's
    /// index in the launch, and its workgroup counts (a dispatch over no rows is left
    /// out).
    pub fn dispatches(
        &self,
        launch: usize,
        shape: StepShape,
    ) -> impl Iterator<Item = (usize, &Dispatch, [u32; 3])> {
        self.launches[launch]
            .iter()
            .enumerate()
            .filter_map(move |(j, d)| {
                let groups = d.grid.workgroups(shape.tokens as u32, shape.outputs as u32);
                groups.iter().all(|&g| g > 0).then_some((j, d, groups))
            })
    }

    /// What a backend prints for a dispatch when asked to (`KILN_DEBUG`).
    pub fn trace(&self, backend: &str, launch: usize, d: &Dispatch, groups: [u32; 3]) {
        let [x, y, z] = groups;
        let name = &self.pipelines[d.pipeline].name;
        eprintln!("{backend}: launch {launch} {name} workgroups ({x}, {y}, {z})");
    }
}

fn rope_table(
    plan: &Plan,
    source: &dyn WeightSource,
    params: RopeParams,
) -> Result<RopeTable, KernelError> {
    let factors = match params.freq_factors {
        None => None,
        Some(id) => {
            let w = &plan.graph.weights[id.0 as usize];
            let bad = |reason: String| KernelError::Weight {
                name: w.name.clone(),
                reason,
            };
            let bytes = source
                .weight(&w.name)
                .ok_or_else(|| bad("not in the model".into()))?;
            let mut v = vec![0.0f32; w.rows * w.cols];
            kiln_ir::quant::dequantize_row(w.dtype, bytes.as_slice(), &mut v)
                .map_err(|e| bad(e.to_string()))?;
            if v.len() < params.rope_dims / 2 {
                return Err(bad(format!(
                    "{} factors for {} dims",
                    v.len(),
                    params.rope_dims
                )));
            }
            Some(v)
        }
    };
    Ok(RopeTable { params, factors })
}

/// Builds the dispatches of each launch, collecting pipelines and params blocks.
struct Builder<'a> {
    plan: &'a Plan,
    kv: &'a KvLayout,
    caps: &'a Capabilities,
    weights: &'a WeightLayout,
    /// Bytes of a weights window, and the base of the dispatch being built.
    window: u64,
    base: u64,
    ropes: &'a [RopeParams],
    pipelines: Vec<Pipeline>,
    params: Vec<u8>,
}

use Resource::{Arena, Kv, Params, Step, Weights};

impl Builder<'_> {
    /// Arena index (in f32s) of a value.
    fn at(&self, v: ValueId) -> u32 {
        (self.plan.offsets[v.0 as usize].unwrap_or(0) / 4) as u32
    }

    fn rows(&self, v: ValueId) -> Rows {
        self.plan.graph.values[v.0 as usize].rows()
    }

    fn cols(&self, v: ValueId) -> u32 {
        self.plan.graph.values[v.0 as usize].cols() as u32
    }

    /// A matrix: dtype, rows, cols and bytes of a row.
    fn weight(&self, w: WeightId) -> (DType, u32, u32, u32) {
        let wt = &self.plan.graph.weights[w.0 as usize];
        let row_bytes = wt.dtype.bytes_for(wt.cols as u64).unwrap_or(0) as u32;
        (wt.dtype, wt.rows as u32, wt.cols as u32, row_bytes)
    }

    /// The byte offset in the window of row `r` of matrix `w`.
    fn row_at(&self, w: WeightId, r: u32) -> u32 {
        let wt = &self.plan.graph.weights[w.0 as usize];
        let row_bytes = wt.dtype.bytes_for(wt.cols as u64).unwrap_or(0);
        (self.weights.offsets[w.0 as usize] + u64::from(r) * row_bytes - self.base) as u32
    }

    /// A vector's word index in the window.
    fn vector(&self, w: WeightId) -> u32 {
        ((self.weights.offsets[w.0 as usize] - self.base) / 4) as u32
    }

    /// The byte range of weight `w` in the buffer: `rows` rows of a matrix (with the
    /// slack its loads may touch), or a whole vector.
    fn range(&self, w: WeightId, rows: Option<(u32, u32)>) -> (u64, u64) {
        let wt = &self.plan.graph.weights[w.0 as usize];
        let at = self.weights.offsets[w.0 as usize];
        if !self.weights.matrix[w.0 as usize] {
            return (at, at + 4 * (wt.rows * wt.cols) as u64);
        }
        let row_bytes = wt.dtype.bytes_for(wt.cols as u64).unwrap_or(0);
        let (r0, r1) = rows.unwrap_or((0, wt.rows as u32));
        (
            at + u64::from(r0) * row_bytes,
            at + u64::from(r1) * row_bytes + ROW_SLACK,
        )
    }

    /// Chooses the base of the window that holds every range of the next dispatch.
    fn place(&mut self, ranges: &[(u64, u64)]) -> Result<(), KernelError> {
        let lo = ranges.iter().map(|r| r.0).min().unwrap_or(0);
        let hi = ranges.iter().map(|r| r.1).max().unwrap_or(0);
        let last = (self.weights.total - self.window) / WINDOW_ALIGN * WINDOW_ALIGN;
        self.base = (lo / WINDOW_ALIGN * WINDOW_ALIGN).min(last);
        if hi.min(self.weights.total) > self.base + self.window {
            return Err(unsupported(format!(
                "a kernel reading {} bytes of weights (a binding holds {})",
                hi - lo,
                self.window
            )));
        }
        Ok(())
    }

    /// Rows of a matrix of `row_bytes` that one window holds.
    fn rows_per_window(&self, row_bytes: u32) -> u32 {
        let usable = self.window.saturating_sub(WINDOW_ALIGN + ROW_SLACK);
        (usable / u64::from(row_bytes.max(1))).clamp(1, u64::from(u32::MAX)) as u32
    }

    fn dispatch(
        &mut self,
        op: &'static str,
        weight: Option<DType>,
        words: Vec<u32>,
        resources: Vec<Resource>,
        grid: Grid,
    ) -> Dispatch {
        debug_assert_eq!(words.len(), param_words(op), "{op}");
        let kv = Variant::takes_kv(op).then(|| self.kv.dtype());
        let variant = Variant {
            op,
            weight,
            kv,
            subgroups: self.caps.subgroups && Variant::reduces(op),
        };
        let pipeline = match self.pipelines.iter().position(|p| p.variant == variant) {
            Some(i) => i,
            None => {
                self.pipelines.push(Pipeline {
                    variant,
                    name: variant.name(),
                    source: variant.source().expect("every op has a source"),
                });
                self.pipelines.len() - 1
            }
        };
        let align = self.caps.uniform_align.max(16) as usize;
        let params_offset = self.params.len().next_multiple_of(align);
        self.params.resize(params_offset, 0);
        self.params
            .extend(words.iter().flat_map(|w| w.to_le_bytes()));
        let params_size = (words.len() * 4).next_multiple_of(16);
        self.params.resize(params_offset + params_size, 0);
        Dispatch {
            pipeline,
            resources,
            params_offset: params_offset as u64,
            params_size: params_size as u64,
            weights_base: self.base,
            grid,
        }
    }

    /// A matmul-family launch: x (rows, k) times weight `w` (and `w2`) into `out`. A plain
    /// matmul (with or without the residual) whose weight a window does not hold runs
    /// as dispatches over chunks of its rows.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &mut self,
        op: &'static str,
        x: ValueId,
        out: ValueId,
        w: WeightId,
        w2: Option<WeightId>,
        res: Option<ValueId>,
        norm: Option<(WeightId, f32)>,
    ) -> Result<Vec<Dispatch>, KernelError> {
        self.base = 0; // (a previous dispatch's window)
        let n = self.plan.graph.weights[w.0 as usize].rows as u32;
        let row_bytes = self.weight(w).3;
        let chunk = if w2.is_none() && norm.is_none() {
            self.rows_per_window(row_bytes)
        } else {
            n.max(1)
        };
        let mut dispatches = Vec::new();
        for r0 in (0..n.max(1)).step_by(chunk as usize) {
            let r1 = (r0 + chunk).min(n);
            let mut ranges = vec![self.range(w, Some((r0, r1)))];
            ranges.extend(w2.map(|w2| self.range(w2, None)));
            ranges.extend(norm.map(|(g, _)| self.range(g, None)));
            self.place(&ranges)?;
            let (dtype, _, k, row_bytes) = self.weight(w);
            let w2_off = w2.map_or(0, |w2| self.row_at(w2, 0));
            let rows = self.rows(out);
            let (norm_at, eps) = norm.map_or((0, 0.0), |(g, eps)| (self.vector(g), eps));
            let words = vec![
                header_word(rows),
                k,
                r1 - r0,
                row_bytes,
                self.at(x),
                self.at(out) + r0,
                self.row_at(w, r0),
                w2_off,
                res.map_or(0, |r| self.at(r) + r0),
                norm_at,
                eps.to_bits(),
                n,
            ];
            let grid = Grid::Matmul { rows, n: r1 - r0 };
            dispatches.push(self.dispatch(
                op,
                Some(dtype),
                words,
                vec![Params, Arena, Weights, Step],
                grid,
            ));
        }
        Ok(dispatches)
    }

    /// The params of the KV kernels (kv_common.wgsl), `rope` and `norms` (q, k and eps)
    /// for the ops that have them.
    fn kv_words(
        &self,
        a: &AttentionParams,
        [q, q_out, k, v]: [u32; 4],
        rope: Option<&RopeParams>,
        norms: Option<(WeightId, WeightId, f32)>,
    ) -> Vec<u32> {
        let kv = self.kv;
        let layer_base = kv.k_offset(a.kv_slot, 0, 0).unwrap_or(0) as u32;
        let v_base = kv.v_offset(0, 0, 0).unwrap_or(0) as u32;
        let ks_base = kv.k_scale_offset(0, 0, 0).unwrap_or(0) as u32;
        let vs_base = kv.v_scale_offset(0, 0, 0).unwrap_or(0) as u32;
        let rope = rope.map_or(0, |r| self.ropes.iter().position(|x| x == r).unwrap_or(0));
        let (q_norm, k_norm, eps) = norms.map_or((0, 0, 0.0), |(q, k, eps)| {
            (self.vector(q), self.vector(k), eps)
        });
        vec![
            q,
            q_out,
            k,
            v,
            a.n_heads as u32,
            a.n_kv_heads as u32,
            a.head_dim as u32,
            kv.kv_page_size() as u32,
            kv.page_bytes() as u32,
            layer_base,
            v_base,
            ks_base,
            vs_base,
            a.scale.to_bits(),
            a.kv_group as u32,
            a.window.unwrap_or(0) as u32,
            rope as u32,
            q_norm,
            k_norm,
            eps.to_bits(),
        ]
    }

    fn check_kv(&self, a: &AttentionParams) -> Result<(), KernelError> {
        let kv = self.kv;
        if a.kv_slot >= kv.n_layers()
            || a.kv_group >= kv.n_groups().max(1)
            || a.n_kv_heads != kv.n_kv_heads()
            || a.head_dim != kv.head_dim()
        {
            return Err(unsupported(format!(
                "KV slot {} attends over {} KV heads of {}, the KV layout holds {} slots of {} heads of {}",
                a.kv_slot,
                a.n_kv_heads,
                a.head_dim,
                kv.n_layers(),
                kv.n_kv_heads(),
                kv.head_dim()
            )));
        }
        Ok(())
    }

    fn launch(&mut self, launch: &kiln_ir::Launch) -> Result<Vec<Dispatch>, KernelError> {
        let ins = &launch.inputs;
        let outs = &launch.outputs;
        // Every op has an output but KvWrite, which never reads this.
        let out = outs.first().copied().unwrap_or(ins[0]);
        let sel = |b: &Self, v: ValueId| header_word(b.rows(v));
        // The window of the weights buffer the launch's dispatches bind.
        let vectors: Vec<(u64, u64)> = match &launch.op {
            Op::RmsNorm { weight, .. }
            | Op::HeadRmsNorm { weight, .. }
            | Op::RmsNormAdd { weight, .. } => vec![self.range(*weight, None)],
            Op::QkNormRopeKvWrite { q_norm, k_norm, .. } => {
                vec![self.range(*q_norm, None), self.range(*k_norm, None)]
            }
            _ => Vec::new(),
        };
        self.base = 0;
        self.place(&vectors)?;
        Ok(match &launch.op {
            Op::Embed { table } => {
                // Chunks of the table's rows, each in its window; a token is written by
                // the chunk that holds its row.
                let (_, n_rows, d, row_bytes) = self.weight(*table);
                let chunk = self.rows_per_window(row_bytes);
                let mut dispatches = Vec::new();
                for r0 in (0..n_rows.max(1)).step_by(chunk as usize) {
                    let r1 = (r0 + chunk).min(n_rows);
                    let range = self.range(*table, Some((r0, r1)));
                    self.place(&[range])?;
                    let (dtype, ..) = self.weight(*table);
                    let words = vec![
                        self.row_at(*table, r0),
                        row_bytes,
                        d,
                        self.at(out),
                        r0,
                        r1 - r0,
                    ];
                    let grid = Grid::PerToken {
                        x: d.div_ceil(8).div_ceil(WG),
                    };
                    dispatches.push(self.dispatch(
                        "embed",
                        Some(dtype),
                        words,
                        vec![Params, Arena, Weights, Step],
                        grid,
                    ));
                }
                dispatches
            }
            Op::RmsNorm { weight, eps } => {
                let words = vec![
                    sel(self, out),
                    self.cols(out),
                    self.at(ins[0]),
                    self.at(out),
                    self.vector(*weight),
                    eps.to_bits(),
                ];
                let grid = Grid::PerRow {
                    rows: self.rows(out),
                };
                vec![self.dispatch(
                    "rmsnorm",
                    None,
                    words,
                    vec![Params, Arena, Weights, Step],
                    grid,
                )]
            }
            Op::MatMul { weights } => {
                let mut all = Vec::new();
                for (&w, &o) in weights.iter().zip(outs) {
                    all.extend(self.matmul("matmul", ins[0], o, w, None, None, None)?);
                }
                all
            }
            Op::RmsNormMatMul { norm, eps, weights } => {
                let mut all = Vec::new();
                for (&w, &o) in weights.iter().zip(outs) {
                    let norm = Some((*norm, *eps));
                    all.extend(self.matmul("rmsnorm_matmul", ins[0], o, w, None, None, norm)?);
                }
                all
            }
            Op::MatMulSwiGlu { gate, up } => {
                self.matmul("matmul_swiglu", ins[0], out, *gate, Some(*up), None, None)?
            }
            Op::RmsNormMatMulSwiGlu {
                norm,
                eps,
                gate,
                up,
            } => self.matmul(
                "rmsnorm_matmul_swiglu",
                ins[0],
                out,
                *gate,
                Some(*up),
                None,
                Some((*norm, *eps)),
            )?,
            Op::MatMulAdd { weight } => {
                self.matmul("matmul_add", ins[0], out, *weight, None, Some(ins[1]), None)?
            }
            Op::Add | Op::SwiGlu | Op::GeGlu => {
                let op = match launch.op {
                    Op::Add => "add",
                    Op::SwiGlu => "swiglu",
                    _ => "geglu",
                };
                let cols = self.cols(out);
                let words = vec![
                    sel(self, out),
                    cols,
                    self.at(ins[0]),
                    self.at(ins[1]),
                    self.at(out),
                ];
                let grid = Grid::Elementwise {
                    rows: self.rows(out),
                    cols,
                };
                vec![self.dispatch(op, None, words, vec![Params, Arena, Step], grid)]
            }
            Op::SelectRows => {
                let cols = self.cols(out);
                let words = vec![cols, self.at(ins[0]), self.at(out)];
                let grid = Grid::Elementwise {
                    rows: Rows::Outputs,
                    cols,
                };
                vec![self.dispatch("select_rows", None, words, vec![Params, Arena, Step], grid)]
            }
            Op::Rope { rope } => {
                let cols = self.cols(out);
                let table = self.ropes.iter().position(|x| x == rope).unwrap_or(0) as u32;
                let words = vec![
                    cols,
                    rope.head_dim as u32,
                    self.at(ins[0]),
                    self.at(out),
                    table,
                ];
                let grid = Grid::Elementwise {
                    rows: Rows::Tokens,
                    cols,
                };
                vec![self.dispatch("rope", None, words, vec![Params, Arena, Step], grid)]
            }
            Op::KvWrite { attention: a } => {
                self.check_kv(a)?;
                let words = self.kv_words(a, [0, 0, self.at(ins[0]), self.at(ins[1])], None, None);
                let grid = Grid::PerToken {
                    x: 2 * a.n_kv_heads as u32,
                };
                vec![self.dispatch("kv_write", None, words, vec![Params, Arena, Kv, Step], grid)]
            }
            Op::RopeKvWrite { attention: a, rope } => {
                self.check_kv(a)?;
                let qkv = [ins[0], out, ins[1], ins[2]].map(|v| self.at(v));
                let words = self.kv_words(a, qkv, Some(rope), None);
                let grid = Grid::PerToken {
                    x: (a.n_heads + 2 * a.n_kv_heads) as u32,
                };
                vec![self.dispatch(
                    "rope_kv_write",
                    None,
                    words,
                    vec![Params, Arena, Kv, Step],
                    grid,
                )]
            }
            Op::QkNormRopeKvWrite {
                q_norm,
                k_norm,
                eps,
                rope,
                attention: a,
            } => {
                self.check_kv(a)?;
                let qkv = [ins[0], out, ins[1], ins[2]].map(|v| self.at(v));
                let words = self.kv_words(a, qkv, Some(rope), Some((*q_norm, *k_norm, *eps)));
                let grid = Grid::PerToken {
                    x: (a.n_heads + 2 * a.n_kv_heads) as u32,
                };
                vec![self.dispatch(
                    "qk_norm_rope_kv_write",
                    None,
                    words,
                    vec![Params, Arena, Weights, Kv, Step],
                    grid,
                )]
            }
            Op::Attention { attention: a } => {
                self.check_kv(a)?;
                let words = self.kv_words(a, [self.at(ins[0]), self.at(out), 0, 0], None, None);
                let grid = Grid::PerToken {
                    x: a.n_heads as u32,
                };
                vec![self.dispatch(
                    "attention",
                    None,
                    words,
                    vec![Params, Arena, Kv, Step],
                    grid,
                )]
            }
            Op::AddBias { .. } => {
                return Err(unsupported(format!("{} (no WGSL kernel)", launch.op)));
            }
            Op::Scale { factor } => {
                let cols = self.cols(out);
                let words = vec![
                    sel(self, out),
                    cols,
                    self.at(ins[0]),
                    self.at(out),
                    factor.to_bits(),
                ];
                let grid = Grid::Elementwise {
                    rows: self.rows(out),
                    cols,
                };
                vec![self.dispatch("scale", None, words, vec![Params, Arena, Step], grid)]
            }
            Op::HeadRmsNorm {
                weight,
                eps,
                head_dim,
            } => {
                let heads = self.cols(out) / *head_dim as u32;
                let words = vec![
                    sel(self, out),
                    *head_dim as u32,
                    self.at(ins[0]),
                    self.at(out),
                    self.vector(*weight),
                    eps.to_bits(),
                    heads,
                    0,
                ];
                let grid = Grid::PerRowHead {
                    rows: self.rows(out),
                    heads,
                };
                vec![self.dispatch(
                    "head_rmsnorm",
                    None,
                    words,
                    vec![Params, Arena, Weights, Step],
                    grid,
                )]
            }
            Op::RmsNormAdd { weight, eps } => {
                let words = vec![
                    sel(self, out),
                    self.cols(out),
                    self.at(ins[0]),
                    self.at(out),
                    self.vector(*weight),
                    eps.to_bits(),
                    self.at(ins[1]),
                    0,
                ];
                let grid = Grid::PerRow {
                    rows: self.rows(out),
                };
                vec![self.dispatch(
                    "rmsnorm_add",
                    None,
                    words,
                    vec![Params, Arena, Weights, Step],
                    grid,
                )]
            }
            Op::MatMulGeGlu { gate, up } => {
                self.matmul("matmul_geglu", ins[0], out, *gate, Some(*up), None, None)?
            }
            Op::RmsNormMatMulGeGlu {
                norm,
                eps,
                gate,
                up,
            } => self.matmul(
                "rmsnorm_matmul_geglu",
                ins[0],
                out,
                *gate,
                Some(*up),
                None,
                Some((*norm, *eps)),
            )?,
        })
    }
}
