// attention_decode.cu: paged decode attention (entry KILN_DECODE), the semantics of
// attention.cu (q · scale, K scale on the dot, V scale on the weight, causal positions
// window_start ..= pos, online softmax from m = -1e30) with three changes for bandwidth:
// - GQA: one block per (KV head, token, split) serves up to AD_MAX_GROUP query heads of
//   that KV head, so each K/V row is read from memory once per group, not once per head;
// - tiles of AD_TILE positions are copied into shared memory with cp.async (sm_80+),
//   double-buffered: the next tile's pages load while this one is scored;
// - split-K ("flash decoding"): with gridDim.z = splits > 1 each block covers one chunk
//   of the context and writes its unnormalised (acc, m, l) to `partial`, and
//   attention_combine.cu merges them; with one split it writes the output itself.
// FP8 values become f32 in registers (cvt.rn.f16x2.e4m3x2 on sm_89+, exact; the bit
// decode elsewhere) and the per-(token, head) scales are folded into the dot / weight.
// Included by attention.cu after its own kernel (prelude, kv_common, MAX_HEAD_DIM).

#define AD_TILE 32u      // positions per tile: one per lane when scoring
#define AD_WARPS 4u      // warps of a block (launch.rs: AD_THREADS = 128)
#define AD_MAX_GROUP 8u  // query heads per block (launch.rs: AD_MAX_GROUP)
#define AD_HEADS_PER_WARP (AD_MAX_GROUP / AD_WARPS)
#define AD_PASSES (MAX_HEAD_DIM / (4u * WARP)) // 4 dims per lane per pass of P·V

// Shared row stride: the row rounded up to 16 bytes, plus 16 so that the quarter-warp
// phases of 16-byte reads of 8 consecutive rows hit distinct banks (launch.rs:
// decode_row_stride).
__device__ __forceinline__ unsigned int ad_row_stride(unsigned int row_bytes) {
    return ((row_bytes + 15u) / 16u) * 16u + 16u;
}

__device__ __forceinline__ unsigned int ad_smem_addr(const void* p) {
    unsigned long long a;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
    return (unsigned int)a;
}

// Copy `bytes` (16 or 4) global -> shared, asynchronously where the device can.
__device__ __forceinline__ void ad_copy16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(ad_smem_addr(dst)), "l"(src));
#else
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
#endif
}

__device__ __forceinline__ void ad_copy4(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(ad_smem_addr(dst)), "l"(src));
#else
    *reinterpret_cast<unsigned int*>(dst) = *reinterpret_cast<const unsigned int*>(src);
#endif
}

__device__ __forceinline__ void ad_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;");
#endif
}

// Wait until at most `pending` (0 or 1) committed groups are still in flight.
__device__ __forceinline__ void ad_wait(unsigned int pending) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if (pending == 0u) {
        asm volatile("cp.async.wait_group 0;");
    } else {
        asm volatile("cp.async.wait_group 1;");
    }
#else
    (void)pending;
#endif
}

// Four consecutive KV values (one word of FP8, two of F16) as f32, without scale.
__device__ __forceinline__ void ad_values4(const unsigned char* at, float* out) {
#if KV_FP8
    unsigned int w = *reinterpret_cast<const unsigned int*>(at);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    unsigned int lo, hi;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(lo) : "h"((unsigned short)(w & 0xFFFFu)));
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(hi) : "h"((unsigned short)(w >> 16)));
    out[0] = f16_lo(lo);
    out[1] = f16_hi(lo);
    out[2] = f16_lo(hi);
    out[3] = f16_hi(hi);
#else
    out[0] = fp8_decode(byte_of(w, 0u));
    out[1] = fp8_decode(byte_of(w, 1u));
    out[2] = fp8_decode(byte_of(w, 2u));
    out[3] = fp8_decode(byte_of(w, 3u));
#endif
#else
    uint2 w = *reinterpret_cast<const uint2*>(at);
    out[0] = f16_lo(w.x);
    out[1] = f16_hi(w.x);
    out[2] = f16_lo(w.y);
    out[3] = f16_hi(w.y);
#endif
}

// Grid (n_kv_heads · head_blocks, tokens, splits); blocks of AD_WARPS warps.
//   p.partial (splits > 1): (tokens, n_heads, splits, head_dim) f32 acc, then
//             (tokens, n_heads, splits, 2) f32 (m, l); unused with one split.
// Dynamic shared memory: 2 stages × (K, V) × AD_TILE rows of ad_row_stride bytes.
extern "C" __global__ void KILN_DECODE(const __grid_constant__ KvArgs p) {
    const unsigned int* __restrict__ step = p.step;
    const unsigned char* kv = p.kv;
    float* __restrict__ partial = p.partial;
    extern __shared__ __align__(16) unsigned char ad_tiles[];
    __shared__ float q_sh[AD_MAX_GROUP * MAX_HEAD_DIM]; // (group heads, head_dim) q · scale
#if KV_FP8
    __shared__ float scales[2][2][AD_TILE]; // (stage, K/V, position) FP8 scales
#endif
    unsigned int hd = p.head_dim;
    unsigned int group = p.n_heads / p.n_kv_heads;
    unsigned int head_blocks = (group + AD_MAX_GROUP - 1u) / AD_MAX_GROUP;
    unsigned int kvh = blockIdx.x / head_blocks;
    unsigned int g0 = (blockIdx.x % head_blocks) * AD_MAX_GROUP; // first head of the group here
    unsigned int gn = min(AD_MAX_GROUP, group - g0);             // heads of this block
    unsigned int h0 = kvh * group + g0;                          // its first query head
    unsigned int t = blockIdx.y;
    unsigned int split = blockIdx.z;
    unsigned int splits = gridDim.z;
    unsigned int tid = threadIdx.x;
    unsigned int warp = tid / WARP;
    unsigned int lane = tid % WARP;

    for (unsigned int i = tid; i < gn * hd; i += blockDim.x) {
        q_sh[i] = p.q[(t * p.n_heads + h0) * hd + i] * p.scale;
    }

    // This split's positions of first .. n: chunks of whole tiles, the last split takes
    // the rest.
    unsigned int n = step[step[STEP_POSITIONS] + t] + 1u;
    unsigned int first = window_start(p, n);
    unsigned int span = n - first;
    unsigned int chunk = ((span + splits - 1u) / splits + AD_TILE - 1u) / AD_TILE * AD_TILE;
    unsigned int begin = first + min(span, split * chunk);
    unsigned int end = min(n, begin + chunk);
    unsigned int n_tiles = (end - begin + AD_TILE - 1u) / AD_TILE;

    unsigned int row_bytes = hd * KV_VALUE_BYTES;
    unsigned int stride = ad_row_stride(row_bytes);
    // 16-byte copies when every row starts on 16 bytes (regions are 16-aligned:
    // kiln_ir::kv_layout::KV_REGION_ALIGN), 4-byte copies for odd head sizes.
    bool vec16 = row_bytes % 16u == 0u && p.page_bytes % 16u == 0u;

    // Issue the copies of the tile at t0 into `stage`: 4 threads per position (K and V).
    auto load_tile = [&](unsigned int stage, unsigned int t0) {
        unsigned int i = tid / 4u;
        unsigned int part = tid % 4u;
        unsigned int pos = t0 + i;
        if (i < AD_TILE && pos < end) {
            unsigned int page = page_of(p, t, pos);
            unsigned int slot = pos % p.page_size;
            const unsigned char* k_src = kv + values_at(p, page, slot, kvh, 0u);
            const unsigned char* v_src = kv + values_at(p, page, slot, kvh, 1u);
            unsigned char* k_dst = ad_tiles + (stage * 2u * AD_TILE + i) * stride;
            unsigned char* v_dst = k_dst + AD_TILE * stride;
            if (vec16) {
                for (unsigned int b = part * 16u; b < row_bytes; b += 64u) {
                    ad_copy16(k_dst + b, k_src + b);
                    ad_copy16(v_dst + b, v_src + b);
                }
            } else {
                for (unsigned int b = part * 4u; b < row_bytes; b += 16u) {
                    ad_copy4(k_dst + b, k_src + b);
                    ad_copy4(v_dst + b, v_src + b);
                }
            }
#if KV_FP8
            if (part == 0u) {
                ad_copy4(&scales[stage][0][i], kv + scale_at(p, page, slot, kvh, 0u));
                ad_copy4(&scales[stage][1][i], kv + scale_at(p, page, slot, kvh, 1u));
            }
#endif
        }
        ad_commit();
    };

    float m[AD_HEADS_PER_WARP];                   // running max score of each head
    float l[AD_HEADS_PER_WARP];                   // running softmax denominator
    float o[AD_HEADS_PER_WARP][AD_PASSES][4];     // this lane's output dims of each head
#pragma unroll
    for (unsigned int j = 0u; j < AD_HEADS_PER_WARP; j++) {
        m[j] = -1e30f;
        l[j] = 0.0f;
#pragma unroll
        for (unsigned int e = 0u; e < AD_PASSES; e++) {
#pragma unroll
            for (unsigned int c = 0u; c < 4u; c++) {
                o[j][e][c] = 0.0f;
            }
        }
    }

    if (n_tiles > 0u) {
        load_tile(0u, begin);
    }
    for (unsigned int k = 0u; k < n_tiles; k++) {
        unsigned int t0 = begin + k * AD_TILE;
        unsigned int stage = k & 1u;
        if (k + 1u < n_tiles) {
            load_tile(stage ^ 1u, t0 + AD_TILE);
            ad_wait(1u);
        } else {
            ad_wait(0u);
        }
        __syncthreads(); // this tile (and q_sh, the first time) visible to every thread
        unsigned int cnt = min(AD_TILE, end - t0);
        const unsigned char* k_tile = ad_tiles + stage * 2u * AD_TILE * stride;
        const unsigned char* v_tile = k_tile + AD_TILE * stride;
#pragma unroll
        for (unsigned int j = 0u; j < AD_HEADS_PER_WARP; j++) {
            unsigned int g = warp + j * AD_WARPS;
            if (g >= gn) {
                continue; // warp-uniform
            }
            const float* q = q_sh + g * hd;
            // Lane i scores position t0 + i against this head's q.
            float s = -1e30f;
            if (lane < cnt) {
                const unsigned char* row = k_tile + lane * stride;
                float acc = 0.0f;
                for (unsigned int d = 0u; d < hd; d += 4u) {
                    float kv4[4];
                    ad_values4(row + d * KV_VALUE_BYTES, kv4);
                    acc += kv4[0] * q[d] + kv4[1] * q[d + 1u] + kv4[2] * q[d + 2u] + kv4[3] * q[d + 3u];
                }
#if KV_FP8
                acc *= scales[stage][0][lane];
#endif
                s = acc;
            }
            float m_new = fmaxf(m[j], warp_max(s));
            float corr = expf(m[j] - m_new);
            float pj = lane < cnt ? expf(s - m_new) : 0.0f;
            l[j] = l[j] * corr + warp_sum(pj);
            float w = pj;
#if KV_FP8
            if (lane < cnt) {
                w *= scales[stage][1][lane];
            }
#endif
#pragma unroll
            for (unsigned int e = 0u; e < AD_PASSES; e++) {
#pragma unroll
                for (unsigned int c = 0u; c < 4u; c++) {
                    o[j][e][c] *= corr;
                }
            }
            for (unsigned int i = 0u; i < cnt; i++) {
                float wi = __shfl_sync(0xFFFFFFFFu, w, i);
#pragma unroll
                for (unsigned int e = 0u; e < AD_PASSES; e++) {
                    unsigned int d = 4u * (lane + e * WARP);
                    if (d < hd) {
                        float v4[4];
                        ad_values4(v_tile + i * stride + d * KV_VALUE_BYTES, v4);
#pragma unroll
                        for (unsigned int c = 0u; c < 4u; c++) {
                            o[j][e][c] += wi * v4[c];
                        }
                    }
                }
            }
            m[j] = m_new;
        }
        __syncthreads(); // every warp done with `stage` before the next load refills it
    }

    unsigned int n_tokens = gridDim.y;
#pragma unroll
    for (unsigned int j = 0u; j < AD_HEADS_PER_WARP; j++) {
        unsigned int g = warp + j * AD_WARPS;
        if (g >= gn) {
            continue;
        }
        unsigned int h = h0 + g;
        unsigned int idx = (t * p.n_heads + h) * splits + split; // (token, head, split)
#pragma unroll
        for (unsigned int e = 0u; e < AD_PASSES; e++) {
            unsigned int d = 4u * (lane + e * WARP);
            if (d < hd) {
#pragma unroll
                for (unsigned int c = 0u; c < 4u; c++) {
                    if (splits == 1u) {
                        p.q_out[(t * p.n_heads + h) * hd + d + c] = o[j][e][c] / l[j];
                    } else {
                        partial[idx * hd + d + c] = o[j][e][c];
                    }
                }
            }
        }
        if (splits > 1u && lane == 0u) {
            unsigned int ml = n_tokens * p.n_heads * splits * hd;
            partial[ml + 2u * idx] = m[j];
            partial[ml + 2u * idx + 1u] = l[j];
        }
    }
}
