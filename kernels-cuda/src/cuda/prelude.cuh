// prelude.cuh: what every kernel gets, self-contained (no toolkit headers): the step header (the same words as kernels-wgsl's prelude.wgsl), f16/bf16
// conversions through inline PTX or bit shifts, FP8 E4M3 decode/encode, warp and block
// reductions. Semantics follow prelude.wgsl line for line: the WGSL kernels are the
// ones the conformance suite verified, these mirror them.

// Threads of the blocks that mirror a WGSL workgroup; token tile of the matvec.
#define WG 64u
#define TILE_T 8u
// NVIDIA warps are 32 lanes on every architecture (the backend checks the device's
// warp size at open).
#define WARP 32u

#include "ptx.cuh"

// Every kernel takes one argument, its struct by value (kiln_kernels_cuda::args, declared
// at the top of the source), and is named by the macros the source header defines
// (KILN_MAIN, KILN_DECODE, ...: one symbol per variant and entry). Arena pointers are f32
// activations that may alias one another (no __restrict__); `step` is the step buffer.
// The struct is __grid_constant__: helpers take it by reference, and without it taking a
// parameter's address copies the struct to local memory (the FP8 prefill spilled).

// The step header (kiln_gpu_host::step); the regions follow.
#define STEP_N_TOKENS 0u
#define STEP_N_OUTPUTS 1u
#define STEP_IDS 2u       // offset of (tokens) token ids
#define STEP_POSITIONS 3u // offset of (tokens) positions
#define STEP_SEQ 4u       // offset of (tokens) sequence of each token
#define STEP_OUT_ROWS 5u  // offset of (outputs) rows whose logits are wanted
#define STEP_TABLES 6u    // offset of (seqs) where each block table starts
#define STEP_ROPE 7u      // offset of the first RoPE geometry's cos/sin
#define STEP_ROPE_PAIRS 8u // its pairs
#define STEP_N_SEQS 9u     // sequences (block tables per KV group)
#define STEP_ROPE_DIR 10u  // offset of (geometries, 3): cos/sin offset, pairs, NeoX

struct f32x4 {
    float x, y, z, w;
};

__device__ __forceinline__ float dot4(f32x4 a, f32x4 b) {
    return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

__device__ __forceinline__ float bits_f32(unsigned int u) { return __uint_as_float(u); }
__device__ __forceinline__ unsigned int f32_bits(float f) { return __float_as_uint(f); }

// Byte `i` (0..3) of a word.
__device__ __forceinline__ unsigned int byte_of(unsigned int w, unsigned int i) {
    return (w >> (8u * i)) & 0xFFu;
}

// IEEE half <-> f32 through the PTX conversions (exact widening; round to nearest even).
__device__ __forceinline__ float f16_to_f32(unsigned short h) { return ptx_f16_to_f32(h); }

__device__ __forceinline__ unsigned short f32_to_f16(float f) { return ptx_f32_to_f16(f); }

// The two halves of a word, low first (WGSL's unpack2x16float).
__device__ __forceinline__ float f16_lo(unsigned int w) { return f16_to_f32((unsigned short)(w & 0xFFFFu)); }
__device__ __forceinline__ float f16_hi(unsigned int w) { return f16_to_f32((unsigned short)(w >> 16)); }

// WGSL's pack2x16float.
__device__ __forceinline__ unsigned int pack_f16x2(float a, float b) {
    return (unsigned int)f32_to_f16(a) | ((unsigned int)f32_to_f16(b) << 16);
}

// bfloat16 is the high half of an f32.
__device__ __forceinline__ float bf16_lo(unsigned int w) { return bits_f32(w << 16); }
__device__ __forceinline__ float bf16_hi(unsigned int w) { return bits_f32(w & 0xFFFF0000u); }

// Four unsigned nibbles (bits 0-3 of each byte), the four high nibbles, four signed bytes.
__device__ __forceinline__ f32x4 lo_nibbles(unsigned int w) {
    return f32x4{(float)(w & 15u), (float)((w >> 8) & 15u), (float)((w >> 16) & 15u), (float)((w >> 24) & 15u)};
}

__device__ __forceinline__ f32x4 hi_nibbles(unsigned int w) { return lo_nibbles(w >> 4); }

__device__ __forceinline__ f32x4 i8x4(unsigned int w) {
    return f32x4{(float)(int)(signed char)(w & 0xFFu), (float)(int)(signed char)((w >> 8) & 0xFFu),
                 (float)(int)(signed char)((w >> 16) & 0xFFu), (float)(int)(signed char)(w >> 24)};
}

// FP8 E4M3 ("e4m3fn": no infinities, S.1111.111 is NaN, largest finite 448).
#define FP8_MAX 448.0f

__device__ __forceinline__ float fp8_decode(unsigned int code) {
    unsigned int exp = (code >> 3) & 15u;
    unsigned int man = code & 7u;
    float mag;
    if (exp == 15u && man == 7u) {
        mag = bits_f32(0x7FC00000u);
    } else if (exp == 0u) {
        mag = (float)man * (1.0f / 512.0f);
    } else {
        // Re-bias the exponent from 7 to 127 and widen the mantissa to 23 bits.
        mag = bits_f32(((exp + 120u) << 23) | (man << 20));
    }
    return (code & 0x80u) != 0u ? -mag : mag;
}

// Round to nearest even, saturate to ±448, NaN stays NaN (kiln_ir::quant::fp8::encode).
__device__ __forceinline__ unsigned int fp8_encode_bits(float x) {
    unsigned int bits = f32_bits(x);
    unsigned int sign = (bits >> 24) & 0x80u;
    unsigned int a_bits = bits & 0x7FFFFFFFu;
    float a = bits_f32(a_bits);
    if (a_bits > 0x7F800000u) {
        return sign | 0x7Fu;
    }
    if (a >= FP8_MAX) {
        return sign | 0x7Eu;
    }
    if (a < 0.015625f) {
        // Subnormal or zero: units of 2^-9, ties to even (rintf).
        return sign | (unsigned int)rintf(a * 512.0f);
    }
    unsigned int rounded = a_bits + 0x7FFFFu + ((a_bits >> 20) & 1u);
    return sign | ((rounded >> 20) - (120u << 3));
}

// Two values encoded at once: the hardware conversion on sm_89+ (round to nearest even,
// saturating to ±448 like the bit version), the bit operations elsewhere. Low byte is `a`.
__device__ __forceinline__ unsigned int fp8x2_encode(float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    return (unsigned int)ptx_e4m3x2_from_f32(b, a);
#else
    return fp8_encode_bits(a) | (fp8_encode_bits(b) << 8);
#endif
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// The flat index of this thread in a grid of WG-wide blocks laid out 2-D (x up to 65535
// blocks, then y), as the WGSL kernels count.
__device__ __forceinline__ unsigned int flat_index() {
    return (blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (unsigned int s = WARP / 2u; s > 0u; s /= 2u) {
        v += __shfl_xor_sync(0xFFFFFFFFu, v, s);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (unsigned int s = WARP / 2u; s > 0u; s /= 2u) {
        v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, s));
    }
    return v;
}

// Σ over the block (every thread must call it; every thread gets the sum). `red` is
// (blockDim.x / WARP) floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* red) {
    v = warp_sum(v);
    if (threadIdx.x % WARP == 0u) {
        red[threadIdx.x / WARP] = v;
    }
    __syncthreads();
    float s = 0.0f;
    for (unsigned int i = 0u; i < blockDim.x / WARP; i++) {
        s += red[i];
    }
    __syncthreads();
    return s;
}

__device__ __forceinline__ float block_max(float v, float* red) {
    v = warp_max(v);
    if (threadIdx.x % WARP == 0u) {
        red[threadIdx.x / WARP] = v;
    }
    __syncthreads();
    float m = red[0];
    for (unsigned int i = 1u; i < blockDim.x / WARP; i++) {
        m = fmaxf(m, red[i]);
    }
    __syncthreads();
    return m;
}
