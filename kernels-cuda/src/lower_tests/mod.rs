//! The lowering on a small synthetic Llama-shaped plan of odd sizes, fused and unfused:
//! one call list per launch, the variant of each op, every address inside the buffer it
//! was given, 64-bit weight offsets past 4 GiB; each call's launches for a step in
//! [`launches`].

mod launches;

use kiln_ir::graph::{Graph, Rows, ValueType};
use kiln_ir::kv_layout::{KvDtype, KvLayout};
use kiln_ir::{AttentionParams, DType, Op, Plan, RopeMode, RopeParams};

use crate::args::KvArgs;
use crate::launch::WG;
use crate::lower::geometry::StepGeometry;
use crate::lower::{Args, Buffers, Call, Lowered, lower, partial_bytes, q8_1_bytes, supports};
use crate::matvec::Epilogue;
use crate::variant::{Entry, Kernel};
use crate::weights::WeightLayout;

// Odd sizes: multiples of the 32-value quant blocks where a quantized weight needs them,
// of nothing else (heads of 20, 6 heads over 2 KV heads, 53 tokens of vocabulary).
const D: usize = 96;
const HEADS: usize = 6;
const KV_HEADS: usize = 2;
const HD: usize = 20;
const FF: usize = 160;
const VOCAB: usize = 53;
const LAYERS: usize = 2;

/// A small Llama-shaped graph, unfused, as the engine's builder makes it.
fn tiny_llama() -> Graph {
    let mut g = Graph::new(LAYERS);
    let act = |cols| ValueType::F32 {
        rows: Rows::Tokens,
        cols,
    };
    let ids = g.new_value(ValueType::TokenIds);
    g.input = Some(ids);
    let table = g.add_weight("token_embd", DType::Q8_0, VOCAB, D);
    let mut x = g.push(Op::Embed { table }, &[ids], &[act(D)], None)[0];
    let rope = RopeParams {
        head_dim: HD,
        rope_dims: HD,
        theta: 10000.0,
        freq_scale: 1.0,
        freq_factors: None,
        mode: RopeMode::Normal,
    };
    let norm = |g: &mut Graph, name: String, x, l| {
        let w = g.add_weight(name, DType::F32, 1, D);
        g.push(
            Op::RmsNorm {
                weight: w,
                eps: 1e-5,
            },
            &[x],
            &[act(D)],
            l,
        )[0]
    };
    let matmul = |g: &mut Graph, name: String, dtype, n, k, x, l| {
        let w = g.add_weight(name, dtype, n, k);
        g.push(Op::MatMul { weights: vec![w] }, &[x], &[act(n)], l)[0]
    };
    for layer in 0..LAYERS {
        let l = Some(layer);
        let attention = AttentionParams::new(layer, HEADS, KV_HEADS, HD);
        let xb = norm(&mut g, format!("{layer}.attn_norm"), x, l);
        let q = matmul(
            &mut g,
            format!("{layer}.q"),
            DType::Q4_0,
            HEADS * HD,
            D,
            xb,
            l,
        );
        let k = matmul(
            &mut g,
            format!("{layer}.k"),
            DType::Q4_0,
            KV_HEADS * HD,
            D,
            xb,
            l,
        );
        let v = matmul(
            &mut g,
            format!("{layer}.v"),
            DType::Q5_1,
            KV_HEADS * HD,
            D,
            xb,
            l,
        );
        let q = g.push(Op::Rope { rope }, &[q], &[act(HEADS * HD)], l)[0];
        let k = g.push(Op::Rope { rope }, &[k], &[act(KV_HEADS * HD)], l)[0];
        g.push(Op::KvWrite { attention }, &[k, v], &[], l);
        let att = g.push(Op::Attention { attention }, &[q], &[act(HEADS * HD)], l)[0];
        let proj = matmul(
            &mut g,
            format!("{layer}.o"),
            DType::F16,
            D,
            HEADS * HD,
            att,
            l,
        );
        x = g.push(Op::Add, &[x, proj], &[act(D)], l)[0];
        let xb = norm(&mut g, format!("{layer}.ffn_norm"), x, l);
        let gate = matmul(&mut g, format!("{layer}.gate"), DType::Q4_1, FF, D, xb, l);
        let up = matmul(&mut g, format!("{layer}.up"), DType::Q4_1, FF, D, xb, l);
        let h = g.push(Op::SwiGlu, &[gate, up], &[act(FF)], l)[0];
        let down = matmul(&mut g, format!("{layer}.down"), DType::BF16, D, FF, h, l);
        x = g.push(Op::Add, &[x, down], &[act(D)], l)[0];
    }
    let out = |cols| ValueType::F32 {
        rows: Rows::Outputs,
        cols,
    };
    let x = g.push(Op::SelectRows, &[x], &[out(D)], None)[0];
    let w = g.add_weight("output_norm", DType::F32, 1, D);
    let xn = g.push(
        Op::RmsNorm {
            weight: w,
            eps: 1e-5,
        },
        &[x],
        &[out(D)],
        None,
    )[0];
    let head = g.add_weight("output", DType::Q8_0, VOCAB, D);
    g.output = Some(
        g.push(
            Op::MatMul {
                weights: vec![head],
            },
            &[xn],
            &[out(VOCAB)],
            None,
        )[0],
    );
    g
}

const MAX_TOKENS: usize = 37;
const MAX_OUTPUTS: usize = 5;

fn plan(fused: bool) -> Plan {
    let mut g = tiny_llama();
    if fused {
        let unfused = g.clone();
        kiln_ir::passes::fuse(&mut g, &|op| {
            supports(op, &unfused) || op.matrices().is_empty()
        })
        .unwrap();
    }
    let graph = g.clone();
    kiln_ir::lower(g, &|op| supports(op, &graph), MAX_TOKENS, MAX_OUTPUTS).unwrap()
}

fn kv() -> KvLayout {
    KvLayout::new(LAYERS, KV_HEADS, HD)
        .unwrap()
        .with_dtype(KvDtype::F8E4M3)
        .unwrap()
}

/// Buffers far apart, high in the 64-bit space.
const BUFFERS: Buffers = Buffers {
    arena: 0x10_0000_0000,
    weights: 0x20_0000_0000,
    kv: 0x30_0000_0000,
    step: 0x40_0000_0000,
    partial: 0x50_0000_0000,
    q8_1: 0x60_0000_0000,
};

fn lowered(plan: &Plan) -> (Lowered, WeightLayout) {
    let layout = WeightLayout::new(plan).unwrap();
    (lower(plan, &layout, &kv(), BUFFERS).unwrap(), layout)
}

/// `[at, at + bytes)` lies inside `[base, base + size)` (a null pointer: an unused field).
fn inside(what: &str, at: u64, bytes: u64, base: u64, size: u64) {
    assert!(
        at >= base && at + bytes <= base + size,
        "{what}: {at:#x} + {bytes} outside {base:#x} + {size}"
    );
}

#[test]
fn every_address_lies_inside_its_buffer() {
    for fused in [false, true] {
        let plan = plan(fused);
        let (low, layout) = lowered(&plan);
        assert_eq!(low.launches.len(), plan.launches.len());
        let arena = plan.arena_bytes as u64;
        let act = |what: &str, at: u64, rows: usize, cols: u32| {
            inside(
                what,
                at,
                (rows * cols as usize * 4) as u64,
                BUFFERS.arena,
                arena,
            )
        };
        let weights = |what: &str, at: u64, bytes: u64| {
            inside(what, at, bytes, BUFFERS.weights, layout.total)
        };
        let rows = |sel: u32| if sel == 1 { MAX_OUTPUTS } else { MAX_TOKENS };
        for (launch, calls) in plan.launches.iter().zip(&low.launches) {
            assert!(!calls.is_empty(), "{}", launch.kernel);
            for call in calls {
                let v = &low.variants[call.variant];
                // The variant is the op's, of its weight type.
                if matches!(v.kernel, Kernel::Matvec | Kernel::Quantize | Kernel::Mmq) {
                    assert!(launch.op.name().contains("matmul"), "{}", launch.kernel);
                } else {
                    assert_eq!(v.kernel.stem(), launch.op.name(), "{}", launch.kernel);
                    assert!(launch.kernel.starts_with(v.kernel.stem()));
                }
                let scratch = |what: &str, at: u64, bytes: u64| {
                    inside(what, at, bytes, BUFFERS.q8_1, q8_1_bytes(&plan))
                };
                let step = match call.args {
                    Args::Embed(a) => {
                        act("embed out", a.out.0, MAX_TOKENS, a.d);
                        weights("table", a.table.0, u64::from(a.row_bytes * a.rows));
                        a.step
                    }
                    Args::RmsNorm(a) => {
                        act("rmsnorm x", a.x.0, rows(a.rows_sel), a.d);
                        act("rmsnorm out", a.out.0, rows(a.rows_sel), a.d);
                        weights("norm", a.weight.0, u64::from(a.d) * 4);
                        a.step
                    }
                    Args::Matmul(a) => {
                        let r = rows(a.rows_sel);
                        act("matmul x", a.x.0, r, a.k);
                        act("matmul out", a.out.0, r, a.n);
                        let bytes = u64::from(a.n * a.row_bytes);
                        weights("w", a.w.0, bytes);
                        assert_eq!(a.w.0 % 16, 0, "weights start 16-byte aligned");
                        if v.kernel == Kernel::MatMulAdd {
                            act("res", a.res.0, r, a.n);
                        }
                        if matches!(v.kernel, Kernel::MatMulSwiGlu | Kernel::RmsNormMatMulSwiGlu) {
                            weights("w2", a.w2.0, bytes);
                        }
                        if matches!(
                            v.kernel,
                            Kernel::RmsNormMatMul | Kernel::RmsNormMatMulSwiGlu
                        ) {
                            weights("norm", a.norm.0, u64::from(a.k) * 4);
                            assert!(a.eps > 0.0);
                        }
                        a.step
                    }
                    Args::Binary(a) => {
                        for p in [a.a.0, a.b.0, a.out.0] {
                            act("binary", p, rows(a.rows_sel), a.cols);
                        }
                        a.step
                    }
                    Args::SelectRows(a) => {
                        act("select x", a.x.0, MAX_TOKENS, a.cols);
                        act("select out", a.out.0, MAX_OUTPUTS, a.cols);
                        a.step
                    }
                    Args::Rope(a) => {
                        act("rope x", a.x.0, MAX_TOKENS, a.width);
                        act("rope out", a.out.0, MAX_TOKENS, a.width);
                        a.step
                    }
                    Args::Quantize(a) => {
                        let r = rows(a.rows_sel) as u64;
                        act("quantize x", a.x.0, r as usize, a.x_stride);
                        scratch("q", a.q.0, r * u64::from(a.k));
                        scratch("ds", a.ds.0, r * u64::from(a.k / 32) * 4);
                        assert_eq!(a.ds.0 % 16, 0);
                        a.step
                    }
                    Args::Matvec(a) => {
                        let r = rows(a.rows_sel) as u64;
                        act("matvec out", a.out.0, r as usize, a.out_stride);
                        let l =
                            crate::repack::layout(v.weight.unwrap(), a.n as usize, a.k as usize)
                                .unwrap();
                        let quants = (l.quant_row_bytes() * l.rows) as u64;
                        let scales = l.scale_plane_bytes() as u64;
                        weights("wq", a.wq.0, quants);
                        weights("ws", a.ws.0, scales);
                        assert_eq!(a.ws.0 - a.wq.0, l.scale_offset as u64);
                        if a.w2q.0 != 0 {
                            weights("w2q", a.w2q.0, quants);
                            weights("w2s", a.w2s.0, scales);
                        }
                        scratch("q", a.q.0, r * u64::from(a.k));
                        scratch("ds", a.ds.0, r * u64::from(a.k / 32) * 4);
                        a.step
                    }
                    Args::Kv(a) => {
                        check_kv(v.kernel, &a, &|w, p, c| act(w, p, MAX_TOKENS, c));
                        a.step
                    }
                };
                assert_eq!(step.0, BUFFERS.step, "{}", launch.kernel);
            }
        }
    }
}

fn check_kv(kernel: Kernel, a: &KvArgs, act: &dyn Fn(&str, u64, u32)) {
    let (q, kvw) = ((a.n_heads * a.head_dim), (a.n_kv_heads * a.head_dim));
    assert_eq!(
        (a.n_heads, a.n_kv_heads, a.head_dim),
        (HEADS as u32, KV_HEADS as u32, HD as u32)
    );
    assert_eq!(a.kv.0, BUFFERS.kv);
    assert_eq!(a.partial.0, BUFFERS.partial);
    let layout = kv();
    assert_eq!(a.page_bytes as usize, layout.page_bytes());
    assert!(a.layer_base + a.vs_base < a.page_bytes);
    match kernel {
        Kernel::KvWrite => {
            act("k", a.k.0, kvw);
            act("v", a.v.0, kvw);
        }
        Kernel::RopeKvWrite => {
            act("q", a.q.0, q);
            act("q_out", a.q_out.0, q);
            act("k", a.k.0, kvw);
            act("v", a.v.0, kvw);
        }
        Kernel::Attention => {
            act("q", a.q.0, q);
            act("out", a.q_out.0, q);
        }
        k => panic!("{k:?} with KvArgs"),
    }
}

#[test]
fn the_fused_plan_takes_the_fused_kernels() {
    let (low, _) = lowered(&plan(true));
    let kernels: Vec<Kernel> = low.variants.iter().map(|v| v.kernel).collect();
    // MatMulAdd: the F16 and BF16 projections; the fused q, k, v and gate, up (packed
    // types the int8 tensor-core matmul reads) are quantize, Mmq and the matvec only.
    for k in [Kernel::RopeKvWrite, Kernel::MatMulAdd, Kernel::Mmq] {
        assert!(kernels.contains(&k), "{k:?} not in {kernels:?}");
    }
    for k in [Kernel::RmsNormMatMul, Kernel::RmsNormMatMulSwiGlu] {
        assert!(!kernels.contains(&k), "{k:?} in {kernels:?}");
    }
    // One module per variant.
    for (i, v) in low.variants.iter().enumerate() {
        assert!(!low.variants[..i].contains(v), "{v:?} twice");
    }
}

/// A weight at 5 GiB of a larger weights buffer keeps its full 64-bit address.
#[test]
fn weight_offsets_past_4_gib_survive() {
    let plan = plan(false);
    let mut layout = WeightLayout::new(&plan).unwrap();
    let head = plan
        .graph
        .weights
        .iter()
        .position(|w| w.name == "output")
        .unwrap();
    let far = 5u64 << 30;
    layout.offsets[head] = far;
    layout.total = far + 4096;
    let low = lower(&plan, &layout, &kv(), BUFFERS).unwrap();
    let last = low.launches.last().unwrap();
    // Its calls (Q8_0: quantize, the int8 tensor-core matmul, the matvec).
    let heads: Vec<_> = last
        .iter()
        .filter_map(|c| match c.args {
            Args::Matvec(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(heads.len(), 2, "the LM head's int8 matmul and matvec");
    for a in heads {
        assert_eq!(a.wq.0, BUFFERS.weights + far);
        assert!(a.wq.0 > u64::from(u32::MAX));
    }
}

/// A Llama-3-8B-sized vocabulary (Q8_0 embedding and head of 128,256 rows of 16,384, over
/// the 4 GiB of a 32-bit offset altogether) lays out; one matrix past 4 GiB does not.
#[test]
fn weights_over_4_gib_lay_out() {
    let build = |vocab: usize, dtype: DType| {
        let mut g = Graph::new(0);
        let ids = g.new_value(ValueType::TokenIds);
        g.input = Some(ids);
        let act = |rows, cols| ValueType::F32 { rows, cols };
        let table = g.add_weight("token_embd", dtype, vocab, 16384);
        let x = g.push(
            Op::Embed { table },
            &[ids],
            &[act(Rows::Tokens, 16384)],
            None,
        )[0];
        let x = g.push(Op::SelectRows, &[x], &[act(Rows::Outputs, 16384)], None)[0];
        let head = g.add_weight("output", dtype, vocab, 16384);
        g.output = Some(
            g.push(
                Op::MatMul {
                    weights: vec![head],
                },
                &[x],
                &[act(Rows::Outputs, vocab as u32 as usize)],
                None,
            )[0],
        );
        let graph = g.clone();
        let supported = kiln_ir::lower(g.clone(), &|op| supports(op, &graph), 4, 1);
        (supported, kiln_ir::lower(g, &|_| true, 4, 1).unwrap())
    };
    let plan = build(128_256, DType::Q8_0).0.unwrap();
    let layout = WeightLayout::new(&plan).unwrap();
    assert!(layout.total > u64::from(u32::MAX), "{}", layout.total);
    let low = lower(&plan, &layout, &kv(), BUFFERS).unwrap();
    let Some(Args::Matvec(a)) = low.launches[2]
        .iter()
        .map(|c| c.args)
        .find(|a| matches!(a, Args::Matvec(_)))
    else {
        panic!("the head")
    };
    assert_eq!(a.wq.0, BUFFERS.weights + layout.offsets[1]);
    let (supported, plan) = build(140_000, DType::F32);
    assert!(supported.is_err(), "9 GB in one matrix is not supported");
    assert!(WeightLayout::new(&plan).is_err(), "nor laid out");
}

#[test]
fn a_moved_step_buffer_moves_every_call() {
    let (mut low, _) = lowered(&plan(true));
    low.set_step(0x77_0000_0000);
    for c in low.launches.iter().flatten() {
        let g = geometry(3, 1);
        let v = low.variants[c.variant];
        for p in c.launches(&v, &g) {
            let bytes = p.args.as_bytes();
            // Every struct holds the step's address somewhere among its 8-byte fields.
            let words: Vec<u64> = bytes
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
                .collect();
            assert!(words.contains(&0x77_0000_0000), "{v:?}");
            assert!(!words.contains(&BUFFERS.step), "{v:?}");
        }
    }
}

fn geometry(n_tokens: u32, n_outputs: u32) -> StepGeometry {
    StepGeometry {
        n_tokens,
        n_outputs,
        class: 1,
        sm_count: 132,
        tensor_cores: true,
        wgmma: false,
        decode_attention: true,
    }
}
