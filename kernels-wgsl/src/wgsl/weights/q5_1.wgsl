// weights/q5_1.wgsl: blocks of 32 values, f16 d, f16 m, u32 qh (bit j: the fifth bit of
// element j), 16 bytes of nibbles (low nibbles elements 0-15, high 16-31); value =
// q·d + m. Rows packed at load (repack.rs): groups of 8 blocks of 192 bytes, the 8
// (d, m) pairs (32 bytes), the 8 qh (32 bytes), then the 8 blocks' nibbles. Unit u:
// block u/4, word u%4 of the nibbles.

fn unit_cols(u: u32) -> vec2<u32> {
    let c = 32u * (u / 4u) + 4u * (u % 4u);
    return vec2<u32>(c, c + 16u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let b = u / 4u;
    let i = u % 4u;
    let group = row + 192u * (b / 8u);
    let dm = unpack2x16float(weights[(group + 4u * (b % 8u)) >> 2u]);
    let qh = weights[(group + 32u + 4u * (b % 8u)) >> 2u];
    let q = weights[(group + 64u + 16u * (b % 8u) + 4u * i) >> 2u];
    let lo = lo_nibbles(q) + 16.0 * bits4(qh >> (4u * i));
    let hi = hi_nibbles(q) + 16.0 * bits4(qh >> (4u * i + 16u));
    return W8(lo * dm.x + dm.y, hi * dm.x + dm.y);
}
