// weights/common.wgsl: reading the weights buffer (every weight of the model back to back,
// each at a 16-byte aligned offset; row starts may be only 2-byte aligned, as Q4_0's
// 18-byte blocks are). A weight "unit" is 8 values of a row: W8.lo are the values at
// columns unit_cols(u).x .. +3, W8.hi at unit_cols(u).y .. +3.

@group(0) @binding(2) var<storage, read> weights: array<u32>;

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// The 32-bit little-endian word at any byte offset.
fn load_word(byte_off: u32) -> u32 {
    let i = byte_off >> 2u;
    let s = (byte_off & 3u) * 8u;
    let lo = weights[i];
    if (s == 0u) {
        return lo;
    }
    return (lo >> s) | (weights[i + 1u] << (32u - s));
}

// A vector weight (norm, RoPE factors): decoded to f32 at load, `at` in words.
fn vector_at(at: u32) -> f32 {
    return bitcast<f32>(weights[at]);
}
