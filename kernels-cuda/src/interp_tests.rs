//! The plumbing of the decode path proven on the host: a small plan of packed weights is
//! lowered, its weights laid into a byte array standing for device memory through the
//! backend's own upload code (WeightLayout::device_bytes), and the calls the lowering
//! emitted for its matmuls are interpreted against that array: quantize by the twin of
//! quantize_q8_1, matvec by matvec::twin, every pointer, stride, row count and epilogue
//! read from the emitted argument structs. The results must match the CPU reference
//! (ir dequantize + f32 dots) within the q8_1 error. Odd shapes: n and k multiples of 32,
//! not of 128; steps of 1, 3 and 33 rows (33: the 32-token tiles without tensor cores).

use kiln_ir::graph::{Graph, Rows, ValueType};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::quant;
use kiln_ir::{DType, Op, Plan, ValueId};

use crate::lower::geometry::{StepGeometry, epilogue};
use crate::lower::{Args, Buffers, lower, q8_1_bytes, supports};
use crate::matvec::twin::{self, Q8_1Rows};
use crate::matvec::{self, Epilogue};
use crate::repack;
use crate::variant::{Entry, Kernel};
use crate::weights::WeightLayout;

const D: usize = 96;
const A: usize = 160;
const FF: usize = 224;
const VOCAB: usize = 53;
const EPS: f32 = 1e-5;

struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = self.unit() * (1.0 + (i / 32 % 5) as f32);
                if v == 0.0 { 0.5 } else { v }
            })
            .collect()
    }
}

/// x → RmsNormMatMul [a (Q4_0), b (Q8_0)] → y = x + a·Wc (Q4_1, MatMulAdd)
/// → RmsNormMatMulSwiGlu (Q4_0) h → (output rows) out = h·Wd (Q8_0, MatMul).
fn graph() -> (Graph, [ValueId; 6]) {
    let mut g = Graph::new(0);
    let act = |cols| ValueType::F32 {
        rows: Rows::Tokens,
        cols,
    };
    let ids = g.new_value(ValueType::TokenIds);
    g.input = Some(ids);
    let table = g.add_weight("token_embd", DType::Q8_0, VOCAB, D);
    let x = g.push(Op::Embed { table }, &[ids], &[act(D)], None)[0];
    let norm = g.add_weight("n1", DType::F32, 1, D);
    let wa = g.add_weight("wa", DType::Q4_0, A, D);
    let wb = g.add_weight("wb", DType::Q8_0, D, D);
    let ab = g.push(
        Op::RmsNormMatMul {
            norm,
            eps: EPS,
            weights: vec![wa, wb],
        },
        &[x],
        &[act(A), act(D)],
        None,
    );
    let wc = g.add_weight("wc", DType::Q4_1, D, A);
    let y = g.push(Op::MatMulAdd { weight: wc }, &[ab[0], x], &[act(D)], None)[0];
    let norm2 = g.add_weight("n2", DType::F32, 1, D);
    let gate = g.add_weight("gate", DType::Q4_0, FF, D);
    let up = g.add_weight("up", DType::Q4_0, FF, D);
    let h = g.push(
        Op::RmsNormMatMulSwiGlu {
            norm: norm2,
            eps: EPS,
            gate,
            up,
        },
        &[y],
        &[act(FF)],
        None,
    )[0];
    let outs = |cols| ValueType::F32 {
        rows: Rows::Outputs,
        cols,
    };
    let hs = g.push(Op::SelectRows, &[h], &[outs(FF)], None)[0];
    let wd = g.add_weight("wd", DType::Q8_0, D, FF);
    let out = g.push(Op::MatMul { weights: vec![wd] }, &[hs], &[outs(D)], None)[0];
    g.output = Some(out);
    (g, [x, ab[0], ab[1], y, h, out])
}

/// Device memory: a byte array; addresses are offsets into it.
struct Mem(Vec<u8>);

impl Mem {
    fn f32s(&self, at: u64, n: usize) -> Vec<f32> {
        self.0[at as usize..][..4 * n]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
    fn put_f32s(&mut self, at: u64, v: &[f32]) {
        for (i, x) in v.iter().enumerate() {
            self.0[at as usize + 4 * i..][..4].copy_from_slice(&x.to_le_bytes());
        }
    }
    fn bytes(&self, at: u64, n: usize) -> &[u8] {
        &self.0[at as usize..][..n]
    }
    fn u32_at(&self, at: u64) -> u32 {
        u32::from_le_bytes(self.bytes(at, 4).try_into().unwrap())
    }
}

/// A packed weight rebuilt from its planes as the args point at them (the high plane,
/// where the type has one, right after the quant plane, as the kernels find it).
fn planes(mem: &Mem, dtype: DType, n: u32, k: u32, wq: u64, ws: u64) -> Vec<u8> {
    let l = repack::layout(dtype, n as usize, k as usize).unwrap();
    let mut w = vec![0u8; l.bytes];
    let q = l.rows * l.quant_row_bytes();
    let h = l.high_plane_bytes();
    let s = l.scale_plane_bytes();
    w[..q].copy_from_slice(mem.bytes(wq, q));
    w[q..q + h].copy_from_slice(mem.bytes(wq + q as u64, h));
    w[l.scale_offset..l.scale_offset + s].copy_from_slice(mem.bytes(ws, s));
    w
}

/// Interpret the launches of one call of the plan for a step of `g`.
fn run(mem: &mut Mem, v: &crate::variant::Variant, call: &crate::lower::Call, g: &StepGeometry) {
    for p in call.launches(v, g) {
        match p.args {
            Args::Quantize(a) => {
                let rows = mem.u32_at(a.step.0 + 4 * u64::from(a.rows_sel)) as usize;
                assert!(p.launch.grid[0] as usize >= rows);
                let x = mem.f32s(a.x.0, rows * a.x_stride as usize);
                let norm = (a.norm.0 != 0).then(|| mem.f32s(a.norm.0, a.k as usize));
                let nw = norm.as_deref().map(|n| (n, a.eps));
                let expect = if nw.is_some() {
                    Entry::RmsNormQuantize
                } else {
                    Entry::Quantize
                };
                assert_eq!(p.launch.entry, expect);
                let q = twin::quantize(&x, rows, a.k as usize, a.x_stride as usize, nw);
                let qb: Vec<u8> = q.q.iter().map(|&b| b as u8).collect();
                mem.0[a.q.0 as usize..][..qb.len()].copy_from_slice(&qb);
                for (i, d) in q.ds.iter().enumerate() {
                    mem.0[a.ds.0 as usize + 4 * i..][..4].copy_from_slice(&d.to_le_bytes());
                }
            }
            Args::Matvec(a) => {
                let rows = mem.u32_at(a.step.0 + 4 * u64::from(a.rows_sel)) as usize;
                let dtype = v.weight.unwrap();
                let e = epilogue(&a);
                let Entry::Matvec(i) = p.launch.entry else {
                    panic!("{:?}", p.launch.entry)
                };
                let (tile, ve) = matvec::variants().nth(i as usize).unwrap();
                assert_eq!(ve, e);
                assert!(
                    (p.launch.grid[2] * tile) as usize >= rows,
                    "tiles cover the rows"
                );
                let rpb = matvec::rows_per_block(dtype, tile, e);
                assert!(
                    p.launch.grid[0] * rpb >= a.n,
                    "blocks cover the weight rows"
                );
                let (k, n) = (a.k as usize, a.n as usize);
                let x = Q8_1Rows {
                    rows,
                    k,
                    q: mem
                        .bytes(a.q.0, rows * k)
                        .iter()
                        .map(|&b| b as i8)
                        .collect(),
                    ds: (0..rows * k / 32)
                        .map(|i| mem.u32_at(a.ds.0 + 4 * i as u64))
                        .collect(),
                };
                let w = planes(mem, dtype, a.n, a.k, a.wq.0, a.ws.0);
                let w2 = e
                    .gated()
                    .then(|| planes(mem, dtype, a.n, a.k, a.w2q.0, a.w2s.0));
                let stride = a.out_stride as usize;
                let mut out = mem.f32s(a.out.0, rows * stride);
                if e == Epilogue::Add {
                    let res = mem.f32s(a.res.0, rows * stride);
                    for t in 0..rows {
                        out[t * stride..][..n].copy_from_slice(&res[t * stride..][..n]);
                    }
                }
                let ws: Vec<&[u8]> = std::iter::once(&w[..]).chain(w2.as_deref()).collect();
                twin::matvec(dtype, n, &ws, &x, e, &mut out, stride).unwrap();
                mem.put_f32s(a.out.0, &out);
            }
            Args::Matmul(_) => panic!("packed weights take quantize + matvec, never matmul_core"),
            // Every row is an output row in these steps: the selection copies them.
            Args::SelectRows(a) => {
                let rows = mem.u32_at(a.step.0 + 4) as usize;
                let x = mem.f32s(a.x.0, rows * a.cols as usize);
                mem.put_f32s(a.out.0, &x);
            }
            _ => {}
        }
    }
}

/// Dequantized (rows, cols) GGUF weight.
fn deq(dtype: DType, rows: usize, cols: usize, gguf: &[u8]) -> Vec<f32> {
    let mut w = vec![0f32; rows * cols];
    let rb = cols / 32 * dtype.block_bytes();
    for r in 0..rows {
        quant::dequantize_row(dtype, &gguf[r * rb..][..rb], &mut w[r * cols..][..cols]).unwrap();
    }
    w
}

fn rmsnorm(x: &[f32], w: &[f32]) -> Vec<f32> {
    let k = w.len();
    x.chunks_exact(k)
        .flat_map(|r| {
            let s = 1.0 / (r.iter().map(|v| v * v).sum::<f32>() / k as f32 + EPS).sqrt();
            r.iter().zip(w).map(move |(v, g)| v * s * g)
        })
        .collect()
}

/// (x · Wᵀ, its q8_1 error bound) per (row, column).
fn dots(x: &[f32], w: &[f32], n: usize, k: usize) -> Vec<(f32, f32)> {
    x.chunks_exact(k)
        .flat_map(|xr| {
            (0..n).map(move |r| {
                let wr = &w[r * k..][..k];
                let dot: f64 = wr.iter().zip(xr).map(|(a, b)| f64::from(a * b)).sum();
                let err: f32 = (0..k)
                    .map(|i| {
                        let amax = xr[i / 32 * 32..][..32]
                            .iter()
                            .fold(0f32, |m, v| m.max(v.abs()));
                        wr[i].abs() * amax / 127.0 * 0.63 + 2e-3 * (wr[i] * xr[i]).abs()
                    })
                    .sum();
                (dot as f32, err + 1e-5)
            })
        })
        .collect()
}

fn close(what: &str, got: &[f32], want: &[(f32, f32)]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, (w, tol))) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= *tol, "{what}[{i}]: {g} vs {w} (tol {tol})");
    }
}

#[test]
fn interpreted_matmul_calls_match_the_reference() {
    let (g, [x, a, b, y, h, out]) = graph();
    let graph = g.clone();
    let plan: Plan = kiln_ir::lower(g, &|op| supports(op, &graph), 33, 33).unwrap();
    let layout = WeightLayout::new(&plan).unwrap();
    let mut rng = Rng(0x5eed);
    // GGUF bytes of every weight, uploaded as the backend does.
    let gguf: Vec<Vec<u8>> = plan
        .graph
        .weights
        .iter()
        .map(|w| {
            let vals = rng.values(w.rows * w.cols);
            if w.dtype == DType::F32 {
                return vals
                    .iter()
                    .flat_map(|v| (1.0 + v * 0.2).to_le_bytes())
                    .collect();
            }
            let rb = w.cols / 32 * w.dtype.block_bytes();
            let mut out = vec![0u8; w.rows * rb];
            for (r, dst) in out.chunks_exact_mut(rb).enumerate() {
                quant::quantize_row(w.dtype, &vals[r * w.cols..][..w.cols], dst).unwrap();
            }
            out
        })
        .collect();
    let arena = 256u64; // never 0: a null pointer marks an unused field
    let weights = (arena + plan.arena_bytes as u64).next_multiple_of(256);
    let q8_1 = (weights + layout.total).next_multiple_of(256);
    let step = q8_1 + q8_1_bytes(&plan);
    let buffers = Buffers {
        arena,
        weights,
        kv: 0,
        step,
        partial: 0,
        q8_1,
    };
    let mut mem = Mem(vec![0xA5; (step + 64) as usize]);
    for (i, w) in plan.graph.weights.iter().enumerate() {
        let bytes = layout
            .device_bytes(&plan, layout.offsets[i], &gguf[i])
            .unwrap();
        // Quantized weights are all of packed types here: the planes, not the GGUF bytes.
        assert_eq!(
            w.dtype.is_quantized(),
            bytes[..] != gguf[i][..],
            "{}",
            w.name
        );
        let at = (weights + layout.offsets[i]) as usize;
        mem.0[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    let kv = KvLayout::new(1, 1, 32).unwrap();
    let low = lower(&plan, &layout, &kv, buffers).unwrap();
    let at = |v: ValueId| arena + plan.offsets[v.0 as usize].unwrap() as u64;
    let w = |name: &str| {
        let i = plan
            .graph
            .weights
            .iter()
            .position(|w| w.name == name)
            .unwrap();
        let wt = &plan.graph.weights[i];
        if wt.dtype == DType::F32 {
            return gguf[i]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
        }
        deq(wt.dtype, wt.rows, wt.cols, &gguf[i])
    };
    for rows in [1usize, 3, 33] {
        mem.0[step as usize..][..8]
            .copy_from_slice(&[rows as u32, rows as u32].map(u32::to_le_bytes).concat());
        let geo = StepGeometry {
            n_tokens: rows as u32,
            n_outputs: rows as u32,
            class: 1,
            sm_count: 132,
            tensor_cores: false,
            wgmma: false,
            decode_attention: true,
        };
        let xv = rng.values(rows * D);
        mem.put_f32s(at(x), &xv);
        // The arena reuses memory: each output is read right after its launch.
        let mut got = std::collections::HashMap::new();
        for (launch, calls) in plan.launches.iter().zip(&low.launches) {
            if matches!(launch.op, Op::Embed { .. }) {
                continue;
            }
            for c in calls {
                run(&mut mem, &low.variants[c.variant], c, &geo);
            }
            for &o in &launch.outputs {
                let cols = plan.graph.values[o.0 as usize].cols();
                got.insert(o, mem.f32s(at(o), rows * cols));
            }
        }
        let v = |id: ValueId| got[&id].clone();
        // Each stage against the reference from the interpreted stage before it.
        let xn = rmsnorm(&xv, &w("n1"));
        close("a", &v(a), &dots(&xn, &w("wa"), A, D));
        close("b", &v(b), &dots(&xn, &w("wb"), D, D));
        let av = v(a);
        let want_y: Vec<_> = dots(&av, &w("wc"), D, A)
            .into_iter()
            .zip(&xv)
            .map(|((d, e), r)| (d + r, e + 1e-6 * r.abs()))
            .collect();
        close("y", &v(y), &want_y);
        let yn = rmsnorm(&v(y), &w("n2"));
        let gd = dots(&yn, &w("gate"), FF, D);
        let ud = dots(&yn, &w("up"), FF, D);
        let want_h: Vec<_> = gd
            .iter()
            .zip(&ud)
            .map(|(&(g, eg), &(u, eu))| {
                let silu = g / (1.0 + (-g).exp());
                (
                    silu * u,
                    1.1 * eg * (u.abs() + eu) + (silu.abs() + eg) * eu + 1e-5,
                )
            })
            .collect();
        close("h", &v(h), &want_h);
        let hv = v(h);
        close("out", &v(out), &dots(&hv, &w("wd"), D, FF));
    }
    // Every matmul took the packed path: no GGUF-reading matrix-vector kernel left.
    assert!(
        low.variants
            .iter()
            .all(|v| !v.kernel.is_matmul() || v.packed())
    );
    assert!(low.variants.iter().any(|v| v.kernel == Kernel::Matvec));
}

/// The embedding of a packed table, read as embed.cu's W_PACKED reader does (pw_make:
/// quant row `id` at `row_bytes · id`, the high plane after `rows` quant rows, the scale
/// plane at the next multiple of 16 after it; row `id`'s record of block (unit) b of the
/// 32-value types' scale (high) plane at mv_group_index(id, blocks, b), in groups of
/// mv/groups.cuh), is ir's row.
#[test]
fn packed_embedding_rows_are_the_dequantized_rows() {
    for dtype in matvec::DTYPES {
        let (rows, cols) = (53usize, 3 * dtype.block_len());
        let mut rng = Rng(11);
        let rb = cols / dtype.block_len() * dtype.block_bytes();
        let vals = rng.values(rows * cols);
        let mut gguf = vec![0u8; rows * rb];
        for (r, dst) in gguf.chunks_exact_mut(rb).enumerate() {
            quant::quantize_row(dtype, &vals[r * cols..][..cols], dst).unwrap();
        }
        let packed = repack::pack(dtype, rows, cols, &gguf).unwrap();
        let l = repack::layout(dtype, rows, cols).unwrap();
        let row_bytes = l.quant_row_bytes(); // EmbedArgs.row_bytes (lower/ops.rs: matrix)
        let highs = rows * row_bytes; // pw_make: table + rows · row_bytes
        let g = l.row_group;
        let (units, h) = (cols / 32, l.high_bytes);
        // pw_make: the high plane holds the rows rounded up to a group.
        let scales = (highs + rows.next_multiple_of(g) * units * h).next_multiple_of(16);
        assert_eq!((highs, scales), (l.high_offset, l.scale_offset));
        let one = repack::layout(dtype, 1, cols).unwrap();
        for id in [0usize, 7, 52] {
            // Row `id`'s pieces of each plane (pw_unit's reads) as a packed row of its own.
            let mut row = vec![0u8; one.bytes];
            let (q, s) = (row_bytes, l.scale_bytes);
            row[..q].copy_from_slice(&packed[id * q..][..q]);
            for u in 0..units {
                let record = ((id / g * units + u) * g + id % g) * h; // mv_group_index · H
                row[one.high_at(0, u)..][..h].copy_from_slice(&packed[highs + record..][..h]);
            }
            let blocks = cols / dtype.block_len();
            for b in 0..blocks {
                let record = ((id / g * blocks + b) * g + id % g) * s; // mv_group_index · S
                row[one.scale_at(0, b)..][..s].copy_from_slice(&packed[scales + record..][..s]);
            }
            let row = repack::unpack(dtype, 1, cols, &row).unwrap();
            let mut got = vec![0f32; cols];
            quant::dequantize_row(dtype, &row, &mut got).unwrap();
            let mut want = vec![0f32; cols];
            quant::dequantize_row(dtype, &gguf[id * rb..][..rb], &mut want).unwrap();
            assert_eq!(got, want, "{dtype} row {id}");
        }
    }
}
