// weights/q8_0.wgsl: blocks of 32 values, f16 d and 32 signed bytes; value = q·d. Rows
// packed at load (repack.rs): groups of 8 blocks of 272 bytes, the 8 scales (16 bytes)
// then the 8 blocks' bytes. Unit u: block u/4, bytes 8·(u%4) .. +7.

fn unit_cols(u: u32) -> vec2<u32> {
    let c = 32u * (u / 4u) + 8u * (u % 4u);
    return vec2<u32>(c, c + 4u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let b = u / 4u;
    let group = row + 272u * (b / 8u);
    let d = f16_at(group + 2u * (b % 8u));
    let q = (group + 16u + 32u * (b % 8u) + 8u * (u % 4u)) >> 2u;
    return W8(i8x4(weights[q]) * d, i8x4(weights[q + 1u]) * d);
}
