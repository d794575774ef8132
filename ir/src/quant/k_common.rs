//! What the K-quant formats share (ggml's `ggml-quants.c`): the rounding, the 6-bit
//! packing of Q4_K/Q5_K sub-block scales and mins, and the two quant searches,
//! `make_qkx2_quants` (scale and minimum, Q4_K/Q5_K) and `make_qx_quants` (signed
//! scale, Q6_K). The float operations follow ggml's C source in its order; Rust never
//! fuses a multiply and an add, so these are the C semantics without FP contraction.

/// Values in a super-block.
pub const QK_K: usize = 256;

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below it is all zero.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round to nearest, ties to even, by adding 1.5 · 2^23 and reading
/// the mantissa. Exact for |v| <= 4194303 (ggml asserts that); any other input gives
/// some integer, which every caller clamps.
#[inline]
pub(super) fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and minimum of sub-block `j` (0..8) from
/// the 12 packed bytes of a Q4_K/Q5_K super-block.
///
/// ```text
/// j < 4:  scale = q[j] & 63,                          min = q[j + 4] & 63
/// j >= 4: scale = q[j + 4] & 15 | (q[j - 4] >> 6) << 4, min = q[j + 4] >> 4 | (q[j] >> 6) << 4
/// ```
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The inverse of [`scale_min_k4`]: packs 8 six-bit scales and mins into 12 bytes.
pub(super) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8], q: &mut [u8]) {
    for j in 0..8 {
        let (s, m) = (ls[j] & 63, lm[j] & 63);
        if j < 4 {
            q[j] = s;
            q[j + 4] = m;
        } else {
            q[j + 4] = (s & 0xF) | ((m & 0xF) << 4);
            q[j - 4] |= (s >> 4) << 6;
            q[j] |= (m >> 4) << 6;
        }
    }
}

/// ggml's `make_qkx2_quants` with `use_mad = false`: quants `l[i]` in `0..=nmax` with a
/// scale and a minimum for `x` under the importance `weights`, by a least-squares refit
/// at `nstep + 1` trial scales `(rmin + rdelta · is + nmax) / (max - min)`. Returns the
/// scale and the minimum's negation (`x ≈ scale · l - the_min`, `the_min >= 0`).
/// `laux` is scratch of `x.len()` bytes.
pub(super) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let (w, q) = (weights[i], q as f32);
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights (what
/// `quantize_row_q6_K_ref` calls): signed quants `l[i] - nmax` in `-nmax..nmax`,
/// stored offset by `nmax`, with the scale that minimises the error weighted by `x²`
/// over 19 trial scales `-(nmax + 0.1 · is) / max`. Returns the scale (0 for a group
/// below [`GROUP_MAX_EPS`], whose quants are then all 0).
pub(super) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [u8]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let q = quant(iscale, x[i]);
        l[i] = (q + nmax) as u8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let q = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                l[i] = (quant(iscale, x[i]) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The sub-block search and header of a Q4_K or Q5_K super-block (the first half of
/// `quantize_row_q4_K_ref` / `_q5_K_ref`): quants in `0..=nmax` into `l`, and
/// `(d, dmin, scales)` as stored (f16 `d` and `dmin`, 12 packed bytes). Each sub-block
/// of 32 is fitted by [`make_qkx2_quants`] with weights `sqrt(mean(x²)) + |x|`; the
/// eight scales and mins are then quantized to 6 bits against their maxima and the
/// quants recomputed with the stored scales.
pub(super) fn quantize_super_block_qkx(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
) -> (half::f16, half::f16, [u8; 12]) {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    let mut laux = [0u8; 32];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let lj = &mut l[32 * j..32 * j + 32];
        (scales[j], mins[j]) =
            make_qkx2_quants(nmax, xs, &weights, lj, &mut laux, rmin, 0.1, nstep);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // C's `uint8_t ls = nearest_int(..)`: the int is cut to its low byte, then MIN(63, ..).
    let six_bits = |v: f32| (nearest_int(v) as u8).min(63);
    let ls: [u8; 8] = std::array::from_fn(|j| six_bits(inv_scale * scales[j]));
    let lm: [u8; 8] = std::array::from_fn(|j| six_bits(inv_min * mins[j]));
    let mut packed = [0u8; 12];
    pack_scale_min_k4(&ls, &lm, &mut packed);
    let d = half::f16::from_f32(max_scale / 63.0);
    let dmin = half::f16::from_f32(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dj = d.to_f32() * f32::from(sc);
        if dj == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * f32::from(m);
        for i in 0..32 {
            let q = nearest_int((x[32 * j + i] + dm) / dj).clamp(0, nmax);
            l[32 * j + i] = q as u8;
        }
    }
    (d, dmin, packed)
}

/// The exact integer sums of a Q4_K/Q5_K super-block (quants `q` in element order,
/// packed `scales`) against a Q8_K block `y`: `(Σ_j sc_j Σ q·y, Σ_j m_j bsum32_j)`.
pub(super) fn dot_super_block_qkx(scales: &[u8], q: &[u8; QK_K], y: &[u8]) -> (i32, i32) {
    let yq = &y[super::q8_k::QS_AT..super::q8_k::BSUMS_AT];
    let (mut sumi, mut summ) = (0i32, 0i32);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        let dot: i32 = q[32 * j..32 * j + 32]
            .iter()
            .zip(&yq[32 * j..32 * j + 32])
            .map(|(&q, &y)| i32::from(q) * i32::from(y as i8))
            .sum();
        sumi += i32::from(sc) * dot;
        let bsum = i32::from(super::q8_k::block_bsum(y, 2 * j))
            + i32::from(super::q8_k::block_bsum(y, 2 * j + 1));
        summ += i32::from(m) * bsum;
    }
    (sumi, summ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (v, want) in [
            (0.0f32, 0),
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (0.49999997, 0),
            (7.6, 8),
            (-7.6, -8),
            (4_194_303.0, 4_194_303),
            (-4_194_303.0, -4_194_303),
        ] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }

    #[test]
    fn scale_min_packing_round_trips_every_six_bit_value() {
        for k in 0..64usize {
            let ls: [u8; 8] = std::array::from_fn(|j| ((k + 7 * j) % 64) as u8);
            let lm: [u8; 8] = std::array::from_fn(|j| ((k * 3 + 11 * j) % 64) as u8);
            let mut q = [0xAAu8; 12];
            pack_scale_min_k4(&ls, &lm, &mut q);
            for j in 0..8 {
                assert_eq!(scale_min_k4(j, &q), (ls[j], lm[j]), "j = {j}, k = {k}");
            }
        }
    }

    #[test]
    fn qkx2_fits_a_ramp_exactly() {
        // x = 0.5 l - 1 for l = 0..32 (clamped at 15): the first guess is exact.
        let x: Vec<f32> = (0..32).map(|i| 0.5 * (i % 16) as f32 - 1.0).collect();
        let w = vec![1.0f32; 32];
        let (mut l, mut laux) = ([0u8; 32], [0u8; 32]);
        let (scale, the_min) = make_qkx2_quants(15, &x, &w, &mut l, &mut laux, -1.0, 0.1, 20);
        assert_eq!((scale, the_min), (0.5, 1.0));
        for i in 0..32 {
            assert_eq!(l[i] as usize, i % 16);
        }
    }

    #[test]
    fn qx_of_zeros_is_zero() {
        let mut l = [9u8; 16];
        assert_eq!(make_qx_quants(32, &[0.0; 16], &mut l), 0.0);
        assert_eq!(l, [0; 16]);
    }
}
