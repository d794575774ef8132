//! RoPE in ggml's "normal" mode: adjacent pairs (x[2i], x[2i+1]) of the first rope_dims
//! of every head rotate by pos·freq_scale·theta^(-2i/rope_dims) / factor_i.

use kiln_ir::RopeParams;

/// cos/sin of every (token, pair) of a step, shared by all heads and layers.
#[derive(Clone, Debug, Default)]
pub struct RopeTable {
    pairs: usize,
    cos_sin: Vec<(f32, f32)>, // (tokens, rope_dims / 2)
}

impl RopeTable {
    pub fn new(rope: &RopeParams, freq_factors: Option<&[f32]>, positions: &[u32]) -> RopeTable {
        let pairs = rope.rope_dims / 2;
        let mut cos_sin = Vec::with_capacity(positions.len() * pairs);
        for &pos in positions {
            let p = f64::from(pos) * f64::from(rope.freq_scale);
            for i in 0..pairs {
                let factor = freq_factors.map_or(1.0, |f| f64::from(f[i]));
                let theta = f64::from(rope.theta).powf(-2.0 * i as f64 / rope.rope_dims as f64);
                let (sin, cos) = (p * theta / factor).sin_cos();
                cos_sin.push((cos as f32, sin as f32));
            }
        }
        RopeTable { pairs, cos_sin }
    }
}

/// Rotate x (tokens, heads·head_dim) in place.
pub fn rope_in_place(x: &mut [f32], head_dim: usize, table: &RopeTable) {
    let n_tokens = table.cos_sin.len() / table.pairs.max(1);
    let width = x.len() / n_tokens.max(1);
    for (t, row) in x.chunks_exact_mut(width).enumerate() {
        let cs = &table.cos_sin[t * table.pairs..(t + 1) * table.pairs];
        for head in row.chunks_exact_mut(head_dim) {
            for (i, &(cos, sin)) in cs.iter().enumerate() {
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * cos - b * sin;
                head[2 * i + 1] = a * sin + b * cos;
            }
        }
    }
}

/// out = rope(x).
pub fn rope(x: &[f32], head_dim: usize, table: &RopeTable, out: &mut [f32]) {
    out.copy_from_slice(x);
    rope_in_place(out, head_dim, table);
}
