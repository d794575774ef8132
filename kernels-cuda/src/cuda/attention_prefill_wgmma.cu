// attention_prefill_wgmma.cu: the causal flash prefill attention of attention_prefill.cu
// (same arguments, grid, rows and semantics: read its header) on Hopper's warpgroup MMA
// (entries KILN_PREFILL_WG64/128/256, sm_90a; other targets compile a trap and the host
// never launches them there).
//
// A block is one warpgroup (4 warps, FP_THREADS) over FP_ROWS = 64 query rows, the M of
// wgmma.m64n64k16; warp w holds rows 16w .. 16w + 15 of every accumulator, as the
// mma.sync kernel's warps do, so the softmax, masks and output are that kernel's. For each
// tile of FW_KEYS = 64 positions:
//   - cp.async brings the next tile's raw E4M3 K and V rows and scales into the other
//     stage (fp_issue, two stages);
//   - the block converts the tile to f16 in wgmma's K-major no-swizzle layout (8×8 core
//     matrices of 128 contiguous bytes, ptx.cuh: ptx_wgmma_desc; the matrices 16 bytes
//     further apart than packed, against bank conflicts: fw_core): K as keys × dims, V
//     transposed to dims × keys (so P·V's B operand is K-major too: no transpose
//     immediate), one core matrix a thread at a time;
//   - S = (q · scale) K^T: HD / 16 wgmma with both operands in shared memory (q, converted
//     once a block, in the same layout);
//   - K scales, mask, online softmax on the S accumulators in registers; P (V scales
//     folded in) packed to f16 straight from them as the A registers of P·V:
//     O += P V^T by 4 · HD / 64 wgmma of N = 64 dims each.
// P·V of a tile runs while the block converts the next one (two f16 K/V^T buffers up to
// 128 dims; at 256 one, and each P·V is waited for at once), and is waited for with the
// next S; softmax and MMA do not overlap yet (FlashAttention-3's ping-pong between two
// warpgroups is the next step).
// Included by attention.cu after attention_prefill.cu (whose helpers it uses), FP8 only.

#define FW_KEYS 64u // KV positions of a tile: the N of S's wgmma (launch.rs: PREFILL_WGMMA_KEYS)
// f16 K/V^T buffers: two (a tile's P·V overlaps the next conversion) but at 256 dims,
// where two would not fit in 227 KiB (launch.rs: prefill_wgmma_buffers).
#define FW_BUFS(HD) ((HD) > 128u ? 1u : 2u)

namespace {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Bytes between core matrices adjacent in K (LBO) and in rows (SBO, for `kdim` columns):
// 128 + 16 and (kdim / 8) · 144 + 16, not 128 and 16 · kdim, so that the 8 threads of a
// quarter-warp, each storing a row of a different core matrix (K: adjacent in K; V^T:
// adjacent in rows), meet 8 different 16-byte bank groups, not one.
#define FW_LBO 144u
__device__ __forceinline__ constexpr unsigned int fw_sbo(unsigned int kdim) { return (kdim / 8u) * FW_LBO + 16u; }

// Halves of a K-major operand of `rows` × `kdim` in that layout (launch.rs: wgmma_tile_bytes).
__device__ __forceinline__ constexpr unsigned int fw_tile(unsigned int rows, unsigned int kdim) {
    return (rows / 8u) * fw_sbo(kdim) / 2u;
}

// The f16 index of element (row, k) of a K-major no-swizzle operand of `kdim` columns:
// core matrices (8 rows of 16 contiguous bytes) FW_LBO bytes apart in K, fw_sbo apart in
// rows.
__device__ __forceinline__ unsigned int fw_core(unsigned int row, unsigned int k, unsigned int kdim) {
    return ((row / 8u) * fw_sbo(kdim) + (k / 8u) * FW_LBO) / 2u + (row % 8u) * 8u + k % 8u;
}

// 8 E4M3 values (low byte first) to 4 words of two f16 each, exactly.
__device__ __forceinline__ void fw_f16x8(uint2 raw, unsigned int* h) {
    h[0] = ptx_f16x2_from_e4m3x2((unsigned short)(raw.x & 0xFFFFu));
    h[1] = ptx_f16x2_from_e4m3x2((unsigned short)(raw.x >> 16));
    h[2] = ptx_f16x2_from_e4m3x2((unsigned short)(raw.y & 0xFFFFu));
    h[3] = ptx_f16x2_from_e4m3x2((unsigned short)(raw.y >> 16));
}

// Convert the stage's raw tile (BK keys of HD bytes) to f16: core matrix j of K (keys
// 8kg .., dims 8dc ..) and its transpose in V^T (dims 8dc .., keys 8kg ..).
template <unsigned int HD>
__device__ __forceinline__ void fw_convert(const unsigned char* kr, const unsigned char* vr, unsigned short* kh,
                                           unsigned short* vt) {
    for (unsigned int j = threadIdx.x; j < (FW_KEYS / 8u) * (HD / 8u); j += FP_THREADS) {
        unsigned int kg = j / (HD / 8u), dc = j % (HD / 8u);
        unsigned int kw[8][4], vw[8][4]; // (key, dim pair)
#pragma unroll
        for (unsigned int r = 0u; r < 8u; r++) {
            unsigned int at = (8u * kg + r) * HD + 8u * dc;
            fw_f16x8(*reinterpret_cast<const uint2*>(kr + at), kw[r]);
            fw_f16x8(*reinterpret_cast<const uint2*>(vr + at), vw[r]);
        }
        uint4* kd = reinterpret_cast<uint4*>(kh + fw_core(8u * kg, 8u * dc, HD));
        uint4* vd = reinterpret_cast<uint4*>(vt + fw_core(8u * dc, 8u * kg, FW_KEYS));
#pragma unroll
        for (unsigned int r = 0u; r < 8u; r++) {
            kd[r] = make_uint4(kw[r][0], kw[r][1], kw[r][2], kw[r][3]);
            // V^T row i = dim 8dc + i: keys 0 .. 7 of that dim, two a word.
            unsigned int sh = 16u * (r % 2u);
            unsigned int w[4];
#pragma unroll
            for (unsigned int q = 0u; q < 4u; q++) {
                w[q] = ((vw[2u * q][r / 2u] >> sh) & 0xFFFFu) | (((vw[2u * q + 1u][r / 2u] >> sh) & 0xFFFFu) << 16);
            }
            vd[r] = make_uint4(w[0], w[1], w[2], w[3]);
        }
    }
}
#endif

// Dynamic shared memory (bytes), in order: two stages of raw K and V (BK, HD) E4M3 each,
// two stages of K and V scales (BK) f32 each, then FW_BUFS(HD) buffers of f16 K (BK keys
// × HD) and V^T (HD × BK), and q · scale (FP_ROWS × HD), each in the K-major core-matrix
// layout (fw_core) (launch.rs: prefill_wgmma_shared_bytes).
template <unsigned int HD>
__device__ __forceinline__ void fw_attention(const KvArgs& p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr unsigned int BK = FW_KEYS;
    constexpr unsigned int NB = HD / 64u; // N = 64 blocks of the output's dims
    const unsigned int* __restrict__ step = p.step;
    extern __shared__ __align__(128) unsigned char fw_smem[];
    unsigned char* raw = fw_smem;                                         // (2, 2, BK, HD)
    float* raw_scales = reinterpret_cast<float*>(fw_smem + 4u * BK * HD); // (2, 2, BK)
    constexpr unsigned int BUFS = FW_BUFS(HD);
    unsigned short* f16 = reinterpret_cast<unsigned short*>(raw_scales + 4u * BK); // (BUFS, K | V^T)
    constexpr unsigned int KT = fw_tile(BK, HD), VT = fw_tile(HD, BK); // K, V^T halves
    unsigned short* qh = f16 + BUFS * (KT + VT);                       // (FP_ROWS, HD) cores
    __shared__ float ksc[BK], vsc[BK];
    __shared__ unsigned int tok_seq[FP_ROWS], tok_pos[FP_ROWS];
    unsigned int hd = p.head_dim;
    unsigned int group = p.n_heads / p.n_kv_heads;
    unsigned int hb = fp_heads(p);
    unsigned int head_blocks = (group + hb - 1u) / hb;
    unsigned int kvh = blockIdx.x / head_blocks;
    unsigned int h0 = kvh * group + (blockIdx.x % head_blocks) * hb;
    unsigned int nh = min(hb, (kvh + 1u) * group - h0);
    unsigned int tpb = FP_ROWS / hb;
    unsigned int t0 = (gridDim.y - 1u - blockIdx.y) * tpb;
    unsigned int n_tokens = step[STEP_N_TOKENS];
    unsigned int nt = min(tpb, n_tokens - min(t0, n_tokens));
    unsigned int tid = threadIdx.x;
    unsigned int warp = tid / WARP;
    unsigned int lane = tid % WARP;
    unsigned int g = lane / 4u;
    unsigned int c = lane % 4u;
    if (nt == 0u) {
        return; // uniform across the block
    }
    for (unsigned int i = tid; i < BK * HD / 4u; i += FP_THREADS) {
        reinterpret_cast<uint4*>(raw)[i] = make_uint4(0u, 0u, 0u, 0u);
    }
    for (unsigned int i = tid; i < FP_ROWS * HD; i += FP_THREADS) {
        unsigned int r = i / HD;
        unsigned int d = i % HD;
        unsigned int t = r / hb, h = r % hb;
        float v = 0.0f;
        if (t < nt && h < nh && d < hd) {
            v = p.q[((t0 + t) * p.n_heads + h0 + h) * hd + d] * p.scale;
        }
        qh[fw_core(r, d, HD)] = f32_to_f16(v);
    }
    for (unsigned int t = tid; t < nt; t += FP_THREADS) {
        tok_seq[t] = step[step[STEP_SEQ] + t0 + t];
        tok_pos[t] = step[step[STEP_POSITIONS] + t0 + t];
    }
    unsigned int r_lo = 16u * warp + g, r_hi = r_lo + 8u;
    unsigned int tk_lo = r_lo / hb, tk_hi = r_hi / hb;
    bool head_lo = r_lo % hb < nh, head_hi = r_hi % hb < nh;
    const float neg_inf = bits_f32(0xFF800000u);

    unsigned int first = 0u;
    while (first < nt) {
        // The previous segment's last tile may still be read: wait for every warp first.
        __syncthreads();
        unsigned int seq = tok_seq[first];
        unsigned int end = first + 1u;
        while (end < nt && tok_seq[end] == seq) {
            end++;
        }
        unsigned int kmax = tok_pos[end - 1u] + 1u;
        unsigned int kbegin = window_start(p, tok_pos[first] + 1u);
        bool in_lo = head_lo && tk_lo >= first && tk_lo < end;
        bool in_hi = head_hi && tk_hi >= first && tk_hi < end;
        unsigned int last_lo = in_lo ? tok_pos[tk_lo] : 0u, last_hi = in_hi ? tok_pos[tk_hi] : 0u;
        unsigned int w_lo = window_start(p, last_lo + 1u), w_hi = window_start(p, last_hi + 1u);
        float m_lo = -1e30f, m_hi = -1e30f;
        float l_lo = 0.0f, l_hi = 0.0f;
        float o[NB][32]; // (dim blocks, m64n64 fragment) output
#pragma unroll
        for (unsigned int nb = 0u; nb < NB; nb++) {
#pragma unroll
            for (unsigned int e = 0u; e < 32u; e++) {
                o[nb][e] = 0.0f;
            }
        }
        unsigned int tiles = (kmax - kbegin + BK - 1u) / BK;
        unsigned int table = table_of(p, t0 + first);
        fp_issue<HD, BK>(p, table, kvh, kbegin, kmax, raw, raw + BK * HD, raw_scales, raw_scales + BK);
        for (unsigned int i = 0u; i < tiles; i++) {
            unsigned int k0 = kbegin + i * BK;
            unsigned int stage = i % 2u;
            if (i + 1u < tiles) {
                unsigned int next = 1u - stage;
                fp_issue<HD, BK>(p, table, kvh, k0 + BK, kmax, raw + 2u * next * BK * HD,
                                 raw + (2u * next + 1u) * BK * HD, raw_scales + 2u * next * BK,
                                 raw_scales + (2u * next + 1u) * BK);
            } else {
                ptx_cp_async_commit();
            }
            ptx_cp_async_wait1();
            // This tile's copies have landed everywhere, and no wgmma still reads the
            // buffer converted into next (each thread waited for the P·V two tiles back,
            // or with one buffer the last, before getting here).
            __syncthreads();
            const unsigned char* kr = raw + 2u * stage * BK * HD;
            unsigned short* kh = f16 + (i % BUFS) * (KT + VT); // (BK, HD) cores
            unsigned short* vt = kh + KT;                      // (HD, BK) cores
            fw_convert<HD>(kr, kr + BK * HD, kh, vt);
            for (unsigned int key = tid; key < BK; key += FP_THREADS) {
                ksc[key] = raw_scales[2u * stage * BK + key];
                vsc[key] = raw_scales[(2u * stage + 1u) * BK + key];
            }
            // The generic stores above (and q's) are read by wgmma's async proxy.
            ptx_fence_proxy_async();
            __syncthreads();
            // S = (q · scale) K^T: 64 rows × BK positions.
            float s[32];
            ptx_wgmma_fence();
#pragma unroll
            for (unsigned int kk = 0u; kk < HD / 16u; kk++) {
                ptx_wgmma_m64n64k16_ss(s, ptx_wgmma_desc(qh + fw_core(0u, 16u * kk, HD), FW_LBO, fw_sbo(HD)),
                                       ptx_wgmma_desc(kh + fw_core(0u, 16u * kk, HD), FW_LBO, fw_sbo(HD)),
                                       kk > 0u ? 1 : 0);
            }
            ptx_wgmma_commit();
            // S, and the last tile's P·V before O is rescaled below.
            ptx_wgmma_wait<0>();
            ptx_wgmma_hold(s);
#pragma unroll
            for (unsigned int nb = 0u; nb < NB; nb++) {
                ptx_wgmma_hold(o[nb]);
            }
            // K scales, the causal mask (and the window), row maxima: s[4j + e] is row
            // r_lo (e < 2) or r_hi, key 8j + 2c + e % 2.
            float mx_lo = -1e30f, mx_hi = -1e30f;
#pragma unroll
            for (unsigned int j = 0u; j < BK / 8u; j++) {
#pragma unroll
                for (unsigned int e = 0u; e < 4u; e++) {
                    unsigned int key = 8u * j + 2u * c + (e & 1u);
                    unsigned int pos = k0 + key;
                    bool valid = e < 2u ? in_lo && pos <= last_lo && pos >= w_lo
                                        : in_hi && pos <= last_hi && pos >= w_hi;
                    float v = valid ? s[4u * j + e] * ksc[key] : neg_inf;
                    s[4u * j + e] = v;
                    if (e < 2u) {
                        mx_lo = fmaxf(mx_lo, v);
                    } else {
                        mx_hi = fmaxf(mx_hi, v);
                    }
                }
            }
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xFFFFFFFFu, mx_lo, 1));
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xFFFFFFFFu, mx_lo, 2));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xFFFFFFFFu, mx_hi, 1));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xFFFFFFFFu, mx_hi, 2));
            float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
            float corr_lo = expf(m_lo - mn_lo), corr_hi = expf(m_hi - mn_hi);
            float sum_lo = 0.0f, sum_hi = 0.0f;
            unsigned int pa[BK / 16u][4]; // (key steps, A fragment) P
#pragma unroll
            for (unsigned int j = 0u; j < BK / 8u; j++) {
                float pj[4];
#pragma unroll
                for (unsigned int e = 0u; e < 4u; e++) {
                    float x = expf(s[4u * j + e] - (e < 2u ? mn_lo : mn_hi));
                    if (e < 2u) {
                        sum_lo += x;
                    } else {
                        sum_hi += x;
                    }
                    pj[e] = x * vsc[8u * j + 2u * c + (e & 1u)];
                }
                // Keys 8j .. 8j + 7 are k-step j / 2's columns 0 .. 7 (j even) or 8 .. 15.
                pa[j / 2u][2u * (j % 2u)] = pack_f16x2(pj[0], pj[1]);
                pa[j / 2u][2u * (j % 2u) + 1u] = pack_f16x2(pj[2], pj[3]);
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
            for (unsigned int nb = 0u; nb < NB; nb++) {
#pragma unroll
                for (unsigned int e = 0u; e < 32u; e++) {
                    o[nb][e] *= (e % 4u) < 2u ? corr_lo : corr_hi;
                }
            }
            // O += P V: V^T's dims 64nb .. as N, keys 16kc .. as K.
            ptx_wgmma_fence();
#pragma unroll
            for (unsigned int kc = 0u; kc < BK / 16u; kc++) {
#pragma unroll
                for (unsigned int nb = 0u; nb < NB; nb++) {
                    ptx_wgmma_m64n64k16_rs(o[nb], pa[kc], ptx_wgmma_desc(vt + fw_core(64u * nb, 16u * kc, BK), FW_LBO, fw_sbo(BK)),
                                           1);
                }
            }
            ptx_wgmma_commit();
            if (BUFS == 1u) {
                ptx_wgmma_wait<0>(); // the next conversion overwrites V^T
            }
        }
        ptx_wgmma_wait<0>();
#pragma unroll
        for (unsigned int nb = 0u; nb < NB; nb++) {
            ptx_wgmma_hold(o[nb]);
        }
        // o[nb][4j + e]: row r_lo (e < 2) or r_hi, dim 64nb + 8j + 2c + e % 2.
#pragma unroll
        for (unsigned int nb = 0u; nb < NB; nb++) {
#pragma unroll
            for (unsigned int e = 0u; e < 32u; e++) {
                bool lo = (e % 4u) < 2u;
                unsigned int r = lo ? r_lo : r_hi;
                unsigned int d = 64u * nb + 8u * (e / 4u) + 2u * c + (e & 1u);
                if ((lo ? in_lo : in_hi) && d < hd) {
                    unsigned int t = t0 + r / hb, h = h0 + r % hb;
                    p.q_out[(t * p.n_heads + h) * hd + d] = o[nb][e] / (lo ? l_lo : l_hi);
                }
            }
        }
        first = end;
    }
#else
    // wgmma needs sm_90a; the host launches these entries only there (launch.rs).
    (void)p;
    ptx_trap();
#endif
}

} // namespace

// Grid and block as attention_prefill.cu's entries; dynamic shared memory as
// fw_attention says.
extern "C" __global__ void __launch_bounds__(FP_THREADS) KILN_PREFILL_WG64(const __grid_constant__ KvArgs p) {
    fw_attention<64u>(p);
}
extern "C" __global__ void __launch_bounds__(FP_THREADS) KILN_PREFILL_WG128(const __grid_constant__ KvArgs p) {
    fw_attention<128u>(p);
}
extern "C" __global__ void __launch_bounds__(FP_THREADS) KILN_PREFILL_WG256(const __grid_constant__ KvArgs p) {
    fw_attention<256u>(p);
}
