// weights/q5_k.wgsl: super-blocks of 256 values in 176 bytes: Q4_K's d, dmin and scales,
// then qh[32] (bit 2c of qh[l]: the fifth bit of value 64c + l, bit 2c + 1 that of
// 64c + 32 + l), then the nibbles as in Q4_K; value = (d·sc)·q - dmin·m, q in 0..=31.
// Unit u: super-block u/32, word w = u%32 of the nibbles, as in Q4_K.

fn unit_cols(u: u32) -> vec2<u32> {
    let w = u % 32u;
    let c = 256u * (u / 32u) + 64u * (w / 8u) + 4u * (w % 8u);
    return vec2<u32>(c, c + 32u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let blk = row + 176u * (u / 32u);
    let w = u % 32u;
    let dm = unpack2x16float(load_word(blk));
    let c = w / 8u;
    let s0 = k_scale_min(blk + 4u, 2u * c);
    let s1 = k_scale_min(blk + 4u, 2u * c + 1u);
    let qh = load_word(blk + 16u + 4u * (w % 8u));
    let q = load_word(blk + 48u + 4u * w);
    // Bit 0 of each byte of qh >> s: the fifth bits of four values.
    let h_lo = lo_nibbles((qh >> (2u * c)) & 0x01010101u);
    let h_hi = lo_nibbles((qh >> (2u * c + 1u)) & 0x01010101u);
    let lo = (dm.x * s0.x) * (lo_nibbles(q) + 16.0 * h_lo) - dm.y * s0.y;
    let hi = (dm.x * s1.x) * (hi_nibbles(q) + 16.0 * h_hi) - dm.y * s1.y;
    return W8(lo, hi);
}
