// weights/q4_1.wgsl: blocks of 32 values, f16 d, f16 m and 16 bytes of nibbles;
// value = q·d + m. Rows packed at load (repack.rs): groups of 8 blocks of 160 bytes, the
// 8 (d, m) pairs (32 bytes) then the 8 blocks' nibbles. Unit u: block u/4, word u%4.

fn unit_cols(u: u32) -> vec2<u32> {
    let c = 32u * (u / 4u) + 4u * (u % 4u);
    return vec2<u32>(c, c + 16u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let b = u / 4u;
    let group = row + 160u * (b / 8u);
    let dm = unpack2x16float(weights[(group + 4u * (b % 8u)) >> 2u]);
    let q = weights[(group + 32u + 16u * (b % 8u) + 4u * (u % 4u)) >> 2u];
    return W8(lo_nibbles(q) * dm.x + dm.y, hi_nibbles(q) * dm.x + dm.y);
}
