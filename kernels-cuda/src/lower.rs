//! A plan lowered to CUDA launches: for each launch of the plan, the kernel calls it
//! takes, each a variant (which module) and its typed arguments ([`Args`]), device
//! addresses included. The lowering matches on `kiln_ir::Op` once, at load; executing a
//! step is then one loop over the calls ([`geometry`] gives each call's launches for the
//! step's shape). The arguments hold for every step: the rows of a step come from the
//! step buffer on the device, so they are rebuilt only when a buffer moves
//! ([`Lowered::set_step`]) and CUDA graphs replay them.

use kiln_ir::graph::{Graph, Rows};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{AttentionParams, DType, Op, Plan, RopeMode, RopeParams, ValueId, WeightId};

use crate::args::{
    BinaryArgs, ConstPtr, EmbedArgs, KernelArgs, KvArgs, MatmulArgs, Ptr, RmsNormArgs, RopeArgs,
    SelectRowsArgs,
};
use crate::launch::{AttentionShape, MAX_GRID_YZ, partial_bytes_max};
use crate::sources::WEIGHT_DTYPES;
use crate::variant::{Kernel, Variant};
use crate::weights::{MAX_MATRIX_BYTES, WeightLayout};
use kiln_gpu_host::weights::stored_bytes;

pub mod geometry;

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
/// normal RoPE, attention without a window or a second KV group.
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
    let rope_ok = op.rope().is_none_or(|r| r.mode == RopeMode::Normal);
    matrices_ok
        && rope_ok
        && match op {
            Op::Embed { .. }
            | Op::RmsNorm { .. }
            | Op::MatMul { .. }
            | Op::RmsNormMatMul { .. }
            | Op::MatMulAdd { .. }
            | Op::Add
            | Op::SwiGlu
            | Op::SelectRows
            | Op::Rope { .. } => true,
            Op::MatMulSwiGlu { gate, up } | Op::RmsNormMatMulSwiGlu { gate, up, .. } => {
                dtype(gate) == dtype(up)
            }
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
        && a.window.is_none()
        && a.kv_group == 0
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

struct Lowerer<'a> {
    plan: &'a Plan,
    layout: &'a WeightLayout,
    kv: &'a KvLayout,
    buffers: Buffers,
    ropes: Vec<RopeParams>,
    variants: Vec<Variant>,
}

impl Lowerer<'_> {
    /// The arena address of a value.
    fn at(&self, v: ValueId) -> u64 {
        self.buffers.arena + self.plan.offsets[v.0 as usize].unwrap_or(0) as u64
    }

    fn input(&self, v: ValueId) -> ConstPtr<f32> {
        ConstPtr::new(self.at(v))
    }

    fn output(&self, v: ValueId) -> Ptr<f32> {
        Ptr::new(self.at(v))
    }

    fn rows(&self, v: ValueId) -> Rows {
        self.plan.graph.values[v.0 as usize].rows()
    }

    fn cols(&self, v: ValueId) -> u32 {
        self.plan.graph.values[v.0 as usize].cols() as u32
    }

    fn step(&self) -> ConstPtr<u32> {
        ConstPtr::new(self.buffers.step)
    }

    /// A matrix: dtype, rows, cols, bytes of a row, and its address.
    fn matrix(&self, w: WeightId) -> (DType, u32, u32, u32, ConstPtr<u8>) {
        let wt = &self.plan.graph.weights[w.0 as usize];
        let row_bytes = wt.dtype.bytes_for(wt.cols as u64).unwrap_or(0) as u32;
        let at = self.buffers.weights + self.layout.offsets[w.0 as usize];
        (
            wt.dtype,
            wt.rows as u32,
            wt.cols as u32,
            row_bytes,
            ConstPtr::new(at),
        )
    }

    /// A vector (decoded to f32).
    fn vector(&self, w: WeightId) -> ConstPtr<f32> {
        ConstPtr::new(self.buffers.weights + self.layout.offsets[w.0 as usize])
    }

    fn rope_index(&self, rope: &RopeParams) -> u32 {
        self.ropes.iter().position(|x| x == rope).unwrap_or(0) as u32
    }

    /// The index of `v` in the variants, added on first use.
    fn variant(&mut self, kernel: Kernel, weight: Option<DType>) -> usize {
        let kv = kernel.takes_kv().then(|| self.kv.dtype());
        let v = Variant { kernel, weight, kv };
        match self.variants.iter().position(|x| *x == v) {
            Some(i) => i,
            None => {
                self.variants.push(v);
                self.variants.len() - 1
            }
        }
    }

    fn call(&mut self, kernel: Kernel, weight: Option<DType>, args: Args) -> Call {
        Call {
            variant: self.variant(kernel, weight),
            args,
        }
    }

    /// A matmul-family call: x (rows, k) times weight `w` (and `w2`) into `out`.
    ///
    /// The one place a matmul is lowered: today one call whose launch (matrix-vector
    /// tiles or tensor cores, [`geometry`]) reads the GGUF blocks in place. A quantized
    /// matmul of a small step may become "quantize the activations + integer matvec"
    /// here (another variant, other args), without touching the rest of the lowering.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &mut self,
        kernel: Kernel,
        x: ValueId,
        out: ValueId,
        w: WeightId,
        w2: Option<WeightId>,
        res: Option<ValueId>,
        norm: Option<(WeightId, f32)>,
    ) -> Call {
        let (dtype, n, k, row_bytes, w_ptr) = self.matrix(w);
        let args = MatmulArgs {
            x: self.input(x),
            out: self.output(out),
            res: res.map_or_else(ConstPtr::default, |r| self.input(r)),
            w: w_ptr,
            w2: w2.map_or_else(ConstPtr::default, |w2| self.matrix(w2).4),
            norm: norm.map_or_else(ConstPtr::default, |(g, _)| self.vector(g)),
            step: self.step(),
            rows_sel: rows_sel(self.rows(out)),
            k,
            n,
            row_bytes,
            eps: norm.map_or(0.0, |(_, eps)| eps),
            pad: 0,
        };
        self.call(kernel, Some(dtype), Args::Matmul(args))
    }

    /// The arguments of the KV kernels (kv_common.cuh).
    fn kv_args(
        &self,
        a: &AttentionParams,
        [q, q_out, k, v]: [Option<ValueId>; 4],
        rope: Option<&RopeParams>,
    ) -> Result<KvArgs, LowerError> {
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
        let word = |x: Option<usize>| x.unwrap_or(0) as u32;
        Ok(KvArgs {
            q: q.map_or_else(ConstPtr::default, |v| self.input(v)),
            q_out: q_out.map_or_else(Ptr::default, |v| self.output(v)),
            k: k.map_or_else(ConstPtr::default, |v| self.input(v)),
            v: v.map_or_else(ConstPtr::default, |v| self.input(v)),
            kv: Ptr::new(self.buffers.kv),
            step: self.step(),
            partial: Ptr::new(self.buffers.partial),
            n_heads: a.n_heads as u32,
            n_kv_heads: a.n_kv_heads as u32,
            head_dim: a.head_dim as u32,
            page_size: kv.kv_page_size() as u32,
            page_bytes: kv.page_bytes() as u32,
            layer_base: word(kv.k_offset(a.kv_slot, 0, 0)),
            v_base: word(kv.v_offset(0, 0, 0)),
            ks_base: word(kv.k_scale_offset(0, 0, 0)),
            vs_base: word(kv.v_scale_offset(0, 0, 0)),
            scale: a.scale,
            kv_group: a.kv_group as u32,
            rope: rope.map_or(0, |r| self.rope_index(r)),
            splits: 1,
            pad: 0,
        })
    }

    fn launch(&mut self, launch: &kiln_ir::Launch) -> Result<Vec<Call>, LowerError> {
        let ins = &launch.inputs;
        let outs = &launch.outputs;
        // Every op has an output but KvWrite, which never reads this.
        let out = outs.first().copied().unwrap_or(ins[0]);
        Ok(match &launch.op {
            Op::Embed { table } => {
                let (dtype, n_rows, d, row_bytes, table) = self.matrix(*table);
                let args = EmbedArgs {
                    table,
                    out: self.output(out),
                    step: self.step(),
                    row_bytes,
                    d,
                    rows: n_rows,
                    pad: 0,
                };
                vec![self.call(Kernel::Embed, Some(dtype), Args::Embed(args))]
            }
            Op::RmsNorm { weight, eps } => {
                let args = RmsNormArgs {
                    x: self.input(ins[0]),
                    out: self.output(out),
                    weight: self.vector(*weight),
                    step: self.step(),
                    rows_sel: rows_sel(self.rows(out)),
                    d: self.cols(out),
                    eps: *eps,
                    pad: 0,
                };
                vec![self.call(Kernel::RmsNorm, None, Args::RmsNorm(args))]
            }
            Op::MatMul { weights } => weights
                .iter()
                .zip(outs)
                .map(|(&w, &o)| self.matmul(Kernel::MatMul, ins[0], o, w, None, None, None))
                .collect(),
            Op::RmsNormMatMul { norm, eps, weights } => weights
                .iter()
                .zip(outs)
                .map(|(&w, &o)| {
                    let norm = Some((*norm, *eps));
                    self.matmul(Kernel::RmsNormMatMul, ins[0], o, w, None, None, norm)
                })
                .collect(),
            Op::MatMulSwiGlu { gate, up } => vec![self.matmul(
                Kernel::MatMulSwiGlu,
                ins[0],
                out,
                *gate,
                Some(*up),
                None,
                None,
            )],
            Op::RmsNormMatMulSwiGlu {
                norm,
                eps,
                gate,
                up,
            } => vec![self.matmul(
                Kernel::RmsNormMatMulSwiGlu,
                ins[0],
                out,
                *gate,
                Some(*up),
                None,
                Some((*norm, *eps)),
            )],
            Op::MatMulAdd { weight } => vec![self.matmul(
                Kernel::MatMulAdd,
                ins[0],
                out,
                *weight,
                None,
                Some(ins[1]),
                None,
            )],
            Op::Add | Op::SwiGlu => {
                let kernel = if matches!(launch.op, Op::Add) {
                    Kernel::Add
                } else {
                    Kernel::SwiGlu
                };
                let args = BinaryArgs {
                    a: self.input(ins[0]),
                    b: self.input(ins[1]),
                    out: self.output(out),
                    step: self.step(),
                    rows_sel: rows_sel(self.rows(out)),
                    cols: self.cols(out),
                };
                vec![self.call(kernel, None, Args::Binary(args))]
            }
            Op::SelectRows => {
                let args = SelectRowsArgs {
                    x: self.input(ins[0]),
                    out: self.output(out),
                    step: self.step(),
                    cols: self.cols(out),
                    pad: 0,
                };
                vec![self.call(Kernel::SelectRows, None, Args::SelectRows(args))]
            }
            Op::Rope { rope } => {
                let args = RopeArgs {
                    x: self.input(ins[0]),
                    out: self.output(out),
                    step: self.step(),
                    width: self.cols(out),
                    head_dim: rope.head_dim as u32,
                    table: self.rope_index(rope),
                    pad: 0,
                };
                vec![self.call(Kernel::Rope, None, Args::Rope(args))]
            }
            Op::KvWrite { attention: a } => {
                let args = self.kv_args(a, [None, None, Some(ins[0]), Some(ins[1])], None)?;
                vec![self.call(Kernel::KvWrite, None, Args::Kv(args))]
            }
            Op::RopeKvWrite { attention: a, rope } => {
                let qkv = [Some(ins[0]), Some(out), Some(ins[1]), Some(ins[2])];
                let args = self.kv_args(a, qkv, Some(rope))?;
                vec![self.call(Kernel::RopeKvWrite, None, Args::Kv(args))]
            }
            Op::Attention { attention: a } => {
                let args = self.kv_args(a, [Some(ins[0]), Some(out), None, None], None)?;
                vec![self.call(Kernel::Attention, None, Args::Kv(args))]
            }
            op => return Err(unsupported(format!("{op}: no CUDA kernel"))),
        })
    }
}
