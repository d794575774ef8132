//! What the SASS of every CUDA kernel variant must show, checked without a GPU: NVRTC
//! compiles each variant for sm_90 (and the modules with wgmma kernels, the FP8 attention's
//! prefill and the packed types' prefill matmul, for sm_90a too) and cuobjdump disassembles it (kiln_tests::cuda_disasm).
//! [`FACTS`] lists what the kernels' design relies on: the rows marked `Required` hold
//! today and are asserted; the rows marked `Target` are what the CUDA decode redesign
//! (issue 14) must reach, reported until they hold, then to be flipped to `Required`.
//! Needs libnvrtc, cuobjdump and nvdisasm (`pip install nvidia-cuda-nvrtc==13.0.88
//! nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.86`, libnvrtc on
//! LD_LIBRARY_PATH): without them the tests
//! show as `ignored (why)`, unless KILN_REQUIRE_NVRTC=1 (CI), where they fail.
//! `scripts/cuda-report` prints the whole table.

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

use kiln_backend_cuda::compile::{Nvrtc, Target};
use kiln_testkit::{Outcome, fail, pass, skip, test};
use kiln_tests::cuda_disasm::{KernelFacts, analyse_all, find_cuobjdump, parse, table};

fn main() -> ExitCode {
    kiln_testkit::run(vec![
        test(
            "parse_counts_a_recorded_listing",
            parse_counts_a_recorded_listing,
        ),
        test("every_kernel_meets_the_required_facts", || {
            with_facts(|facts| check(facts, Status::Required))
        }),
        test("redesign_targets", || {
            with_facts(|facts| check(facts, Status::Target))
        }),
    ])
}

/// Whether a row of [`FACTS`] is asserted or reported.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    /// Holds today; a kernel that breaks it fails the test.
    Required,
    /// What the redesign must reach (issue 14); reported as pending until every kernel it
    /// applies to meets it. Flip it to `Required` in the change that makes it hold.
    Target,
}

/// One fact about the kernels: which kernels it is about and what must hold for them.
struct Fact {
    what: &'static str,
    status: Status,
    applies: fn(&KernelFacts) -> bool,
    holds: fn(&KernelFacts) -> bool,
}

/// Registers a matvec may use: 128 leaves room for 16 warps per SM (65,536 registers), the
/// occupancy the decode design needs to keep enough loads in flight.
const MATVEC_REGISTERS: u32 = 128;

/// The decode matvec kernels (kiln_kernels_cuda::matvec's modules).
fn is_decode_matvec(k: &KernelFacts) -> bool {
    k.variant.starts_with("matvec_") && k.kernel.starts_with("matvec_")
}

/// The int8 tensor-core prefill matmuls (kiln_kernels_cuda::mmq's modules).
fn is_int8_matmul(k: &KernelFacts) -> bool {
    k.variant.starts_with("matmul_mmq_") && k.kernel.starts_with("matmul_mmq_")
}

/// The warpgroup-MMA prefill matmuls (matmul_wgmma.cu, in the int8 matmuls' modules:
/// `matmul_wgmma_<dtype>[_add|_swiglu|_geglu]`).
fn is_wgmma_matmul(k: &KernelFacts) -> bool {
    k.variant.starts_with("matmul_mmq_") && k.kernel.starts_with("matmul_wgmma_")
}

/// The mma.sync prefill attention (attention_prefill.cu: `attention_fp8_prefill_h<HD>`).
fn is_mma_sync_prefill(k: &KernelFacts) -> bool {
    k.variant == "attention_fp8" && k.kernel.contains("_prefill_h")
}

/// The wgmma prefill attention (attention_prefill_wgmma.cu: `attention_fp8_prefill_wg_h<HD>`).
fn is_wgmma_prefill(k: &KernelFacts) -> bool {
    k.variant == "attention_fp8" && k.kernel.contains("_prefill_wg_h")
}

/// A matvec of a type the decode matvecs read packed (kiln_kernels_cuda::matvec::DTYPES).
fn is_packed_type_matvec(k: &KernelFacts) -> bool {
    k.matvec
        && kiln_kernels_cuda::matvec::DTYPES
            .iter()
            .any(|d| k.variant.ends_with(&format!("_{}", d.name())))
}

/// The facts, each checked for every kernel it applies to; a fact that applies to no
/// kernel fails too (a renamed kernel must not turn a check into a no-op).
const FACTS: &[Fact] = &[
    // ---- Required: what holds today.
    Fact {
        what: "no local memory: no spills, no local arrays (LOCAL/STACK 0, no LDL/STL)",
        status: Status::Required,
        applies: |_| true,
        holds: |k| k.local_bytes == 0 && k.stack_bytes == 0 && k.local_ops == 0,
    },
    Fact {
        what: "matvecs use at most 128 registers (MATVEC_REGISTERS)",
        status: Status::Required,
        applies: |k| k.matvec,
        holds: |k| k.registers <= MATVEC_REGISTERS,
    },
    Fact {
        what: "the FP8 prefill attention runs on tensor cores (HMMA)",
        status: Status::Required,
        applies: is_mma_sync_prefill,
        holds: |k| k.mma > 0 && k.gmma == 0,
    },
    Fact {
        what: "the FP8 prefill attention stages K/V with cp.async (LDGSTS) and reads its tiles by ldmatrix (LDSM)",
        status: Status::Required,
        applies: is_mma_sync_prefill,
        holds: |k| k.cp_async > 0 && k.ldsm > 0,
    },
    // ---- Required of the wgmma prefill attention (attention_prefill_wgmma.cu, issue 15):
    // at sm_90a, on the warpgroup MMA: S = q K^T (HD / 16 instructions) and P V (4 · HD /
    // 64) of m64n64k16, K/V staged by cp.async; at sm_90 an entry that only traps.
    Fact {
        what: "the wgmma prefill attention (sm_90a) runs on the warpgroup MMA (HGMMA: HD/16 + HD/16 m64n64k16), stages K/V with cp.async (LDGSTS)",
        status: Status::Required,
        applies: |k| is_wgmma_prefill(k) && k.specific,
        holds: |k| {
            let hd: u32 = k
                .kernel
                .rsplit("_h")
                .next()
                .and_then(|h| h.parse().ok())
                .unwrap_or(0);
            hd > 0 && k.gmma == hd / 8 && k.mma == k.gmma && k.cp_async > 0
        },
    },
    Fact {
        what: "the wgmma prefill attention compiled without sm_90a is a trap: no tensor-core instructions",
        status: Status::Required,
        applies: |k| is_wgmma_prefill(k) && !k.specific,
        holds: |k| k.mma == 0 && k.cp_async == 0,
    },
    // ---- Required of the warpgroup-MMA prefill matmul (matmul_wgmma.cu, issue 15): at
    // sm_90a two m64n64k16 a weight (gate and up for the GLUs) a 32-value unit, stages by
    // cp.async, no int8 MMA; at sm_90 an entry that only traps.
    Fact {
        what: "the wgmma prefill matmul (sm_90a) runs on the warpgroup MMA (HGMMA: 2 a weight, no IMMA), stages with cp.async (LDGSTS)",
        status: Status::Required,
        applies: |k| is_wgmma_matmul(k) && k.specific,
        holds: |k| {
            let weights = if k.kernel.ends_with("_swiglu") || k.kernel.ends_with("_geglu") {
                2
            } else {
                1
            };
            k.gmma == 2 * weights && k.mma == k.gmma && k.imma == 0 && k.cp_async > 0
        },
    },
    Fact {
        what: "the wgmma prefill matmul compiled without sm_90a is a trap: no tensor-core instructions",
        status: Status::Required,
        applies: |k| is_wgmma_matmul(k) && !k.specific,
        holds: |k| k.mma == 0 && k.cp_async == 0,
    },
    Fact {
        what: "decode attention stages the KV cache with cp.async (LDGSTS)",
        status: Status::Required,
        applies: |k| k.variant.starts_with("attention_") && k.kernel.contains("decode"),
        holds: |k| k.cp_async > 0,
    },
    Fact {
        what: "the top-k block of 1024 threads (TOP_K_THREADS) fits one multiprocessor: at most 64 registers",
        status: Status::Required,
        applies: |k| k.kernel == kiln_kernels_cuda::variant::TOP_K_SYMBOL,
        holds: |k| k.registers <= 64,
    },
    Fact {
        what: "the ceilings' matmul peak kernel runs on tensor cores (HMMA)",
        status: Status::Required,
        applies: |k| k.kernel == "peak_mma_f16",
        holds: |k| k.mma > 0 && k.ldg() == 0,
    },
    // ---- Required of the int8 tensor-core prefill matmul of packed weights
    // (kiln_kernels_cuda::mmq, `matmul_mmq_<dtype>_t<T>[_add|_swiglu|_geglu]`, issue 15).
    Fact {
        what: "the int8 prefill matmuls run on the integer tensor cores (IMMA)",
        status: Status::Required,
        applies: is_int8_matmul,
        holds: |k| k.imma > 0 && k.mma == k.imma,
    },
    Fact {
        what: "the int8 prefill matmuls stage their tiles with cp.async (LDGSTS) and read A by ldmatrix (LDSM)",
        status: Status::Required,
        applies: is_int8_matmul,
        holds: |k| k.cp_async > 0 && k.ldsm > 0,
    },
    Fact {
        what: "the int8 prefill matmuls use at most 128 registers (two blocks of 256 threads an SM; the K-quants' GLUs one block, 255)",
        status: Status::Required,
        applies: is_int8_matmul,
        holds: |k| {
            let one_block = k.kernel.contains("_k_t")
                && (k.kernel.ends_with("_swiglu") || k.kernel.ends_with("_geglu"));
            k.registers <= if one_block { 255 } else { 128 }
        },
    },
    // ---- Required of the decode matvecs (kiln_kernels_cuda::matvec, `matvec_<dtype>_t<T>`).
    Fact {
        what: "decode matvecs load weights and activations 128 bits wide (LDG.E.128)",
        status: Status::Required,
        applies: is_decode_matvec,
        holds: |k| k.ldg128 > 0,
    },
    Fact {
        what: "decode matvecs multiply int8 activations with integer dot products (IDP.4A)",
        status: Status::Required,
        applies: is_decode_matvec,
        holds: |k| k.idp4a > 0,
    },
    Fact {
        what: "decode matvecs use at most 128 registers, single-token ones at most 80",
        status: Status::Required,
        applies: is_decode_matvec,
        holds: |k| {
            k.registers <= MATVEC_REGISTERS
                && (!k.kernel.contains("_t1") || k.kernel.contains("_t16") || k.registers <= 80)
        },
    },
    // ---- Required since the `_mv8` kernels of the packed types went (issue 14, items 2 and
    // 3): every matvec of a packed type (matvec::DTYPES) is a decode matvec of the packed
    // layout.
    Fact {
        what: "matvecs of the packed types load weights 128 bits wide (LDG.E.128)",
        status: Status::Required,
        applies: is_packed_type_matvec,
        holds: |k| k.ldg128 > 0,
    },
    Fact {
        what: "matvecs of the packed types multiply int8 activations with integer dot products (IDP.4A)",
        status: Status::Required,
        applies: is_packed_type_matvec,
        holds: |k| k.idp4a > 0,
    },
    // ---- Required since Q5_0, Q5_1 and the K-quants have packed dp4a matvecs too (issue
    // 16 on CUDA): no quantized type decodes through an f32-activation `_mv8` kernel.
    Fact {
        what: "every quantized type decodes with integer dot products (IDP.4A)",
        status: Status::Required,
        applies: |k| k.matvec && k.quantized,
        holds: |k| k.idp4a > 0,
    },
    Fact {
        what: "decode matvecs load most bytes 128 bits wide",
        status: Status::Required,
        applies: is_decode_matvec,
        holds: |k| 16 * k.ldg128 > 8 * k.ldg64 + 4 * k.ldg32 + 2 * k.ldg_narrow,
    },
    // ---- Required since the scale plane of the 32-value types (and Q5_0/Q5_1's high
    // plane) holds 4 rows' records of a unit side by side (issue 14, item 3; repack.rs,
    // mv/groups.cuh): a lane loads the scales (high words) of its block's 1, 2 or 4 rows
    // at once beside their 16-byte quant loads, where Q4_0/Q4_1 at 1 token (and t2_add)
    // loaded one f16 d (half2) per row and had as many narrow load instructions as wide
    // ones. All decode matvecs but those of `short_of_wide_loads`.
    Fact {
        what: "decode matvecs (but Q6_K's and Q5's single-token GLUs) issue more 128-bit than narrower global load instructions",
        status: Status::Required,
        applies: |k| is_decode_matvec(k) && !short_of_wide_loads(k),
        holds: |k| k.ldg128 > k.ldg64 + k.ldg32 + k.ldg_narrow,
    },
    // ---- Target (issue 14, item 3). F32/F16/BF16 weights keep their `_mv8` kernels
    // (4-byte loads of f32 rows are what they are), so this counts the decode matvecs.
    // Still short: `short_of_wide_loads`.
    Fact {
        what: "decode matvecs issue more 128-bit than narrower global load instructions",
        status: Status::Target,
        applies: is_decode_matvec,
        holds: |k| k.ldg128 > k.ldg64 + k.ldg32 + k.ldg_narrow,
    },
];

/// The decode matvecs that still issue as many narrow load instructions as 128-bit ones
/// (the Target fact above): Q6_K's to 8 tokens (a row's 8 high bytes, and its unit's two
/// int8 scales and d as 2-byte loads from the 18-byte, 2-byte aligned records), and the
/// single-token GLUs of Q5_0 and Q5_1 (2 rows of 2 weights: per weight an 8-byte load of
/// the rows' high words and one of their scales, 4 narrow loads against 4 quant pieces,
/// with the activation's 2 wide loads and 2 narrow ones: 6 each).
fn short_of_wide_loads(k: &KernelFacts) -> bool {
    let q5_glu_t1 = ["matvec_q5_0_t1_", "matvec_q5_1_t1_"]
        .iter()
        .any(|p| k.kernel.starts_with(p))
        && (k.kernel.ends_with("_swiglu") || k.kernel.ends_with("_geglu"));
    k.kernel.starts_with("matvec_q6_k_") || q5_glu_t1
}

/// Check the facts of `status` against every kernel: Required ones fail with every
/// violation; Target ones pass when all hold (then it is time to require them) and are
/// otherwise reported as pending, shown as ignored with how far each is.
fn check(facts: &[KernelFacts], status: Status) -> Outcome {
    let mut broken = Vec::new();
    let mut pending = Vec::new();
    for fact in FACTS.iter().filter(|f| f.status == status) {
        let applies: Vec<&KernelFacts> = facts.iter().filter(|k| (fact.applies)(k)).collect();
        if applies.is_empty() {
            broken.push(format!("{}: applies to no kernel", fact.what));
            continue;
        }
        let failing: Vec<String> = applies
            .iter()
            .filter(|k| !(fact.holds)(k))
            .map(|k| k.id())
            .collect();
        let line = format!(
            "{}: {}/{} kernels",
            fact.what,
            applies.len() - failing.len(),
            applies.len()
        );
        println!("{line}");
        if failing.is_empty() {
            continue;
        }
        match status {
            Status::Required => {
                broken.push(format!("{}; failing: {}", fact.what, failing.join(", ")))
            }
            Status::Target => pending.push(line),
        }
    }
    if !broken.is_empty() {
        return fail(broken.join("\n"));
    }
    if !pending.is_empty() {
        return skip(format!("redesign targets pending: {}", pending.join("; ")));
    }
    if status == Status::Target {
        println!("every redesign target holds: mark them Required in tests/tests/cuda_disasm.rs");
    }
    pass()
}

/// The facts of every kernel, computed once for all tests; Err is the test's outcome
/// (skip, or fail under KILN_REQUIRE_NVRTC=1) when NVRTC or cuobjdump is missing.
fn with_facts(body: impl FnOnce(&[KernelFacts]) -> Outcome) -> Outcome {
    static FACTS_OF_ALL: OnceLock<Result<Vec<KernelFacts>, (bool, String)>> = OnceLock::new();
    match FACTS_OF_ALL.get_or_init(compute) {
        Ok(facts) => body(facts),
        Err((true, why)) => missing(why),
        Err((false, why)) => fail(why),
    }
}

/// Compile and disassemble everything; Err((tool_missing, why)).
fn compute() -> Result<Vec<KernelFacts>, (bool, String)> {
    let path = std::env::var_os("KILN_NVRTC_PATH").map(std::path::PathBuf::from);
    let nvrtc = Nvrtc::load(path.as_deref()).map_err(|e| (true, e.to_string()))?;
    let cuobjdump = find_cuobjdump(nvrtc.path()).map_err(|e| (true, e))?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let start = Instant::now();
    let mut facts = analyse_all(&nvrtc, &cuobjdump, 90.into(), threads, None, &|_| true)
        .map_err(|e| (false, e))?;
    // sm_90a: the modules with the wgmma kernels (an H100 compiles every module so; the
    // others have no sm_90a-only code): the FP8 attention, the int8 matmuls' modules.
    let specific = |name: &str| name == "attention_fp8" || name.starts_with("matmul_mmq_");
    facts.extend(
        analyse_all(
            &nvrtc,
            &cuobjdump,
            Target::specific(90),
            threads,
            None,
            &specific,
        )
        .map_err(|e| (false, e))?,
    );
    println!(
        "{} kernels compiled for sm_90 (attention_fp8 for sm_90a too) and disassembled in {:.1} s on {threads} threads",
        facts.len(),
        start.elapsed().as_secs_f64()
    );
    if kiln_testkit::verbose() {
        print!("{}", table(&facts));
    }
    Ok(facts)
}

/// A missing tool: skipped, or a failure under KILN_REQUIRE_NVRTC=1.
fn missing(why: &str) -> Outcome {
    if std::env::var("KILN_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
        fail(format!("KILN_REQUIRE_NVRTC=1 but {why}"))
    } else {
        skip(why)
    }
}

/// The parser on a shortened listing as cuobjdump 13.2 prints it: resources per kernel,
/// then SASS with predicated and modified opcodes of every counted kind.
fn parse_counts_a_recorded_listing() -> Outcome {
    let listing = "
Resource usage:
 Common:
  GLOBAL:0
 Function matmul_mmq_q4_0_t64:
  REG:56 STACK:0 SHARED:11264 LOCAL:0 CONSTANT[0]:568 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function matvec_q4_0_t8:
  REG:48 STACK:16 SHARED:0 LOCAL:8 CONSTANT[0]:568 TEXTURE:0 SURFACE:0 SAMPLER:0

\tcode for sm_90
\t\tFunction : matmul_mmq_q4_0_t64
\t.headerflags\t@\"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)\"
                                                                   /* 0x000ff00000000800 */
        /*0000*/                   LDC R1, c[0x0][0x28] ;          /* 0x00000a00ff017b82 */
        /*0010*/                   LDG.E.CONSTANT R5, desc[UR12][R50.64] ; /* 0x0 */
        /*0020*/                   HMMA.16816.F32 R4, R8, R12, R4 ; /* 0x0 */
        /*0028*/                   IMMA.16832.S8.S8 R4, R8.ROW, R12.COL, R4 ; /* 0x0 */
        /*002a*/                   HGMMA.64x64x16.F32 R24, gdesc[UR20], RZ, !UPT ; /* 0x0 */
        /*002c*/                   LDSM.16.M88.4 R8, [R2] ;        /* 0x0 */
        /*0030*/                   LDGSTS.E.BYPASS.128 [R3], desc[UR4][R6.64] ; /* 0x0 */
        /*0040*/                   EXIT ;                          /* 0x0 */
        .L_x_1:
\t\t..........

\t\tFunction : matvec_q4_0_t8
        /*0000*/                   LDG.E.128.CONSTANT R4, desc[UR4][R2.64] ; /* 0x0 */
        /*0010*/              @!P0 LDG.E.64 R8, desc[UR4][R2.64+0x10] ; /* 0x0 */
        /*0020*/               @P1 LDG.E.U8 R9, desc[UR4][R2.64] ; /* 0x0 */
        /*0030*/                   LDG.E.LTC128B R10, desc[UR4][R2.64] ; /* 0x0 */
        /*0040*/                   IDP.4A.S8.S8 R11, R4, R5, R11 ; /* 0x0 */
        /*0050*/                   IDP.2A.LO.S16.S8 R12, R4, R5, R12 ; /* 0x0 */
        /*0060*/                   STL [R1], R4 ;                  /* 0x0 */
        /*0070*/                   LDL R4, [R1] ;                  /* 0x0 */
        /*0080*/                   BRA `(.L_x_2) ;                 /* 0x0 */
";
    let k = match parse(listing) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let names: Vec<&str> = k.iter().map(|k| k.kernel.as_str()).collect();
    assert_eq!(names, ["matmul_mmq_q4_0_t64", "matvec_q4_0_t8"]);
    let (mma, main) = (&k[0], &k[1]);
    assert_eq!(
        (
            main.registers,
            main.stack_bytes,
            main.local_bytes,
            main.shared_bytes
        ),
        (48, 16, 8, 0)
    );
    assert_eq!(
        (main.ldg128, main.ldg64, main.ldg_narrow, main.ldg32),
        (1, 1, 1, 1),
        "LTC128B is a cache hint, not a width"
    );
    assert_eq!((main.idp4a, main.idp2a, main.local_ops), (1, 1, 2));
    assert_eq!((main.mma, main.cp_async, main.instructions), (0, 0, 9));
    assert_eq!((mma.registers, mma.shared_bytes), (56, 11264));
    assert_eq!(
        (mma.ldg32, mma.mma, mma.cp_async, mma.instructions),
        (1, 3, 1, 8)
    );
    assert_eq!(
        (mma.imma, mma.gmma, mma.ldsm),
        (1, 1, 1),
        "IMMA and HGMMA are counted apart, and LDSM"
    );
    assert!(
        parse("Resource usage:\n").is_err(),
        "an empty listing is an error"
    );
    pass()
}
