//! The lowering of each op of the plan to its calls (the one `match` on `kiln_ir::Op`).

use kiln_ir::graph::Rows;
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{AttentionParams, DType, Op, Plan, RopeParams, ValueId, WeightId};

use super::{Args, Buffers, Call, LowerError, rows_sel, unsupported};
use crate::args::{
    BinaryArgs, ConstPtr, EmbedArgs, KvArgs, MatmulArgs, Ptr, RmsNormArgs, RopeArgs, SelectRowsArgs,
};
use crate::matvec::{MatvecArgs, QuantizeArgs, q8_1_planes};
use crate::repack;
use crate::variant::{Kernel, Variant};
use crate::weights::WeightLayout;

pub(super) struct Lowerer<'a> {
    pub(super) plan: &'a Plan,
    pub(super) layout: &'a WeightLayout,
    pub(super) kv: &'a KvLayout,
    pub(super) buffers: Buffers,
    pub(super) ropes: Vec<RopeParams>,
    /// Rows of the q8_1 scratch (super::q8_1_rows).
    pub(super) q8_1_rows: u32,
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

    /// A matrix: dtype, rows, cols, bytes of a row (of the quant plane for a packed
    /// weight, crate::repack), and its address.
    fn matrix(&self, w: WeightId) -> (DType, u32, u32, u32, ConstPtr<u8>) {
        let wt = &self.plan.graph.weights[w.0 as usize];
        let row_bytes = match repack::layout(wt.dtype, wt.rows, wt.cols) {
            Ok(l) => l.quant_row_bytes() as u32,
            Err(_) => wt.dtype.bytes_for(wt.cols as u64).unwrap_or(0) as u32,
        };
        let at = self.buffers.weights + self.layout.offsets[w.0 as usize];
        (
            wt.dtype,
            wt.rows as u32,
            wt.cols as u32,
            row_bytes,
            ConstPtr::new(at),
        )
    }

    /// The (quant, scale) planes of a packed weight.
    fn planes(&self, w: WeightId) -> Result<(ConstPtr<u8>, ConstPtr<u8>), LowerError> {
        let wt = &self.plan.graph.weights[w.0 as usize];
        let l = repack::layout(wt.dtype, wt.rows, wt.cols).map_err(|e| LowerError::Weight {
            name: wt.name.clone(),
            reason: e.to_string(),
        })?;
        let at = self.matrix(w).4;
        Ok((at, ConstPtr::new(at.0 + l.scale_offset as u64)))
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

    /// A matmul-family launch: x (rows, k) times each (weight, up weight, output).
    ///
    /// The one place a matmul is lowered. Float weights: one call per weight, whose
    /// launch (matrix-vector tiles, [`geometry`]) reads them in place.
    /// Packed weights (crate::repack): one quantization of x (RMSNorm folded) into the
    /// q8_1 scratch, then per weight the int8 tensor-core call of crate::mmq (steps of
    /// more than 32 rows) and the dp4a matvec (the other steps), both on that q8_1;
    /// geometry launches one of the two.
    fn matmul(
        &mut self,
        kernel: Kernel,
        x: ValueId,
        outs: &[(WeightId, Option<WeightId>, ValueId)],
        res: Option<ValueId>,
        norm: Option<(WeightId, f32)>,
    ) -> Result<Vec<Call>, LowerError> {
        let mut calls = Vec::new();
        let packed = |l: &Self, w| repack::is_packed(l.matrix(w).0);
        let geglu = matches!(kernel, Kernel::MatMulGeGlu | Kernel::RmsNormMatMulGeGlu);
        if let Some(&(w, _, out)) = outs.iter().find(|o| packed(self, o.0)) {
            calls.push(self.quantize(x, out, self.matrix(w).2, norm));
        }
        for &(w, w2, out) in outs {
            if packed(self, w) {
                let dtype = Some(self.matrix(w).0);
                let args = self.matvec_args(out, w, w2, res, geglu)?;
                calls.push(self.call(Kernel::Mmq, dtype, Args::Matvec(args)));
                calls.push(self.call(Kernel::Matvec, dtype, Args::Matvec(args)));
            } else {
                calls.push(self.matmul_call(kernel, x, out, w, w2, res, norm));
            }
        }
        Ok(calls)
    }

    /// The q8_1 planes of the scratch for inputs of `k` columns: (quants, (f16 d, int16 Σq)).
    fn scratch(&self, k: u32) -> (u64, u64) {
        let at = self.buffers.q8_1;
        (at, at + q8_1_planes(self.q8_1_rows, k).scales_offset)
    }

    /// The quantization of x's `k` columns (normalized first when `norm`).
    fn quantize(
        &mut self,
        x: ValueId,
        out: ValueId,
        k: u32,
        norm: Option<(WeightId, f32)>,
    ) -> Call {
        let (q, ds) = self.scratch(k);
        let args = QuantizeArgs {
            x: self.input(x),
            norm: norm.map_or_else(ConstPtr::default, |(g, _)| self.vector(g)),
            step: self.step(),
            q: Ptr::new(q),
            ds: Ptr::new(ds),
            k,
            x_stride: self.cols(x),
            rows_sel: rows_sel(self.rows(out)),
            eps: norm.map_or(0.0, |(_, eps)| eps),
        };
        self.call(Kernel::Quantize, None, Args::Quantize(args))
    }

    /// The arguments of the matvec (and int8 tensor-core matmul) of packed weight `w`
    /// (and up weight `w2`) into `out`; its epilogue is GeGLU when `w2q` and `gelu` are
    /// set, SwiGLU when `w2q` is, Add when `res` is (geometry reads them so).
    fn matvec_args(
        &self,
        out: ValueId,
        w: WeightId,
        w2: Option<WeightId>,
        res: Option<ValueId>,
        gelu: bool,
    ) -> Result<MatvecArgs, LowerError> {
        let (_, n, k, _, _) = self.matrix(w);
        let (wq, ws) = self.planes(w)?;
        let (w2q, w2s) = match w2 {
            Some(w2) => self.planes(w2)?,
            None => Default::default(),
        };
        let (q, ds) = self.scratch(k);
        let args = MatvecArgs {
            wq,
            ws,
            w2q,
            w2s,
            q: ConstPtr::new(q),
            ds: ConstPtr::new(ds),
            res: res.map_or_else(ConstPtr::default, |r| self.input(r)),
            out: self.output(out),
            step: self.step(),
            n,
            k,
            out_stride: self.cols(out),
            rows_sel: rows_sel(self.rows(out)),
            gelu: u32::from(gelu && w2.is_some()),
            pad: 0,
        };
        Ok(args)
    }

    /// A call of the matmul kernel file of `kernel` (matmul_core.cuh) on F32/F16/BF16
    /// weight `w`.
    #[allow(clippy::too_many_arguments)]
    fn matmul_call(
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
        if let Some(why) = kv.mismatch(a) {
            return Err(unsupported(why));
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
            window: word(a.window),
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
            Op::RmsNorm { weight, eps } | Op::RmsNormAdd { weight, eps } => {
                let (kernel, res) = match launch.op {
                    Op::RmsNormAdd { .. } => (Kernel::RmsNormAdd, self.input(ins[1])),
                    _ => (Kernel::RmsNorm, ConstPtr::default()),
                };
                let args = RmsNormArgs {
                    x: self.input(ins[0]),
                    out: self.output(out),
                    weight: self.vector(*weight),
                    res,
                    step: self.step(),
                    rows_sel: rows_sel(self.rows(out)),
                    d: self.cols(out),
                    eps: *eps,
                    heads: 1,
                };
                vec![self.call(kernel, None, Args::RmsNorm(args))]
            }
            Op::HeadRmsNorm {
                weight,
                eps,
                head_dim,
            } => {
                let head_dim = *head_dim as u32;
                let args = RmsNormArgs {
                    x: self.input(ins[0]),
                    out: self.output(out),
                    weight: self.vector(*weight),
                    res: ConstPtr::default(),
                    step: self.step(),
                    rows_sel: rows_sel(self.rows(out)),
                    d: head_dim,
                    eps: *eps,
                    heads: self.cols(out) / head_dim,
                };
                vec![self.call(Kernel::HeadRmsNorm, None, Args::RmsNorm(args))]
            }
            Op::MatMul { weights } => {
                let outs: Vec<_> = weights
                    .iter()
                    .zip(outs)
                    .map(|(&w, &o)| (w, None, o))
                    .collect();
                self.matmul(Kernel::MatMul, ins[0], &outs, None, None)?
            }
            Op::RmsNormMatMul { norm, eps, weights } => {
                let outs: Vec<_> = weights
                    .iter()
                    .zip(outs)
                    .map(|(&w, &o)| (w, None, o))
                    .collect();
                let norm = Some((*norm, *eps));
                self.matmul(Kernel::RmsNormMatMul, ins[0], &outs, None, norm)?
            }
            Op::MatMulSwiGlu { gate, up } | Op::MatMulGeGlu { gate, up } => {
                let kernel = match launch.op {
                    Op::MatMulSwiGlu { .. } => Kernel::MatMulSwiGlu,
                    _ => Kernel::MatMulGeGlu,
                };
                let outs = [(*gate, Some(*up), out)];
                self.matmul(kernel, ins[0], &outs, None, None)?
            }
            Op::RmsNormMatMulSwiGlu {
                norm,
                eps,
                gate,
                up,
            }
            | Op::RmsNormMatMulGeGlu {
                norm,
                eps,
                gate,
                up,
            } => {
                let kernel = match launch.op {
                    Op::RmsNormMatMulSwiGlu { .. } => Kernel::RmsNormMatMulSwiGlu,
                    _ => Kernel::RmsNormMatMulGeGlu,
                };
                let outs = [(*gate, Some(*up), out)];
                let norm = Some((*norm, *eps));
                self.matmul(kernel, ins[0], &outs, None, norm)?
            }
            Op::MatMulAdd { weight } => {
                let outs = [(*weight, None, out)];
                self.matmul(Kernel::MatMulAdd, ins[0], &outs, Some(ins[1]), None)?
            }
            Op::Add | Op::SwiGlu | Op::GeGlu | Op::AddBias { .. } | Op::Scale { .. } => {
                let (kernel, b, factor) = match &launch.op {
                    Op::Add => (Kernel::Add, self.input(ins[1]), 0.0),
                    Op::SwiGlu => (Kernel::SwiGlu, self.input(ins[1]), 0.0),
                    Op::GeGlu => (Kernel::GeGlu, self.input(ins[1]), 0.0),
                    Op::AddBias { bias } => (Kernel::AddBias, self.vector(*bias), 0.0),
                    Op::Scale { factor } => (Kernel::Scale, ConstPtr::default(), *factor),
                    op => return Err(unsupported(format!("{op}: not elementwise"))),
                };
                let args = BinaryArgs {
                    a: self.input(ins[0]),
                    b,
                    out: self.output(out),
                    step: self.step(),
                    rows_sel: rows_sel(self.rows(out)),
                    cols: self.cols(out),
                    factor,
                    pad: 0,
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
