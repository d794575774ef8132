//! The lowering of each op of the plan to its calls (the one `match` on `kiln_ir::Op`).

use kiln_ir::graph::Rows;
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{AttentionParams, DType, Op, Plan, RopeParams, ValueId, WeightId};

use super::{Args, Buffers, Call, LowerError, rows_sel, unsupported};
use crate::args::{
    BinaryArgs, ConstPtr, EmbedArgs, KvArgs, MatmulArgs, Ptr, RmsNormArgs, RopeArgs, SelectRowsArgs,
};
use crate::variant::{Kernel, Variant};
use crate::weights::WeightLayout;

pub(super) struct Lowerer<'a> {
    pub(super) plan: &'a Plan,
    pub(super) layout: &'a WeightLayout,
    pub(super) kv: &'a KvLayout,
    pub(super) buffers: Buffers,
    pub(super) ropes: Vec<RopeParams>,
    pub(super) variants: Vec<Variant>,
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

    pub(super) fn launch(&mut self, launch: &kiln_ir::Launch) -> Result<Vec<Call>, LowerError> {
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
