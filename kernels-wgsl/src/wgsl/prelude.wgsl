// prelude.wgsl: pure helpers every kernel gets (no bindings here): the step header,
// byte and half extraction from u32 words, FP8 E4M3 decode/encode with bit operations.

// Threads of every workgroup; token tile of the matmuls.
const WG: u32 = 64u;
const TILE_T: u32 = 8u;

// The step buffer (`step: array<u32>`) starts with this header; the regions follow.
const STEP_N_TOKENS: u32 = 0u;
const STEP_N_OUTPUTS: u32 = 1u;
const STEP_IDS: u32 = 2u;       // offset of (tokens) token ids
const STEP_POSITIONS: u32 = 3u; // offset of (tokens) positions
const STEP_SEQ: u32 = 4u;       // offset of (tokens) sequence of each token
const STEP_OUT_ROWS: u32 = 5u;  // offset of (outputs) rows whose logits are wanted
const STEP_TABLES: u32 = 6u;    // offset of (seqs) where each block table starts
const STEP_ROPE: u32 = 7u;      // offset of the first RoPE geometry's cos/sin
const STEP_ROPE_PAIRS: u32 = 8u; // its pairs
const STEP_N_SEQS: u32 = 9u;     // sequences (block tables per KV group)
const STEP_ROPE_DIR: u32 = 10u; // offset of (geometries, 3): cos/sin offset, pairs, NeoX

// Byte `i` (0..3) of a word.
fn byte_of(w: u32, i: u32) -> u32 {
    return (w >> (8u * i)) & 0xFFu;
}

// Four unsigned nibbles (bits 0-3 of each byte) and the four high nibbles of a word.
fn lo_nibbles(w: u32) -> vec4<f32> {
    return vec4<f32>(f32(w & 15u), f32((w >> 8u) & 15u), f32((w >> 16u) & 15u), f32((w >> 24u) & 15u));
}

fn hi_nibbles(w: u32) -> vec4<f32> {
    return lo_nibbles(w >> 4u);
}

// Bits 0-3 of a word, as four values 0 or 1.
fn bits4(w: u32) -> vec4<f32> {
    return vec4<f32>(vec4<u32>(w, w >> 1u, w >> 2u, w >> 3u) & vec4<u32>(1u));
}

// Four signed bytes of a word.
fn i8x4(w: u32) -> vec4<f32> {
    let s = bitcast<vec4<i32>>(vec4<u32>(w << 24u, w << 16u, w << 8u, w));
    return vec4<f32>(s >> vec4<u32>(24u));
}

// Two bf16 halves of a word, low first.
fn bf16x2(w: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xFFFF0000u));
}

// FP8 E4M3 ("e4m3fn": no infinities, S.1111.111 is NaN, largest finite 448).
const FP8_MAX: f32 = 448.0;

fn fp8_decode(code: u32) -> f32 {
    let exp = (code >> 3u) & 15u;
    let man = code & 7u;
    var mag: f32;
    if (exp == 15u && man == 7u) {
        mag = bitcast<f32>(0x7FC00000u);
    } else if (exp == 0u) {
        mag = f32(man) * (1.0 / 512.0);
    } else {
        // Re-bias the exponent from 7 to 127 and widen the mantissa to 23 bits.
        mag = bitcast<f32>(((exp + 120u) << 23u) | (man << 20u));
    }
    return select(mag, -mag, (code & 0x80u) != 0u);
}

// Round to nearest even, saturate to ±448, NaN stays NaN (kiln_ir::quant::fp8::encode).
fn fp8_encode(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    let sign = (bits >> 24u) & 0x80u;
    let a_bits = bits & 0x7FFFFFFFu;
    let a = bitcast<f32>(a_bits);
    if (a_bits > 0x7F800000u) {
        return sign | 0x7Fu;
    }
    if (a >= FP8_MAX) {
        return sign | 0x7Eu;
    }
    if (a < 0.015625) {
        // Subnormal or zero: units of 2^-9 (WGSL's round() is ties-to-even).
        return sign | u32(round(a * 512.0));
    }
    let rounded = a_bits + 0x7FFFFu + ((a_bits >> 20u) & 1u);
    return sign | ((rounded >> 20u) - (120u << 3u));
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

// An f32 rounded to f16 and back.
fn round_f16(x: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(x, 0.0))).x;
}

// GELU in its tanh form, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as llama.cpp's CPU
// backend computes it (ggml's f16 table): at the input rounded to f16, the result rounded
// to f16; 0 below -10 and the identity above 10. (The tanh argument is clamped where
// tanh is ±1 in f32, so that no implementation's exp overflows.)
fn gelu_f16(x: f32) -> f32 {
    if (x <= -10.0) {
        return 0.0;
    }
    if (x >= 10.0) {
        return x;
    }
    let h = round_f16(x);
    let inner = clamp(0.7978846 * h * (1.0 + 0.044715 * h * h), -15.0, 15.0);
    return round_f16(0.5 * h * (1.0 + tanh(inner)));
}

// The flat index of this thread in a grid of WG-wide workgroups laid out 2-D (x up to
// 65535 workgroups, then y).
fn flat_index(wg: vec3<u32>, n_wg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * n_wg.x + wg.x) * WG + lid;
}
