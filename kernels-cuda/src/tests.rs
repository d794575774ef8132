//! Host-side checks of the CUDA kernels that need no GPU (NVRTC compiles every variant in
//! tests/tests/cuda_nvrtc.rs): every variant assembles into one self-contained source,
//! each op's params struct has the words of its WGSL twin, and the launch geometry covers
//! every row and column at odd token counts.

use kiln_ir::DType;
use kiln_ir::graph::Rows;
use kiln_ir::kv_layout::KvDtype;
use kiln_kernels_wgsl::Variant;
use kiln_kernels_wgsl::program::{Grid, param_words};

use crate::launch::{self, MMA_COLS, MMA_TOKENS, MV_ROWS, TILE_T, WG, argmax_launch};
use crate::sources::{self, ENTRY, MMA_ENTRY, all_variants, argmax_source, entries, source};

/// The variant of `op` for weight type `weight` (no KV type).
fn variant(op: &'static str, weight: Option<DType>) -> Variant {
    Variant {
        op,
        weight,
        kv: None,
        subgroups: false,
    }
}

#[test]
fn every_variant_assembles_into_one_source() {
    let variants = all_variants();
    // 14 ops: 5 matmuls and embed × 6 weight types, 3 KV ops × 2 KV types, 5 others.
    assert_eq!(variants.len(), 6 * 6 + 3 * 2 + 5);
    for v in &variants {
        let src = source(v).unwrap_or_else(|| panic!("{} does not assemble", v.name()));
        assert!(
            !src.contains("#include"),
            "{}: an include is left",
            v.name()
        );
        for entry in entries(v) {
            assert!(
                src.contains(&format!("{entry}(")),
                "{}: no {entry}",
                v.name()
            );
        }
        // Only the quantized matmuls compile the tensor-core kernel.
        let mma =
            src.contains(&format!("{MMA_ENTRY}(")) && src.contains("#define MM_TENSOR_CORES 1");
        assert_eq!(mma, entries(v).contains(&MMA_ENTRY), "{}", v.name());
        assert_eq!(
            mma,
            sources::is_matmul(v.op) && v.weight.is_some_and(|w| w.is_quantized()),
            "{}",
            v.name()
        );
        assert_eq!(
            src.matches("// ---- prelude.cuh").count(),
            1,
            "{}",
            v.name()
        );
        if let Some(w) = v.weight {
            assert!(
                src.contains(&format!("// ---- weights/{}.cuh", w.name())),
                "{}",
                v.name()
            );
        }
        match v.kv {
            Some(KvDtype::F8E4M3) => assert!(src.contains("#define KV_FP8 1"), "{}", v.name()),
            Some(KvDtype::F16) => assert!(src.contains("#define KV_FP8 0"), "{}", v.name()),
            None => assert!(!src.contains("#define KV_FP8"), "{}", v.name()),
        }
    }
    assert!(argmax_source().contains(sources::ARGMAX_ENTRY));
}

#[test]
fn every_wgsl_op_has_a_cuda_file() {
    for op in sources::ops() {
        assert!(sources::file(&format!("{op}.cu")).is_some(), "no {op}.cu");
    }
}

#[test]
fn unknown_ops_and_types_do_not_assemble() {
    let v = Variant {
        op: "nope",
        weight: None,
        kv: None,
        subgroups: false,
    };
    assert!(source(&v).is_none());
    let v = Variant {
        op: "matmul",
        weight: Some(DType::F8E4M3),
        kv: None,
        subgroups: false,
    };
    assert!(source(&v).is_none());
    let v = Variant {
        op: "attention",
        weight: None,
        kv: None,
        subgroups: false,
    };
    assert!(source(&v).is_none(), "a KV op needs its KV type");
}

/// The field names of the first `... Params {` struct of a source, WGSL (`name: type,`)
/// or CUDA (`type name;`).
fn params_fields(src: &str) -> Vec<String> {
    let start = src.find("Params {").expect("a params struct");
    let body = &src[start..start + src[start..].find('}').expect("the struct ends")];
    body.lines()
        .skip(1)
        .filter_map(|l| {
            let l = l.split("//").next().unwrap_or("").trim();
            if let Some((name, _)) = l.split_once(':') {
                return Some(name.trim().to_string()); // WGSL
            }
            let l = l.strip_suffix(';')?;
            l.split_whitespace().last().map(str::to_string) // CUDA
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// Each op's params struct has the words of its WGSL twin, by name and in order (the
/// Program writes one params block for both).
#[test]
fn params_structs_match_the_wgsl_ones() {
    for v in all_variants() {
        let cuda = params_fields(&source(&v).unwrap());
        let wgsl = params_fields(&v.source().unwrap());
        assert_eq!(cuda, wgsl, "{}", v.name());
        assert_eq!(cuda.len(), param_words(v.op), "{}", v.name());
    }
}

/// The step header and the tile constants of prelude.cuh are prelude.wgsl's.
#[test]
fn the_prelude_constants_match_the_wgsl_ones() {
    let wgsl = kiln_kernels_wgsl::sources::file("prelude").unwrap();
    let cuda = sources::file("prelude.cuh").unwrap();
    let mut checked = 0;
    for line in wgsl.lines() {
        let Some(rest) = line.strip_prefix("const ") else {
            continue;
        };
        // `NAME: type = value; // comment`
        let Some((name, value)) = rest.split_once(':').and_then(|(n, r)| {
            let value = r.split('=').nth(1)?.split(';').next()?.trim();
            Some((n.trim(), value))
        }) else {
            continue;
        };
        if name == "FP8_MAX" {
            continue; // a float: 448.0 against 448.0f
        }
        let expected = format!("#define {name} {value}");
        assert!(
            cuda.lines().any(|l| l.starts_with(&expected)),
            "prelude.cuh lacks `{expected}`"
        );
        checked += 1;
    }
    assert!(checked >= 11, "{checked} constants");
}

#[test]
fn matvec_grid_covers_odd_token_counts() {
    for n_tokens in [1u32, 3, 7, 8, 9, 33] {
        for n in [1u32, 5, 576, 49_152] {
            let grid = Grid::Matmul {
                rows: Rows::Tokens,
                n,
            };
            let l = launch::launch(
                &variant("matmul", Some(DType::Q4_1)),
                &grid,
                n_tokens,
                1,
                false,
            )
            .unwrap();
            assert_eq!(l.entry, ENTRY);
            assert_eq!(l.block, [MV_ROWS * 32, 1, 1]);
            assert!(l.grid[0] * l.grid[1] * MV_ROWS >= n, "rows of {n}");
            assert!((l.grid[0] - 1) * MV_ROWS < n, "no empty block");
            assert_eq!(l.grid[2], n_tokens.div_ceil(TILE_T));
        }
    }
}

#[test]
fn tensor_cores_take_more_than_eight_rows() {
    let grid = Grid::Matmul {
        rows: Rows::Tokens,
        n: 1536,
    };
    let q4_1 = variant("rmsnorm_matmul_swiglu", Some(DType::Q4_1));
    let l = launch::launch(&q4_1, &grid, 8, 8, true).unwrap();
    assert_eq!(l.entry, ENTRY, "decode stays on the matrix-vector kernel");
    let l = launch::launch(&q4_1, &grid, 9, 1, true).unwrap();
    assert_eq!(l.entry, MMA_ENTRY);
    assert_eq!(l.grid, [1536 / MMA_COLS, 1, 1]);
    assert_eq!(l.block, [128, 1, 1]);
    let q8 = variant("matmul", Some(DType::Q8_0));
    let l = launch::launch(&q8, &grid, 65, 1, true).unwrap();
    assert_eq!(l.grid[2], 65u32.div_ceil(MMA_TOKENS));
    // Without tensor cores (before sm_80), prefill takes tiles of 8 tokens.
    let l = launch::launch(&q8, &grid, 65, 1, false).unwrap();
    assert_eq!((l.entry, l.grid[2]), (ENTRY, 65u32.div_ceil(TILE_T)));
    // Float weights keep f32 products: never the tensor cores.
    for w in [DType::F32, DType::F16, DType::BF16] {
        let l = launch::launch(&variant("matmul", Some(w)), &grid, 65, 1, true).unwrap();
        assert_eq!(l.entry, ENTRY, "{w}");
    }
    // Rows counted in outputs: 1 output row of a 65-token step is a matrix-vector.
    let out_grid = Grid::Matmul {
        rows: Rows::Outputs,
        n: 49_152,
    };
    let l = launch::launch(&q8, &out_grid, 65, 1, true).unwrap();
    assert_eq!(l.entry, ENTRY);
    assert_eq!(l.grid, [49_152 / MV_ROWS, 1, 1]);
}

#[test]
fn other_ops_run_the_wgsl_workgroups() {
    let grid = Grid::Elementwise {
        rows: Rows::Tokens,
        cols: 576,
    };
    let l = launch::launch(&variant("add", None), &grid, 7, 1, true).unwrap();
    assert_eq!(l.block, [WG, 1, 1]);
    assert_eq!(l.grid, grid.workgroups(7, 1));
    assert!(l.grid[0] * WG >= 7 * 576);
    let grid = Grid::PerToken { x: 9 + 2 * 3 };
    let l = launch::launch(
        &Variant {
            kv: Some(KvDtype::F8E4M3),
            ..variant("rope_kv_write", None)
        },
        &grid,
        33,
        1,
        true,
    )
    .unwrap();
    assert_eq!(l.grid, [15, 33, 1]);
    // No output rows: nothing to run.
    let grid = Grid::Elementwise {
        rows: Rows::Outputs,
        cols: 576,
    };
    assert!(launch::launch(&variant("select_rows", None), &grid, 5, 0, true).is_none());
    assert!(argmax_launch(0).is_none());
    assert_eq!(argmax_launch(3).unwrap().grid, [3, 1, 1]);
}
