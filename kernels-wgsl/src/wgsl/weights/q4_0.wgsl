// weights/q4_0.wgsl: blocks of 32 values in 18 bytes: f16 d, 16 bytes of nibbles
// (low nibbles elements 0-15, high 16-31); value = (q - 8)·d. Unit u: block u/4, word u%4.

fn unit_cols(u: u32) -> vec2<u32> {
    let c = 32u * (u / 4u) + 4u * (u % 4u);
    return vec2<u32>(c, c + 16u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let blk = row + 18u * (u / 4u);
    let d = unpack2x16float(load_word(blk)).x;
    let q = load_word(blk + 2u + 4u * (u % 4u));
    return W8((lo_nibbles(q) - 8.0) * d, (hi_nibbles(q) - 8.0) * d);
}
