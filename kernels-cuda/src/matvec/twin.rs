//! The scalar twin of `cuda/mv/`: the same operations in the same order as the kernels
//! (f16 conversions, integer block sums, the explicit FMAs, the lanes' block order, the
//! butterfly and the warps in turn), so a GPU's output can be compared with it bit for
//! bit (silu's `expf` and GELU's `tanhf` aside), and tests compare it with the CPU reference.

use half::f16;
use kiln_ir::DType;

use super::{Epilogue, MATVEC_THREADS, QUANTIZE_THREADS};
use crate::repack::{self, PackedLayout, RepackError};

/// q8_1 activations as the matvec reads them.
#[derive(Clone, Debug, PartialEq)]
pub struct Q8_1Rows {
    pub rows: usize,
    pub k: usize,
    /// (rows, k) int8 quants.
    pub q: Vec<i8>,
    /// (rows, k / 32) f16 d in the low half, the int16 Σq in the high one.
    pub ds: Vec<u32>,
}

fn f16_bits(x: f32) -> u32 {
    u32::from(f16::from_f32(x).to_bits())
}

fn lo(w: u32) -> f32 {
    f16::from_bits(w as u16).to_f32()
}

/// s = d·Σq of a q8_1 word (f16 d, int16 Σq), in f32 (mv/common.cuh: mv_s).
fn s_of(w: u32) -> f32 {
    lo(w) * f32::from((w >> 16) as u16 as i16)
}

/// The butterfly of mv_warp_sum: lane 0's value (every lane ends with the same one).
fn warp_sum(lanes: &[f32; 32]) -> f32 {
    let mut v = *lanes;
    for s in [16, 8, 4, 2, 1] {
        let prev = v;
        for (i, x) in v.iter_mut().enumerate() {
            *x = prev[i] + prev[i ^ s];
        }
    }
    v[0]
}

/// The block's sum: per thread (group of 32), butterflies, then warps in order.
fn block_sum(threads: &[f32]) -> f32 {
    let mut total = None;
    for warp in threads.chunks_exact(32) {
        let w = warp_sum(warp.try_into().expect("32 lanes"));
        total = Some(total.map_or(w, |t: f32| t + w));
    }
    total.unwrap_or(0.0)
}

/// quantize_q8_1 (`norm` None) or rmsnorm_quantize_q8_1 (`norm` Some((weight, eps))) of
/// `rows` rows of `k` columns, row t at `x[t * x_stride..]`.
pub fn quantize(
    x: &[f32],
    rows: usize,
    k: usize,
    x_stride: usize,
    norm: Option<(&[f32], f32)>,
) -> Q8_1Rows {
    let threads = QUANTIZE_THREADS as usize;
    let mut out = Q8_1Rows {
        rows,
        k,
        q: vec![0; rows * k],
        ds: vec![0; rows * k / 32],
    };
    for t in 0..rows {
        let row = &x[t * x_stride..t * x_stride + k];
        let values: Vec<f32> = match norm {
            None => row.to_vec(),
            Some((weight, eps)) => {
                let mut sq = vec![0.0f32; threads];
                for (i, s) in sq.iter_mut().enumerate() {
                    for c in (4 * i..k).step_by(4 * threads) {
                        for v in &row[c..c + 4] {
                            *s = v.mul_add(*v, *s);
                        }
                    }
                }
                let scale = 1.0 / (block_sum(&sq) / k as f32 + eps).sqrt();
                row.iter()
                    .zip(weight)
                    .map(|(&v, &w)| v * scale * w)
                    .collect()
            }
        };
        for (b, block) in values.chunks_exact(32).enumerate() {
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (j, &v) in block.iter().enumerate() {
                let q = (v * id).round().clamp(-128.0, 127.0) as i32;
                sum += q;
                out.q[t * k + 32 * b + j] = q as i8;
            }
            out.ds[t * k / 32 + b] = f16_bits(d) | (u32::from(sum as i16 as u16) << 16);
        }
    }
    out
}

/// Σ a·b of 32 int8 pairs given as (weights 0..32 as i32, activation block).
fn int_dot(w: impl Iterator<Item = i32>, a: &[i8]) -> i32 {
    w.zip(a).map(|(w, &a)| w * i32::from(a)).sum()
}

/// Q4_K/Q5_K's 6-bit (scale, minimum) of sub-block j from the 12 scale bytes (ggml's
/// get_scale_min_k4; mv/bits.cuh's k_scale6).
fn k_scale6(sc: &[u8], j: usize) -> (u32, u32) {
    if j < 4 {
        (u32::from(sc[j] & 63), u32::from(sc[j + 4] & 63))
    } else {
        (
            u32::from((sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4)),
            u32::from((sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)),
        )
    }
}

fn f16_at(s: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([s[at], s[at + 1]]).to_f32()
}

/// mv_dot of unit `b` (32 values) of a packed row against an activation block: acc + its
/// product.
fn block_dot(
    l: &PackedLayout,
    packed: &[u8],
    row: usize,
    b: usize,
    a: &[i8],
    ds: u32,
    acc: f32,
) -> f32 {
    let i = row * l.blocks + b;
    let q = &packed[i * l.quant_bytes..(i + 1) * l.quant_bytes];
    let h = &packed[l.high_at(row, b)..][..l.high_bytes];
    let units = l.group / 32;
    let s = &packed[l.scale_at(row, b / units)..][..l.scale_bytes];
    let (da, sa) = (lo(ds), s_of(ds));
    let (low, high) = repack::get_unit(&q[..16], h);
    let codes = |shift: u32| (0..32).map(move |e| i32::from(low[e] | (high[e] << shift)));
    match l.dtype {
        DType::Q4_0 | DType::Q5_0 => {
            let (bias, shift) = if l.dtype == DType::Q4_0 {
                (8.0, 0)
            } else {
                (16.0, 4)
            };
            let v = da.mul_add(int_dot(codes(shift), a) as f32, -bias * sa);
            f16_at(s, 0).mul_add(v, acc)
        }
        DType::Q4_1 | DType::Q5_1 => {
            let shift = if l.dtype == DType::Q4_1 { 0 } else { 4 };
            let acc = (f16_at(s, 0) * da).mul_add(int_dot(codes(shift), a) as f32, acc);
            f16_at(s, 2).mul_add(sa, acc)
        }
        DType::Q4_K | DType::Q5_K => {
            let shift = if l.dtype == DType::Q4_K { 0 } else { 4 };
            let (sc, m) = k_scale6(&s[4..16], i % 8);
            let d = f16_at(s, 0) * sc as f32;
            let m = f16_at(s, 2) * m as f32;
            let acc = (d * da).mul_add(int_dot(codes(shift), a) as f32, acc);
            (-m).mul_add(sa, acc)
        }
        DType::Q6_K => {
            let v: Vec<i32> = codes(4).map(|c| c - 32).collect();
            let lo_sum = int_dot(v[..16].iter().copied(), &a[..16]);
            let hi_sum = int_dot(v[16..].iter().copied(), &a[16..]);
            let d = f16_at(s, 16);
            let d0 = d * f32::from(s[2 * (i % 8)] as i8);
            let d1 = d * f32::from(s[2 * (i % 8) + 1] as i8);
            let v = d0.mul_add(lo_sum as f32, d1 * hi_sum as f32);
            da.mul_add(v, acc)
        }
        _ => {
            let sumi = int_dot(q.iter().map(|&v| i32::from(v as i8)), a);
            (f16_at(s, 0) * da).mul_add(sumi as f32, acc)
        }
    }
}

/// gelu.cuh's GELU: the tanh form at the input rounded to f16, the result rounded to f16
/// (llama.cpp's table), 0 below -10 and the identity above 10.
pub fn gelu_f16(x: f32) -> f32 {
    if x <= -10.0 {
        return 0.0;
    }
    if x >= 10.0 {
        return x;
    }
    let h = f16::from_f32(x).to_f32();
    let inner = (0.797_884_6 * h * (1.0 + 0.044715 * h * h)).clamp(-15.0, 15.0);
    f16::from_f32(0.5 * h * (1.0 + inner.tanh())).to_f32()
}

/// The dot of packed weight row `row` with activation row `t`, summed as the kernel does.
fn row_dot(l: &PackedLayout, packed: &[u8], row: usize, x: &Q8_1Rows, t: usize) -> f32 {
    let threads = MATVEC_THREADS as usize;
    let partial: Vec<f32> = (0..threads)
        .map(|s| {
            (s..l.blocks).step_by(threads).fold(0.0, |acc, b| {
                let a = &x.q[t * x.k + 32 * b..][..32];
                block_dot(l, packed, row, b, a, x.ds[t * l.blocks + b], acc)
            })
        })
        .collect();
    block_sum(&partial)
}

/// The matvec of packed `weights` of `n` rows (one; SwiGLU and GeGLU: gate, then up) against every
/// row of `x` into `out` (x.rows, out_stride): column r is weight row r's result. For
/// [`Epilogue::Add`], `out` holds the residual (the in-place MatMulAdd). Columns past `n`
/// keep their values.
pub fn matvec(
    dtype: DType,
    n: usize,
    weights: &[&[u8]],
    x: &Q8_1Rows,
    epilogue: Epilogue,
    out: &mut [f32],
    out_stride: usize,
) -> Result<(), RepackError> {
    let l = repack::layout(dtype, n, x.k)?;
    for t in 0..x.rows {
        for r in 0..n {
            let g = row_dot(&l, weights[0], r, x, t);
            let at = t * out_stride + r;
            out[at] = match epilogue {
                Epilogue::Store => g,
                Epilogue::Add => out[at] + g,
                Epilogue::SwiGlu => {
                    let u = row_dot(&l, weights[1], r, x, t);
                    g / (1.0 + (-g).exp()) * u
                }
                Epilogue::GeGlu => gelu_f16(g) * row_dot(&l, weights[1], r, x, t),
            };
        }
    }
    Ok(())
}
