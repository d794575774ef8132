// weights/q4_1.wgsl: blocks of 32 values in 20 bytes: f16 d, f16 m, 16 bytes of nibbles;
// value = q·d + m. Unit u: block u/4, word u%4.

fn unit_cols(u: u32) -> vec2<u32> {
    let c = 32u * (u / 4u) + 4u * (u % 4u);
    return vec2<u32>(c, c + 16u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let blk = row + 20u * (u / 4u);
    let dm = unpack2x16float(load_word(blk));
    let q = load_word(blk + 4u + 4u * (u % 4u));
    return W8(lo_nibbles(q) * dm.x + dm.y, hi_nibbles(q) * dm.x + dm.y);
}
