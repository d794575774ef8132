// weights_q8/q4_k.wgsl: a 32-value sub-block of Q4_K for the int8 matvec, from the rows
// as GGUF stores them (not repacked: a 144-byte super-block is 9 vec4s, f16 d and dmin
// and the 12 bytes of 6-bit scales and minimums in the first, then 4 chunks of 32 bytes
// of nibbles: chunk c holds sub-block 2c in its low nibbles, 2c + 1 in its high ones).
// value = (d·sc)·q − dmin·m, so the block's d is d·sc and c = −dmin·m.

// Sub-block j's 6-bit (scale, minimum) from the 12 bytes in s (ggml's
// get_scale_min_k4; weights/common.wgsl's k_scale_min, from words).
fn q4k_scale_min(s: vec3<u32>, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte_of(s.x, j) & 63u), f32(byte_of(s.y, j) & 63u));
    }
    let i = j - 4u;
    let b = byte_of(s.z, i);
    let sc = (b & 15u) | ((byte_of(s.x, i) >> 6u) << 4u);
    let m = (b >> 4u) | ((byte_of(s.y, i) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

fn w_block(row: u32, b: u32) -> WBlock {
    let sb = row + 9u * (b / 8u);
    let j = b % 8u;
    let head = wv[sb];
    let dm = unpack2x16float(head.x);
    let sm = q4k_scale_min(head.yzw, j);
    let chunk = sb + 1u + 2u * (j / 2u);
    let shift = vec4<u32>(4u * (j % 2u));
    let m = vec4<u32>(0x0F0F0F0Fu);
    return WBlock((wv[chunk] >> shift) & m, (wv[chunk + 1u] >> shift) & m, vec2<f32>(dm.x * sm.x), -dm.y * sm.y);
}
