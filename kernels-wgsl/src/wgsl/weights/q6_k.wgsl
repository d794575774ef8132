// weights/q6_k.wgsl: super-blocks of 256 values in 210 bytes: ql[128] (low 4 bits),
// qh[64] (high 2 bits), 16 signed 8-bit scales (one per sub-block of 16), f16 d;
// value = (d·scale)·(q - 32), q in 0..=63. Half h (128 values) of a super-block: word
// ql[64h + 32s + l .. +3] (s = 0, 1; l = 0, 4, .. 28) holds values 128h + 32s + l .. +3
// in its low nibbles and the values 64 on in its high ones; their high bits are in
// qh[32h + l .. +3] at shifts 2s and 4 + 2s. Unit u: super-block u/32, w = u%32 picks
// (h, s, l) = (w/16, w/8 % 2, 4·(w%8)). Rows packed at load (repack.rs): groups of 8
// super-blocks of 1680 bytes, the 8 d (16 bytes), then each super-block's other 208
// bytes (ql, qh, scales) as GGUF orders them.

fn unit_cols(u: u32) -> vec2<u32> {
    let w = u % 32u;
    let c = 256u * (u / 32u) + 128u * (w / 16u) + 32u * ((w / 8u) % 2u) + 4u * (w % 8u);
    return vec2<u32>(c, c + 64u);
}

// The signed scale of sub-block j.
fn q6k_scale(blk: u32, j: u32) -> f32 {
    return f32(bitcast<i32>(byte_at(blk + 192u + j) << 24u) >> 24u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let sb = u / 32u;
    let group = row + 1680u * (sb / 8u);
    let blk = group + 16u + 208u * (sb % 8u);
    let w = u % 32u;
    let h = w / 16u;
    let s = (w / 8u) % 2u;
    let l = 4u * (w % 8u);
    let d = f16_at(group + 2u * (sb % 8u));
    let ql = weights[(blk + 64u * h + 32u * s + l) >> 2u];
    let qh = weights[(blk + 128u + 32u * h + l) >> 2u];
    let q_lo = lo_nibbles(ql) + 16.0 * lo_nibbles((qh >> (2u * s)) & 0x03030303u);
    let q_hi = hi_nibbles(ql) + 16.0 * lo_nibbles((qh >> (4u + 2u * s)) & 0x03030303u);
    // Sub-block of the low values; the high ones are 64 values (4 sub-blocks) on.
    let j = 8u * h + 2u * s + l / 16u;
    let lo = (d * q6k_scale(blk, j)) * (q_lo - 32.0);
    let hi = (d * q6k_scale(blk, j + 4u)) * (q_hi - 32.0);
    return W8(lo, hi);
}
