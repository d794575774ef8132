//! RoPE: pair i of the first rope_dims of every head rotates by
//! pos·freq_scale·theta^(-2i/rope_dims) / factor_i. ggml's "normal" mode pairs adjacent
//! values (x[2i], x[2i+1]); NeoX mode pairs the halves (x[i], x[i + rope_dims/2]).

use kiln_ir::{RopeMode, RopeParams};

/// cos/sin of every (token, pair) of a step for one RoPE geometry, shared by all heads and
/// the layers that use it.
#[derive(Clone, Debug, Default)]
pub struct RopeTable {
    pairs: usize,
    mode: RopeMode,
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
        RopeTable {
            pairs,
            mode: rope.mode,
            cos_sin,
        }
    }
}

/// Rotate x (tokens, heads·head_dim) in place.
pub fn rope_in_place(x: &mut [f32], head_dim: usize, table: &RopeTable) {
    let n_tokens = table.cos_sin.len() / table.pairs.max(1);
    let width = x.len() / n_tokens.max(1);
    // Where pair i's two values sit in a head.
    let (stride, offset) = match table.mode {
        RopeMode::Normal => (2, 1),
        RopeMode::Neox => (1, table.pairs),
    };
    for (t, row) in x.chunks_exact_mut(width).enumerate() {
        let cs = &table.cos_sin[t * table.pairs..(t + 1) * table.pairs];
        for head in row.chunks_exact_mut(head_dim) {
            for (i, &(cos, sin)) in cs.iter().enumerate() {
                let (ia, ib) = (stride * i, stride * i + offset);
                let (a, b) = (head[ia], head[ib]);
                head[ia] = a * cos - b * sin;
                head[ib] = a * sin + b * cos;
            }
        }
    }
}

/// out = rope(x).
pub fn rope(x: &[f32], head_dim: usize, table: &RopeTable, out: &mut [f32]) {
    out.copy_from_slice(x);
    rope_in_place(out, head_dim, table);
}
