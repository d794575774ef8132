//! The Llama family described as an IR graph, unfused: the passes of `kiln_ir::passes`
//! decide what runs together. Weight names are the GGUF tensor names.

use kiln_ir::graph::{Graph, Rows, ValueType};
use kiln_ir::{AttentionParams, IrError, Op, RopeParams, verify};

use super::{Matrix, Model};

/// Build the unfused graph of one step of `model`.
pub fn llama_graph(model: &Model) -> Result<Graph, IrError> {
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

    let ids = g.new_value(ValueType::TokenIds);
    g.input = Some(ids);
    let table = matrix(&mut g, "token_embd.weight", &w.token_embd);
    let mut x = g.push(Op::Embed { table }, &[ids], &[act(c.n_embd)], None)[0];

    let freq_factors = w
        .rope_freq_factors
        .as_ref()
        .map(|f| vector(&mut g, "rope_freqs.weight", f.len()));
    let rope = RopeParams {
        head_dim: c.head_dim,
        rope_dims: c.rope_dims,
        theta: c.rope_theta,
        freq_scale: c.rope_freq_scale,
        freq_factors,
    };
    for (layer, lw) in w.layers.iter().enumerate() {
        let name = |t: &str| format!("blk.{layer}.{t}.weight");
        let l = Some(layer);
        let attention = AttentionParams {
            layer,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
        };
        let eps = c.rms_norm_eps;

        let norm = vector(&mut g, &name("attn_norm"), c.n_embd);
        let xb = g.push(Op::RmsNorm { weight: norm, eps }, &[x], &[act(c.n_embd)], l)[0];
        let wq = matrix(&mut g, &name("attn_q"), &lw.wq);
        let wk = matrix(&mut g, &name("attn_k"), &lw.wk);
        let wv = matrix(&mut g, &name("attn_v"), &lw.wv);
        let q = g.push(
            Op::MatMul { weights: vec![wq] },
            &[xb],
            &[act(c.q_dim())],
            l,
        )[0];
        let k = g.push(
            Op::MatMul { weights: vec![wk] },
            &[xb],
            &[act(c.kv_dim())],
            l,
        )[0];
        let v = g.push(
            Op::MatMul { weights: vec![wv] },
            &[xb],
            &[act(c.kv_dim())],
            l,
        )[0];
        let q = g.push(Op::Rope { rope }, &[q], &[act(c.q_dim())], l)[0];
        let k = g.push(Op::Rope { rope }, &[k], &[act(c.kv_dim())], l)[0];
        g.push(Op::KvWrite { attention }, &[k, v], &[], l);
        let att = g.push(Op::Attention { attention }, &[q], &[act(c.q_dim())], l)[0];
        let wo = matrix(&mut g, &name("attn_output"), &lw.wo);
        let proj = g.push(
            Op::MatMul { weights: vec![wo] },
            &[att],
            &[act(c.n_embd)],
            l,
        )[0];
        x = g.push(Op::Add, &[x, proj], &[act(c.n_embd)], l)[0];

        let norm = vector(&mut g, &name("ffn_norm"), c.n_embd);
        let xb = g.push(Op::RmsNorm { weight: norm, eps }, &[x], &[act(c.n_embd)], l)[0];
        let gate_w = matrix(&mut g, &name("ffn_gate"), &lw.w_gate);
        let up_w = matrix(&mut g, &name("ffn_up"), &lw.w_up);
        let gate = g.push(
            Op::MatMul {
                weights: vec![gate_w],
            },
            &[xb],
            &[act(c.n_ff)],
            l,
        )[0];
        let up = g.push(
            Op::MatMul {
                weights: vec![up_w],
            },
            &[xb],
            &[act(c.n_ff)],
            l,
        )[0];
        let h = g.push(Op::SwiGlu, &[gate, up], &[act(c.n_ff)], l)[0];
        let down_w = matrix(&mut g, &name("ffn_down"), &lw.w_down);
        let down = g.push(
            Op::MatMul {
                weights: vec![down_w],
            },
            &[h],
            &[act(c.n_embd)],
            l,
        )[0];
        x = g.push(Op::Add, &[x, down], &[act(c.n_embd)], l)[0];
    }
    let out_rows = |cols| ValueType::F32 {
        rows: Rows::Outputs,
        cols,
    };
    let x = g.push(Op::SelectRows, &[x], &[out_rows(c.n_embd)], None)[0];
    let norm = vector(&mut g, "output_norm.weight", c.n_embd);
    let xn = g.push(
        Op::RmsNorm {
            weight: norm,
            eps: c.rms_norm_eps,
        },
        &[x],
        &[out_rows(c.n_embd)],
        None,
    )[0];
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
