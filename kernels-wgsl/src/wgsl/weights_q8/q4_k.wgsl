// weights_q8/q4_k.wgsl: a 32-value sub-block of Q4_K for the int8 matvec, from the rows
// as GGUF stores them (not repacked: a 144-byte super-block is 9 vec4s, f16 d and dmin
// and the 12 bytes of 6-bit scales and minimums (k_scale_min_q8, matvec_core.wgsl) in
// the first, then 4 chunks of 32 bytes of nibbles: chunk c holds sub-block 2c in its
// low nibbles, 2c + 1 in its high ones).
// value = (d·sc)·q − dmin·m, so the block's d is d·sc and c = −dmin·m.

fn w_block(row: u32, b: u32) -> WBlock {
    let sb = row + 9u * (b / 8u);
    let j = b % 8u;
    let head = wv[sb];
    let dm = unpack2x16float(head.x);
    let sm = k_scale_min_q8(head.yzw, j);
    let chunk = sb + 1u + 2u * (j / 2u);
    let shift = vec4<u32>(4u * (j % 2u));
    let m = vec4<u32>(0x0F0F0F0Fu);
    return WBlock((wv[chunk] >> shift) & m, (wv[chunk + 1u] >> shift) & m, vec2<f32>(dm.x * sm.x), -dm.y * sm.y);
}
