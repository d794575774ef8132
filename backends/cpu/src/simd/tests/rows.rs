//! Test rows for every format: quantized from random values, or raw random bytes with
//! valid scales; and the magnitude of a dot product's terms, for rounding tolerances.

use half::f16;
use kiln_ir::DType;
use kiln_ir::quant::{dequantize_row, k_common, q8_k, quantize_row};

use super::super::Format;

/// splitmix64: a small deterministic generator for the table-driven tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// How a test row is made.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Random f32 values (never all zero) through kiln_ir's quantizer.
    Quantized,
    /// Any byte for every quant and sub-block scale (-128 included, except activation
    /// quants for Q8_0 weights; Q8_K's block sums are their true sums) and random
    /// finite block scales, subnormal ones included.
    Raw,
}

/// The weight dtype of a format.
pub fn dtype(format: Format) -> DType {
    match format {
        Format::Q4_0 => DType::Q4_0,
        Format::Q4_1 => DType::Q4_1,
        Format::Q8_0 => DType::Q8_0,
        Format::Q5_0 => DType::Q5_0,
        Format::Q5_1 => DType::Q5_1,
        Format::Q4K => DType::Q4_K,
        Format::Q5K => DType::Q5_K,
        Format::Q6K => DType::Q6_K,
    }
}

/// Byte offsets of the f16 scales (d, and m or dmin) of a weight block.
fn weight_f16s(format: Format) -> &'static [usize] {
    match format {
        Format::Q4_0 | Format::Q8_0 | Format::Q5_0 => &[0],
        Format::Q4_1 | Format::Q5_1 | Format::Q4K | Format::Q5K => &[0, 2],
        Format::Q6K => &[208],
    }
}

/// A weight row of `blocks` blocks.
pub fn weight_row(format: Format, blocks: usize, kind: Kind, rng: &mut Rng) -> Vec<u8> {
    let n = blocks * format.block_len();
    match kind {
        Kind::Quantized => {
            let scale = [0.01f32, 1.0, 30.0][(rng.next() % 3) as usize];
            let x: Vec<f32> = (0..n).map(|_| rng.unit() * scale + 1e-3).collect();
            let mut row = vec![0u8; blocks * format.weight_bytes()];
            quantize_row(dtype(format), &x, &mut row).expect("whole blocks");
            row
        }
        Kind::Raw => {
            let mut row = rng.bytes(blocks * format.weight_bytes());
            for block in row.chunks_mut(format.weight_bytes()) {
                for &at in weight_f16s(format) {
                    block[at..at + 2].copy_from_slice(&random_f16(rng));
                }
            }
            row
        }
    }
}

/// An activation row of `blocks` blocks for `format`'s weights.
pub fn act_row(format: Format, blocks: usize, kind: Kind, rng: &mut Rng) -> Vec<u8> {
    let n = blocks * format.block_len();
    let act_bytes = format.act_bytes();
    match kind {
        Kind::Quantized => {
            let x: Vec<f32> = (0..n).map(|_| rng.unit() * 4.0 + 1e-3).collect();
            let mut act = vec![0u8; blocks * act_bytes];
            format.quantize_acts()(&x, &mut act);
            act
        }
        Kind::Raw => {
            let mut act = rng.bytes(blocks * act_bytes);
            for block in act.chunks_mut(act_bytes) {
                let quants = match format.act_blocks() {
                    super::ActBlocks::Q8_0 => {
                        block[..2].copy_from_slice(&random_f16(rng));
                        2..34
                    }
                    super::ActBlocks::Q8_1 => {
                        block[..2].copy_from_slice(&random_f16(rng));
                        block[2..4].copy_from_slice(&random_f16(rng));
                        4..36
                    }
                    super::ActBlocks::Q8_K => {
                        let d = f16::from_le_bytes(random_f16(rng)).to_f32();
                        block[..4].copy_from_slice(&d.to_le_bytes());
                        q8_k::QS_AT..q8_k::BSUMS_AT
                    }
                };
                for q in &mut block[quants.clone()] {
                    // The documented precondition for Q8_0 weights (the sign trick);
                    // the other formats take -128 too.
                    if format == Format::Q8_0 && *q == 0x80 {
                        *q = 0x81;
                    }
                }
                if format.act_blocks() == super::ActBlocks::Q8_K {
                    for j in 0..16 {
                        let s: i32 = block[quants.start + 16 * j..][..16]
                            .iter()
                            .map(|&q| i32::from(q as i8))
                            .sum();
                        let at = q8_k::BSUMS_AT + 2 * j;
                        block[at..at + 2].copy_from_slice(&(s as i16).to_le_bytes());
                    }
                }
            }
            act
        }
    }
}

/// A finite, non-zero f16 (as bytes) from about 2^-20 to 2^6, either sign.
pub fn random_f16(rng: &mut Rng) -> [u8; 2] {
    let v = rng.unit().abs().max(1e-3) * 2f32.powi((rng.next() % 27) as i32 - 20);
    let v = if rng.next().is_multiple_of(2) { v } else { -v };
    f16::from_f32(v).to_le_bytes()
}

/// The activation values of a row, dequantized (the block sums of Q8_1 ignored).
fn act_values(format: Format, act: &[u8]) -> Vec<f64> {
    let mut out = Vec::new();
    for block in act.chunks_exact(format.act_bytes()) {
        let (d, quants) = match format.act_blocks() {
            super::ActBlocks::Q8_0 => (f16_at(block, 0), &block[2..]),
            super::ActBlocks::Q8_1 => (f16_at(block, 0), &block[4..]),
            super::ActBlocks::Q8_K => (
                f64::from(q8_k::block_d(block)),
                &block[q8_k::QS_AT..q8_k::BSUMS_AT],
            ),
        };
        out.extend(quants.iter().map(|&q| d * f64::from(q as i8)));
    }
    out
}

fn f16_at(b: &[u8], at: usize) -> f64 {
    f64::from(f16::from_le_bytes([b[at], b[at + 1]]).to_f32())
}

/// |the offset part| of each weight value: what a kernel adds apart from `scale · q`
/// (-8 d, -16 d, m, -dmin m_j, or Q6_K's -32 d sc_j).
fn weight_offsets(format: Format, row: &[u8]) -> Vec<f64> {
    let mut out = Vec::new();
    for b in row.chunks_exact(format.weight_bytes()) {
        match format {
            Format::Q8_0 => out.extend([0.0; 32]),
            Format::Q4_0 => out.extend([8.0 * f16_at(b, 0).abs(); 32]),
            Format::Q5_0 => out.extend([16.0 * f16_at(b, 0).abs(); 32]),
            Format::Q4_1 | Format::Q5_1 => out.extend([f16_at(b, 2).abs(); 32]),
            Format::Q4K | Format::Q5K => {
                for j in 0..8 {
                    let (_, m) = k_common::scale_min_k4(j, &b[4..16]);
                    out.extend([(f16_at(b, 2) * f64::from(m)).abs(); 32]);
                }
            }
            Format::Q6K => {
                for j in 0..16 {
                    let sc = f64::from(b[192 + j] as i8);
                    out.extend([(32.0 * f16_at(b, 208) * sc).abs(); 16]);
                }
            }
        }
    }
    out
}

/// The sum of |every term| a kernel adds for a row pair, in f64: the scale of the
/// rounding error (`|w| + 2 |offset|` bounds both the scaled quant and the offset).
pub fn magnitude(format: Format, row: &[u8], act: &[u8]) -> f64 {
    let n = row.len() / format.weight_bytes() * format.block_len();
    let mut w = vec![0.0f32; n];
    dequantize_row(dtype(format), row, &mut w).expect("whole blocks");
    let offsets = weight_offsets(format, row);
    let y = act_values(format, act);
    w.iter()
        .zip(&offsets)
        .zip(&y)
        .map(|((&w, &o), &y)| (f64::from(w).abs() + 2.0 * o) * y.abs())
        .sum()
}
