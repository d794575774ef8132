//! The model's tensors, checked against its config at load time and kept in the
//! memory map as stored (quantized). Shape errors surface here, once, not in kernels.

use kiln_ir::DType;

use super::ModelConfig;
use kiln_gguf::{Gguf, TensorInfo};

/// A stored 2-D weight: `rows` rows of `cols` values each, row-major in `dtype`'s layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matrix {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    /// Byte offset of the first row in the file.
    pub start: usize,
    pub row_bytes: usize,
}

/// The weights of one transformer block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>, // (n_embd)
    pub wq: Matrix,          // (q_dim, n_embd)
    pub wk: Matrix,          // (kv_dim, n_embd)
    pub wv: Matrix,          // (kv_dim, n_embd)
    /// Biases of the q, k and v projections (Qwen 2): `attn_q.bias`, ... when present.
    pub q_bias: Option<Vec<f32>>, // (q_dim)
    pub k_bias: Option<Vec<f32>>, // (kv_dim)
    pub v_bias: Option<Vec<f32>>, // (kv_dim)
    /// QK-norm weights (Gemma 3): `attn_q_norm`, `attn_k_norm`.
    pub q_norm: Option<Vec<f32>>, // (head_dim)
    pub k_norm: Option<Vec<f32>>, // (head_dim)
    pub wo: Matrix,          // (n_embd, q_dim)
    /// Norm of the attention output before the residual add (Gemma 3).
    pub post_attention_norm: Option<Vec<f32>>, // (n_embd)
    pub ffn_norm: Vec<f32>,  // (n_embd)
    pub w_gate: Matrix,      // (n_ff, n_embd)
    pub w_up: Matrix,        // (n_ff, n_embd)
    pub w_down: Matrix,      // (n_embd, n_ff)
    /// Norm of the FFN output before the residual add (Gemma 3's `post_ffw_norm`).
    pub post_ffw_norm: Option<Vec<f32>>, // (n_embd)
}

/// All weights of a model.
#[derive(Clone, Debug)]
pub struct Weights {
    pub token_embd: Matrix, // (vocab, n_embd)
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>, // (n_embd)
    /// The LM head; the token embedding itself when the model ties them.
    pub output: Matrix, // (vocab, n_embd)
    /// Per-frequency divisors of RoPE (Llama 3.1's `rope_freqs.weight`), if present.
    pub rope_freq_factors: Option<Vec<f32>>, // (rope_dims / 2)
}

impl Weights {
    pub fn from_gguf(gguf: &Gguf, config: &ModelConfig) -> Result<Weights, crate::Error> {
        let c = config;
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<Matrix, crate::Error> {
            let info = gguf.require_tensor(name)?;
            matrix_of(gguf, info, rows, cols)
        };
        let vector = |name: &str, len: usize| -> Result<Vec<f32>, crate::Error> {
            let info = gguf.require_tensor(name)?;
            vector_of(gguf, info, len)
        };
        // A norm the config asks for (Gemma's QK-norms and post-norms).
        let wanted = |wanted: bool, name: &str, len: usize| -> Result<_, crate::Error> {
            wanted.then(|| vector(name, len)).transpose()
        };
        // A vector the file may hold (llama.cpp loads q/k/v biases of any family so).
        let present = |name: &str, len: usize| -> Result<_, crate::Error> {
            gguf.tensor(name)
                .map(|info| vector_of(gguf, info, len))
                .transpose()
        };
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let name = |t: &str| format!("blk.{i}.{t}.weight");
            let bias = |t: &str| format!("blk.{i}.{t}.bias");
            layers.push(LayerWeights {
                attn_norm: vector(&name("attn_norm"), c.n_embd)?,
                wq: matrix(&name("attn_q"), c.q_dim(), c.n_embd)?,
                wk: matrix(&name("attn_k"), c.kv_dim(), c.n_embd)?,
                wv: matrix(&name("attn_v"), c.kv_dim(), c.n_embd)?,
                q_bias: present(&bias("attn_q"), c.q_dim())?,
                k_bias: present(&bias("attn_k"), c.kv_dim())?,
                v_bias: present(&bias("attn_v"), c.kv_dim())?,
                q_norm: wanted(c.qk_norm, &name("attn_q_norm"), c.head_dim)?,
                k_norm: wanted(c.qk_norm, &name("attn_k_norm"), c.head_dim)?,
                wo: matrix(&name("attn_output"), c.n_embd, c.q_dim())?,
                post_attention_norm: wanted(c.post_norms, &name("post_attention_norm"), c.n_embd)?,
                ffn_norm: vector(&name("ffn_norm"), c.n_embd)?,
                w_gate: matrix(&name("ffn_gate"), c.n_ff, c.n_embd)?,
                w_up: matrix(&name("ffn_up"), c.n_ff, c.n_embd)?,
                w_down: matrix(&name("ffn_down"), c.n_embd, c.n_ff)?,
                post_ffw_norm: wanted(c.post_norms, &name("post_ffw_norm"), c.n_embd)?,
            });
        }
        let token_embd = matrix("token_embd.weight", c.vocab_size, c.n_embd)?;
        let output = match gguf.tensor("output.weight") {
            Some(info) => matrix_of(gguf, info, c.vocab_size, c.n_embd)?,
            None => token_embd,
        };
        let rope_freq_factors = match gguf.tensor("rope_freqs.weight") {
            Some(info) => Some(vector_of(gguf, info, c.rope_dims / 2)?),
            None => None,
        };
        Ok(Weights {
            token_embd,
            layers,
            output_norm: vector("output_norm.weight", c.n_embd)?,
            output,
            rope_freq_factors,
        })
    }
}

fn shape_error(info: &TensorInfo, expected: Vec<u64>) -> crate::Error {
    crate::Error::TensorShape {
        tensor: info.name.clone(),
        expected,
        found: info.dims.clone(),
    }
}

fn matrix_of(
    gguf: &Gguf,
    info: &TensorInfo,
    rows: usize,
    cols: usize,
) -> Result<Matrix, crate::Error> {
    let expected = vec![cols as u64, rows as u64];
    let dims_match = info.dims.len() >= 2
        && info.dims[0] == cols as u64
        && info.dims[1] == rows as u64
        && info.dims[2..].iter().all(|&d| d == 1);
    if !dims_match {
        return Err(shape_error(info, expected));
    }
    if info.dtype == DType::F8E4M3 {
        return Err(crate::Error::UnsupportedTensorType {
            tensor: info.name.clone(),
            dtype: info.dtype,
        });
    }
    // Validated by the reader: whole blocks per row and data inside the file.
    let row_bytes = info
        .dtype
        .bytes_for(cols as u64)
        .expect("checked by reader") as usize;
    Ok(Matrix {
        dtype: info.dtype,
        rows,
        cols,
        start: (gguf.data_offset() + info.offset) as usize,
        row_bytes,
    })
}

fn vector_of(gguf: &Gguf, info: &TensorInfo, len: usize) -> Result<Vec<f32>, crate::Error> {
    if info.n_elements() != len as u64 || info.dims.first() != Some(&(len as u64)) {
        return Err(shape_error(info, vec![len as u64]));
    }
    let mut out = vec![0.0f32; len];
    kiln_ir::quant::dequantize_row(info.dtype, gguf.tensor_data(info), &mut out).map_err(
        |source| crate::Error::Quant {
            tensor: info.name.clone(),
            source,
        },
    )?;
    Ok(out)
}
