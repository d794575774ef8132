// weights_q8/q4_0.wgsl: a Q4_0 block for the int8 matvec, from the packed rows
// (repack.rs: groups of 8 blocks, 9 vec4s: the 8 f16 scales, then 16 bytes of nibbles a
// block). The nibbles (0-15) are the signed bytes; the −8 is c = −8·d times Σ q_x.

fn w_block(row: u32, b: u32) -> WBlock {
    let group = row + 9u * (b / 8u);
    let j = b % 8u;
    let q = wv[group + 1u + j];
    let d = unpack2x16float(wv[group][j / 2u])[j % 2u];
    let m = vec4<u32>(0x0F0F0F0Fu);
    return WBlock(q & m, (q >> vec4<u32>(4u)) & m, vec2<f32>(d), -8.0 * d);
}
