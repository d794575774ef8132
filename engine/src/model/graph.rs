//! A model described as an IR graph, unfused: the passes of `kiln_ir::passes` decide what
//! runs together. One builder for every family; the config says what a block holds.
//! Weight names are the GGUF tensor names.

use kiln_ir::graph::{Graph, Rows, ValueId, ValueType};
use kiln_ir::{AttentionParams, IrError, Op, RopeParams, WeightId, verify};

use super::{Activation, Matrix, Model};

/// Build the unfused graph of one step of `model`. Per block (what some families add in
/// brackets): norm, q/k/v, [q/k/v biases (Qwen 2)], [QK-norm (Gemma 3, Qwen 3)], RoPE,
/// KV write, attention (a window on window layers), output projection, [post-norm],
/// residual add; norm, gate/up, SwiGLU or GeGLU, down projection, [post-norm], residual
/// add. The embeddings are [scaled].
pub fn model_graph(model: &Model) -> Result<Graph, IrError> {
    let c = &model.config;
    let w = &model.weights;
    let mut g = Graph::new(c.n_layers);
    let act = |cols| ValueType::F32 {
        rows: Rows::Tokens,
        cols,
    };
    let matrix =
        |g: &mut Graph, name: &str, m: &Matrix| g.add_weight(name, m.dtype, m.rows, m.cols);
    // Vectors keep the dtype they are stored in (norms are usually F32).
    let vector = |g: &mut Graph, name: &str, len: usize| {
        let dtype = model
            .gguf
            .tensor(name)
            .map_or(kiln_ir::DType::F32, |t| t.dtype);
        g.add_weight(name, dtype, 1, len)
    };
    let eps = c.rms_norm_eps;
    let norm = |g: &mut Graph, weight: WeightId, x: ValueId, l: Option<usize>| {
        let ty = g.values[x.0 as usize];
        g.push(Op::RmsNorm { weight, eps }, &[x], &[ty], l)[0]
    };
    let matmul = |g: &mut Graph, weight: WeightId, x: ValueId, l: Option<usize>| {
        let rows = g.weights[weight.0 as usize].rows;
        g.push(
            Op::MatMul {
                weights: vec![weight],
            },
            &[x],
            &[act(rows)],
            l,
        )[0]
    };

    let ids = g.new_value(ValueType::TokenIds);
    g.input = Some(ids);
    let table = matrix(&mut g, "token_embd.weight", &w.token_embd);
    let mut x = g.push(Op::Embed { table }, &[ids], &[act(c.n_embd)], None)[0];
    if c.embedding_scale != 1.0 {
        let factor = c.embedding_scale;
        x = g.push(Op::Scale { factor }, &[x], &[act(c.n_embd)], None)[0];
    }

    let freq_factors = w
        .rope_freq_factors
        .as_ref()
        .map(|f| vector(&mut g, "rope_freqs.weight", f.len()));
    let groups = c.kv_groups();
    for (layer, (lw, lc)) in w.layers.iter().zip(&c.layers).enumerate() {
        let name = |t: &str| format!("blk.{layer}.{t}.weight");
        let l = Some(layer);
        let (kv_group, kv_slot) = groups.placement(layer).expect("a group per layer");
        let attention = AttentionParams {
            scale: c.attention_scale,
            window: lc.window,
            kv_group,
            kv_slot,
            ..AttentionParams::new(layer, c.n_heads, c.n_kv_heads, c.head_dim)
        };
        let rope = RopeParams {
            head_dim: c.head_dim,
            rope_dims: c.rope_dims,
            theta: lc.rope_theta,
            freq_scale: lc.rope_freq_scale,
            freq_factors,
            mode: c.rope_mode,
        };

        // Attention.
        let w_norm = vector(&mut g, &name("attn_norm"), c.n_embd);
        let xb = norm(&mut g, w_norm, x, l);
        let wq = matrix(&mut g, &name("attn_q"), &lw.wq);
        let wk = matrix(&mut g, &name("attn_k"), &lw.wk);
        let wv = matrix(&mut g, &name("attn_v"), &lw.wv);
        let mut q = matmul(&mut g, wq, xb, l);
        let mut k = matmul(&mut g, wk, xb, l);
        let mut v = matmul(&mut g, wv, xb, l);
        let biases = [
            (&mut q, &lw.q_bias, "attn_q"),
            (&mut k, &lw.k_bias, "attn_k"),
        ];
        for (value, b, tensor) in biases.into_iter().chain([(&mut v, &lw.v_bias, "attn_v")]) {
            if let Some(b) = b {
                let bias = vector(&mut g, &format!("blk.{layer}.{tensor}.bias"), b.len());
                *value = g.push(Op::AddBias { bias }, &[*value], &[act(b.len())], l)[0];
            }
        }
        if c.qk_norm {
            for (value, tensor) in [(&mut q, "attn_q_norm"), (&mut k, "attn_k_norm")] {
                let weight = vector(&mut g, &name(tensor), c.head_dim);
                let op = Op::HeadRmsNorm {
                    weight,
                    eps,
                    head_dim: c.head_dim,
                };
                let cols = g.values[value.0 as usize].cols();
                *value = g.push(op, &[*value], &[act(cols)], l)[0];
            }
        }
        let q = g.push(Op::Rope { rope }, &[q], &[act(c.q_dim())], l)[0];
        let k = g.push(Op::Rope { rope }, &[k], &[act(c.kv_dim())], l)[0];
        g.push(Op::KvWrite { attention }, &[k, v], &[], l);
        let att = g.push(Op::Attention { attention }, &[q], &[act(c.q_dim())], l)[0];
        let wo = matrix(&mut g, &name("attn_output"), &lw.wo);
        let mut proj = matmul(&mut g, wo, att, l);
        if lw.post_attention_norm.is_some() {
            let weight = vector(&mut g, &name("post_attention_norm"), c.n_embd);
            proj = norm(&mut g, weight, proj, l);
        }
        x = g.push(Op::Add, &[x, proj], &[act(c.n_embd)], l)[0];

        // Feed-forward.
        let w_norm = vector(&mut g, &name("ffn_norm"), c.n_embd);
        let xb = norm(&mut g, w_norm, x, l);
        let gate_w = matrix(&mut g, &name("ffn_gate"), &lw.w_gate);
        let up_w = matrix(&mut g, &name("ffn_up"), &lw.w_up);
        let gate = matmul(&mut g, gate_w, xb, l);
        let up = matmul(&mut g, up_w, xb, l);
        let unit = match c.activation {
            Activation::SwiGlu => Op::SwiGlu,
            Activation::GeGlu => Op::GeGlu,
        };
        let h = g.push(unit, &[gate, up], &[act(c.n_ff)], l)[0];
        let down_w = matrix(&mut g, &name("ffn_down"), &lw.w_down);
        let mut down = matmul(&mut g, down_w, h, l);
        if lw.post_ffw_norm.is_some() {
            let weight = vector(&mut g, &name("post_ffw_norm"), c.n_embd);
            down = norm(&mut g, weight, down, l);
        }
        x = g.push(Op::Add, &[x, down], &[act(c.n_embd)], l)[0];
    }
    let out_rows = |cols| ValueType::F32 {
        rows: Rows::Outputs,
        cols,
    };
    let x = g.push(Op::SelectRows, &[x], &[out_rows(c.n_embd)], None)[0];
    let w_norm = vector(&mut g, "output_norm.weight", c.n_embd);
    let xn = norm(&mut g, w_norm, x, None);
    // Tied embeddings: the LM head is the token embedding, under its own name.
    let head_name = if w.output == w.token_embd {
        "token_embd.weight"
    } else {
        "output.weight"
    };
    let head = matrix(&mut g, head_name, &w.output);
    let logits = g.push(
        Op::MatMul {
            weights: vec![head],
        },
        &[xn],
        &[out_rows(c.vocab_size)],
        None,
    )[0];
    g.output = Some(logits);
    verify(&g)?;
    Ok(g)
}
