// attention_prefill.cu: causal flash attention for prefill steps over the paged FP8 cache
// (entry KILN_PREFILL, sm_80+), the semantics of attention.cu on tensor cores: a
// block takes FP_BQ query rows (16 per warp) of one query head; for each FP_BK-position
// tile of the KV context it dequantizes K and V into shared memory as f16 (exact: every
// E4M3 value is an f16), runs S = q·K^T with mma.sync m16n8k16 (f32 accumulators),
// applies the K scales and the causal mask to S in f32, and the online softmax; P (with
// the V scales folded in) goes from the S accumulators straight into the A fragments of
// P·V, no shared memory. Chunked prefill and prefix-cache hits are the same: a row
// attends to every position 0 ..= its own (the last `window` of them under a sliding
// window), whichever step wrote them.
// Rows of one tile may belong to several sequences (a step's sequences are one after
// another): the block runs its rows sequence by sequence ("segments").
// F16 caches keep attention.cu: f16 q and P would round what their f32 kernel does not;
// with FP8 the cache's own error is four orders of magnitude larger.
// Included by attention.cu for the FP8 variant only.

#define FP_BQ 64u   // query rows of a block (launch.rs: FP_ROWS)
#define FP_BK 32u   // KV positions of a tile
#define FP_PAD 8u   // halves of padding per shared row, against bank conflicts
#define FP_DT (MAX_HEAD_DIM / 8u) // n-tiles of 8 output dims

// d += a (16×16, row) · b (16×8, col), f32 accumulators (as matmul_mma.cu).
__device__ __forceinline__ void fp_mma(float* d, const unsigned int* a, const unsigned int* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Halves k and k + 1 of row r of a row-major f16 tile, as one fragment register.
__device__ __forceinline__ unsigned int fp_word(const unsigned short* tile, unsigned int stride, unsigned int r,
                                                unsigned int k) {
    return *reinterpret_cast<const unsigned int*>(tile + r * stride + k);
}

// Four E4M3 values (a word) as f16 bit patterns, exactly.
__device__ __forceinline__ void fp_f16x4(unsigned int w, unsigned short* out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    unsigned int lo, hi;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(lo) : "h"((unsigned short)(w & 0xFFFFu)));
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(hi) : "h"((unsigned short)(w >> 16)));
    out[0] = (unsigned short)(lo & 0xFFFFu);
    out[1] = (unsigned short)(lo >> 16);
    out[2] = (unsigned short)(hi & 0xFFFFu);
    out[3] = (unsigned short)(hi >> 16);
#else
#pragma unroll
    for (unsigned int e = 0u; e < 4u; e++) {
        out[e] = f32_to_f16(fp8_decode(byte_of(w, e)));
    }
#endif
}

// Grid (n_heads, ceil(tokens / FP_BQ)); blocks of 4 warps.
// Dynamic shared memory (f16): qs (FP_BQ, hdp + FP_PAD) q · scale, ks (FP_BK, hdp + FP_PAD)
// K values, vt (hdp, FP_BK + FP_PAD) V values transposed; hdp = head_dim rounded up to 16
// (zeros beyond head_dim).
extern "C" __global__ void __launch_bounds__(128) KILN_PREFILL(const __grid_constant__ KvArgs p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned int* __restrict__ step = p.step;
    const unsigned char* kv = p.kv;
    extern __shared__ __align__(16) unsigned short fp_smem[];
    __shared__ float ksc[FP_BK];          // (FP_BK) K scales of the tile's positions
    __shared__ float vsc[FP_BK];          // (FP_BK) V scales
    __shared__ unsigned int kpage[FP_BK]; // (FP_BK) page of each position
    __shared__ unsigned int row_seq[FP_BQ], row_pos[FP_BQ]; // (FP_BQ) of each query row
    unsigned int h = blockIdx.x;
    unsigned int t0 = blockIdx.y * FP_BQ;
    unsigned int n_tokens = step[STEP_N_TOKENS];
    unsigned int nt = min(FP_BQ, n_tokens - min(t0, n_tokens));
    unsigned int hd = p.head_dim;
    unsigned int hdp = (hd + 15u) / 16u * 16u;
    unsigned int qst = hdp + FP_PAD;
    unsigned int vst = FP_BK + FP_PAD;
    unsigned short* qs = fp_smem;
    unsigned short* ks = qs + FP_BQ * qst;
    unsigned short* vt = ks + FP_BK * qst;
    unsigned int kvh = h / (p.n_heads / p.n_kv_heads);
    unsigned int tid = threadIdx.x;
    unsigned int warp = tid / WARP;
    unsigned int lane = tid % WARP;
    unsigned int g = lane / 4u;
    unsigned int c = lane % 4u;
    if (nt == 0u) {
        return; // uniform across the block
    }
    for (unsigned int i = tid; i < FP_BQ * hdp; i += blockDim.x) {
        unsigned int r = i / hdp;
        unsigned int d = i % hdp;
        float v = 0.0f;
        if (r < nt && d < hd) {
            v = p.q[((t0 + r) * p.n_heads + h) * hd + d] * p.scale;
        }
        qs[r * qst + d] = f32_to_f16(v);
    }
    for (unsigned int r = tid; r < FP_BQ; r += blockDim.x) {
        row_seq[r] = r < nt ? step[step[STEP_SEQ] + t0 + r] : 0xFFFFFFFFu;
        row_pos[r] = r < nt ? step[step[STEP_POSITIONS] + t0 + r] : 0u;
    }
    __syncthreads();
    unsigned int r_lo = 16u * warp + g; // this lane's two rows of the warp's 16
    unsigned int r_hi = r_lo + 8u;
    const float neg_inf = bits_f32(0xFF800000u);

    unsigned int first = 0u;
    while (first < nt) {
        // The segment: rows [first, end) of one sequence, its longest context kmax.
        unsigned int seq = row_seq[first];
        unsigned int end = first;
        unsigned int kmax = 0u;
        while (end < nt && row_seq[end] == seq) {
            kmax = max(kmax, row_pos[end] + 1u);
            end++;
        }
        float m_lo = -1e30f, m_hi = -1e30f; // running max of rows r_lo, r_hi
        float l_lo = 0.0f, l_hi = 0.0f;     // running denominators
        float o[FP_DT][4];                  // (dim n-tiles, C fragment) output
#pragma unroll
        for (unsigned int j = 0u; j < FP_DT; j++) {
#pragma unroll
            for (unsigned int e = 0u; e < 4u; e++) {
                o[j][e] = 0.0f;
            }
        }
        // The segment's rows are consecutive positions: the first row's window starts
        // earliest (the KV manager keeps the pages from there on).
        for (unsigned int k0 = window_start(p, row_pos[first] + 1u); k0 < kmax; k0 += FP_BK) {
            __syncthreads(); // the previous tile is no longer read
            for (unsigned int i = tid; i < FP_BK; i += blockDim.x) {
                unsigned int pos = k0 + i;
                unsigned int page = pos < kmax ? page_of(p, t0 + first, pos) : 0u;
                unsigned int slot = pos % p.page_size;
                kpage[i] = page;
                ksc[i] = pos < kmax ? *reinterpret_cast<const float*>(kv + scale_at(p, page, slot, kvh, 0u)) : 0.0f;
                vsc[i] = pos < kmax ? *reinterpret_cast<const float*>(kv + scale_at(p, page, slot, kvh, 1u)) : 0.0f;
            }
            __syncthreads();
            // K and V words (4 values) to f16; zeros past kmax and head_dim, so that no
            // garbage meets a zero weight (0 · NaN).
            for (unsigned int i = tid; i < FP_BK * (hdp / 4u); i += blockDim.x) {
                unsigned int key = i / (hdp / 4u);
                unsigned int d = 4u * (i % (hdp / 4u));
                unsigned int pos = k0 + key;
                unsigned int kw = 0u, vw = 0u; // E4M3 0x00 is +0
                if (pos < kmax && d < hd) {
                    unsigned int slot = pos % p.page_size;
                    kw = *reinterpret_cast<const unsigned int*>(kv + values_at(p, kpage[key], slot, kvh, 0u) + d);
                    vw = *reinterpret_cast<const unsigned int*>(kv + values_at(p, kpage[key], slot, kvh, 1u) + d);
                }
                unsigned short kh[4], vh[4];
                fp_f16x4(kw, kh);
                fp_f16x4(vw, vh);
                *reinterpret_cast<uint2*>(ks + key * qst + d) =
                    make_uint2(kh[0] | ((unsigned int)kh[1] << 16), kh[2] | ((unsigned int)kh[3] << 16));
#pragma unroll
                for (unsigned int e = 0u; e < 4u; e++) {
                    vt[(d + e) * vst + key] = vh[e];
                }
            }
            __syncthreads();
            // S = (q · scale) K^T for the warp's 16 rows × FP_BK positions.
            float s[FP_BK / 8u][4];
#pragma unroll
            for (unsigned int j = 0u; j < FP_BK / 8u; j++) {
#pragma unroll
                for (unsigned int e = 0u; e < 4u; e++) {
                    s[j][e] = 0.0f;
                }
            }
            for (unsigned int kk = 0u; kk < hdp; kk += 16u) {
                unsigned int a[4] = {fp_word(qs, qst, r_lo, kk + 2u * c), fp_word(qs, qst, r_hi, kk + 2u * c),
                                     fp_word(qs, qst, r_lo, kk + 2u * c + 8u), fp_word(qs, qst, r_hi, kk + 2u * c + 8u)};
#pragma unroll
                for (unsigned int j = 0u; j < FP_BK / 8u; j++) {
                    unsigned int b[2] = {fp_word(ks, qst, 8u * j + g, kk + 2u * c),
                                         fp_word(ks, qst, 8u * j + g, kk + 2u * c + 8u)};
                    fp_mma(s[j], a, b);
                }
            }
            // K scales, causal mask (and rows of other segments), row maxima.
            float mx_lo = -1e30f, mx_hi = -1e30f;
#pragma unroll
            for (unsigned int j = 0u; j < FP_BK / 8u; j++) {
#pragma unroll
                for (unsigned int e = 0u; e < 4u; e++) {
                    unsigned int key = 8u * j + 2u * c + (e & 1u);
                    unsigned int r = e < 2u ? r_lo : r_hi;
                    unsigned int pos = k0 + key;
                    bool valid = r >= first && r < end && pos <= row_pos[r] &&
                                 pos >= window_start(p, row_pos[r] + 1u);
                    s[j][e] = valid ? s[j][e] * ksc[key] : neg_inf;
                    if (e < 2u) {
                        mx_lo = fmaxf(mx_lo, s[j][e]);
                    } else {
                        mx_hi = fmaxf(mx_hi, s[j][e]);
                    }
                }
            }
            // A row's values lie in the 4 lanes of a quad.
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xFFFFFFFFu, mx_lo, 1));
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xFFFFFFFFu, mx_lo, 2));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xFFFFFFFFu, mx_hi, 1));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xFFFFFFFFu, mx_hi, 2));
            float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
            float corr_lo = expf(m_lo - mn_lo), corr_hi = expf(m_hi - mn_hi);
            float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
            for (unsigned int j = 0u; j < FP_BK / 8u; j++) {
#pragma unroll
                for (unsigned int e = 0u; e < 4u; e++) {
                    // exp(-inf - finite) = 0: masked positions weigh nothing.
                    float pj = expf(s[j][e] - (e < 2u ? mn_lo : mn_hi));
                    if (e < 2u) {
                        sum_lo += pj;
                    } else {
                        sum_hi += pj;
                    }
                    s[j][e] = pj * vsc[8u * j + 2u * c + (e & 1u)];
                }
            }
            sum_lo += __shfl_xor_sync(0xFFFFFFFFu, sum_lo, 1);
            sum_lo += __shfl_xor_sync(0xFFFFFFFFu, sum_lo, 2);
            sum_hi += __shfl_xor_sync(0xFFFFFFFFu, sum_hi, 1);
            sum_hi += __shfl_xor_sync(0xFFFFFFFFu, sum_hi, 2);
            l_lo = l_lo * corr_lo + sum_lo;
            l_hi = l_hi * corr_hi + sum_hi;
            m_lo = mn_lo;
            m_hi = mn_hi;
#pragma unroll
            for (unsigned int j = 0u; j < FP_DT; j++) {
                o[j][0] *= corr_lo;
                o[j][1] *= corr_lo;
                o[j][2] *= corr_hi;
                o[j][3] *= corr_hi;
            }
            // O += P V: the C fragments of S n-tiles 2kc, 2kc + 1 are the A fragment of
            // positions 16kc .. 16kc + 15.
#pragma unroll
            for (unsigned int kc = 0u; kc < FP_BK / 16u; kc++) {
                unsigned int a[4] = {pack_f16x2(s[2u * kc][0], s[2u * kc][1]), pack_f16x2(s[2u * kc][2], s[2u * kc][3]),
                                     pack_f16x2(s[2u * kc + 1u][0], s[2u * kc + 1u][1]),
                                     pack_f16x2(s[2u * kc + 1u][2], s[2u * kc + 1u][3])};
#pragma unroll
                for (unsigned int j = 0u; j < FP_DT; j++) {
                    if (8u * j < hdp) {
                        unsigned int b[2] = {fp_word(vt, vst, 8u * j + g, 16u * kc + 2u * c),
                                             fp_word(vt, vst, 8u * j + g, 16u * kc + 2u * c + 8u)};
                        fp_mma(o[j], a, b);
                    }
                }
            }
        }
        // The segment's rows: C fragment e = 0, 1 at row r_lo, dims 2c, 2c + 1; 2, 3 at r_hi.
#pragma unroll
        for (unsigned int j = 0u; j < FP_DT; j++) {
#pragma unroll
            for (unsigned int e = 0u; e < 4u; e++) {
                unsigned int r = e < 2u ? r_lo : r_hi;
                unsigned int d = 8u * j + 2u * c + (e & 1u);
                if (r >= first && r < end && d < hd) {
                    p.q_out[((t0 + r) * p.n_heads + h) * hd + d] = o[j][e] / (e < 2u ? l_lo : l_hi);
                }
            }
        }
        first = end;
    }
#else
    // Tensor-core mma.sync m16n8k16 needs sm_80; the host never launches this below.
    (void)p;
    asm volatile("trap;");
#endif
}
