// weights_q8/q5_0.wgsl: a Q5_0 block for the int8 matvec, from the packed rows
// (repack.rs: groups of 8 blocks, 11 vec4s: the 8 f16 scales, the 8 u32 qh, then 16
// bytes of nibbles a block). The 5-bit values (0-31) are the signed bytes; the −16 is
// c = −16·d times Σ q_x.

fn w_block(row: u32, b: u32) -> WBlock {
    let group = row + 11u * (b / 8u);
    let j = b % 8u;
    let q = wv[group + 3u + j];
    let d = unpack2x16float(wv[group][j / 2u])[j % 2u];
    let qh = wv[group + 1u + j / 4u][j % 4u];
    let m = vec4<u32>(0x0F0F0F0Fu);
    return WBlock((q & m) | fifth_bits(qh), ((q >> vec4<u32>(4u)) & m) | fifth_bits(qh >> 16u), vec2<f32>(d), -16.0 * d);
}
