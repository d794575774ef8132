//! Each call's launches for a step: the matvec and tensor-core tiles, the elementwise
//! grids and the attention kernels over odd step shapes (on the fixtures of the parent).

use super::*;

/// The first call of the lowered fused plan whose variant is `kernel`.
fn call_of(low: &Lowered, kernel: Kernel) -> Call {
    *low.launches
        .iter()
        .flatten()
        .find(|c| low.variants[c.variant].kernel == kernel)
        .unwrap_or_else(|| panic!("no {kernel:?}"))
}

#[test]
fn matvec_and_tensor_core_launches_cover_odd_steps() {
    let (low, _) = lowered(&plan(true));
    // The fused FFN's Q4_1 gate and up: quantize (RMSNorm folded) + one SwiGLU matvec
    // up to 32 tokens, the int8 tensor-core kernel on the same q8_1 above.
    let calls = low
        .launches
        .iter()
        .find(|cs| {
            cs.iter().any(|c| {
                let v = &low.variants[c.variant];
                v.kernel == Kernel::Mmq && v.weight == Some(DType::Q4_1)
            })
        })
        .unwrap();
    let kinds: Vec<Kernel> = calls
        .iter()
        .map(|c| low.variants[c.variant].kernel)
        .collect();
    assert_eq!(kinds, [Kernel::Quantize, Kernel::Mmq, Kernel::Matvec]);
    let launches = |g: &StepGeometry| -> Vec<_> {
        calls
            .iter()
            .flat_map(|c| c.launches(&low.variants[c.variant], g))
            .map(|p| p.launch)
            .collect()
    };
    let Args::Matvec(a) = calls[1].args else {
        panic!()
    };
    assert_eq!(
        Args::Matvec(a),
        calls[2].args,
        "one set of arguments for both"
    );
    for n_tokens in [1u32, 3, 7, 8, 17, 32] {
        let l = launches(&geometry(n_tokens, 1));
        assert_eq!(l.len(), 2, "{n_tokens}");
        assert_eq!(
            (l[0].entry, l[0].grid),
            (Entry::RmsNormQuantize, [n_tokens, 1, 1])
        );
        let tile = crate::matvec::tile_for(n_tokens, Epilogue::SwiGlu);
        assert_eq!(l[1].entry, Entry::matvec(tile, Epilogue::SwiGlu).unwrap());
        assert_eq!(l[1].grid[2], n_tokens.div_ceil(tile));
        assert_eq!(
            low.variants[calls[2].variant].symbol(l[1].entry),
            format!("matvec_q4_1_t{tile}_swiglu")
        );
    }
    // Past 32 tokens: the quantization still runs (the int8 kernel reads it), then the
    // int8 kernel in tiles of 128 rows × 64 tokens (a GLU), or 32 where 64 would leave
    // most of the 132 SMs idle (these few rows: always).
    for (n_tokens, sm_count, tile) in [(33u32, 132, 32), (37, 132, 32), (70, 1, 64), (130, 1, 64)] {
        let l = launches(&StepGeometry {
            sm_count,
            ..geometry(n_tokens, 1)
        });
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].entry, l[0].grid),
            (Entry::RmsNormQuantize, [n_tokens, 1, 1])
        );
        assert_eq!(l[1].entry, Entry::mmq(tile, Epilogue::SwiGlu).unwrap());
        assert_eq!(
            l[1].grid,
            [n_tokens.div_ceil(tile), a.n.div_ceil(crate::mmq::ROWS), 1]
        );
        assert_eq!(
            low.variants[calls[1].variant].symbol(l[1].entry),
            format!("matmul_mmq_q4_1_t{tile}_swiglu")
        );
    }
    // sm_90a (the wgmma option): the warpgroup-MMA kernel instead, 64 tokens × 128 rows.
    for n_tokens in [33u32, 65, 130] {
        let l = launches(&StepGeometry {
            wgmma: true,
            ..geometry(n_tokens, 1)
        });
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].entry, Entry::RmsNormQuantize);
        assert_eq!(l[1].entry, Entry::mmq_wgmma(Epilogue::SwiGlu));
        assert_eq!(
            l[1].grid,
            [n_tokens.div_ceil(64), a.n.div_ceil(crate::mmq::ROWS), 1]
        );
        assert_eq!(
            low.variants[calls[1].variant].symbol(l[1].entry),
            "matmul_wgmma_q4_1_swiglu"
        );
    }
    let no_tc = StepGeometry {
        tensor_cores: false,
        ..geometry(33, 1)
    };
    let l = launches(&no_tc);
    assert_eq!(
        l.len(),
        2,
        "no tensor cores: the matvec in tiles over every row"
    );
    assert_eq!(
        (l[1].entry, l[1].grid[2]),
        (Entry::matvec(16, Epilogue::SwiGlu).unwrap(), 3)
    );
    // The fused q, k, v (Q4_0, Q4_0, Q5_1): one quantization, then each weight's int8
    // kernel (128 tokens past 96 rows) and matvec.
    let qkv = low
        .launches
        .iter()
        .find(|cs| {
            cs.iter().any(|c| {
                let v = &low.variants[c.variant];
                v.kernel == Kernel::Mmq && v.weight == Some(DType::Q5_1)
            })
        })
        .unwrap();
    let kinds: Vec<Kernel> = qkv.iter().map(|c| low.variants[c.variant].kernel).collect();
    use Kernel::{Matvec, Mmq, Quantize};
    assert_eq!(kinds, [Quantize, Mmq, Matvec, Mmq, Matvec, Mmq, Matvec]);
    // (On a device of one SM: 132 would halve these small grids' tiles to 32.)
    for (n_tokens, tile) in [(33u32, 64), (96, 64), (97, 128), (130, 128)] {
        let g = StepGeometry {
            sm_count: 1,
            ..geometry(n_tokens, 1)
        };
        let l: Vec<_> = qkv
            .iter()
            .flat_map(|c| c.launches(&low.variants[c.variant], &g))
            .map(|p| p.launch)
            .collect();
        let entries: Vec<Entry> = l.iter().map(|l| l.entry).collect();
        let int8 = |tile| Entry::mmq(tile, Epilogue::Store).unwrap();
        // Q5_1 has an offset term: 64-token tiles only (crate::mmq::has_offset).
        assert_eq!(
            entries,
            [Entry::RmsNormQuantize, int8(tile), int8(tile), int8(64)],
            "{n_tokens}"
        );
        assert_eq!(l[1].grid, [n_tokens.div_ceil(tile), 1, 1]);
    }
    // The output projection's F16 weights keep f32 products: never the tensor cores.
    let f16 = *low
        .launches
        .iter()
        .flatten()
        .find(|c| low.variants[c.variant].weight == Some(DType::F16))
        .unwrap();
    let vf = low.variants[f16.variant];
    assert_eq!(
        f16.launches(&vf, &geometry(33, 1))
            .next()
            .unwrap()
            .launch
            .entry,
        Entry::Main
    );
    // The LM head (Q8_0) counts output rows: 1 of a 33-token step is a t1 matvec.
    let head = low.launches.last().unwrap();
    let g33 = geometry(33, 1);
    let l: Vec<_> = head
        .iter()
        .flat_map(|c| c.launches(&low.variants[c.variant], &g33))
        .map(|p| p.launch)
        .collect();
    assert_eq!(l.len(), 2);
    assert_eq!(
        (l[1].entry, l[1].grid[2]),
        (Entry::matvec(1, Epilogue::Store).unwrap(), 1)
    );
}

/// Every packed type prefills on the int8 tensor-core matmul (crate::mmq): its call list
/// is the quantization (for every step length), the int8 kernel and the matvec.
#[test]
fn every_packed_type_prefills_on_the_int8_tensor_cores() {
    for dtype in crate::repack::PACKED {
        assert!(crate::mmq::covers(dtype), "{dtype}");
        let mut g = Graph::new(0);
        let ids = g.new_value(ValueType::TokenIds);
        g.input = Some(ids);
        let act = |cols| ValueType::F32 {
            rows: Rows::Tokens,
            cols,
        };
        let table = g.add_weight("token_embd", DType::F32, 7, 256);
        let x = g.push(Op::Embed { table }, &[ids], &[act(256)], None)[0];
        let w = g.add_weight("w", dtype, 67, 256);
        let y = g.push(Op::MatMul { weights: vec![w] }, &[x], &[act(67)], None)[0];
        let out = ValueType::F32 {
            rows: Rows::Outputs,
            cols: 67,
        };
        g.output = Some(g.push(Op::SelectRows, &[y], &[out], None)[0]);
        let graph = g.clone();
        let plan = kiln_ir::lower(g, &|op| supports(op, &graph), 130, 1).unwrap();
        let (low, _) = lowered(&plan);
        let calls = &low.launches[1];
        let kinds: Vec<Kernel> = calls
            .iter()
            .map(|c| low.variants[c.variant].kernel)
            .collect();
        assert_eq!(
            kinds,
            [Kernel::Quantize, Kernel::Mmq, Kernel::Matvec],
            "{dtype}"
        );
        let entries = |n_tokens| -> Vec<Entry> {
            let g = geometry(n_tokens, 1);
            calls
                .iter()
                .flat_map(|c| c.launches(&low.variants[c.variant], &g))
                .map(|p| p.launch.entry)
                .collect()
        };
        let tile = |rows| crate::mmq::tile_for(dtype, rows, 67, Epilogue::Store, 132);
        for n in [33u32, 130] {
            let int8 = Entry::mmq(tile(n), Epilogue::Store).unwrap();
            assert_eq!(entries(n), [Entry::Quantize, int8], "{dtype} {n}");
        }
        assert_eq!(entries(32)[1], Entry::matvec(32, Epilogue::Store).unwrap());
    }
}

#[test]
fn elementwise_launches_cover_every_value_and_skip_empty_steps() {
    let (low, _) = lowered(&plan(false));
    let add = call_of(&low, Kernel::Add);
    let v = low.variants[add.variant];
    let l = add.launches(&v, &geometry(7, 1)).next().unwrap().launch;
    assert_eq!(l.block, [WG, 1, 1]);
    assert!(l.grid[0] * WG >= 7 * D as u32 && (l.grid[0] - 1) * WG < 7 * D as u32);
    let sel = call_of(&low, Kernel::SelectRows);
    let v = low.variants[sel.variant];
    assert_eq!(
        sel.launches(&v, &geometry(5, 0)).count(),
        0,
        "no output rows"
    );
    let kvw = call_of(&low, Kernel::KvWrite);
    let v = low.variants[kvw.variant];
    let l = kvw.launches(&v, &geometry(33, 1)).next().unwrap().launch;
    assert_eq!(l.grid, [2 * KV_HEADS as u32, 33, 1]);
}

#[test]
fn attention_takes_decode_split_k_prefill_or_the_plain_kernel() {
    let (low, _) = lowered(&plan(true));
    let c = call_of(&low, Kernel::Attention);
    let v = low.variants[c.variant];
    // One token of a long context on 132 SMs: split, then combined.
    let long = StepGeometry {
        class: 16,
        ..geometry(1, 1)
    };
    let p: Vec<_> = c.launches(&v, &long).collect();
    assert_eq!(p.len(), 2);
    assert_eq!(
        (p[0].launch.entry, p[1].launch.entry),
        (Entry::Decode, Entry::Combine)
    );
    let splits = p[0].launch.grid[2];
    assert!(splits > 1);
    for x in &p {
        let Args::Kv(a) = x.args else { panic!() };
        assert_eq!(a.splits, splits, "the combine merges the decode's splits");
    }
    // A short context: one split, no combine.
    let p: Vec<_> = c.launches(&v, &geometry(3, 3)).collect();
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].launch.entry, p[0].launch.grid[2]), (Entry::Decode, 1));
    // Long FP8 steps: the tensor-core prefill; without tensor cores, the plain kernel.
    // Heads of 20 pad to 64; the 3 heads of a KV head share a block of 21 tokens.
    let p: Vec<_> = c.launches(&v, &geometry(65, 1)).collect();
    assert_eq!(p[0].launch.entry, Entry::Prefill(0));
    assert_eq!(p[0].launch.grid, [KV_HEADS as u32, 4, 1]);
    // On sm_90a the warpgroup-MMA kernel, same grid.
    let hopper = StepGeometry {
        wgmma: true,
        ..geometry(65, 1)
    };
    let l = c.launches(&v, &hopper).next().unwrap().launch;
    assert_eq!(
        (l.entry, l.grid),
        (Entry::PrefillWgmma(0), [KV_HEADS as u32, 4, 1])
    );
    let off = StepGeometry {
        tensor_cores: false,
        ..hopper
    };
    assert_eq!(
        c.launches(&v, &off).next().unwrap().launch.entry,
        Entry::Main
    );
    // Decode attention off: the plain kernel, one block per (head, token).
    let plain = StepGeometry {
        decode_attention: false,
        ..geometry(1, 1)
    };
    let l = c.launches(&v, &plain).next().unwrap().launch;
    assert_eq!((l.entry, l.grid), (Entry::Main, [HEADS as u32, 1, 1]));
    assert!(partial_bytes(&plan(true)) > 0);
}
