//! The suite's oracle: plain loops in f64, one function per op, read in one sitting.
//! Weights arrive dequantized (`kiln_ir::quant::dequantize_row`) and the KV cache as the
//! f32 values before storage, so a case measures what the backend itself rounds away.

/// Widen f32 data for the oracle.
pub fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// Rows `ids` of `table` (vocab, cols): what `Embed` gives for those token ids.
pub fn gather(table: &[f32], cols: usize, ids: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(ids.len() * cols); // (ids, cols)
    for &id in ids {
        out.extend(
            table[id * cols..(id + 1) * cols]
                .iter()
                .map(|&v| f64::from(v)),
        );
    }
    out
}

/// x (rows, d) / sqrt(mean(x²) + eps) · w (d) → (rows, d).
pub fn rmsnorm(x: &[f64], w: &[f64], eps: f32) -> Vec<f64> {
    let d = w.len();
    let mut out = vec![0.0; x.len()]; // (rows, d)
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let mean_sq = xr.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let scale = 1.0 / (mean_sq + f64::from(eps)).sqrt();
        for i in 0..d {
            o[i] = xr[i] * scale * w[i];
        }
    }
    out
}

/// x (rows, k) · wᵀ with w (n, k) → (rows, n).
pub fn matmul(x: &[f64], w: &[f64], k: usize) -> Vec<f64> {
    products(x, w, k, |a, b| a * b)
}

/// The power of the products summed by [`matmul`], Σᵢ (wᵢ·xᵢ)² per output: what the
/// output's square is on average for random data, whatever cancellation a draw has.
pub fn matmul_power(x: &[f64], w: &[f64], k: usize) -> Vec<f64> {
    products(x, w, k, |a, b| (a * b) * (a * b))
}

fn products(x: &[f64], w: &[f64], k: usize, term: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    let (rows, n) = (x.len() / k, w.len() / k);
    let mut out = vec![0.0; rows * n]; // (rows, n)
    for r in 0..rows {
        for j in 0..n {
            let (xr, wr) = (&x[r * k..(r + 1) * k], &w[j * k..(j + 1) * k]);
            out[r * n + j] = xr.iter().zip(wr).map(|(&a, &b)| term(a, b)).sum();
        }
    }
    out
}

/// a + b, elementwise.
pub fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// silu(gate) · up, elementwise.
pub fn swiglu(gate: &[f64], up: &[f64]) -> Vec<f64> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
        .collect()
}

/// gelu(gate) · up, elementwise, GELU in its tanh form 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
pub fn geglu(gate: &[f64], up: &[f64]) -> Vec<f64> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| 0.5 * g * (1.0 + (c * (g + 0.044715 * g * g * g)).tanh()) * u)
        .collect()
}

/// x · factor, elementwise.
pub fn scale(x: &[f64], factor: f64) -> Vec<f64> {
    x.iter().map(|v| v * factor).collect()
}

/// RoPE parameters of the oracle (the op's, with the factors as values).
#[derive(Clone, Debug)]
pub struct Rope {
    pub head_dim: usize,
    pub rope_dims: usize,
    pub theta: f64,
    pub freq_scale: f64,
    /// (rope_dims / 2) divisors of each frequency.
    pub freq_factors: Option<Vec<f64>>,
    /// Pairs (x[i], x[i + rope_dims/2]) rather than (x[2i], x[2i+1]).
    pub neox: bool,
}

/// RoPE of x (rows, heads·head_dim), row r at `positions[r]`: pair i of each head's first
/// rope_dims, (x[2i], x[2i+1]) in ggml's "normal" mode or (x[i], x[i + rope_dims/2]) in
/// NeoX mode, rotates by pos·freq_scale·theta^(-2i/rope_dims) / factor_i; the other dims
/// pass through.
pub fn rope(x: &[f64], positions: &[u32], p: &Rope) -> Vec<f64> {
    let mut out = x.to_vec(); // (rows, heads·head_dim)
    let width = x.len() / positions.len();
    for (row, &pos) in out.chunks_exact_mut(width).zip(positions) {
        for head in row.chunks_exact_mut(p.head_dim) {
            for i in 0..p.rope_dims / 2 {
                let freq = p.theta.powf(-2.0 * i as f64 / p.rope_dims as f64);
                let factor = p.freq_factors.as_ref().map_or(1.0, |f| f[i]);
                let angle = f64::from(pos) * p.freq_scale * freq / factor;
                let (sin, cos) = angle.sin_cos();
                let (ia, ib) = if p.neox {
                    (i, i + p.rope_dims / 2)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (a, b) = (head[ia], head[ib]);
                head[ia] = a * cos - b * sin;
                head[ib] = a * sin + b * cos;
            }
        }
    }
    out
}

/// How a query attends: its score scale and its sliding window.
#[derive(Clone, Copy, Debug)]
pub struct Attend {
    pub scale: f64,
    /// Row p attends to rows > p − window only.
    pub window: Option<usize>,
}

impl Attend {
    /// Every earlier row, scores q·k / sqrt(hd).
    pub fn causal(hd: usize) -> Attend {
        Attend {
            scale: 1.0 / (hd as f64).sqrt(),
            window: None,
        }
    }
}

/// Causal grouped-query attention over one whole sequence: row p of q (len, n_heads·hd)
/// attends to rows 0..=p (p + 1 − window..=p with a window) of k and v (len,
/// n_kv_heads·hd); query head h reads KV head h / (n_heads / n_kv_heads). Scores are
/// q·k · scale. → (len, n_heads·hd).
pub fn attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    (n_heads, n_kv_heads, hd): (usize, usize, usize),
    how: Attend,
) -> Vec<f64> {
    let (q_dim, kv_dim) = (n_heads * hd, n_kv_heads * hd);
    let len = q.len() / q_dim;
    let group = n_heads / n_kv_heads;
    let mut out = vec![0.0; q.len()]; // (len, q_dim)
    for p in 0..len {
        for h in 0..n_heads {
            let qh = &q[p * q_dim + h * hd..][..hd];
            let kv_at = |t: usize| t * kv_dim + (h / group) * hd;
            let first = how.window.map_or(0, |w| (p + 1).saturating_sub(w));
            let scores: Vec<f64> = (first..=p)
                .map(|t| {
                    qh.iter()
                        .zip(&k[kv_at(t)..][..hd])
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
                        * how.scale
                })
                .collect(); // (p + 1 - first)
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let o = &mut out[p * q_dim + h * hd..][..hd];
            for (j, w) in weights.iter().enumerate() {
                for (ov, vv) in o.iter_mut().zip(&v[kv_at(first + j)..][..hd]) {
                    *ov += w / total * vv;
                }
            }
        }
    }
    out
}
