// attention.cu: causal grouped-query attention over the paged KV cache (FP8 E4M3 with
// per-(token, head) scales, or F16), online softmax, any context length, optionally over
// a sliding window of the last `window` positions (kv_common.cuh: window_start); decode and
// prefill alike (attention.wgsl, correct first). One block of WG threads per (query head,
// token): tiles of WG positions; in each, thread j scores position t0 + j (a whole K row
// against q in shared memory), then every thread rescales and accumulates its own
// head_dim / WG output dimensions over the tile's V rows.

#include "prelude.cuh"
#include "kv_common.cuh"

#define MAX_HEAD_DIM 256u
#define DIMS_PER_THREAD (MAX_HEAD_DIM / WG)

// q (already scaled) against the K row of (page, slot, h).
__device__ __forceinline__ float k_dot(const KvArgs& p, const unsigned char* kv, const float* q_sh,
                                       unsigned int page, unsigned int slot, unsigned int h) {
    const unsigned int* k = reinterpret_cast<const unsigned int*>(kv + values_at(p, page, slot, h, 0u));
    float s = 0.0f;
#if KV_FP8
    for (unsigned int w = 0u; w < p.head_dim / 4u; w++) {
        unsigned int c = k[w];
        s += fp8_decode(byte_of(c, 0u)) * q_sh[4u * w] + fp8_decode(byte_of(c, 1u)) * q_sh[4u * w + 1u] +
             fp8_decode(byte_of(c, 2u)) * q_sh[4u * w + 2u] + fp8_decode(byte_of(c, 3u)) * q_sh[4u * w + 3u];
    }
    s *= *reinterpret_cast<const float*>(kv + scale_at(p, page, slot, h, 0u));
#else
    for (unsigned int w = 0u; w < p.head_dim / 2u; w++) {
        unsigned int c = k[w];
        s += f16_lo(c) * q_sh[2u * w] + f16_hi(c) * q_sh[2u * w + 1u];
    }
#endif
    return s;
}

// V value d of (page, slot, h), without its FP8 scale.
__device__ __forceinline__ float v_at(const KvArgs& p, const unsigned char* kv, unsigned int page,
                                      unsigned int slot, unsigned int h, unsigned int d) {
    const unsigned char* v = kv + values_at(p, page, slot, h, 1u);
#if KV_FP8
    return fp8_decode(v[d]);
#else
    return f16_to_f32(reinterpret_cast<const unsigned short*>(v)[d]);
#endif
}

// Grid (n_heads, tokens); blocks of WG threads.
extern "C" __global__ void KILN_MAIN(const __grid_constant__ KvArgs p) {
    const unsigned int* __restrict__ step = p.step;
    const unsigned char* kv = p.kv;
    __shared__ float q_sh[MAX_HEAD_DIM]; // (head_dim) q · scale
    __shared__ float scores[WG];         // (WG) the tile's scores
    __shared__ unsigned int pages[WG];   // (WG) the page of each position of the tile
    unsigned int h = blockIdx.x;
    unsigned int t = blockIdx.y;
    unsigned int lid = threadIdx.x;
    unsigned int hd = p.head_dim;
    unsigned int kvh = h / (p.n_heads / p.n_kv_heads);
    unsigned int row = (t * p.n_heads + h) * hd;
    for (unsigned int d = lid; d < hd; d += WG) {
        q_sh[d] = p.q[row + d] * p.scale;
    }
    __syncthreads();
    unsigned int n = step[step[STEP_POSITIONS] + t] + 1u; // positions first ..= pos
    unsigned int first = window_start(p, n);
    float m = -1e30f; // running max score
    float l = 0.0f;   // running softmax denominator
    float o[DIMS_PER_THREAD]; // (head_dim / WG) this thread's output dimensions
#pragma unroll
    for (unsigned int e = 0u; e < DIMS_PER_THREAD; e++) {
        o[e] = 0.0f;
    }
    for (unsigned int t0 = first; t0 < n; t0 += WG) {
        unsigned int j = t0 + lid;
        float s = -1e30f;
        unsigned int page = 0u;
        if (j < n) {
            page = page_of(p, t, j);
            s = k_dot(p, kv, q_sh, page, j % p.page_size, kvh);
        }
        scores[lid] = s;
        pages[lid] = page; // looked up once a tile, not by every thread
        __syncthreads();
        unsigned int cnt = min(WG, n - t0);
        float m_new = m;
        for (unsigned int i = 0u; i < cnt; i++) {
            m_new = fmaxf(m_new, scores[i]);
        }
        float corr = expf(m - m_new);
        l *= corr;
#pragma unroll
        for (unsigned int e = 0u; e < DIMS_PER_THREAD; e++) {
            o[e] *= corr;
        }
        for (unsigned int i = 0u; i < cnt; i++) {
            unsigned int pos = t0 + i;
            unsigned int page = pages[i];
            unsigned int slot = pos % p.page_size;
            float pj = expf(scores[i] - m_new);
            l += pj;
            float w = pj;
#if KV_FP8
            w *= *reinterpret_cast<const float*>(kv + scale_at(p, page, slot, kvh, 1u));
#endif
#pragma unroll
            for (unsigned int e = 0u; e < DIMS_PER_THREAD; e++) {
                unsigned int d = lid + e * WG;
                if (d < hd) {
                    o[e] += w * v_at(p, kv, page, slot, kvh, d);
                }
            }
        }
        m = m_new;
        __syncthreads();
    }
#pragma unroll
    for (unsigned int e = 0u; e < DIMS_PER_THREAD; e++) {
        unsigned int d = lid + e * WG;
        if (d < hd) {
            p.q_out[row + d] = o[e] / l;
        }
    }
}

// The decode kernels of the same variant (launch.rs chooses): GQA-shared, split-K.
#include "attention_decode.cu"
#include "attention_combine.cu"
#if KV_FP8
#include "attention_prefill.cu"
#include "attention_prefill_wgmma.cu"
#endif
