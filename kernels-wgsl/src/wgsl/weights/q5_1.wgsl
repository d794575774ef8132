// weights/q5_1.wgsl: blocks of 32 values in 24 bytes: f16 d, f16 m, u32 qh (bit j: the
// fifth bit of element j), 16 bytes of nibbles (low nibbles elements 0-15, high 16-31);
// value = q·d + m. Unit u: block u/4, word u%4 of the nibbles.

fn unit_cols(u: u32) -> vec2<u32> {
    let c = 32u * (u / 4u) + 4u * (u % 4u);
    return vec2<u32>(c, c + 16u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let blk = row + 24u * (u / 4u);
    let i = u % 4u;
    let dm = unpack2x16float(load_word(blk));
    let qh = load_word(blk + 4u);
    let q = load_word(blk + 8u + 4u * i);
    let lo = lo_nibbles(q) + 16.0 * bits4(qh >> (4u * i));
    let hi = hi_nibbles(q) + 16.0 * bits4(qh >> (4u * i + 16u));
    return W8(lo * dm.x + dm.y, hi * dm.x + dm.y);
}
