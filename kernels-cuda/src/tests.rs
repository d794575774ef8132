//! Host-side checks of the CUDA sources that need no GPU (NVRTC compiles every variant in
//! tests/tests/cuda_nvrtc.rs): every variant assembles into one self-contained source with
//! its argument struct and a symbol of its own per entry point, and prelude.cuh reads the
//! step header kiln-gpu-host writes.

use std::collections::HashSet;

use kiln_ir::DType;
use kiln_ir::backend::Step;
use kiln_ir::kv_layout::KvDtype;

use crate::sources::{self, all_variants, argmax_source, source, top_k_source};
use crate::variant::{ARGMAX_SYMBOL, Entry, Kernel, TOP_K_SYMBOL, Variant};

#[test]
fn every_variant_assembles_into_one_source() {
    let variants = all_variants();
    // 24 kernels: 7 matmuls × 3 float weight types (the matvec and the int8 tensor-core
    // matmul run the packed ones), embed × 11 weight types, 3 KV kernels × 2 KV types,
    // 10 others, the matvec and the int8 matmul × 8 packed types, the quantizer.
    assert_eq!(
        variants.len(),
        7 * 3 + 11 + 3 * 2 + 10 + 8 + 1 + crate::mmq::DTYPES.len()
    );
    for v in &variants {
        let src = source(v).unwrap_or_else(|| panic!("{} does not assemble", v.name()));
        assert!(
            !src.contains("#include"),
            "{}: an include is left",
            v.name()
        );
        assert!(src.contains("static_assert(sizeof("), "{}", v.name());
        if matches!(v.kernel, Kernel::Matvec | Kernel::Quantize | Kernel::Mmq) {
            // matvec.rs's and mmq.rs's modules name their entries themselves.
            for &e in v.entries() {
                assert!(
                    src.contains(&format!(" {}(const", v.symbol(e))),
                    "{}",
                    v.symbol(e)
                );
            }
            continue;
        }
        for &e in v.entries() {
            let define = format!("#define {} {}\n", e.macro_name(), v.symbol(e));
            assert!(src.contains(&define), "{}: no {define}", v.name());
            assert!(
                src.contains(&format!("{}(const __grid_constant__", e.macro_name())),
                "{}: no kernel {}",
                v.name(),
                e.macro_name()
            );
        }
        assert!(
            !(v.kernel.is_matmul() && v.packed()),
            "{}: the matvec runs a packed type's matmul",
            v.name()
        );
        assert_eq!(
            src.matches("// ---- prelude.cuh").count(),
            1,
            "{}",
            v.name()
        );
        if let Some(w) = v.weight {
            // Packed types read pw_unit (the packed layout), the others w_unit.
            let file = if v.packed() {
                format!("mv/unit_{}.cuh", w.name())
            } else {
                format!("weights/{}.cuh", w.name())
            };
            assert!(src.contains(&format!("// ---- {file}")), "{}", v.name());
        }
        match v.kv {
            Some(KvDtype::F8E4M3) => assert!(src.contains("#define KV_FP8 1"), "{}", v.name()),
            Some(KvDtype::F16) => assert!(src.contains("#define KV_FP8 0"), "{}", v.name()),
            None => assert!(!src.contains("#define KV_FP8"), "{}", v.name()),
        }
    }
    assert!(argmax_source().contains(&format!("#define KILN_MAIN {ARGMAX_SYMBOL}\n")));
    // top_k.cu's sizes are the launch's and the host's.
    let top_k = top_k_source();
    assert!(top_k.contains(&format!("#define KILN_MAIN {TOP_K_SYMBOL}\n")));
    assert!(top_k.contains(&format!(
        "#define TOP_K_MAX {}u\n",
        crate::launch::TOP_K_MAX
    )));
    let threads = crate::launch::TOP_K_THREADS;
    assert!(top_k.contains(&format!("#define TOP_K_THREADS {threads}u\n")));
    assert!(top_k.contains("struct TopKArgs {"));
}

/// ncu and the disassembly tell every kernel apart: one symbol per (variant, entry).
#[test]
fn every_variant_entry_has_its_own_symbol() {
    let mut seen = HashSet::new();
    for v in all_variants() {
        for &e in v.entries() {
            let s = v.symbol(e);
            assert!(seen.insert(s.clone()), "{s} twice");
            assert!(
                s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{s}"
            );
        }
    }
    assert!(seen.insert(ARGMAX_SYMBOL.to_string()));
    assert!(seen.insert(TOP_K_SYMBOL.to_string()));
    // A module's function table: indices distinct within a variant, and together every
    // index below Entry::COUNT (no hole).
    let mut used = HashSet::new();
    for v in all_variants() {
        let mut own = HashSet::new();
        for &e in v.entries() {
            assert!(e.index() < Entry::COUNT, "{e:?}");
            assert!(own.insert(e.index()), "{}: {e:?} twice", v.name());
            used.insert(e.index());
        }
    }
    assert_eq!(used, (0..Entry::COUNT).collect::<HashSet<_>>());
    let q4 = Variant {
        kernel: Kernel::MatMul,
        weight: Some(DType::Q4_0),
        kv: None,
    };
    assert!(
        q4.entries().is_empty(),
        "the matvec and mmq replace its _mv8"
    );
    assert!(source(&q4).is_none());
    let f16 = Variant {
        weight: Some(DType::F16),
        ..q4
    };
    assert_eq!(f16.symbol(Entry::Main), "matmul_f16_mv8");
    let mv = Variant {
        kernel: Kernel::Matvec,
        ..q4
    };
    let e = Entry::matvec(8, crate::matvec::Epilogue::Add).unwrap();
    assert_eq!(mv.symbol(e), "matvec_q4_0_t8_add");
    assert_eq!(
        mv.entries().len(),
        crate::matvec::entries(DType::Q4_0).len()
    );
    let att = Variant {
        kernel: Kernel::Attention,
        weight: None,
        kv: Some(KvDtype::F8E4M3),
    };
    assert_eq!(att.symbol(Entry::Decode), "attention_fp8_decode");
    let norm = Variant {
        kernel: Kernel::RmsNorm,
        weight: None,
        kv: None,
    };
    assert_eq!(norm.symbol(Entry::Main), "rmsnorm_f32");
}

#[test]
fn every_kernel_has_a_cuda_file() {
    for k in Kernel::ALL {
        assert!(sources::file(&k.file()).is_some(), "{k:?}");
    }
}

#[test]
fn unknown_types_do_not_assemble() {
    let v = |kernel, weight, kv| Variant { kernel, weight, kv };
    assert!(source(&v(Kernel::MatMul, Some(DType::F8E4M3), None)).is_none());
    assert!(
        source(&v(Kernel::MatMul, None, None)).is_none(),
        "a matmul needs its weight type"
    );
    assert!(source(&v(Kernel::Add, Some(DType::F32), None)).is_none());
    assert!(
        source(&v(Kernel::Attention, None, None)).is_none(),
        "a KV kernel needs its KV type"
    );
}

/// prelude.cuh's STEP_* words are where kiln-gpu-host's step buffer keeps them.
#[test]
fn the_step_header_is_the_one_gpu_host_writes() {
    let prelude = sources::file("prelude.cuh").unwrap();
    let word = |name: &str| -> usize {
        let line = prelude
            .lines()
            .find(|l| l.starts_with(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("no {name}"));
        line.split_whitespace()
            .nth(2)
            .unwrap()
            .trim_end_matches('u')
            .parse()
            .unwrap()
    };
    let ids = [7u32, 11, 13];
    let positions = [0u32, 1, 5];
    let seq = [0u32, 0, 1];
    let tables: [&[u32]; 2] = [&[3], &[4, 9]];
    let outputs = [1u32, 2];
    let step = Step {
        token_ids: &ids,
        positions: &positions,
        token_seq: &seq,
        block_tables: &tables,
        output_rows: &outputs,
    };
    let w = kiln_gpu_host::step::words(&step, &[], 1).unwrap();
    let region = |name: &str, len: usize| {
        let at = w[word(name)] as usize;
        w[at..at + len].to_vec()
    };
    assert_eq!(w[word("STEP_N_TOKENS")], 3);
    assert_eq!(w[word("STEP_N_OUTPUTS")], 2);
    assert_eq!(region("STEP_IDS", 3), ids);
    assert_eq!(region("STEP_POSITIONS", 3), positions);
    assert_eq!(region("STEP_SEQ", 3), seq);
    assert_eq!(region("STEP_OUT_ROWS", 2), outputs);
    assert_eq!(w[word("STEP_N_SEQS")], 2);
    let table1 = region("STEP_TABLES", 2)[1] as usize;
    assert_eq!(&w[table1..table1 + 2], &[4, 9]);
}
