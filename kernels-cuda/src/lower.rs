//! A plan lowered to CUDA launches: for each launch of the plan, the kernel calls it
//! takes, each a variant (which module) and its typed arguments ([`Args`]), device
//! addresses included. The lowering matches on `kiln_ir::Op` once, at load; executing a
//! step is then one loop over the calls ([`geometry`] gives each call's launches for the
//! step's shape). The arguments hold for every step: the rows of a step come from the
//! step buffer on the device, so they are rebuilt only when a buffer moves
//! ([`Lowered::set_step`]) and CUDA graphs replay them.

use kiln_ir::graph::{Graph, Rows};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{AttentionParams, Op, Plan, WeightId};

use crate::args::{
    BinaryArgs, ConstPtr, EmbedArgs, KernelArgs, KvArgs, MatmulArgs, RmsNormArgs, RopeArgs,
    SelectRowsArgs,
};
use crate::launch::{AttentionShape, MAX_GRID_YZ, partial_bytes_max};
use crate::matvec::{MatvecArgs, QuantizeArgs, q8_1_planes};
use crate::sources::WEIGHT_DTYPES;
use crate::variant::Variant;
use crate::weights::{MAX_MATRIX_BYTES, WeightLayout};
use kiln_gpu_host::weights::stored_bytes;

pub mod geometry;
mod ops;

use ops::Lowerer;

/// Why a plan cannot run on the CUDA kernels.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("weight {name:?}: {reason}")]
    Weight { name: String, reason: String },
}

impl LowerError {
    /// The same error as a backend's.
    pub fn for_backend(self, backend: &'static str) -> kiln_ir::backend::BackendError {
        use kiln_ir::backend::BackendError;
        match self {
            LowerError::Unsupported(what) => BackendError::Unsupported { backend, what },
            LowerError::Weight { name, reason } => BackendError::Weight {
                backend,
                name,
                reason,
            },
        }
    }
}

fn unsupported(what: String) -> LowerError {
    LowerError::Unsupported(what)
}

/// Device addresses of the backend's buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buffers {
    /// (plan.arena_bytes) the f32 activations.
    pub arena: u64,
    /// ([`WeightLayout::total`]) every weight.
    pub weights: u64,
    /// The KV pages.
    pub kv: u64,
    /// The step buffer (kiln_gpu_host::step).
    pub step: u64,
    /// ([`partial_bytes`]) the decode attention splits' partial results.
    pub partial: u64,
    /// ([`q8_1_bytes`]) the matvec's quantized activations.
    pub q8_1: u64,
}

/// The typed arguments of a call; which struct says which kernel file family it is for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Args {
    Embed(EmbedArgs),
    RmsNorm(RmsNormArgs),
    Matmul(MatmulArgs),
    Binary(BinaryArgs),
    SelectRows(SelectRowsArgs),
    Rope(RopeArgs),
    Kv(KvArgs),
    Quantize(QuantizeArgs),
    Matvec(MatvecArgs),
}

impl Args {
    /// The struct's bytes as the launch passes them (by value).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Args::Embed(a) => a.as_bytes(),
            Args::RmsNorm(a) => a.as_bytes(),
            Args::Matmul(a) => a.as_bytes(),
            Args::Binary(a) => a.as_bytes(),
            Args::SelectRows(a) => a.as_bytes(),
            Args::Rope(a) => a.as_bytes(),
            Args::Kv(a) => a.as_bytes(),
            Args::Quantize(a) => a.as_bytes(),
            Args::Matvec(a) => a.as_bytes(),
        }
    }

    /// The step buffer's address, in every struct.
    fn step_mut(&mut self) -> &mut ConstPtr<u32> {
        match self {
            Args::Embed(a) => &mut a.step,
            Args::RmsNorm(a) => &mut a.step,
            Args::Matmul(a) => &mut a.step,
            Args::Binary(a) => &mut a.step,
            Args::SelectRows(a) => &mut a.step,
            Args::Rope(a) => &mut a.step,
            Args::Kv(a) => &mut a.step,
            Args::Quantize(a) => &mut a.step,
            Args::Matvec(a) => &mut a.step,
        }
    }
}

/// One kernel call of a launch: the variant (index into [`Lowered::variants`]) and its
/// arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Call {
    pub variant: usize,
    pub args: Args,
}

/// A plan lowered to calls.
#[derive(Clone, Debug, PartialEq)]
pub struct Lowered {
    /// The variants the plan uses, each compiled once.
    pub variants: Vec<Variant>,
    /// Per launch of the plan, its calls in order.
    pub launches: Vec<Vec<Call>>,
}

impl Lowered {
    /// Point every call at a new step buffer (it grew).
    pub fn set_step(&mut self, step: u64) {
        for c in self.launches.iter_mut().flatten() {
            *c.args.step_mut() = ConstPtr::new(step);
        }
    }
}

/// The step header word a kernel reads its row count from (prelude.cuh: STEP_N_TOKENS,
/// STEP_N_OUTPUTS).
pub fn rows_sel(rows: Rows) -> u32 {
    match rows {
        Rows::Tokens => 0,
        Rows::Outputs => 1,
    }
}

/// Whether the CUDA kernels run `op` with the weights it names in `graph` (the Backend
/// trait's `supports`: unfused ops stay when a fused one is refused): a kernel for the
/// op, matrices of a type with a `.cuh` and of whole units of 8 columns (an embedding of
/// plain floats may end inside one) and under 4 GiB each, gate and up of one type,
/// attention heads of at most 256 values.
pub fn supports(op: &Op, graph: &Graph) -> bool {
    let embed = matches!(op, Op::Embed { .. });
    let matrices_ok = op.matrices().iter().all(|&w| {
        graph.weight(w).is_some_and(|w| {
            WEIGHT_DTYPES.contains(&w.dtype)
                && (w.cols % 8 == 0 || (embed && !w.dtype.is_quantized()))
                && stored_bytes(w, true).is_some_and(|b| b <= MAX_MATRIX_BYTES)
        })
    });
    let dtype = |w: &WeightId| graph.weight(*w).map(|w| w.dtype);
    matrices_ok
        && match op {
            Op::Embed { .. }
            | Op::RmsNorm { .. }
            | Op::MatMul { .. }
            | Op::RmsNormMatMul { .. }
            | Op::MatMulAdd { .. }
            | Op::Add
            | Op::SwiGlu
            | Op::SelectRows
            | Op::Rope { .. }
            | Op::AddBias { .. }
            | Op::HeadRmsNorm { .. }
            | Op::Scale { .. }
            | Op::GeGlu
            | Op::RmsNormAdd { .. } => true,
            Op::MatMulSwiGlu { gate, up }
            | Op::RmsNormMatMulSwiGlu { gate, up, .. }
            | Op::MatMulGeGlu { gate, up }
            | Op::RmsNormMatMulGeGlu { gate, up, .. } => dtype(gate) == dtype(up),
            Op::Attention { attention }
            | Op::KvWrite { attention }
            | Op::RopeKvWrite { attention, .. } => attention_ok(attention),
            _ => false,
        }
}

fn attention_ok(a: &AttentionParams) -> bool {
    a.head_dim.is_multiple_of(4)
        && a.head_dim <= 256
        && a.n_kv_heads > 0
        && a.n_heads.is_multiple_of(a.n_kv_heads)
        && a.scale.is_finite()
}

/// Bytes of the partial buffer the decode attention of `plan` needs (0 without
/// attention).
pub fn partial_bytes(plan: &Plan) -> u64 {
    plan.launches
        .iter()
        .filter_map(|l| match &l.op {
            Op::Attention { attention: a } => Some(partial_bytes_max(&AttentionShape {
                n_heads: a.n_heads as u32,
                n_kv_heads: a.n_kv_heads.max(1) as u32,
                head_dim: a.head_dim as u32,
                value_bytes: 2,
            })),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Rows of the q8_1 scratch: the plan's largest step (the int8 tensor-core matmul reads
/// it for steps of more than 32 rows, and the matvec covers steps of any length in
/// 32-token tiles where no tensor cores take them).
pub fn q8_1_rows(plan: &Plan) -> u32 {
    plan.max_tokens.max(plan.max_outputs).max(1) as u32
}

/// Bytes of the q8_1 scratch of `plan`: [`q8_1_rows`] rows of the widest input of a
/// matmul of packed weights (16 when none, so that the buffer exists).
pub fn q8_1_bytes(plan: &Plan) -> u64 {
    let k = plan
        .launches
        .iter()
        .filter(|l| !matches!(l.op, Op::Embed { .. }))
        .flat_map(|l| l.op.matrices())
        .filter_map(|w| plan.graph.weight(w))
        .filter(|w| crate::repack::is_packed(w.dtype))
        .map(|w| w.cols as u32)
        .max();
    k.map_or(16, |k| q8_1_planes(q8_1_rows(plan), k).bytes)
}

/// Lower `plan` (its weights at `layout`, KV pages of `kv`) onto buffers at `buffers`.
pub fn lower(
    plan: &Plan,
    layout: &WeightLayout,
    kv: &KvLayout,
    buffers: Buffers,
) -> Result<Lowered, LowerError> {
    if u64::from(u32::MAX) < kv.page_bytes() as u64 {
        return Err(unsupported(format!(
            "KV pages of {} bytes (offsets within a page are 32-bit)",
            kv.page_bytes()
        )));
    }
    if plan.max_tokens > MAX_GRID_YZ as usize {
        return Err(unsupported(format!(
            "steps of {} tokens (a grid's y holds {MAX_GRID_YZ} blocks)",
            plan.max_tokens
        )));
    }
    let mut l = Lowerer {
        plan,
        layout,
        kv,
        buffers,
        ropes: kiln_gpu_host::step::rope_geometries(plan),
        q8_1_rows: q8_1_rows(plan),
        variants: Vec::new(),
    };
    let mut launches = Vec::with_capacity(plan.launches.len());
    for launch in &plan.launches {
        if !supports(&launch.op, &plan.graph) {
            return Err(unsupported(format!(
                "{} ({}): no CUDA kernel",
                launch.kernel, launch.op
            )));
        }
        launches.push(l.launch(launch)?);
    }
    Ok(Lowered {
        variants: l.variants,
        launches,
    })
}
