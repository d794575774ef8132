//! The matvec's host side, and its twin against the CPU reference (ir's quantizers,
//! dequantizers and block dots) on random data and odd shapes.

use half::f16;
use kiln_ir::DType;
use kiln_ir::quant::{self, q4_0, q4_1, q5_0, q5_1, q8_0, q8_1};

use super::twin::{self, Q8_1Rows};
use super::*;

/// xorshift64: deterministic random data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Values whose scale changes every 32 (so blocks differ), none zero.
    fn values(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let scale = 0.01 + 4.0 * self.unit().abs();
            for _ in 0..32.min(n - out.len()) {
                let v = self.unit() * scale;
                out.push(if v == 0.0 { scale } else { v });
            }
        }
        out
    }
}

/// A (rows, cols) weight of random values quantized by ir's reference quantizer: GGUF bytes.
fn weight(rng: &mut Rng, dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    let row_bytes = cols / dtype.block_len() * dtype.block_bytes();
    let mut bytes = vec![0u8; rows * row_bytes];
    for (row, dst) in bytes.chunks_exact_mut(row_bytes).enumerate() {
        let _ = row;
        quant::quantize_row(dtype, &rng.values(cols), dst).unwrap();
    }
    bytes
}

/// Activation row t of `x` as GGUF q8_1 blocks (d, s, qs).
/// Row t's blocks in ggml's q8_1 layout (f16 d, f16 s, 32 quants), s taken from the
/// reference's own block `want` after checking that the word's int16 holds Σq: the
/// scratch keeps Σq where ggml keeps s = d·Σq rounded to f16.
fn q8_1_blocks(x: &Q8_1Rows, t: usize, want: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in 0..x.k / 32 {
        let ds = x.ds[t * x.k / 32 + b];
        let q = &x.q[t * x.k + 32 * b..][..32];
        let sum: i32 = q.iter().map(|&q| i32::from(q)).sum();
        assert_eq!(i32::from((ds >> 16) as u16 as i16), sum, "Σq of block {b}");
        out.extend((ds as u16).to_le_bytes());
        out.extend(&want[b * q8_1::BLOCK_BYTES + 2..][..2]);
        out.extend(q.iter().map(|&q| q as u8));
    }
    out
}

#[test]
fn plain_quantization_is_the_reference_quantizer() {
    let mut rng = Rng(7);
    for k in [32, 96, 576, 4128] {
        let rows = 3;
        let stride = k + 8;
        let x = rng.values(rows * stride);
        let got = twin::quantize(&x, rows, k, stride, None);
        for t in 0..rows {
            let mut want = vec![0u8; k / 32 * q8_1::BLOCK_BYTES];
            q8_1::quantize_row(&x[t * stride..t * stride + k], &mut want);
            assert_eq!(q8_1_blocks(&got, t, &want), want, "k {k} row {t}");
        }
    }
}

#[test]
fn rmsnorm_quantization_quantizes_the_normalized_rows() {
    let mut rng = Rng(11);
    let (rows, k, eps) = (5, 1056, 1e-5f32);
    let x = rng.values(rows * k);
    let norm = rng.values(k);
    let got = twin::quantize(&x, rows, k, k, Some((&norm, eps)));
    for t in 0..rows {
        let row = &x[t * k..(t + 1) * k];
        let ms = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            / k as f64;
        let inv = 1.0 / (ms + f64::from(eps)).sqrt();
        let normed: Vec<f64> = row
            .iter()
            .zip(&norm)
            .map(|(&v, &w)| f64::from(v) * inv * f64::from(w))
            .collect();
        for b in 0..k / 32 {
            let ds = got.ds[t * k / 32 + b];
            let d = f64::from(f16::from_bits(ds as u16).to_f32());
            let amax = normed[32 * b..32 * b + 32]
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()));
            for j in 0..32 {
                let v = normed[32 * b + j];
                let deq = f64::from(got.q[t * k + 32 * b + j]) * d;
                // Half a step, the f16 rounding of d over 127 steps, the f32 norm.
                let bound = amax / 127.0 * 0.5 + 127.0 * d * 2f64.powi(-11) + 1e-5 * amax;
                assert!(
                    (deq - v).abs() <= bound,
                    "row {t} col {}: {deq} vs {v}",
                    32 * b + j
                );
            }
        }
    }
}

/// The twin's matvec (Store) against ir: the dequantized f64 dot of the same quants, the
/// ir block dot of the same blocks, and the f32 dot of the unquantized activations.
fn check_against_reference(dtype: DType, n: usize, k: usize, tokens: usize, seed: u64) {
    let mut rng = Rng(seed);
    let gguf = weight(&mut rng, dtype, n, k);
    let packed = repack::pack(dtype, n, k, &gguf).unwrap();
    let x = rng.values(tokens * k);
    let acts = twin::quantize(&x, tokens, k, k, None);
    let stride = n + 3;
    let mut out = vec![f32::NAN; tokens * stride];
    twin::matvec(
        dtype,
        n,
        &[&packed],
        &acts,
        Epilogue::Store,
        &mut out,
        stride,
    )
    .unwrap();
    let row_bytes = k / dtype.block_len() * dtype.block_bytes();
    let units = dtype.block_len() / 32;
    for t in 0..tokens {
        // ggml's q8_1 blocks of the same activations, s = d·Σq rounded to f16 as ggml keeps it.
        let a_blocks: Vec<u8> = (0..k / 32)
            .flat_map(|b| {
                let ds = acts.ds[t * k / 32 + b];
                let q = &acts.q[t * k + 32 * b..][..32];
                let d = f16::from_bits(ds as u16).to_f32();
                let s = d * f32::from((ds >> 16) as u16 as i16);
                let mut block = (ds as u16).to_le_bytes().to_vec();
                block.extend(f16::from_f32(s).to_le_bytes());
                block.extend(q.iter().map(|&q| q as u8));
                block
            })
            .collect();
        let mut a_deq = vec![0f32; k];
        q8_1::dequantize_row(&a_blocks, &mut a_deq);
        // Q8_0 blocks of the same quants: d then qs.
        let a_q8_0: Vec<u8> = a_blocks
            .chunks_exact(36)
            .flat_map(|b| b[..2].iter().chain(&b[4..]).copied())
            .collect();
        for r in 0..n {
            let row = &gguf[r * row_bytes..(r + 1) * row_bytes];
            let mut w = vec![0f32; k];
            quant::dequantize_row(dtype, row, &mut w).unwrap();
            let exact: f64 = w
                .iter()
                .zip(&a_deq)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let magnitude: f64 = w
                .iter()
                .zip(&a_deq)
                .map(|(&a, &b)| f64::from((a * b).abs()))
                .sum();
            // Q4_0, Q4_1, Q5_0, Q5_1, Q4_K and Q5_K take Σx from the activation's s
            // (8·d, 16·d, m or dmin·m times it): the twin's is d·Σq in f32, ggml's (the
            // ir block dots below) rounded to f16. (twin's error, ggml's error)
            let (s_error, s_error_ggml): (f64, f64) = (0..k / 32)
                .map(|b| {
                    let bb = dtype.block_bytes();
                    let block = &row[bb * (b / units)..][..bb];
                    let f16_at = |at: usize| {
                        f64::from(f16::from_le_bytes([block[at], block[at + 1]]).to_f32())
                    };
                    let factor = match dtype {
                        DType::Q4_0 => 8.0 * f16_at(0).abs(),
                        DType::Q5_0 => 16.0 * f16_at(0).abs(),
                        DType::Q4_1 | DType::Q5_1 => f16_at(2).abs(),
                        DType::Q4_K | DType::Q5_K => {
                            let sc = &block[4..16];
                            let j = b % 8;
                            let m = if j < 4 {
                                sc[j + 4] & 63
                            } else {
                                (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)
                            };
                            f16_at(2).abs() * f64::from(m)
                        }
                        _ => 0.0,
                    };
                    let ds = acts.ds[t * k / 32 + b];
                    let d = f16::from_bits(ds as u16).to_f32();
                    let sum: i32 = acts.q[t * k + 32 * b..][..32]
                        .iter()
                        .map(|&q| i32::from(q))
                        .sum();
                    assert_eq!(i32::from((ds >> 16) as u16 as i16), sum, "Σq of block {b}");
                    let s = d * sum as f32;
                    let exact_s = f64::from(d) * f64::from(sum);
                    let ggml_s = f64::from(f16::from_f32(s).to_f32());
                    (
                        factor * (f64::from(s) - exact_s).abs(),
                        factor * (ggml_s - exact_s).abs(),
                    )
                })
                .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
            let got = f64::from(out[t * stride + r]);
            let tol = s_error * 1.001 + 2e-6 * magnitude + 1e-30;
            assert!(
                (got - exact).abs() <= tol,
                "{dtype} ({n}, {k}) token {t} row {r}: twin {got} vs exact {exact} (tol {tol})"
            );
            // ir's block dots of the same activation blocks (the K-quants' take Q8_K ones).
            let block_dot = match dtype {
                DType::Q4_0 => Some(q4_0::vec_dot_q4_0_q8_0(row, &a_q8_0)),
                DType::Q4_1 => Some(q4_1::vec_dot_q4_1_q8_1(row, &a_blocks)),
                DType::Q5_0 => Some(q5_0::vec_dot_q5_0_q8_0(row, &a_q8_0)),
                DType::Q5_1 => Some(q5_1::vec_dot_q5_1_q8_1(row, &a_blocks)),
                DType::Q8_0 => Some(q8_0::vec_dot_q8_0_q8_0(row, &a_q8_0)),
                _ => None,
            };
            if let Some(block_dot) = block_dot.map(f64::from) {
                assert!(
                    (got - block_dot).abs() <= tol + s_error_ggml * 1.001 + 2e-6 * magnitude,
                    "{dtype} token {t} row {r}: twin {got} vs ir block dot {block_dot}"
                );
            }
            // The activations' quantization error: at most half a step (and the f16
            // rounding of d) per value.
            let xs = &x[t * k..(t + 1) * k];
            let f32_dot: f64 = w
                .iter()
                .zip(xs)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let q_error: f64 = (0..k)
                .map(|i| {
                    let amax = xs[i / 32 * 32..][..32]
                        .iter()
                        .fold(0f32, |m, v| m.max(v.abs()));
                    f64::from(w[i].abs()) * f64::from(amax / 127.0) * (0.5 + 127.0 / 1024.0)
                })
                .sum();
            assert!(
                (got - f32_dot).abs() <= q_error + tol,
                "{dtype} token {t} row {r}: twin {got} vs f32 dot {f32_dot}"
            );
        }
    }
}

#[test]
fn twin_matches_the_reference_on_odd_shapes() {
    let mut seed = 1;
    for dtype in DTYPES {
        // k in blocks of the type (32 or 256 values): 1, 3, 18, 129, 32 and 5 of them.
        for (n, blocks, tokens) in [
            (1, 1, 1),
            (3, 3, 2),
            (17, 18, 3),
            (5, 129, 7),
            (2, 32, 17),
            (3, 5, 32),
        ] {
            seed += 1;
            let k = blocks * dtype.block_len();
            check_against_reference(dtype, n, k, tokens, seed);
        }
    }
}

#[test]
fn epilogues_apply_to_the_dot_products() {
    let mut rng = Rng(99);
    let (n, tokens, stride) = (7, 5, 9);
    for dtype in DTYPES {
        let k = 7 * dtype.block_len();
        let gate = repack::pack(dtype, n, k, &weight(&mut rng, dtype, n, k)).unwrap();
        let up = repack::pack(dtype, n, k, &weight(&mut rng, dtype, n, k)).unwrap();
        let acts = twin::quantize(&rng.values(tokens * k), tokens, k, k, None);
        let run = |w: &[&[u8]], e: Epilogue, init: &[f32]| {
            let mut out = init.to_vec();
            twin::matvec(dtype, n, w, &acts, e, &mut out, stride).unwrap();
            out
        };
        let zeros = vec![0f32; tokens * stride];
        let g = run(&[&gate], Epilogue::Store, &zeros);
        let u = run(&[&up], Epilogue::Store, &zeros);
        let res = rng.values(tokens * stride);
        let added = run(&[&gate], Epilogue::Add, &res);
        let swiglu = run(&[&gate, &up], Epilogue::SwiGlu, &res);
        let geglu = run(&[&gate, &up], Epilogue::GeGlu, &res);
        for t in 0..tokens {
            for c in 0..stride {
                let i = t * stride + c;
                if c < n {
                    assert_eq!(added[i], res[i] + g[i]);
                    assert_eq!(swiglu[i], g[i] / (1.0 + (-g[i]).exp()) * u[i]);
                    assert_eq!(geglu[i], twin::gelu_f16(g[i]) * u[i]);
                } else {
                    assert_eq!((added[i], swiglu[i]), (res[i], res[i]), "past n untouched");
                    assert_eq!(geglu[i], res[i], "past n untouched");
                }
            }
        }
    }
}

#[test]
fn sources_hold_every_entry_and_the_args() {
    for dtype in DTYPES {
        let src = source(dtype).unwrap();
        assert!(src.contains("struct MatvecArgs {"));
        assert!(
            !src.contains("#error") && !src.contains("#include"),
            "{dtype}: includes expanded"
        );
        for e in entries(dtype) {
            assert!(src.contains(&format!(" {e}(const MatvecArgs a)")), "{e}");
        }
        assert_eq!(entries(dtype).len(), TILES.len() * 4 - 2, "no GLU at 32");
    }
    assert_eq!(
        entry(DType::Q4_1, 1, Epilogue::SwiGlu),
        "matvec_q4_1_t1_swiglu"
    );
    assert_eq!(entry(DType::Q4_0, 8, Epilogue::Store), "matvec_q4_0_t8");
    assert_eq!(source(DType::Q8_K), Err(MatvecError::Dtype(DType::Q8_K)));
    let q = quantize_source();
    assert!(q.contains("struct QuantizeArgs {") && !q.contains("#include"));
    for d in DTYPES {
        let u = unit_check_source(d).unwrap();
        assert!(u.contains("pw_unit") && !u.contains("#include") && !u.contains("#error"));
    }
    assert_eq!(modules().len(), DTYPES.len() + 1 + DTYPES.len());
}

#[test]
fn launch_geometry_follows_the_step() {
    let store = |t| tile_for(t, Epilogue::Store);
    assert_eq!(
        TILES.map(store),
        [1, 2, 4, 8, 16, 32],
        "a tile holds its own count"
    );
    assert_eq!([3, 5, 9, 17, 33].map(store), [4, 8, 16, 32, 32]);
    for e in [Epilogue::SwiGlu, Epilogue::GeGlu] {
        assert_eq!([3, 16, 17, 32].map(|t| tile_for(t, e)), [4, 16, 16, 16]);
    }
    let l = matvec_launch(DType::Q5_0, 2048, 640, 1, Epilogue::GeGlu).unwrap();
    assert_eq!(
        (l.entry.as_str(), l.grid),
        ("matvec_q5_0_t1_geglu", [1024, 1, 1])
    );
    let l = matvec_launch(DType::Q4_0, 4096, 4096, 1, Epilogue::Store).unwrap();
    assert_eq!(
        (l.entry.as_str(), l.grid, l.block),
        ("matvec_q4_0_t1", [1024, 1, 1], [128, 1, 1])
    );
    let l = matvec_launch(DType::Q8_0, 14336, 4096, 24, Epilogue::SwiGlu).unwrap();
    assert_eq!((l.entry.as_str(), l.tile), ("matvec_q8_0_t16_swiglu", 16));
    assert_eq!(l.grid, [14336, 1, 2], "one row a block at 16 tokens, gated");
    let l = matvec_launch(DType::Q4_0, 4096, 14336, 32, Epilogue::Add).unwrap();
    assert_eq!(
        (l.entry.as_str(), l.grid),
        ("matvec_q4_0_t32_add", [4096, 1, 1])
    );
    let l = matvec_launch(DType::Q4_1, 577, 576, 70, Epilogue::Add).unwrap();
    assert_eq!(l.grid, [577, 1, 3], "one row a block at 32 tokens");
    for dtype in DTYPES {
        for (tile, e) in variants() {
            let r = rows_per_block(dtype, tile, e);
            let gated = if e.gated() { 2 } else { 1 };
            assert!(
                (1..=4).contains(&r) && r * tile * gated <= 32,
                "{dtype} {tile} {e:?}"
            );
        }
    }
    assert_eq!(rows_per_block(DType::Q4_K, 8, Epilogue::SwiGlu), 1);
    assert_eq!(rows_per_block(DType::Q4_0, 8, Epilogue::SwiGlu), 2);
    assert_eq!(
        matvec_launch(DType::F16, 8, 32, 1, Epilogue::Store),
        Err(MatvecError::Dtype(DType::F16))
    );
    assert_eq!(
        matvec_launch(DType::Q4_0, 8, 48, 1, Epilogue::Store),
        Err(MatvecError::K(48))
    );
    assert_eq!(
        matvec_launch(DType::Q4_0, 0, 64, 1, Epilogue::Store),
        Err(MatvecError::NoRows)
    );
    assert_eq!(
        matvec_launch(DType::Q4_K, 8, 288, 1, Epilogue::Store),
        Err(MatvecError::K(288)),
        "K-quant rows are whole super-blocks"
    );
    let l = matvec_launch(DType::Q6_K, 640, 2048, 1, Epilogue::Add).unwrap();
    assert_eq!(
        (l.entry.as_str(), l.grid),
        ("matvec_q6_k_t1_add", [160, 1, 1])
    );
}

#[test]
fn scratch_planes_are_aligned_and_hold_the_largest_step() {
    let p = q8_1_planes(3, 96);
    assert_eq!((p.scales_offset, p.bytes), (288, 288 + 48));
    let p = q8_1_planes(32, 14336);
    assert_eq!(p.scales_offset, 32 * 14336);
    assert_eq!(p.bytes, 32 * 14336 + 32 * 448 * 4);
    let p = q8_1_planes(1, 32);
    assert_eq!((p.scales_offset, p.bytes), (32, 48));
}
