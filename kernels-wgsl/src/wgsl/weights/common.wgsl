// weights/common.wgsl: reading the weights buffer (every weight of the model back to back,
// each at a 16-byte aligned offset; row starts may be only 2-byte aligned, as Q5_0's
// 22-byte blocks are). A weight "unit" is 8 values of a row: W8.lo are the values at
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

// The byte at any byte offset.
fn byte_at(byte_off: u32) -> u32 {
    return byte_of(weights[byte_off >> 2u], byte_off & 3u);
}

// The f16 at a 2-byte aligned byte offset, reading only the word that holds it.
fn f16_at(byte_off: u32) -> f32 {
    let halves = unpack2x16float(weights[byte_off >> 2u]);
    return select(halves.x, halves.y, (byte_off & 2u) != 0u);
}

// Q4_K and Q5_K: sub-block j's 6-bit (scale, minimum) from the 12 packed bytes at `at`
// (ggml's get_scale_min_k4): j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 in
// the nibbles of byte j + 4, with their top 2 bits in bytes j - 4 and j.
fn k_scale_min(at: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte_at(at + j) & 63u), f32(byte_at(at + j + 4u) & 63u));
    }
    let b = byte_at(at + j + 4u);
    let sc = (b & 15u) | ((byte_at(at + j - 4u) >> 6u) << 4u);
    let m = (b >> 4u) | ((byte_at(at + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}
