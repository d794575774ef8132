//! QK-norm: every head of head_dim values normalised like RMSNorm, all heads sharing one
//! weight of head_dim. x, out: (rows, heads·head_dim).

/// Heads are contiguous runs of `weight.len()` values, so this is RMSNorm over rows of one
/// head each.
pub fn head_rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    super::rmsnorm::rmsnorm(x, weight, eps, out);
}
