//! Lowering one launch of a plan to its dispatches: the params words of each op, the
//! weights window each dispatch binds, and how many workgroups it needs.

use kiln_ir::graph::Rows;
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{AttentionParams, DType, Op, Plan, RopeParams, ValueId, WeightId};

use super::*;
use crate::sources::Variant;

mod gemm;
use crate::weights::WeightLayout;
use crate::{Capabilities, KernelError};
pub use gemm::{GEMM_MIN_ROWS, GEMM_ROWS};

mod matvec_q8;
pub(super) use matvec_q8::matvec_scratch_bytes;

/// Builds the dispatches of each launch, collecting pipelines and params blocks.
pub(super) struct Builder<'a> {
    pub(super) plan: &'a Plan,
    pub(super) kv: &'a KvLayout,
    pub(super) caps: &'a Capabilities,
    pub(super) weights: &'a WeightLayout,
    /// Bytes of a window of each weights buffer.
    pub(super) windows: &'a [u64],
    /// The weights window of the dispatch being built.
    pub(super) window: Window,
    /// Arena word where the int8 matvec's quantized activations lie.
    pub(super) q8_scratch: u32,
    pub(super) ropes: &'a [RopeParams],
    pub(super) pipelines: Vec<Pipeline>,
    pub(super) params: Vec<u8>,
}

use Resource::{Arena, Kv, Params, Step, Weights};

/// A window of one weights buffer: `bytes` from `base` (in the address space).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Window {
    buffer: usize,
    base: u64,
    bytes: u64,
}

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
        let row_bytes = crate::repack::row_bytes(wt.dtype, wt.cols as u64).unwrap_or(0) as u32;
        (wt.dtype, wt.rows as u32, wt.cols as u32, row_bytes)
    }

    /// The byte offset in the window of row `r` of matrix `w`.
    fn row_at(&self, w: WeightId, r: u32) -> u32 {
        let wt = &self.plan.graph.weights[w.0 as usize];
        let row_bytes = crate::repack::row_bytes(wt.dtype, wt.cols as u64).unwrap_or(0);
        (self.weights.offsets[w.0 as usize] + u64::from(r) * row_bytes - self.window.base) as u32
    }

    /// A vector's word index in the window.
    fn vector(&self, w: WeightId) -> u32 {
        ((self.weights.offsets[w.0 as usize] - self.window.base) / 4) as u32
    }

    /// The byte range of weight `w` in the buffer: `rows` rows of a matrix (with the
    /// slack its loads may touch), or a whole vector.
    fn range(&self, w: WeightId, rows: Option<(u32, u32)>) -> (u64, u64) {
        let wt = &self.plan.graph.weights[w.0 as usize];
        let at = self.weights.offsets[w.0 as usize];
        if !self.weights.matrix[w.0 as usize] {
            return (at, at + 4 * (wt.rows * wt.cols) as u64);
        }
        let row_bytes = crate::repack::row_bytes(wt.dtype, wt.cols as u64).unwrap_or(0);
        let (r0, r1) = rows.unwrap_or((0, wt.rows as u32));
        (
            at + u64::from(r0) * row_bytes,
            at + u64::from(r1) * row_bytes + ROW_SLACK,
        )
    }

    /// Chooses the buffer and the base of the window that holds every range of the next
    /// dispatch.
    fn place(&mut self, ranges: &[(u64, u64)]) -> Result<(), KernelError> {
        let lo = ranges.iter().map(|r| r.0).min().unwrap_or(0);
        let hi = ranges.iter().map(|r| r.1).max().unwrap_or(0);
        let buffer = self.weights.buffer_of(lo);
        let b = self.weights.buffers[buffer];
        if ranges.iter().any(|r| self.weights.buffer_of(r.0) != buffer) {
            return Err(unsupported(format!(
                "a kernel reading weights in two buffers (at {lo} and {hi})"
            )));
        }
        let bytes = self.windows[buffer];
        let base = (lo / WINDOW_ALIGN * WINDOW_ALIGN).min(b.end() - bytes);
        self.window = Window {
            buffer,
            base,
            bytes,
        };
        if hi.min(b.end()) > base + bytes {
            return Err(unsupported(format!(
                "a kernel reading {} bytes of weights (a binding holds {bytes})",
                hi - lo,
            )));
        }
        Ok(())
    }

    /// Rows of matrix `w` (of `row_bytes`) that one window of its buffer holds.
    fn rows_per_window(&self, w: WeightId, row_bytes: u32) -> u32 {
        let buffer = self.weights.buffer_of(self.weights.offsets[w.0 as usize]);
        let usable = self.windows[buffer].saturating_sub(WINDOW_ALIGN + ROW_SLACK);
        (usable / u64::from(row_bytes.max(1))).clamp(1, u64::from(u32::MAX)) as u32
    }

    /// The index of `op`'s variant for `weight` in the pipelines, added when new.
    fn pipeline(&mut self, op: &'static str, weight: Option<DType>) -> usize {
        let kv = Variant::takes_kv(op).then(|| self.kv.dtype());
        let f16 = self.caps.shader_f16 && Variant::has_f16(op, weight);
        let variant = Variant {
            op,
            weight,
            kv,
            subgroups: self.caps.subgroups && Variant::reduces(op),
            f16,
            coop: self.caps.gemm_coop.filter(|_| f16),
        };
        match self.pipelines.iter().position(|p| p.variant == variant) {
            Some(i) => i,
            None => {
                self.pipelines.push(Pipeline {
                    variant,
                    name: variant.name(),
                    source: variant.source().expect("every op has a source"),
                });
                self.pipelines.len() - 1
            }
        }
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
        let pipeline = self.pipeline(op, weight);
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
            weights_buffer: self.window.buffer,
            weights_base: self.window.base,
            weights_offset: self.window.base - self.weights.buffers[self.window.buffer].start,
            weights_window: self.window.bytes,
            grid,
            barrier: false,
        }
    }

    /// argmax.wgsl over the plan's output into `ids`, after everything its launch wrote
    /// (the LM head's dispatches: a barrier before it).
    pub(super) fn argmax(&mut self, output: &Output, ids: &Output) -> Dispatch {
        let words = vec![
            header_word(output.rows),
            output.cols as u32,
            (output.offset / 4) as u32,
            (ids.offset / 4) as u32,
        ];
        let grid = Grid::PerRow { rows: output.rows };
        let mut d = self.dispatch("argmax", None, words, vec![Params, Arena, Step], grid);
        d.barrier = true;
        d
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
        let n = self.plan.graph.weights[w.0 as usize].rows as u32;
        let row_bytes = self.weight(w).3;
        let chunk = if w2.is_none() && norm.is_none() {
            self.rows_per_window(w, row_bytes)
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
            let grid = Grid::Matmul {
                rows,
                n: r1 - r0,
                max_rows: u32::MAX,
            };
            let matvec = self.dispatch(
                op,
                Some(dtype),
                words,
                vec![Params, Arena, Weights, Step],
                grid,
            );
            dispatches.extend(self.with_gemm(matvec, dtype));
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
        self.kv
            .mismatch(a)
            .map_or(Ok(()), |why| Err(unsupported(why)))
    }

    pub(super) fn launch(
        &mut self,
        launch: &kiln_ir::Launch,
    ) -> Result<Vec<Dispatch>, KernelError> {
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
        self.place(&vectors)?;
        let dispatches = match &launch.op {
            Op::Embed { table } => {
                // Chunks of the table's rows, each in its window; a token is written by
                // the chunk that holds its row.
                let (_, n_rows, d, row_bytes) = self.weight(*table);
                let chunk = self.rows_per_window(*table, row_bytes);
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
            Op::AddBias { bias } => {
                let cols = self.cols(out);
                let words = vec![
                    sel(self, out),
                    cols,
                    self.at(ins[0]),
                    self.at(out),
                    self.vector(*bias),
                ];
                let grid = Grid::Elementwise {
                    rows: self.rows(out),
                    cols,
                };
                vec![self.dispatch(
                    "add_bias",
                    None,
                    words,
                    vec![Params, Arena, Weights, Step],
                    grid,
                )]
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
        };
        // Steps of a few rows take the int8 matvec where the launch has one.
        self.with_matvec_q8(launch, dispatches)
    }
}
