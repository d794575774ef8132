//! The verifier rejects bad graphs with a message naming the node and the problem.

use crate::graph::{Rows, ValueType};
use crate::passes::tests::tiny_llama;
use crate::{IrError, Op, ValueId, verify};

fn node_error(result: Result<(), IrError>) -> String {
    match result {
        Err(IrError::Node { message, .. }) => message,
        other => panic!("expected a node error, got {other:?}"),
    }
}

#[test]
fn a_value_read_before_it_is_defined_is_rejected() {
    let mut g = tiny_llama(1);
    g.nodes.swap(1, 2); // the q matmul before the norm that feeds it
    assert!(node_error(verify(&g)).contains("before it is defined"));
}

#[test]
fn a_shape_mismatch_is_rejected() {
    let mut g = tiny_llama(1);
    let v = g.nodes[2].outputs[0];
    g.values[v.0 as usize] = ValueType::F32 {
        rows: Rows::Tokens,
        cols: 63,
    };
    assert!(node_error(verify(&g)).contains("expected"));
}

#[test]
fn attention_before_its_kv_write_is_rejected() {
    let mut g = tiny_llama(1);
    let write = g
        .nodes
        .iter()
        .position(|n| matches!(n.op, Op::KvWrite { .. }))
        .unwrap();
    let attend = g
        .nodes
        .iter()
        .position(|n| matches!(n.op, Op::Attention { .. }))
        .unwrap();
    g.nodes.swap(write, attend);
    assert!(node_error(verify(&g)).contains("before its KV write"));
}

#[test]
fn unknown_weights_layers_and_missing_output_are_rejected() {
    let mut g = tiny_llama(1);
    if let Op::MatMul { weights } = &mut g.nodes[2].op {
        weights[0] = crate::WeightId(999);
    }
    assert!(node_error(verify(&g)).contains("unknown weight"));

    let mut g = tiny_llama(1);
    g.nodes[1].layer = Some(5);
    assert!(node_error(verify(&g)).contains("layer 5"));

    let mut g = tiny_llama(1);
    g.output = None;
    assert!(matches!(verify(&g), Err(IrError::Graph(_))));

    let mut g = tiny_llama(1);
    g.nodes[3].outputs.push(ValueId(0));
    assert!(node_error(verify(&g)).contains("redefines %0"));
}

#[test]
fn gemma_ops_are_checked() {
    use crate::passes::tests::tiny_gemma;
    // A QK-norm weight of the wrong length.
    let mut g = tiny_gemma(1);
    let i = g
        .nodes
        .iter()
        .position(|n| matches!(n.op, Op::HeadRmsNorm { .. }))
        .unwrap();
    if let Op::HeadRmsNorm { head_dim, .. } = &mut g.nodes[i].op {
        *head_dim = 16;
    }
    assert!(node_error(verify(&g)).contains("expected (1, 16)"));
    // A window of 0, and a scale that is not a number.
    for bad in [
        |a: &mut crate::AttentionParams| a.window = Some(0),
        |a: &mut crate::AttentionParams| a.scale = f32::NAN,
    ] {
        let mut g = tiny_gemma(1);
        for n in &mut g.nodes {
            if let Op::Attention { attention } | Op::KvWrite { attention } = &mut n.op {
                bad(attention);
            }
        }
        assert!(verify(&g).is_err());
    }
    // Two layers writing one KV slot.
    let mut g = tiny_gemma(2);
    for n in &mut g.nodes {
        if let Op::Attention { attention } | Op::KvWrite { attention } = &mut n.op {
            attention.kv_group = 0;
            attention.kv_slot = 0;
        }
    }
    assert!(node_error(verify(&g)).contains("holds layer 0's"));
}
