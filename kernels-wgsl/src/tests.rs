//! Every kernel variant parses and validates with naga, with the capabilities it uses;
//! and the params each kernel declares match the words the host writes.

use naga::valid::{Capabilities, ValidationFlags, Validator};

use crate::program::param_words;
use crate::sources::{OPS, all_variants};

fn module(source: &str, name: &str) -> naga::Module {
    naga::front::wgsl::parse_str(source).unwrap_or_else(|e| {
        panic!("{name}: {}", e.emit_to_string(source));
    })
}

#[test]
fn every_variant_validates_with_naga() {
    let variants = all_variants();
    assert!(variants.len() > 50, "{} variants", variants.len());
    for v in variants {
        let name = v.name();
        let source = v.source().unwrap_or_else(|| panic!("{name}: no source"));
        let module = module(&source, &name);
        // f16 <-> f32 packing is there on every wgpu backend kiln builds (downlevel
        // flag SHADER_F16_IN_F32: Vulkan, Metal, DX12).
        let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if v.uses_subgroups() {
            caps |= Capabilities::SUBGROUP;
        }
        if v.f16 {
            caps |= Capabilities::SHADER_FLOAT16;
        }
        if v.coop == Some(crate::Coop::Native) {
            caps |= Capabilities::COOPERATIVE_MATRIX;
        }
        Validator::new(ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&source)));
        assert!(
            module.entry_points.iter().any(|e| e.name == "main"),
            "{name} has no main"
        );
    }
}

#[test]
fn the_int8_matvec_validates_without_integer_dot_products() {
    let matvecs = all_variants()
        .into_iter()
        .filter(|v| v.op.starts_with("matvec_q8"));
    let mut n = 0;
    for v in matvecs {
        let name = v.name();
        let source = crate::sources::without_integer_dot(&v.source().expect("source"));
        assert!(!source.contains("dot4I8Packed("), "{name}");
        let module = module(&source, &name);
        let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if v.subgroups {
            caps |= Capabilities::SUBGROUP;
        }
        Validator::new(ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&source)));
        n += 1;
    }
    // 4 ops × every int8 dtype × 2 reductions.
    assert_eq!(n, 4 * crate::sources::MATVEC_DTYPES.len() * 2);
}

/// The f16 variants: the tiled GEMM of every quantized type, each of its seven ops; they
/// need shader-f16 (naga refuses them without the capability), the others do not.
#[test]
fn f16_variants_are_the_quantized_gemms_and_need_shader_f16() {
    use kiln_ir::DType;
    let f16: Vec<_> = all_variants()
        .into_iter()
        .filter(|v| v.f16 && v.coop.is_none())
        .collect();
    let quantized = crate::sources::WEIGHT_DTYPES
        .iter()
        .filter(|d| d.is_quantized())
        .count();
    assert_eq!(f16.len(), 7 * quantized);
    for v in &f16 {
        assert!(v.op.contains("gemm") && v.weight.is_some_and(|w| w.is_quantized()));
        assert!(v.name().ends_with("_f16math"), "{}", v.name());
        let source = v.source().expect("source");
        assert!(source.starts_with("enable f16;"), "{}", v.name());
        let module = module(&source, &v.name());
        let without = Validator::new(
            ValidationFlags::all(),
            Capabilities::SHADER_FLOAT16_IN_FLOAT32,
        )
        .validate(&module);
        assert!(without.is_err(), "{} validates without f16", v.name());
    }
    for weight in [DType::F32, DType::F16, DType::BF16] {
        let v = crate::Variant {
            op: "gemm",
            weight: Some(weight),
            kv: None,
            subgroups: false,
            f16: true,
            coop: None,
        };
        assert!(v.source().is_none(), "{weight} weights keep f32 tiles");
    }
    assert!(
        all_variants()
            .iter()
            .all(|v| v.f16 || !v.source().unwrap().contains("enable f16;"))
    );
}

#[test]
fn subgroup_variants_need_the_capability() {
    let v = all_variants()
        .into_iter()
        .find(|v| v.subgroups)
        .expect("a subgroup variant");
    let source = v.source().expect("source");
    let module = module(&source, &v.name());
    assert!(
        Validator::new(
            ValidationFlags::all(),
            Capabilities::SHADER_FLOAT16_IN_FLOAT32
        )
        .validate(&module)
        .is_err()
    );
}

#[test]
fn params_match_the_host() {
    for v in all_variants() {
        let source = v.source().expect("source");
        let module = module(&source, &v.name());
        let (_, global) = module
            .global_variables
            .iter()
            .find(|(_, g)| g.name.as_deref() == Some("p"))
            .unwrap_or_else(|| panic!("{}: no params", v.name()));
        let span = module.types[global.ty].inner.size(module.to_ctx());
        assert_eq!(
            span as usize,
            param_words(v.op) * 4,
            "{}: the params struct and the host disagree",
            v.name()
        );
    }
    assert_eq!(OPS.len(), 36);
}

#[test]
fn grids_split_past_the_dimension_limit_and_follow_the_step() {
    use crate::program::Grid;
    use kiln_ir::graph::Rows;
    let m = Grid::Matmul {
        rows: Rows::Tokens,
        n: 49_152,
        max_rows: u32::MAX,
    };
    assert_eq!(m.workgroups(1, 1), [49_152, 1, 1]);
    assert_eq!(m.workgroups(33, 1), [49_152, 1, 5]);
    let big = Grid::Matmul {
        rows: Rows::Outputs,
        n: 128_256,
        max_rows: u32::MAX,
    };
    let [x, y, z] = big.workgroups(7, 2);
    assert!(x <= 65_535 && x * y >= 128_256 && z == 1);
    let e = Grid::Elementwise {
        rows: Rows::Outputs,
        cols: 100,
    };
    assert_eq!(e.workgroups(9, 0), [0, 1, 1]);
    assert_eq!(e.workgroups(9, 3), [5, 1, 1]);
    assert_eq!(Grid::PerToken { x: 6 }.workgroups(4, 1), [6, 4, 1]);
}

#[test]
fn a_step_takes_the_matvec_or_the_gemm_never_both() {
    use crate::program::{GEMM_MIN_ROWS, GEMM_ROWS, Grid};
    use kiln_ir::graph::Rows;
    let matvec = Grid::Matmul {
        rows: Rows::Tokens,
        n: 131,
        max_rows: GEMM_MIN_ROWS - 1,
    };
    let gemm = Grid::Gemm {
        rows: Rows::Tokens,
        tiles: 3,
        min_rows: GEMM_MIN_ROWS,
    };
    for tokens in [1, 8, GEMM_MIN_ROWS - 1, GEMM_MIN_ROWS, 37, 64, 70, 130, 512] {
        let (m, g) = (matvec.workgroups(tokens, 1), gemm.workgroups(tokens, 1));
        let runs = |w: [u32; 3]| !w.contains(&0);
        assert!(runs(m) != runs(g), "{tokens} tokens: {m:?} and {g:?}");
        if runs(g) {
            assert_eq!(g, [3, 1, tokens.div_ceil(GEMM_ROWS)]);
        } else {
            assert_eq!(m, [131, 1, tokens.div_ceil(8)]);
        }
    }
    let by_outputs = Grid::Gemm {
        rows: Rows::Outputs,
        tiles: 70_000,
        min_rows: GEMM_MIN_ROWS,
    };
    let [x, y, z] = by_outputs.workgroups(100, 65);
    assert!(x <= 65_535 && x * y >= 70_000 && z == 2);
}

#[test]
fn the_int8_path_takes_the_steps_of_at_most_32_rows_and_the_f32_kernel_the_rest() {
    use crate::program::{Grid, MATVEC_MAX_ROWS};
    use kiln_ir::graph::Rows;
    let (rows, n) = (Rows::Tokens, 49_155);
    let quantize = Grid::Quantize { rows };
    let matvec = Grid::Matvec { rows, n };
    let rest = Grid::MatmulRest {
        rows,
        n,
        max_rows: u32::MAX,
    };
    for tokens in [1, 7, 8, 9, MATVEC_MAX_ROWS] {
        assert_eq!(quantize.workgroups(tokens, 1), [tokens, 1, 1]);
        // 8 columns a workgroup, every token in each.
        assert_eq!(matvec.workgroups(tokens, 1), [6145, 1, 1]);
        assert!(rest.workgroups(tokens, 1).contains(&0));
    }
    for tokens in [0, MATVEC_MAX_ROWS + 1, 512] {
        assert!(quantize.workgroups(tokens, 1).contains(&0));
        assert!(matvec.workgroups(tokens, 1).contains(&0));
    }
    let all = Grid::Matmul {
        rows,
        n,
        max_rows: u32::MAX,
    };
    assert_eq!(rest.workgroups(33, 1), all.workgroups(33, 1));
    // The LM head of a long prompt's step: its output rows, not its tokens.
    let head = Grid::Matvec {
        rows: Rows::Outputs,
        n: 8,
    };
    assert_eq!(head.workgroups(512, 1), [1, 1, 1]);
}

#[test]
fn the_step_buffer_holds_every_region_where_its_header_says() {
    use crate::step::{HEADER_WORDS, RopeTable, words};
    use kiln_ir::RopeParams;
    use kiln_ir::backend::Step;
    let tables: [&[u32]; 2] = [&[7, 3], &[5]];
    let step = Step {
        token_ids: &[11, 12, 13],
        positions: &[16, 17, 0],
        token_seq: &[0, 0, 1],
        block_tables: &tables,
        output_rows: &[1, 2],
    };
    let rope = RopeTable {
        params: RopeParams {
            head_dim: 8,
            rope_dims: 4,
            theta: 10_000.0,
            freq_scale: 1.0,
            freq_factors: None,
            mode: kiln_ir::RopeMode::Normal,
        },
        factors: None,
    };
    let w = words(&step, &[rope], 1).unwrap();
    let region = |slot: usize, len: usize| &w[w[slot] as usize..][..len];
    assert_eq!(&w[..2], &[3, 2]);
    assert!(w[2] as usize >= HEADER_WORDS);
    assert_eq!(region(2, 3), &[11, 12, 13]);
    assert_eq!(region(3, 3), &[16, 17, 0]);
    assert_eq!(region(4, 3), &[0, 0, 1]);
    assert_eq!(region(5, 2), &[1, 2]);
    let starts = region(6, 2);
    assert_eq!(&w[starts[0] as usize..][..2], &[7, 3]);
    assert_eq!(w[starts[1] as usize], 5);
    assert_eq!(w[8], 2); // pairs
    assert_eq!(w[9], 2); // sequences per KV group
    assert_eq!(&w[w[10] as usize..][..3], &[w[7], 2, 0]); // the RoPE directory
    // Token 1 (position 17), pair 1: angle 17 · 10000^(-2/4) = 0.17.
    let at = w[7] as usize + (2 + 1) * 2;
    assert!((f32::from_bits(w[at]) - 0.17f32.cos()).abs() < 1e-6);
    assert!((f32::from_bits(w[at + 1]) - 0.17f32.sin()).abs() < 1e-6);
}

#[test]
fn the_required_subgroup_size_fits_a_workgroup() {
    use crate::program::subgroup_size;
    // The largest offered up to a workgroup of 64, unless asked.
    assert_eq!(subgroup_size((8, 128), 8, None), Some(64));
    assert_eq!(subgroup_size((4, 32), 64, None), Some(32));
    assert_eq!(subgroup_size((4, 32), 64, Some(16)), Some(16));
    assert_eq!(subgroup_size((16, 32), 64, Some(4)), Some(16), "clamped");
    // 64 threads as subgroups of 8 are 8 subgroups: more than 4 is refused.
    assert_eq!(subgroup_size((8, 8), 4, None), None);
    assert_eq!(
        subgroup_size((4, 32), 64, Some(24)),
        None,
        "not a power of two"
    );
}

#[test]
fn int8_matvec_rows_are_whole_16_byte_units() {
    // matvec_core.wgsl reads rows a vec4 at a time from their start.
    for dtype in crate::sources::MATVEC_DTYPES {
        for blocks in 1..20u64 {
            let cols = blocks * dtype.block_len() as u64;
            let row = crate::repack::row_bytes(dtype, cols).unwrap();
            assert_eq!(row % 16, 0, "{dtype} {cols} columns");
        }
    }
}
