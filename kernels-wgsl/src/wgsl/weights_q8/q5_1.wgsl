// weights_q8/q5_1.wgsl: a Q5_1 block for the int8 matvec, from the packed rows
// (repack.rs: groups of 8 blocks, 12 vec4s: the 8 f16 (d, m) pairs, the 8 u32 qh, then
// 16 bytes of nibbles a block); value = q·d + m, so c = m.

fn w_block(row: u32, b: u32) -> WBlock {
    let group = row + 12u * (b / 8u);
    let j = b % 8u;
    let q = wv[group + 4u + j];
    let dm = unpack2x16float(wv[group + j / 4u][j % 4u]);
    let qh = wv[group + 2u + j / 4u][j % 4u];
    let m = vec4<u32>(0x0F0F0F0Fu);
    return WBlock((q & m) | fifth_bits(qh), ((q >> vec4<u32>(4u)) & m) | fifth_bits(qh >> 16u), vec2<f32>(dm.x), dm.y);
}
