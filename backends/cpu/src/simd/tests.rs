//! Every kernel against its scalar twin in kiln_ir::quant, on every path this machine
//! can run: the dispatched one, the scalar one forced, and AVX2 named explicitly.

use std::time::Instant;

use half::f16;
use kiln_ir::quant::{q4_0, q4_1, q8_0, q8_1};
use proptest::prelude::*;

use super::*;

const FORMATS: [Format; 3] = [Format::Q4_0, Format::Q4_1, Format::Q8_0];

/// Row lengths in blocks; 18 and 48 are the reference model's widths (576, 1536).
const LENGTHS: [usize; 6] = [1, 2, 3, 5, 18, 48];

/// The paths to check: what dispatch picked, the scalar one, and AVX2 and AVX-VNNI where
/// this CPU has them.
fn paths() -> Vec<&'static Kernels> {
    #[cfg(target_arch = "x86_64")]
    let (avx2, vnni) = (
        avx2::detected().then_some(&avx2::KERNELS),
        avx2::detected_vnni().then_some(&avx2::KERNELS_VNNI),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (avx2, vnni) = (None, None);
    [Some(kernels()), Some(&SCALAR), avx2, vnni]
        .into_iter()
        .flatten()
        .collect()
}

/// splitmix64: a small deterministic generator for the table-driven tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// How a test row is made.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Random f32 values (never all zero) through kiln_ir's quantizer.
    Quantized,
    /// Any byte for every quant (weights: -128 included; Q8 activations: -127..=127)
    /// and random finite scales, subnormal ones included.
    Raw,
}

/// A weight row of `blocks` blocks.
fn weight_row(format: Format, blocks: usize, kind: Kind, rng: &mut Rng) -> Vec<u8> {
    let n = blocks * 32;
    match kind {
        Kind::Quantized => {
            let scale = [0.01f32, 1.0, 30.0][(rng.next() % 3) as usize];
            let x: Vec<f32> = (0..n).map(|_| rng.unit() * scale + 1e-3).collect();
            let mut row = vec![0u8; blocks * format.weight_bytes()];
            match format {
                Format::Q4_0 => q4_0::quantize_row(&x, &mut row),
                Format::Q4_1 => q4_1::quantize_row(&x, &mut row),
                Format::Q8_0 => q8_0::quantize_row(&x, &mut row),
            }
            row
        }
        Kind::Raw => {
            let mut row = rng.bytes(blocks * format.weight_bytes());
            let header = if format == Format::Q4_1 { 2 } else { 1 };
            for block in row.chunks_mut(format.weight_bytes()) {
                for k in 0..header {
                    block[2 * k..2 * k + 2].copy_from_slice(&random_f16(rng));
                }
            }
            row
        }
    }
}

/// An activation row of `blocks` blocks for `format`'s weights.
fn act_row(format: Format, blocks: usize, kind: Kind, rng: &mut Rng) -> Vec<u8> {
    let n = blocks * 32;
    match kind {
        Kind::Quantized => {
            let x: Vec<f32> = (0..n).map(|_| rng.unit() * 4.0 + 1e-3).collect();
            let mut act = vec![0u8; blocks * format.act_bytes()];
            match format {
                Format::Q4_0 | Format::Q8_0 => q8_0::quantize_row(&x, &mut act),
                Format::Q4_1 => q8_1::quantize_row(&x, &mut act),
            }
            act
        }
        Kind::Raw => {
            let mut act = rng.bytes(blocks * format.act_bytes());
            let header = if format == Format::Q4_1 { 2 } else { 1 };
            for block in act.chunks_mut(format.act_bytes()) {
                for k in 0..header {
                    block[2 * k..2 * k + 2].copy_from_slice(&random_f16(rng));
                }
                for q in &mut block[2 * header..] {
                    // The documented precondition for Q8_0 weights; the nibble formats
                    // take -128 too.
                    if format == Format::Q8_0 && *q == 0x80 {
                        *q = 0x81;
                    }
                }
            }
            act
        }
    }
}

/// A finite, non-zero f16 (as bytes) from about 2^-20 to 2^6, either sign.
fn random_f16(rng: &mut Rng) -> [u8; 2] {
    let v = rng.unit().abs().max(1e-3) * 2f32.powi((rng.next() % 27) as i32 - 20);
    let v = if rng.next().is_multiple_of(2) { v } else { -v };
    f16::from_f32(v).to_le_bytes()
}

/// The sum of |every product| of a row pair, in f64: the scale of the rounding error.
fn magnitude(format: Format, row: &[u8], act: &[u8]) -> f64 {
    let f = |b: &[u8], at: usize| f64::from(f16::from_le_bytes([b[at], b[at + 1]]).to_f32());
    let mut sum = 0.0;
    for (x, y) in row
        .chunks_exact(format.weight_bytes())
        .zip(act.chunks_exact(format.act_bytes()))
    {
        let (w, yq): (Vec<f64>, &[u8]) = match format {
            Format::Q4_0 => (nibble_values(&x[2..], -8.0), &y[2..]),
            Format::Q4_1 => (nibble_values(&x[4..], 0.0), &y[4..]),
            Format::Q8_0 => (
                x[2..].iter().map(|&q| f64::from(q as i8)).collect(),
                &y[2..],
            ),
        };
        let dots: f64 = w
            .iter()
            .zip(yq)
            .map(|(&w, &q)| (w * f64::from(q as i8)).abs())
            .sum();
        sum += dots * (f(x, 0) * f(y, 0)).abs();
        if format == Format::Q4_1 {
            sum += (f(x, 2) * f(y, 2)).abs();
        }
    }
    sum
}

/// The 32 quants of 16 nibble bytes, in element order, plus `offset`.
fn nibble_values(qs: &[u8], offset: f64) -> Vec<f64> {
    let lo = qs.iter().map(|&q| f64::from(q & 0x0F));
    let hi = qs.iter().map(|&q| f64::from(q >> 4));
    lo.chain(hi).map(|q| q + offset).collect()
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
        for blocks in LENGTHS {
            for kind in [Kind::Quantized, Kind::Raw] {
                for _ in 0..20 {
                    let row = weight_row(format, blocks, kind, &mut rng);
                    let act = act_row(format, blocks, kind, &mut rng);
                    for kernels in paths() {
                        let got = vec_dot_with(kernels, format, &row, &act);
                        assert_close(format, &row, &act, got, kernels.isa);
                    }
                    let public = match format {
                        Format::Q4_0 => vec_dot_q4_0_q8_0(&row, &act),
                        Format::Q4_1 => vec_dot_q4_1_q8_1(&row, &act),
                        Format::Q8_0 => vec_dot_q8_0_q8_0(&row, &act),
                    };
                    assert_close(format, &row, &act, public, "public");
                }
            }
        }
    }
}

#[test]
fn dot_rows_matches_twin_and_writes_exactly_n_rows() {
    let mut rng = Rng(2);
    for format in FORMATS {
        for blocks in LENGTHS {
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
                match format {
                    Format::Q4_0 => dot_rows_q4_0_q8_0(&rows, row_bytes, n_rows, &act, &mut out),
                    Format::Q4_1 => dot_rows_q4_1_q8_1(&rows, row_bytes, n_rows, &act, &mut out),
                    Format::Q8_0 => dot_rows_q8_0_q8_0(&rows, row_bytes, n_rows, &act, &mut out),
                }
                check(&out, "public");
            }
        }
    }
}

#[test]
fn dot_rows_tokens_matches_twin_on_every_tile_shape() {
    for format in FORMATS {
        for blocks in [1, 3, 18] {
            for n_tokens in (1..=9).chain([16, 17, 23]) {
                for n_rows in [1, 2, 3, 4, 5, 7, 9] {
                    check_rows_tokens(format, blocks, n_rows, n_tokens, Kind::Quantized);
                }
            }
        }
        check_rows_tokens(format, 48, 6, 5, Kind::Raw);
    }
}

#[test]
fn public_dot_rows_tokens_agree_with_dot_rows() {
    let mut rng = Rng(3);
    let (blocks, n_rows, n_tokens) = (18, 6, 5);
    for format in FORMATS {
        let row_bytes = blocks * format.weight_bytes();
        let act_bytes = blocks * format.act_bytes();
        let rows: Vec<u8> = (0..n_rows)
            .flat_map(|_| weight_row(format, blocks, Kind::Quantized, &mut rng))
            .collect();
        let acts: Vec<u8> = (0..n_tokens)
            .flat_map(|_| act_row(format, blocks, Kind::Quantized, &mut rng))
            .collect();
        let mut out = vec![f32::NAN; n_tokens * n_rows];
        let f = match format {
            Format::Q4_0 => dot_rows_tokens_q4_0_q8_0,
            Format::Q4_1 => dot_rows_tokens_q4_1_q8_1,
            Format::Q8_0 => dot_rows_tokens_q8_0_q8_0,
        };
        f(
            &rows, row_bytes, n_rows, &acts, act_bytes, n_tokens, None, &mut out, n_rows,
        );
        for (t, act) in acts.chunks(act_bytes).enumerate() {
            for (r, row) in rows.chunks(row_bytes).enumerate() {
                assert_close(format, row, act, out[t * n_rows + r], "public");
            }
        }
    }
}

/// With scales of 1 every result is an integer below 2^24, so the paths must agree
/// exactly, whatever the weight bytes (-128 included: the sign trick's edge).
#[test]
fn unit_scales_give_exact_integer_results() {
    let mut rng = Rng(4);
    let one = f16::from_f32(1.0).to_le_bytes();
    for format in FORMATS {
        let blocks = 48;
        let mut row = weight_row(format, blocks, Kind::Raw, &mut rng);
        let mut act = act_row(format, blocks, Kind::Raw, &mut rng);
        for block in row.chunks_mut(format.weight_bytes()) {
            block[..2].copy_from_slice(&one);
        }
        for block in act.chunks_mut(format.act_bytes()) {
            block[..2].copy_from_slice(&one);
        }
        if format == Format::Q4_1 {
            for block in row.chunks_mut(format.weight_bytes()) {
                block[2..4].copy_from_slice(&f16::from_f32(-2.0).to_le_bytes());
            }
            for block in act.chunks_mut(format.act_bytes()) {
                block[2..4].copy_from_slice(&f16::from_f32(3.0).to_le_bytes());
            }
        }
        if format == Format::Q8_0 {
            row[2] = 0x80; // -128 against a positive and a negative activation
            row[3] = 0x80;
            act[2] = 100;
            act[3] = (-100i8) as u8;
        }
        let want = format.scalar_dot()(&row, &act);
        for kernels in paths() {
            assert_eq!(
                vec_dot_with(kernels, format, &row, &act),
                want,
                "{}",
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
                &[0; 64][..format.act_bytes()],
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
    prop_oneof![Just(Format::Q4_0), Just(Format::Q4_1), Just(Format::Q8_0)]
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
    for (n_rows, width) in [(576, 1536), (1536, 576)] {
        let blocks = width / 32;
        for format in FORMATS {
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
