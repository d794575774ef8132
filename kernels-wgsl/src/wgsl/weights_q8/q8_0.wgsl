// weights_q8/q8_0.wgsl: a Q8_0 block for the int8 matvec, from the packed rows
// (repack.rs: groups of 8 blocks, 17 vec4s: the 8 f16 scales, then 32 signed bytes a
// block).

fn w_block(row: u32, b: u32) -> WBlock {
    let group = row + 17u * (b / 8u);
    let j = b % 8u;
    let d = unpack2x16float(wv[group][j / 2u])[j % 2u];
    return WBlock(wv[group + 1u + 2u * j], wv[group + 2u + 2u * j], vec2<f32>(d), 0.0);
}
