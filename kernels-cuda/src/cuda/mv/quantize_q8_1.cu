// mv/quantize_q8_1.cu: f32 activation rows to the q8_1 planes the matvec reads, once per
// launch: int8 quants (rows, k) and per 32 values a word of f16 d and the int16 Σq (the
// kernels take s = d·Σq in f32: mv/common.cuh's mv_s), rounded as
// kiln_ir::quant::q8_1::quantize_row (d = amax / 127, q = round(x / d) halves away from
// zero). rmsnorm_quantize_q8_1 first scales x by 1/rms(x) and the norm
// weight, so an RmsNormMatMul* launch needs no normalized f32 copy.
//
// Grid (rows of the plan's largest step, 1, 1): block t quantizes row t when
// t < step[rows_sel]. Block QZ_THREADS: 8 threads per 32-value block, 4 values each.
// The host prepends QuantizeArgs' declaration.

#include "mv/common.cuh"

#define QZ_THREADS 256u

template <bool NORM>
__device__ __forceinline__ void quantize_row(const QuantizeArgs& a) {
    __shared__ float red[QZ_THREADS / MV_WARP]; // (warps) partial Σx²
    unsigned int t = blockIdx.x;
    if (t >= a.step[a.rows_sel]) {
        return; // uniform across the block
    }
    const float* x = a.x + (unsigned long long)t * a.x_stride;
    float scale = 1.0f;
    if (NORM) {
        // Σx² in the order the twin adds: per thread its columns in turn, the butterfly,
        // then the warps in order.
        float sq = 0.0f;
        for (unsigned int c = threadIdx.x * 4u; c < a.k; c += QZ_THREADS * 4u) {
#pragma unroll
            for (unsigned int j = 0u; j < 4u; j++) {
                sq = __fmaf_rn(x[c + j], x[c + j], sq);
            }
        }
        sq = mv_warp_sum(sq);
        if (threadIdx.x % MV_WARP == 0u) {
            red[threadIdx.x / MV_WARP] = sq;
        }
        __syncthreads();
        float total = red[0];
#pragma unroll
        for (unsigned int i = 1u; i < QZ_THREADS / MV_WARP; i++) {
            total += red[i];
        }
        scale = 1.0f / sqrtf(total / (float)a.k + a.eps);
    }
    // The loop bound is uniform across a warp (k is a multiple of 32 and a warp covers
    // 128 columns), so the 8-lane shuffles below always have every lane.
    for (unsigned int base = 0u; base < a.k; base += QZ_THREADS * 4u) {
        unsigned int c = base + threadIdx.x * 4u;
        bool live = c < a.k;
        float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        float amax = 0.0f;
#pragma unroll
        for (unsigned int j = 0u; j < 4u; j++) {
            if (live) {
                v[j] = NORM ? __fmul_rn(__fmul_rn(x[c + j], scale), a.norm[c + j]) : x[c + j];
            }
            amax = fmaxf(amax, fabsf(v[j]));
        }
#pragma unroll
        for (unsigned int s = 4u; s > 0u; s /= 2u) {
            amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, s));
        }
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        unsigned int word = 0u;
        int sum = 0;
#pragma unroll
        for (unsigned int j = 0u; j < 4u; j++) {
            // |v·id| <= 127 up to rounding: the clamp only guards the cast.
            int q = (int)fminf(fmaxf(roundf(__fmul_rn(v[j], id)), -128.0f), 127.0f);
            sum += q;
            word |= ((unsigned int)q & 0xFFu) << (8u * j);
        }
#pragma unroll
        for (unsigned int s = 4u; s > 0u; s /= 2u) {
            sum += __shfl_xor_sync(0xFFFFFFFFu, sum, s);
        }
        if (live) {
            unsigned long long at = (unsigned long long)t * a.k + c;
            *reinterpret_cast<unsigned int*>(a.q + at) = word;
            if (threadIdx.x % 8u == 0u) {
                unsigned int ds = (unsigned int)mv_to_f16(d) | ((unsigned int)(unsigned short)(short)sum << 16);
                a.ds[at / 32u] = ds;
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(QZ_THREADS) quantize_q8_1(const QuantizeArgs a) {
    quantize_row<false>(a);
}

extern "C" __global__ void __launch_bounds__(QZ_THREADS) rmsnorm_quantize_q8_1(const QuantizeArgs a) {
    quantize_row<true>(a);
}
