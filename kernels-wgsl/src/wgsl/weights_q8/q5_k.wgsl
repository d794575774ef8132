// weights_q8/q5_k.wgsl: a 32-value sub-block of Q5_K for the int8 matvec, from the rows
// as GGUF stores them (not repacked: a 176-byte super-block is 11 vec4s: Q4_K's head
// (k_scale_min_q8, matvec_core.wgsl), qh[32] in the next 2 (bit j of qh[l]: the fifth bit of value l of
// sub-block j), then Q4_K's 4 chunks of nibbles). value = (d·sc)·q − dmin·m, q in 0..31.

fn w_block(row: u32, b: u32) -> WBlock {
    let sb = row + 11u * (b / 8u);
    let j = b % 8u;
    let head = wv[sb];
    let dm = unpack2x16float(head.x);
    let sm = k_scale_min_q8(head.yzw, j);
    let chunk = sb + 3u + 2u * (j / 2u);
    let shift = vec4<u32>(4u * (j % 2u));
    let m = vec4<u32>(0x0F0F0F0Fu);
    let one = vec4<u32>(0x01010101u);
    let lo = ((wv[chunk] >> shift) & m) | (((wv[sb + 1u] >> vec4<u32>(j)) & one) << vec4<u32>(4u));
    let hi = ((wv[chunk + 1u] >> shift) & m) | (((wv[sb + 2u] >> vec4<u32>(j)) & one) << vec4<u32>(4u));
    return WBlock(lo, hi, vec2<f32>(dm.x * sm.x), -dm.y * sm.y);
}
