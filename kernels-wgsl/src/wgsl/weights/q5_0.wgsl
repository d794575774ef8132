// weights/q5_0.wgsl: blocks of 32 values in 22 bytes: f16 d, u32 qh (bit j: the fifth
// bit of element j), 16 bytes of nibbles (low nibbles elements 0-15, high 16-31);
// value = (q - 16)·d. Unit u: block u/4, word u%4 of the nibbles.

fn unit_cols(u: u32) -> vec2<u32> {
    let c = 32u * (u / 4u) + 4u * (u % 4u);
    return vec2<u32>(c, c + 16u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let blk = row + 22u * (u / 4u);
    let i = u % 4u;
    let d = f16_at(blk);
    let qh = load_word(blk + 2u);
    let q = load_word(blk + 6u + 4u * i);
    let lo = lo_nibbles(q) + 16.0 * bits4(qh >> (4u * i));
    let hi = hi_nibbles(q) + 16.0 * bits4(qh >> (4u * i + 16u));
    return W8((lo - 16.0) * d, (hi - 16.0) * d);
}
