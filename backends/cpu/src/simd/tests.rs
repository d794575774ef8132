//! Every kernel against its scalar twin in kiln_ir::quant, on every path this machine
//! can run: the dispatched one, the scalar one forced, and AVX2 named explicitly.

use std::time::Instant;

use half::f16;
use proptest::prelude::*;

use super::*;

mod rows;
use rows::{Kind, Rng, act_row, magnitude, weight_row};

const FORMATS: [Format; 8] = Format::ALL;

/// Row lengths in blocks: for the 32-value formats, 18 and 48 are the reference
/// model's widths (576, 1536); for the K-quants, 5 and 8 are 1280 and 2048 values
/// (Gemma 3 270M's FFN is 2048 wide).
fn lengths(format: Format) -> &'static [usize] {
    if format.block_len() == 256 {
        &[1, 2, 3, 5, 8]
    } else {
        &[1, 2, 3, 5, 18, 48]
    }
}

/// The paths to check: what dispatch picked, the scalar one, and AVX2, AVX-VNNI and
/// AVX-512 VNNI where this CPU has them.
fn paths() -> Vec<&'static Kernels> {
    #[cfg(target_arch = "x86_64")]
    let (avx2, vnni, vnni512) = (
        avx2::detected().then_some(&avx2::KERNELS),
        avx2::detected_vnni().then_some(&avx2::KERNELS_VNNI),
        avx2::detected_avx512_vnni().then_some(&avx2::KERNELS_AVX512_VNNI),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (avx2, vnni, vnni512) = (None, None, None);
    [Some(kernels()), Some(&SCALAR), avx2, vnni, vnni512]
        .into_iter()
        .flatten()
        .collect()
}

/// Asserts `got` is within 1e-4 of the terms' magnitude of the scalar twin's result.
fn assert_close(format: Format, row: &[u8], act: &[u8], got: f32, what: &str) {
    let want = format.scalar_dot()(row, act);
    let tol = 1e-4 * magnitude(format, row, act) + 1e-30;
    assert!(
        (f64::from(got) - f64::from(want)).abs() <= tol,
        "{what}: {} over {} blocks: {got} vs scalar {want} (tolerance {tol:e})",
        format.name(),
        row.len() / format.weight_bytes(),
    );
}

/// Runs a rows × tokens job on `kernels`.
#[allow(clippy::too_many_arguments)]
fn rows_tokens(
    kernels: &Kernels,
    format: Format,
    rows: &[u8],
    row_bytes: usize,
    n_rows: usize,
    acts: &[u8],
    act_stride: usize,
    n_tokens: usize,
    staged: Option<&Staged>,
    out: &mut [f32],
    out_stride: usize,
) {
    let job = Job {
        format,
        rows,
        row_bytes,
        n_rows,
        acts,
        act_stride,
        n_tokens,
        blocks: 0,
        staged,
        out,
        out_stride,
    };
    run_with(kernels, job);
}

/// Checks a rows × tokens call against the twin on every path, with padded activation
/// and output strides whose padding must stay untouched.
fn check_rows_tokens(format: Format, blocks: usize, n_rows: usize, n_tokens: usize, kind: Kind) {
    let mut rng = Rng((blocks * 1000 + n_rows * 10 + n_tokens) as u64);
    let row_bytes = blocks * format.weight_bytes();
    let rows: Vec<u8> = (0..n_rows)
        .flat_map(|_| weight_row(format, blocks, kind, &mut rng))
        .collect();
    let act_len = blocks * format.act_bytes();
    let act_stride = act_len + 7;
    let mut acts = rng.bytes(n_tokens * act_stride);
    for t in 0..n_tokens {
        acts[t * act_stride..][..act_len].copy_from_slice(&act_row(format, blocks, kind, &mut rng));
    }
    let out_stride = n_rows + 3;
    let staged = Staged::from_rows(format.act_blocks(), &acts, act_stride, n_tokens, blocks);
    // The first SIMD path's results: every other SIMD path must give the same bits.
    let mut simd_bits: Option<Vec<u32>> = None;
    for kernels in paths() {
        let mut out = vec![f32::NAN; n_tokens * out_stride];
        rows_tokens(
            kernels, format, &rows, row_bytes, n_rows, &acts, act_stride, n_tokens, None, &mut out,
            out_stride,
        );
        for t in 0..n_tokens {
            let act = &acts[t * act_stride..][..act_len];
            for r in 0..out_stride {
                let got = out[t * out_stride + r];
                if r >= n_rows {
                    assert!(got.is_nan(), "{}: wrote padding ({t}, {r})", kernels.isa);
                    continue;
                }
                assert!(!got.is_nan(), "{}: left ({t}, {r}) unwritten", kernels.isa);
                let row = &rows[r * row_bytes..][..row_bytes];
                let what = format!("{} ({t}, {r}) of ({n_tokens}, {n_rows})", kernels.isa);
                assert_close(format, row, act, got, &what);
            }
        }
        if kernels.isa == "scalar" {
            continue;
        }
        let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        // Activations staged by the caller give the same bits as staged by the kernel.
        let mut pre = vec![f32::NAN; n_tokens * out_stride];
        rows_tokens(
            kernels,
            format,
            &rows,
            row_bytes,
            n_rows,
            &acts,
            act_stride,
            n_tokens,
            Some(&staged),
            &mut pre,
            out_stride,
        );
        let pre_bits: Vec<u32> = pre.iter().map(|v| v.to_bits()).collect();
        assert_eq!(pre_bits, bits, "{}: pre-staged activations", kernels.isa);
        // Each token alone gives the same bits as in the batch (whatever the tile).
        for t in 0..n_tokens {
            let mut alone = vec![f32::NAN; n_rows];
            let act = &acts[t * act_stride..][..act_len];
            rows_tokens(
                kernels, format, &rows, row_bytes, n_rows, act, act_len, 1, None, &mut alone,
                n_rows,
            );
            for r in 0..n_rows {
                assert_eq!(
                    alone[r].to_bits(),
                    bits[t * out_stride + r],
                    "{}: ({t}, {r}) alone vs in a batch of {n_tokens}",
                    kernels.isa
                );
            }
        }
        match &simd_bits {
            Some(first) => assert_eq!(first, &bits, "{} vs the first SIMD path", kernels.isa),
            None => simd_bits = Some(bits),
        }
    }
}

#[test]
fn vec_dot_matches_scalar_twin() {
    let mut rng = Rng(1);
    for format in FORMATS {
        for &blocks in lengths(format) {
            for kind in [Kind::Quantized, Kind::Raw] {
                for _ in 0..20 {
                    let row = weight_row(format, blocks, kind, &mut rng);
                    let act = act_row(format, blocks, kind, &mut rng);
                    for kernels in paths() {
                        let got = vec_dot_with(kernels, format, &row, &act);
                        assert_close(format, &row, &act, got, kernels.isa);
                    }
                    assert_close(format, &row, &act, vec_dot(format, &row, &act), "public");
                    let named = match format {
                        Format::Q4_0 => vec_dot_q4_0_q8_0(&row, &act),
                        Format::Q4_1 => vec_dot_q4_1_q8_1(&row, &act),
                        Format::Q8_0 => vec_dot_q8_0_q8_0(&row, &act),
                        _ => continue,
                    };
                    assert_close(format, &row, &act, named, "named");
                }
            }
        }
    }
}

#[test]
fn dot_rows_matches_twin_and_writes_exactly_n_rows() {
    let mut rng = Rng(2);
    for format in FORMATS {
        for &blocks in lengths(format) {
            // 0..=9 rows covers whole tiles of 4 and every remainder.
            for n_rows in 0..=9 {
                let row_bytes = blocks * format.weight_bytes();
                let rows: Vec<u8> = (0..n_rows)
                    .flat_map(|_| weight_row(format, blocks, Kind::Quantized, &mut rng))
                    .collect();
                let act = act_row(format, blocks, Kind::Quantized, &mut rng);
                let check = |out: &[f32], isa: &str| {
                    for (r, &got) in out.iter().enumerate() {
                        if r >= n_rows {
                            assert!(got.is_nan(), "{isa}: wrote out[{r}] past {n_rows} rows");
                            continue;
                        }
                        assert!(!got.is_nan(), "{isa}: left out[{r}] unwritten");
                        let row = &rows[r * row_bytes..][..row_bytes];
                        assert_close(format, row, &act, got, isa);
                    }
                };
                for kernels in paths() {
                    let mut out = vec![f32::NAN; n_rows + 2];
                    dot_rows_with(kernels, format, &rows, row_bytes, n_rows, &act, &mut out);
                    check(&out, kernels.isa);
                }
                let mut out = vec![f32::NAN; n_rows + 2];
                dot_rows(format, &rows, row_bytes, n_rows, &act, &mut out);
                check(&out, "public");
                let named = match format {
                    Format::Q4_0 => dot_rows_q4_0_q8_0,
                    Format::Q4_1 => dot_rows_q4_1_q8_1,
                    Format::Q8_0 => dot_rows_q8_0_q8_0,
                    _ => continue,
                };
                let mut out = vec![f32::NAN; n_rows + 2];
                named(&rows, row_bytes, n_rows, &act, &mut out);
                check(&out, "named");
            }
        }
    }
}

#[test]
fn dot_rows_tokens_matches_twin_on_every_tile_shape() {
    for format in FORMATS {
        let (lengths, raw): (&[usize], usize) = if format.block_len() == 256 {
            (&[1, 2, 3], 8)
        } else {
            (&[1, 3, 18], 48)
        };
        for &blocks in lengths {
            for n_tokens in (1..=9).chain([16, 17, 23]) {
                for n_rows in [1, 2, 3, 4, 5, 7, 9] {
                    check_rows_tokens(format, blocks, n_rows, n_tokens, Kind::Quantized);
                }
            }
        }
        check_rows_tokens(format, raw, 6, 5, Kind::Raw);
        check_rows_tokens(format, raw, 9, 13, Kind::Raw);
    }
}

#[test]
fn public_dot_rows_tokens_agree_with_dot_rows() {
    let mut rng = Rng(3);
    let (n_rows, n_tokens) = (6, 5);
    for format in FORMATS {
        let blocks = if format.block_len() == 256 { 3 } else { 18 };
        let row_bytes = blocks * format.weight_bytes();
        let act_bytes = blocks * format.act_bytes();
        let rows: Vec<u8> = (0..n_rows)
            .flat_map(|_| weight_row(format, blocks, Kind::Quantized, &mut rng))
            .collect();
        let acts: Vec<u8> = (0..n_tokens)
            .flat_map(|_| act_row(format, blocks, Kind::Quantized, &mut rng))
            .collect();
        let check = |out: &[f32], what: &str| {
            for (t, act) in acts.chunks(act_bytes).enumerate() {
                for (r, row) in rows.chunks(row_bytes).enumerate() {
                    assert_close(format, row, act, out[t * n_rows + r], what);
                }
            }
        };
        let mut out = vec![f32::NAN; n_tokens * n_rows];
        dot_rows_tokens(
            format, &rows, row_bytes, n_rows, &acts, act_bytes, n_tokens, None, &mut out, n_rows,
        );
        check(&out, "public");
        let named = match format {
            Format::Q4_0 => dot_rows_tokens_q4_0_q8_0,
            Format::Q4_1 => dot_rows_tokens_q4_1_q8_1,
            Format::Q8_0 => dot_rows_tokens_q8_0_q8_0,
            _ => continue,
        };
        let mut out = vec![f32::NAN; n_tokens * n_rows];
        named(
            &rows, row_bytes, n_rows, &acts, act_bytes, n_tokens, None, &mut out, n_rows,
        );
        check(&out, "named");
    }
}

/// Sets every block scale of a row pair to 1 (and Q4_1/Q5_1 minimums and sums to -2 and
/// 3, K-quant minimum scales to 1); K-quant sub-block scales are kept small so that
/// every result stays an integer below 2^24.
fn set_unit_scales(format: Format, row: &mut [u8], act: &mut [u8], rng: &mut Rng) {
    let one = f16::from_f32(1.0).to_le_bytes();
    for block in row.chunks_mut(format.weight_bytes()) {
        match format {
            Format::Q6K => {
                block[208..210].copy_from_slice(&one);
                for s in &mut block[192..208] {
                    *s = ((rng.next() % 7) as i8 - 3) as u8;
                }
            }
            Format::Q4K | Format::Q5K => {
                block[..2].copy_from_slice(&one);
                block[2..4].copy_from_slice(&one);
                for s in &mut block[4..16] {
                    *s &= 0x33; // scales and minimums of at most 3 · 16 + 3
                }
            }
            _ => block[..2].copy_from_slice(&one),
        }
        if matches!(format, Format::Q4_1 | Format::Q5_1) {
            block[2..4].copy_from_slice(&f16::from_f32(-2.0).to_le_bytes());
        }
    }
    for block in act.chunks_mut(format.act_bytes()) {
        match format.act_blocks() {
            ActBlocks::Q8_K => block[..4].copy_from_slice(&1.0f32.to_le_bytes()),
            ActBlocks::Q8_1 => {
                block[..2].copy_from_slice(&one);
                block[2..4].copy_from_slice(&f16::from_f32(3.0).to_le_bytes());
            }
            ActBlocks::Q8_0 => block[..2].copy_from_slice(&one),
        }
    }
}

/// With scales of 1 every result is an integer below 2^24, so the paths must agree
/// exactly, whatever the weight bytes (-128 included: the sign trick's edge).
#[test]
fn unit_scales_give_exact_integer_results() {
    let mut rng = Rng(4);
    for format in FORMATS {
        let blocks = if format.block_len() == 256 { 2 } else { 48 };
        let mut row = weight_row(format, blocks, Kind::Raw, &mut rng);
        let mut act = act_row(format, blocks, Kind::Raw, &mut rng);
        set_unit_scales(format, &mut row, &mut act, &mut rng);
        if format == Format::Q8_0 {
            row[2] = 0x80; // -128 against a positive and a negative activation
            row[3] = 0x80;
            act[2] = 100;
            act[3] = (-100i8) as u8;
        }
        let want = format.scalar_dot()(&row, &act);
        assert_eq!(want, want.round(), "{}: an integer", format.name());
        for kernels in paths() {
            assert_eq!(
                vec_dot_with(kernels, format, &row, &act),
                want,
                "{} {}",
                format.name(),
                kernels.isa
            );
        }
    }
}

#[test]
fn empty_rows_and_calls_write_nothing_wrong() {
    for kernels in paths() {
        for format in FORMATS {
            assert_eq!(vec_dot_with(kernels, format, &[], &[]), 0.0);
            let mut out = [f32::NAN; 2];
            dot_rows_with(kernels, format, &[], 0, 2, &[], &mut out);
            assert_eq!(out, [0.0, 0.0], "zero blocks dot to 0");
            let mut out = [f32::NAN; 2];
            dot_rows_with(
                kernels,
                format,
                &[],
                format.weight_bytes(),
                0,
                &vec![0; format.act_bytes()],
                &mut out,
            );
            assert!(out.iter().all(|v| v.is_nan()), "no rows, no writes");
        }
    }
}

#[test]
#[should_panic(expected = "do not fit")]
fn short_output_panics() {
    let rows = [0u8; 2 * 18];
    let act = [0u8; 34];
    dot_rows_q4_0_q8_0(&rows, 18, 2, &act, &mut [0.0; 1]);
}

#[test]
#[should_panic(expected = "do not fit")]
fn overlapping_activation_rows_panic() {
    let rows = [0u8; 20];
    let acts = [0u8; 72];
    // Two tokens 20 bytes apart cannot hold 36-byte activation rows.
    dot_rows_tokens_q4_1_q8_1(&rows, 20, 1, &acts, 20, 2, None, &mut [0.0; 2], 1);
}

#[test]
#[should_panic(expected = "not whole")]
fn partial_block_rows_panic() {
    dot_rows_q8_0_q8_0(&[0u8; 40], 40, 1, &[0u8; 34], &mut [0.0; 1]);
}

#[test]
fn dispatch_picks_the_widest_isa_available() {
    #[cfg(target_arch = "x86_64")]
    if avx2::detected_avx512_vnni() {
        assert_eq!(active_isa(), "avx2+avx512-vnni");
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::detected_vnni() {
        assert_eq!(active_isa(), "avx2+avx-vnni");
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::detected() {
        assert_eq!(active_isa(), "avx2");
        return;
    }
    assert_eq!(active_isa(), "scalar");
}

fn format_strategy() -> impl Strategy<Value = Format> {
    (0..Format::ALL.len()).prop_map(|i| Format::ALL[i])
}

proptest! {
    #[test]
    fn random_jobs_match_twin(
        format in format_strategy(),
        blocks in 1usize..=48,
        n_rows in 1usize..=9,
        n_tokens in 1usize..=6,
        raw in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let kind = if raw { Kind::Raw } else { Kind::Quantized };
        // K-quant super-blocks hold 8 blocks' values: 1..=6 of them.
        let blocks = if format.block_len() == 256 { blocks.div_ceil(8) } else { blocks };
        let mut rng = Rng(seed);
        let row_bytes = blocks * format.weight_bytes();
        let act_bytes = blocks * format.act_bytes();
        let rows: Vec<u8> = (0..n_rows)
            .flat_map(|_| weight_row(format, blocks, kind, &mut rng))
            .collect();
        let acts: Vec<u8> = (0..n_tokens)
            .flat_map(|_| act_row(format, blocks, kind, &mut rng))
            .collect();
        for kernels in paths() {
            let mut out = vec![f32::NAN; n_tokens * n_rows];
            rows_tokens(kernels, format, &rows, row_bytes, n_rows, &acts, act_bytes, n_tokens, None, &mut out, n_rows);
            for (t, act) in acts.chunks(act_bytes).enumerate() {
                for (r, row) in rows.chunks(row_bytes).enumerate() {
                    let got = out[t * n_rows + r];
                    prop_assert!(!got.is_nan());
                    assert_close(format, row, act, got, kernels.isa);
                    if r == 0 {
                        let single = vec_dot_with(kernels, format, row, act);
                        assert_close(format, row, act, single, kernels.isa);
                    }
                }
            }
        }
    }
}

/// Timing, not a benchmark suite: `cargo test -p kiln-backend-cpu --release simd::tests::timing
/// -- --ignored --nocapture`. Prints ns per row dot for the reference model's FFN shapes.
#[test]
#[ignore]
fn timing() {
    println!("isa: {}", active_isa());
    // SmolLM2-135M's FFN; Gemma 3 270M's FFN up (Q5_0 there: 640 is not whole
    // super-blocks), FFN down and attention output (Q4_K / Q6_K there).
    for (n_rows, width) in [
        (576, 1536),
        (1536, 576),
        (2048, 640),
        (640, 2048),
        (640, 1024),
    ] {
        for format in FORMATS {
            if width % format.block_len() != 0 {
                continue;
            }
            let blocks = width / format.block_len();
            let mut rng = Rng(5);
            let row_bytes = blocks * format.weight_bytes();
            let act_bytes = blocks * format.act_bytes();
            let rows: Vec<u8> = (0..n_rows)
                .flat_map(|_| weight_row(format, blocks, Kind::Quantized, &mut rng))
                .collect();
            const TOKENS: usize = 8;
            let acts: Vec<u8> = (0..TOKENS)
                .flat_map(|_| act_row(format, blocks, Kind::Quantized, &mut rng))
                .collect();
            let act = &acts[..act_bytes];
            let mut out = vec![0.0f32; TOKENS * n_rows];
            let twin = format.scalar_dot();
            let scalar = time(|| {
                for (o, row) in out.iter_mut().zip(rows.chunks(row_bytes)) {
                    *o = twin(row, act);
                }
            });
            let vec_dot = time(|| {
                for (o, row) in out.iter_mut().zip(rows.chunks(row_bytes)) {
                    *o = vec_dot_with(kernels(), format, row, act);
                }
            });
            let dot_rows =
                time(|| dot_rows_with(kernels(), format, &rows, row_bytes, n_rows, act, &mut out));
            let tokens = time(|| {
                rows_tokens(
                    kernels(),
                    format,
                    &rows,
                    row_bytes,
                    n_rows,
                    &acts,
                    act_bytes,
                    TOKENS,
                    None,
                    &mut out,
                    n_rows,
                )
            }) / TOKENS as f64;
            let per = |ns: f64| ns / n_rows as f64;
            println!(
                "{} {n_rows}x{width}: scalar {:.0} ns/row-set ({:.1} ns/row), vec_dot {:.1} ns/row, \
                 dot_rows {:.1} ns/row ({:.0} ns/row-set, x{:.1}), dot_rows_tokens({TOKENS}) {:.1} ns/row/token (x{:.1})",
                format.name(),
                scalar,
                per(scalar),
                per(vec_dot),
                per(dot_rows),
                dot_rows,
                scalar / dot_rows,
                per(tokens),
                scalar / tokens,
            );
        }
    }
}

/// Wall time of one call of `f` in ns: the best of many short batches, so that the
/// other processes of a busy machine disturb it less.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..300 {
        let iters = 4;
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / iters as f64);
    }
    std::hint::black_box(best)
}

#[test]
#[should_panic(expected = "staged activations")]
fn mismatched_staged_activations_panic() {
    let rows = [0u8; 20];
    let acts = [0u8; 72];
    // Staged for one token; the call has two.
    let staged = Staged::from_rows(ActBlocks::Q8_1, &acts, 36, 1, 1);
    dot_rows_tokens_q4_1_q8_1(&rows, 20, 1, &acts, 36, 2, Some(&staged), &mut [0.0; 2], 1);
}
