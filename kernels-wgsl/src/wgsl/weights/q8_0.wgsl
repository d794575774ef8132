// weights/q8_0.wgsl: blocks of 32 values in 34 bytes: f16 d, 32 signed bytes; value = q·d.
// Unit u: block u/4, bytes 8·(u%4) .. +7.

fn unit_cols(u: u32) -> vec2<u32> {
    let c = 32u * (u / 4u) + 8u * (u % 4u);
    return vec2<u32>(c, c + 4u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let blk = row + 34u * (u / 4u);
    let d = unpack2x16float(load_word(blk)).x;
    let q = blk + 2u + 8u * (u % 4u);
    return W8(i8x4(load_word(q)) * d, i8x4(load_word(q + 4u)) * d);
}
