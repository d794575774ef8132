//! out = gelu_tanh(gate) · up, GELU in its tanh form (ggml's `gelu`, Gemma's
//! `gelu_pytorch_tanh`), computed as llama.cpp's CPU backend computes it: from the input
//! rounded to f16, rounded to f16 itself (ggml's 64k-entry f16 table), 0 below −10 and the
//! identity above 10. The oracle uses the exact function; matching llama.cpp's rounding
//! here, as the matmuls match its 8-bit activations, keeps Gemma's near ties on
//! llama.cpp's side (measured on Gemma 3 270M: the top-10 at the last prompt position
//! within llama.cpp's own spread on every reference prompt, against one of three with the
//! exact function).
//!
//! Like ggml, the rounded function is read from a table of all 65,536 f16 inputs (128 KiB,
//! built on first use): the same values as [`gelu_tanh_rounded`], its scalar twin, without
//! a `tanhf` per value (a prefill of Gemma 3 270M takes 19 million).

use std::sync::OnceLock;

use half::f16;

/// √(2/π).
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_COEF_A: f32 = 0.044_715;

/// ggml's `ggml_gelu_f32`: the tanh approximation in f32.
pub fn gelu_tanh_exact(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// ggml's `ggml_vec_gelu_f32` with `GGML_GELU_FP16` (its default build), computed: the
/// twin of [`gelu_tanh`].
pub fn gelu_tanh_rounded(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let y = gelu_tanh_exact(f16::from_f32(x).to_f32());
        f16::from_f32(y).to_f32()
    }
}

/// [`gelu_tanh_rounded`] of every f16 input, indexed by its bits.
fn gelu_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_tanh_exact(f16::from_bits(bits).to_f32())))
            .collect()
    })
}

/// ggml's `ggml_vec_gelu_f32` with `GGML_GELU_FP16`, read from the table.
pub fn gelu_tanh(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        gelu_table()[usize::from(f16::from_f32(x).to_bits())].to_f32()
    }
}

pub fn geglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = gelu_tanh(g) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_rounds_as_ggml_does() {
        // Away from the clamps: within an f16 rounding of input and output of the exact
        // function, and exactly the f16 of the function at the f16 input.
        for i in -2000..2000 {
            let x = i as f32 * 0.0049;
            let exact = gelu_tanh_exact(x);
            let ours = gelu_tanh(x);
            assert!(
                (ours - exact).abs() <= 2e-3 * exact.abs().max(0.05),
                "{x}: {ours} vs {exact}"
            );
            assert_eq!(f16::from_f32(ours).to_f32(), ours);
        }
        assert_eq!(gelu_tanh(-10.5), 0.0);
        assert_eq!(gelu_tanh(12.25), 12.25);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-3);
    }

    #[test]
    fn table_equals_its_twin() {
        // Every f16 input inside the clamps (NaNs aside), and f32 inputs between them.
        for bits in 0..=u16::MAX {
            let x = f16::from_bits(bits).to_f32();
            if x.is_nan() {
                continue;
            }
            assert_eq!(
                gelu_tanh(x).to_bits(),
                gelu_tanh_rounded(x).to_bits(),
                "{x}"
            );
        }
        let mut x = -11.0f32;
        while x < 11.0 {
            assert_eq!(
                gelu_tanh(x).to_bits(),
                gelu_tanh_rounded(x).to_bits(),
                "{x}"
            );
            x += 0.000_37;
        }
    }
}
