//! The reference forward pass of every family kiln runs (Llama, Qwen, Gemma 3): the oracle every
//! backend is tested against. Plain f32 loops in the order of the maths, one file, no
//! fusion. Weights are read as stored: each row is dequantized into a small f32 buffer
//! inside the matmul, never as a full f32 copy of the model. Work is spread over cores by
//! rows and heads.
//!
//! x = embed(tokens) [· √n_embd]; then per layer, for a batch of T tokens at positions
//! p0..p0+T (what Gemma 3 or Qwen adds in brackets):
//!   xb = rmsnorm(x) * attn_norm
//!   q, k, v = xb·Wqᵀ [+ bq], xb·Wkᵀ [+ bk], xb·Wvᵀ [+ bv]     (biases: Qwen 2)
//!   [q, k = rmsnorm of each head * attn_q_norm, attn_k_norm]   (Gemma 3, Qwen 3)
//!   rope(q), rope(k)        (ggml "normal": adjacent pairs; [NeoX: halves], the layer's base)
//!   cache k, v;  att = softmax(q·kᵀ·scale, causal [, the last `window` positions]) · v
//!                           (grouped-query: n_heads/n_kv_heads share a KV head)
//!   x += [rmsnorm(] att·Woᵀ [) * post_attention_norm]
//!   xb = rmsnorm(x) * ffn_norm
//!   x += [rmsnorm(] (act(xb·Wgateᵀ) * (xb·Wupᵀ))·Wdownᵀ [) * post_ffw_norm]
//!                           (act: silu, [gelu with tanh])
//! then logits = rmsnorm(x) * output_norm · Woutputᵀ.

use rayon::prelude::*;

use kiln_ir::RopeMode;
use kiln_ir::quant::{dequantize_row, dot_f32};

use crate::Error;
use crate::model::{Activation, LayerConfig, Matrix, Model, ModelConfig};
use crate::runner::{LogitsFor, Runner};

/// Rows a rayon task takes in a matmul: enough to amortise scheduling, few enough to balance.
const ROWS_PER_TASK: usize = 16;

/// The f32 key/value cache of one sequence, grown as tokens arrive.
#[derive(Debug)]
struct KvCache {
    k: Vec<Vec<f32>>, // per layer: (len, kv_dim)
    v: Vec<Vec<f32>>, // per layer: (len, kv_dim)
    len: usize,
}

/// The reference pass over one sequence.
#[derive(Debug)]
pub struct Reference<'m> {
    model: &'m Model,
    cache: KvCache,
    n_ctx: usize,
}

impl<'m> Reference<'m> {
    /// A pass with room for `n_ctx` positions (at most the model's training context).
    pub fn new(model: &'m Model, n_ctx: usize) -> Reference<'m> {
        let n_layers = model.config.n_layers;
        Reference {
            model,
            cache: KvCache {
                k: vec![Vec::new(); n_layers],
                v: vec![Vec::new(); n_layers],
                len: 0,
            },
            n_ctx,
        }
    }
}

impl Runner for Reference<'_> {
    fn name(&self) -> &'static str {
        "ref"
    }

    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    fn position(&self) -> usize {
        self.cache.len
    }

    fn reset(&mut self) {
        for layer in self.cache.k.iter_mut().chain(self.cache.v.iter_mut()) {
            layer.clear();
        }
        self.cache.len = 0;
    }

    fn truncate(&mut self, len: usize) {
        if len >= self.cache.len {
            return;
        }
        let kv_dim = self.model.config.n_kv_heads * self.model.config.head_dim;
        for layer in self.cache.k.iter_mut().chain(self.cache.v.iter_mut()) {
            layer.truncate(len * kv_dim);
        }
        self.cache.len = len;
    }

    fn forward(&mut self, tokens: &[u32], logits: LogitsFor) -> Result<Vec<f32>, Error> {
        let c = &self.model.config;
        let n_tokens = tokens.len();
        if n_tokens == 0 {
            return Err(Error::EmptyPrompt);
        }
        let needed = self.cache.len + n_tokens;
        if needed > self.n_ctx {
            return Err(Error::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(Error::TokenOutOfRange {
                id,
                vocab_size: c.vocab_size,
            });
        }
        let first_out = match logits {
            LogitsFor::Last => n_tokens - 1,
            LogitsFor::From(i) => i.min(n_tokens - 1),
        };
        Ok(forward(self.model, &mut self.cache, tokens, first_out))
    }
}

/// Run `tokens` after the cached context; logits of tokens `first_out..`, (n_out, vocab).
fn forward(model: &Model, cache: &mut KvCache, tokens: &[u32], first_out: usize) -> Vec<f32> {
    let c: &ModelConfig = &model.config;
    let w = &model.weights;
    let n_tokens = tokens.len();
    let pos0 = cache.len;
    let (d, q_dim, kv_dim) = (c.n_embd, c.q_dim(), c.kv_dim());
    let eps = c.rms_norm_eps;

    let mut x = vec![0.0f32; n_tokens * d]; // (n_tokens, n_embd) residual stream
    let mut xb = vec![0.0f32; n_tokens * d]; // (n_tokens, n_embd) normed input of a sublayer
    let mut q = vec![0.0f32; n_tokens * q_dim]; // (n_tokens, n_heads, head_dim)
    let mut k = vec![0.0f32; n_tokens * kv_dim]; // (n_tokens, n_kv_heads, head_dim)
    let mut v = vec![0.0f32; n_tokens * kv_dim]; // (n_tokens, n_kv_heads, head_dim)
    let mut att = vec![0.0f32; n_tokens * q_dim]; // (n_tokens, n_heads, head_dim)
    let mut delta = vec![0.0f32; n_tokens * d]; // (n_tokens, n_embd) sublayer output
    let mut gate = vec![0.0f32; n_tokens * c.n_ff]; // (n_tokens, n_ff)
    let mut up = vec![0.0f32; n_tokens * c.n_ff]; // (n_tokens, n_ff)

    for (t, &id) in tokens.iter().enumerate() {
        let row = model.row(&w.token_embd, id as usize);
        let xt = &mut x[t * d..(t + 1) * d];
        dequantize_row(w.token_embd.dtype, row, xt).expect("row length checked at load");
        xt.iter_mut().for_each(|v| *v *= c.embedding_scale);
    }

    for (layer, (lw, lc)) in w.layers.iter().zip(&c.layers).enumerate() {
        // Attention.
        rmsnorm(&mut xb, &x, &lw.attn_norm, eps);
        matmul(model, &lw.wq, &xb, &mut q);
        matmul(model, &lw.wk, &xb, &mut k);
        matmul(model, &lw.wv, &xb, &mut v);
        for (x, bias) in [
            (&mut q, &lw.q_bias),
            (&mut k, &lw.k_bias),
            (&mut v, &lw.v_bias),
        ] {
            if let Some(bias) = bias {
                for row in x.chunks_exact_mut(bias.len()) {
                    add_into(row, bias);
                }
            }
        }
        if let (Some(q_norm), Some(k_norm)) = (&lw.q_norm, &lw.k_norm) {
            // Every head is a row of head_dim values.
            rmsnorm_in_place(&mut q, q_norm, eps);
            rmsnorm_in_place(&mut k, k_norm, eps);
        }
        for t in 0..n_tokens {
            let pos = pos0 + t;
            let factors = w.rope_freq_factors.as_deref();
            rope(&mut q[t * q_dim..(t + 1) * q_dim], pos, c, lc, factors);
            rope(&mut k[t * kv_dim..(t + 1) * kv_dim], pos, c, lc, factors);
        }
        cache.k[layer].extend_from_slice(&k);
        cache.v[layer].extend_from_slice(&v);
        attention(&mut att, &q, &cache.k[layer], &cache.v[layer], pos0, c, lc);
        matmul(model, &lw.wo, &att, &mut delta);
        if let Some(post) = &lw.post_attention_norm {
            rmsnorm_in_place(&mut delta, post, eps);
        }
        add_into(&mut x, &delta);

        // Feed-forward (SwiGLU or GeGLU).
        rmsnorm(&mut xb, &x, &lw.ffn_norm, eps);
        matmul(model, &lw.w_gate, &xb, &mut gate);
        matmul(model, &lw.w_up, &xb, &mut up);
        let act = match c.activation {
            Activation::SwiGlu => silu,
            Activation::GeGlu => gelu_tanh,
        };
        for (g, u) in gate.iter_mut().zip(&up) {
            *g = act(*g) * u;
        }
        matmul(model, &lw.w_down, &gate, &mut delta);
        if let Some(post) = &lw.post_ffw_norm {
            rmsnorm_in_place(&mut delta, post, eps);
        }
        add_into(&mut x, &delta);
    }
    cache.len += n_tokens;

    let n_out = n_tokens - first_out;
    let x_out = &x[first_out * d..]; // (n_out, n_embd)
    let mut x_normed = vec![0.0f32; n_out * d]; // (n_out, n_embd)
    rmsnorm(&mut x_normed, x_out, &w.output_norm, eps);
    let mut logits = vec![0.0f32; n_out * c.vocab_size]; // (n_out, vocab)
    matmul(model, &w.output, &x_normed, &mut logits);
    logits
}

/// out = x / sqrt(mean(x²) + eps) * weight, row by row. x, out: (n, len(weight)).
fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let sum_sq: f64 = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let scale = 1.0 / ((sum_sq / d as f64) as f32 + eps).sqrt();
        for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(weight) {
            *o = xv * scale * wv;
        }
    }
}

/// x = x / sqrt(mean(x²) + eps) * weight over rows of len(weight). x: (n, len(weight)).
fn rmsnorm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let normed_input = x.to_vec(); // (n, len(weight))
    rmsnorm(x, &normed_input, weight, eps);
}

/// out (n, m.rows) = x (n, m.cols) · mᵀ. Each task dequantizes a few rows, one at a
/// time, and dots each with every token's activations.
fn matmul(model: &Model, m: &Matrix, x: &[f32], out: &mut [f32]) {
    let n_tokens = x.len() / m.cols;
    let mut out_t = vec![0.0f32; m.rows * n_tokens]; // (m.rows, n_tokens): rows are independent
    out_t
        .par_chunks_mut(ROWS_PER_TASK * n_tokens)
        .enumerate()
        .for_each(|(task, out_rows)| {
            let mut row = vec![0.0f32; m.cols]; // (m.cols) one dequantized weight row
            for (i, out_row) in out_rows.chunks_exact_mut(n_tokens).enumerate() {
                let r = task * ROWS_PER_TASK + i;
                dequantize_row(m.dtype, model.row(m, r), &mut row)
                    .expect("row length checked at load");
                for (t, o) in out_row.iter_mut().enumerate() {
                    *o = dot_f32(&row, &x[t * m.cols..(t + 1) * m.cols]);
                }
            }
        });
    for (r, col) in out_t.chunks_exact(n_tokens).enumerate() {
        for (t, &v) in col.iter().enumerate() {
            out[t * m.rows + r] = v;
        }
    }
}

/// Rotate pair i of the first `rope_dims` of every head by pos·θ_i, θ_i =
/// base^(-2i/rope_dims) / freq_factor_i, with the layer's base and position scale. Pairs
/// are (x[2i], x[2i+1]) in ggml's "normal" mode, (x[i], x[i + rope_dims/2]) in NeoX mode.
/// x: (n_heads, head_dim) for one token.
fn rope(x: &mut [f32], pos: usize, c: &ModelConfig, lc: &LayerConfig, factors: Option<&[f32]>) {
    let position = pos as f64 * f64::from(lc.rope_freq_scale);
    let half = c.rope_dims / 2;
    for head in x.chunks_exact_mut(c.head_dim) {
        for i in 0..half {
            let factor = factors.map_or(1.0, |f| f64::from(f[i]));
            let theta = f64::from(lc.rope_theta).powf(-2.0 * i as f64 / c.rope_dims as f64);
            let (sin, cos) = (position * theta / factor).sin_cos();
            let (ia, ib) = match c.rope_mode {
                RopeMode::Normal => (2 * i, 2 * i + 1),
                RopeMode::Neox => (i, i + half),
            };
            let (a, b) = (f64::from(head[ia]), f64::from(head[ib]));
            head[ia] = (a * cos - b * sin) as f32;
            head[ib] = (a * sin + b * cos) as f32;
        }
    }
}

/// Causal grouped-query attention of the batch's queries over the cache: the token at
/// position p reads positions 0..=p, or p + 1 − window..=p in a window layer.
/// out, q: (n_tokens, n_heads, head_dim); k_cache, v_cache: (len, n_kv_heads, head_dim),
/// where the batch's token t sits at position pos0 + t.
fn attention(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    pos0: usize,
    c: &ModelConfig,
    lc: &LayerConfig,
) {
    let (hd, kv_dim) = (c.head_dim, c.kv_dim());
    let group = c.n_heads / c.n_kv_heads;
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / c.n_heads, i % c.n_heads);
        let kv_head = h / group;
        let qh = &q[i * hd..(i + 1) * hd];
        let pos = pos0 + t;
        let first = lc.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let mut scores = vec![0.0f32; pos + 1 - first]; // (keys) positions first..=pos
        for (j, s) in scores.iter_mut().enumerate() {
            let kh = &k_cache[(first + j) * kv_dim + kv_head * hd..][..hd];
            *s = dot_f32(qh, kh) * c.attention_scale;
        }
        softmax(&mut scores);
        o.fill(0.0);
        for (j, &s) in scores.iter().enumerate() {
            let vh = &v_cache[(first + j) * kv_dim + kv_head * hd..][..hd];
            for (ov, &vv) in o.iter_mut().zip(vh) {
                *ov += s * vv;
            }
        }
    });
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU in its tanh form: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
fn gelu_tanh(x: f32) -> f32 {
    let x = f64::from(x);
    let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    (0.5 * x * (1.0 + inner.tanh())) as f32
}

fn add_into(x: &mut [f32], delta: &[f32]) {
    for (a, b) in x.iter_mut().zip(delta) {
        *a += b;
    }
}
