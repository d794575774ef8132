//! A plan made into a program for the WGSL kernels: the pipelines to build, and for each
//! launch of the plan its dispatches: which pipeline, what to bind, the params block, and
//! how many workgroups a step needs. A backend builds the pipelines and bind groups once
//! and, per step, writes the step buffer and records the dispatches in order.

use kiln_gpu_host::Output;
use kiln_ir::backend::{BackendError, DeviceProperties, StepLimits, StepShape, WeightSource};
use kiln_ir::graph::{Graph, Rows};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{AttentionParams, Op, Plan, WeightId};

use crate::sources::{Variant, WEIGHT_DTYPES};
use crate::step::RopeTable;
use crate::weights::WeightLayout;
use crate::{Capabilities, KernelError};

mod lower;
mod step_list;
use lower::Builder;
pub use step_list::{LaunchRuns, Run, StepList};

/// The entry point of every kernel.
pub const ENTRY: &str = "main";

/// The buffers a backend owns; each is bound at `binding()` of group 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Uniform: this dispatch's params block (`params_offset`, `params_size`).
    Params,
    /// Storage, read-write: the f32 activation arena (`plan.arena_bytes`).
    Arena,
    /// Storage, read: a window of one weights buffer ([`WeightLayout`]).
    Weights,
    /// Storage: the KV pages (read-write for the writers, read for attention).
    Kv,
    /// Storage, read: the step buffer ([`crate::step`]).
    Step,
}

impl Resource {
    /// Every resource, in binding order.
    pub const ALL: [Resource; 5] = [
        Resource::Params,
        Resource::Arena,
        Resource::Weights,
        Resource::Kv,
        Resource::Step,
    ];

    pub fn binding(self) -> u32 {
        self as u32
    }

    /// Whether a dispatch moves its binding by a dynamic offset (the params block, the
    /// weights window: [`Run::dynamic_offsets`]), so that one bind group per weights
    /// buffer serves every dispatch; the others are bound whole.
    pub fn dynamic(self) -> bool {
        matches!(self, Resource::Params | Resource::Weights)
    }

    /// Whether a kernel writes it: the arena always, the KV pages in a kernel that
    /// `writes_kv` ([`crate::Variant::writes_kv`]); the rest are read.
    pub fn written(self, writes_kv: bool) -> bool {
        match self {
            Resource::Arena => true,
            Resource::Kv => writes_kv,
            Resource::Params | Resource::Weights | Resource::Step => false,
        }
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
    /// A workgroup per output column (x, then y past 65535) and tile of 8 rows (z), for
    /// steps of at most `max_rows` rows (larger ones take the GEMM beside it).
    Matmul { rows: Rows, n: u32, max_rows: u32 },
    /// The tiled GEMM (gemm_core.wgsl): a workgroup per tile of output columns (x, then
    /// y) and of [`GEMM_ROWS`] rows (z), for steps of at least `min_rows` rows
    /// ([`GEMM_MIN_ROWS`], or past the int8 path's [`MATVEC_MAX_ROWS`]).
    Gemm {
        rows: Rows,
        tiles: u32,
        min_rows: u32,
    },
    /// A workgroup per row.
    PerRow { rows: Rows },
    /// A thread per element of (rows, cols).
    Elementwise { rows: Rows, cols: u32 },
    /// `x` workgroups per token (y).
    PerToken { x: u32 },
    /// A workgroup per (head, row): `heads` (x) by rows (y).
    PerRowHead { rows: Rows, heads: u32 },
    /// The int8 decode path (steps of at most [`MATVEC_MAX_ROWS`] rows; none past it):
    /// a workgroup per row to quantize.
    Quantize { rows: Rows },
    /// The int8 matvec: a workgroup per [`MATVEC_ROWS`] output columns (x, then y), every
    /// row of the step in each.
    Matvec { rows: Rows, n: u32 },
    /// [`Grid::Matmul`] for the steps the int8 path does not take (more than
    /// [`MATVEC_MAX_ROWS`] rows): the f32 kernel of a launch that has both.
    MatmulRest { rows: Rows, n: u32, max_rows: u32 },
}

/// The most rows (tokens, or output rows) a step may have for the int8 matvec: a
/// workgroup reads its weight rows once for all of them (matvec_core.wgsl).
pub const MATVEC_MAX_ROWS: u32 = 32;
/// Output columns of an int8 matvec workgroup (matvec_core.wgsl's MV_ROWS).
pub const MATVEC_ROWS: u32 = 8;

const WG: u32 = 64;
const TILE_T: u32 = 8;
pub use lower::{GEMM_MIN_ROWS, GEMM_ROWS};
const MAX_GRID: u32 = 65535;

fn split(n: u32) -> [u32; 2] {
    if n <= MAX_GRID {
        [n, 1]
    } else {
        [MAX_GRID, n.div_ceil(MAX_GRID)]
    }
}

/// The subgroup size a device with subgroup size control should require of the kernels
/// (whose workgroups are [`WG`] threads): `wanted`, else the largest it offers up to a
/// workgroup (fewer partial sums per reduction), clamped to `sizes` (min, max); None when
/// a workgroup cannot be whole subgroups of it within `max_subgroups` per workgroup.
pub fn subgroup_size(sizes: (u32, u32), max_subgroups: u32, wanted: Option<u32>) -> Option<u32> {
    let (min, max) = sizes;
    let size = wanted.unwrap_or(max).clamp(min, max.min(WG));
    (size.is_power_of_two() && WG.is_multiple_of(size) && WG / size <= max_subgroups)
        .then_some(size)
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
            Grid::Matmul { rows, n, max_rows } => {
                let [x, y] = split(n);
                let rows = resolve(rows);
                let z = if rows <= max_rows { rows } else { 0 };
                [x, y, z.div_ceil(TILE_T)]
            }
            Grid::Gemm {
                rows,
                tiles,
                min_rows,
            } => {
                let [x, y] = split(tiles);
                let rows = resolve(rows);
                let z = if rows >= min_rows { rows } else { 0 };
                [x, y, z.div_ceil(GEMM_ROWS)]
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
            Grid::Quantize { rows } => match resolve(rows) {
                r if r <= MATVEC_MAX_ROWS => [r, 1, 1],
                _ => [0; 3],
            },
            Grid::Matvec { rows, n } => match resolve(rows) {
                r if r <= MATVEC_MAX_ROWS => {
                    let [x, y] = split(n.div_ceil(MATVEC_ROWS));
                    [x, y, r.min(1)]
                }
                _ => [0; 3],
            },
            Grid::MatmulRest { rows, n, max_rows } => match resolve(rows) {
                r if r > MATVEC_MAX_ROWS => {
                    Grid::Matmul { rows, n, max_rows }.workgroups(n_tokens, n_outputs)
                }
                _ => [0; 3],
            },
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
    /// The weights buffer this dispatch binds (index into `WeightLayout::buffers`).
    pub weights_buffer: usize,
    /// Where its window starts in the weights' address space (a multiple of
    /// [`WINDOW_ALIGN`]); the offsets in its params are relative to it.
    pub weights_base: u64,
    /// The same place as an offset in its buffer (what a WGSL backend binds at).
    pub weights_offset: u64,
    /// Bytes of the window (at most a binding, within the buffer).
    pub weights_window: u64,
    pub grid: Grid,
    /// It reads what an earlier dispatch of its launch wrote (the int8 matvec, its
    /// launch's quantized input): a backend that does not order the dispatches of a
    /// launch puts a barrier before it.
    pub barrier: bool,
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
    /// Bytes of every window of each weights buffer (a binding, or the whole buffer):
    /// the dispatches that bind buffer `i` bind `weights_windows[i]` bytes.
    pub weights_windows: Vec<u64>,
    pub arena_bytes: u64,
    pub kv_bytes: u64,
    /// Bytes of one KV page.
    pub kv_page_bytes: u64,
    pub limits: StepLimits,
    /// Each RoPE geometry of the plan (the step buffer's tables, in the order the
    /// kernels' params index them).
    pub rope: Vec<RopeTable>,
    /// KV groups of the plan's KV layout (block tables per sequence).
    pub kv_groups: usize,
    /// Where the plan's output (the logits) lies in the arena.
    pub output: Output,
    /// Where argmax.wgsl leaves the greedy token of each output row (one f32 a row: the
    /// id, or -1 for a row of non-numbers), after every step that has output rows; None
    /// for a vocabulary an f32 cannot count exactly (2^24 ids and more).
    pub argmax: Option<Output>,
}

/// Vocabularies whose every id an f32 holds exactly (argmax.wgsl's ids).
const ARGMAX_MAX_COLS: usize = 1 << 24;

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
        // The tiled twins read the same params (gemm_core.wgsl).
        "gemm"
        | "gemm_add"
        | "gemm_swiglu"
        | "gemm_geglu"
        | "rmsnorm_gemm"
        | "rmsnorm_gemm_swiglu"
        | "rmsnorm_gemm_geglu" => 12,
        "matvec_q8" | "matvec_q8_add" | "matvec_q8_swiglu" | "matvec_q8_geglu" => 12,
        "quantize_q8" | "rmsnorm_quantize_q8" => 8,
        "kv_write" | "rope_kv_write" | "qk_norm_rope_kv_write" | "attention" => 20,
        "rmsnorm_add" | "head_rmsnorm" => 8,
        "rmsnorm" => 6,
        "add" | "swiglu" | "geglu" | "scale" | "rope" | "add_bias" => 5,
        "embed" => 6,
        "select_rows" => 3,
        "argmax" => 4,
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
    supports_on(op, graph, max_binding, u64::MAX)
}

/// [`supports`] on a device whose weights buffers hold at most `max_buffer` bytes: a
/// fused op whose weights (bound together) a buffer does not hold is refused too.
pub fn supports_on(op: &Op, graph: &Graph, max_binding: u64, max_buffer: u64) -> bool {
    let fused_fits = || {
        let room = (max_buffer / WINDOW_ALIGN * WINDOW_ALIGN).max(WINDOW_ALIGN);
        crate::weights::launch_groups(op)
            .iter()
            .all(|g| crate::weights::group_bytes(graph, op, g).is_some_and(|b| b <= room))
    };
    let matrix_bytes: u64 = op
        .matrices()
        .iter()
        .filter_map(|&w| graph.weight(w))
        .filter_map(|w| crate::weights::device_bytes(w, true))
        .sum();
    let chunked = matches!(
        op,
        Op::Embed { .. } | Op::MatMul { .. } | Op::MatMulAdd { .. }
    );
    if !chunked && (matrix_bytes > max_binding / 2 || !fused_fits()) {
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
            _ => true,
        }
}

/// [`supports_on`] a device of `properties` (its largest binding and buffer).
pub fn supports_device(op: &Op, graph: &Graph, properties: &DeviceProperties) -> bool {
    let max_binding = properties.max_binding_bytes.unwrap_or(u64::MAX);
    let max_buffer = properties.max_buffer_bytes.unwrap_or(u64::MAX);
    supports_on(op, graph, max_binding, max_buffer)
}

/// Device bytes the Program of `plan` takes besides the arena and the KV pages: the
/// weights buffer (vectors as f32) and the params blocks (at most eight dispatches a
/// launch: three matrices, each by the int8 matvec and the f32 kernel, and the
/// quantization; one `uniform_align` block each). What a backend's `load_bytes` starts
/// from.
pub fn load_bytes(plan: &Plan, uniform_align: u64) -> u64 {
    let weights = WeightLayout::new(plan, u64::MAX).map_or(0, |l| l.total);
    weights + plan.launches.len() as u64 * 8 * uniform_align
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
        let windows: Vec<u64> = (weights.buffers.iter())
            .map(|b| b.bytes.min(caps.max_storage_binding) / WINDOW_ALIGN * WINDOW_ALIGN)
            .collect();
        let max = caps.max_storage_binding.min(u64::from(u32::MAX));
        // The int8 matvec's quantized activations after the plan's values, then the
        // greedy ids of the output rows.
        let output =
            Output::of(plan).ok_or_else(|| unsupported("a plan without an output".into()))?;
        let q8_scratch = (plan.arena_bytes as u64).next_multiple_of(16);
        let ids_at = (q8_scratch + lower::matvec_scratch_bytes(plan)).next_multiple_of(16);
        let argmax = (output.cols < ARGMAX_MAX_COLS).then_some(Output {
            offset: ids_at,
            rows: output.rows,
            cols: 1,
            max_rows: output.max_rows,
        });
        let ids_bytes = argmax.as_ref().map_or(0, |a| 4 * a.max_rows as u64);
        let arena_bytes = (ids_at + ids_bytes).max(16);
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
        let ropes = crate::step::rope_geometries(plan);
        let mut b = Builder {
            plan,
            kv,
            caps,
            weights: &weights,
            windows: &windows,
            window: lower::Window::default(),
            q8_scratch: (q8_scratch / 4) as u32,
            ropes: &ropes,
            pipelines: Vec::new(),
            params: Vec::new(),
        };
        let mut launches = Vec::with_capacity(plan.launches.len());
        for launch in &plan.launches {
            let (binding, buffer) = (caps.max_storage_binding, caps.max_buffer);
            if !supports_on(&launch.op, &plan.graph, binding, buffer) {
                return Err(unsupported(format!("{} ({})", launch.kernel, launch.op)));
            }
            launches.push(b.launch(launch)?);
        }
        if let (Some(a), Some(last)) = (&argmax, launches.last_mut()) {
            last.push(b.argmax(&output, a));
        }
        let rope = ropes
            .iter()
            .map(|&params| crate::step::rope_table(plan, source, params))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Program {
            pipelines: b.pipelines,
            launches,
            params: b.params,
            weights,
            weights_windows: windows,
            arena_bytes,
            kv_bytes,
            kv_page_bytes: kv.page_bytes() as u64,
            limits: StepLimits::new(plan, kv, kv_page_count),
            rope,
            kv_groups: kv.n_groups().max(1),
            output,
            argmax,
        })
    }
}

impl Program {
    /// The step buffer's bytes for a checked step (what a backend uploads before it).
    pub fn pack_step(&self, step: &kiln_ir::backend::Step<'_>) -> Result<Vec<u8>, KernelError> {
        Ok(crate::step::pack(step, &self.rope, self.kv_groups)?)
    }
}

/// Where a step's outputs are copied for the host to read, at the end of the step's own
/// commands (one submission a step, no staging buffer made per read): the logits, then
/// the greedy ids (argmax.wgsl's) where the program has them, each at a multiple of 16
/// bytes (a mapping's alignment) of a host-readable buffer of `bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readback {
    pub at: Vec<(Output, u64)>,
    pub bytes: u64,
}

impl Readback {
    pub fn of(program: &Program) -> Readback {
        let mut at = Vec::new();
        let mut bytes = 0;
        for output in std::iter::once(&program.output).chain(&program.argmax) {
            at.push((*output, bytes));
            bytes = (bytes + output.max_bytes()).next_multiple_of(16);
        }
        Readback { at, bytes }
    }

    /// The copies a step of `shape` ends with: (arena offset, readback offset, bytes).
    pub fn copies(&self, shape: StepShape) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let copies = self
            .at
            .iter()
            .map(move |(o, at)| (o.offset, *at, o.bytes_in(shape)));
        copies.filter(|c| c.2 > 0)
    }

    /// Where `output` lies in the readback buffer.
    pub fn find(&self, output: &Output, backend: &'static str) -> Result<u64, BackendError> {
        let found = self.at.iter().find(|(o, _)| o.offset == output.offset);
        found
            .map(|(_, at)| *at)
            .ok_or_else(|| BackendError::Driver {
                backend,
                message: format!("no output at arena byte {} is read back", output.offset),
            })
    }
}
