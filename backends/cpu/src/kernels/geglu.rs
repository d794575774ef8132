//! out = gelu_tanh(gate) · up, GELU in its tanh form (ggml's `gelu`, Gemma's
//! `gelu_pytorch_tanh`), computed as llama.cpp's CPU backend computes it: from the input
//! rounded to f16, rounded to f16 itself (ggml's 64k-entry f16 table), 0 below −10 and the
//! identity above 10. The oracle uses the exact function; matching llama.cpp's rounding
//! here, as the matmuls match its 8-bit activations, keeps Gemma's near ties on
//! llama.cpp's side (measured on Gemma 3 270M: the top-10 at the last prompt position
//! within llama.cpp's own spread on every reference prompt, against one of three with the
//! exact function).

use half::f16;

/// √(2/π).
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_COEF_A: f32 = 0.044_715;

/// ggml's `ggml_gelu_f32`: the tanh approximation in f32.
pub fn gelu_tanh_exact(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// ggml's `ggml_vec_gelu_f32` with `GGML_GELU_FP16` (its default build).
pub fn gelu_tanh(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let y = gelu_tanh_exact(f16::from_f32(x).to_f32());
        f16::from_f32(y).to_f32()
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
}
