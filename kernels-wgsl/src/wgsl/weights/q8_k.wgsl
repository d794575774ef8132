// weights/q8_k.wgsl: super-blocks of 256 values in 292 bytes: f32 d, 256 signed bytes,
// 16 i16 block sums (unused here); value = q·d. Unit u: super-block u/32, bytes
// 8·(u%32) .. +7.

fn unit_cols(u: u32) -> vec2<u32> {
    let c = 256u * (u / 32u) + 8u * (u % 32u);
    return vec2<u32>(c, c + 4u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let blk = row + 292u * (u / 32u);
    let d = bitcast<f32>(load_word(blk));
    let q = blk + 4u + 8u * (u % 32u);
    return W8(i8x4(load_word(q)) * d, i8x4(load_word(q + 4u)) * d);
}
