// attention_prefill.cu: causal flash attention for prefill steps over the paged FP8 cache
// (entries KILN_PREFILL64/128/256 by head size, sm_80+), the semantics of attention.cu
// on tensor cores (FlashAttention-2's loop, the cache's pages as its K/V source).
//
// A block of 4 warps takes FP_ROWS query rows of one KV head: rows are (token, query head)
// pairs, the heads of the KV head's group side by side (GQA: every K/V tile read from
// memory serves the whole group), FP_ROWS / group tokens a block (fp_heads). For each tile
// of FP_KEYS(HD) positions:
//   - cp.async brings the next tile's raw E4M3 rows and scales from their pages into the
//     other stage while this one is computed (two stages);
//   - the block converts the tile to f16 once (exact: every E4M3 value is an f16), K and
//     V row-major, so each warp reads them by ldmatrix (V by ldmatrix.trans, no transpose
//     in memory);
//   - S = q·K^T with mma.sync m16n8k16 (f32 accumulators), q's fragments from registers
//     (HD ≤ 128) or shared memory (HD 256, whose 128 output registers leave no room);
//   - the K scales and the causal mask applied to S in f32, the online softmax, and P
//     (V scales folded in) from the S accumulators straight into the A fragments of P·V.
// Tiles above the last row's position are never visited; a step's sequences lie one
// after another, so a block's tokens may span several: it runs them sequence by sequence
// ("segments"). Chunked prefill and prefix-cache hits are the same: a row attends to
// every position 0 ..= its own (the last `window` of them under a sliding window),
// whichever step wrote them.
// F16 caches keep attention.cu: f16 q and P would round what their f32 kernel does not;
// with FP8 the cache's own error is four orders of magnitude larger.
// Included by attention.cu for the FP8 variant only.

#define FP_ROWS 64u    // query rows of a block (launch.rs: FP_ROWS)
#define FP_THREADS 128u // 4 warps of 16 rows
#define FP_PAD 8u      // halves of padding per f16 row: ldmatrix's 8 rows in distinct banks
#define FP_KEYS(HD) ((HD) > 128u ? 32u : 64u) // KV positions of a tile (launch.rs: prefill_keys)

// Internal linkage for everything up to the entries: a static in a template function is
// otherwise one object per process for the host emulator's linker (STB_GNU_UNIQUE).
namespace {

// Query heads of a block: the KV head's whole group, up to FP_ROWS (launch.rs: fp_heads).
__device__ __forceinline__ unsigned int fp_heads(const KvArgs& p) {
    return min(p.n_heads / p.n_kv_heads, FP_ROWS);
}

// Issue the copies of the tile of positions [k0, k0 + BK) into stage buffers kr, vr (raw
// E4M3 rows of HD bytes; bytes past head_dim stay zero) and the scales into ks, vs:
// positions from kend on are zeros (their S is masked, and no NaN may meet P = 0).
// `table`: the segment's block table (kv_common.cuh: table_of), found once a segment.
template <unsigned int HD, unsigned int BK>
__device__ __forceinline__ void fp_issue(const KvArgs& p, unsigned int table, unsigned int kvh, unsigned int k0,
                                         unsigned int kend, unsigned char* kr, unsigned char* vr, float* ks,
                                         float* vs) {
    const unsigned char* kv = p.kv;
    unsigned int hd = p.head_dim;
    // 16-byte copies where rows are 16-byte aligned (KV regions are: kv_layout), else 4.
    unsigned int width = hd % 16u == 0u ? 16u : 4u;
    unsigned int per_row = hd / width;
    for (unsigned int i = threadIdx.x; i < BK * per_row; i += FP_THREADS) {
        unsigned int key = i / per_row;
        unsigned int d = (i % per_row) * width;
        unsigned int pos = k0 + key;
        unsigned char* kd = kr + key * HD + d;
        unsigned char* vd = vr + key * HD + d;
        if (pos < kend) {
            unsigned int page = p.step[table + pos / p.page_size];
            unsigned int slot = pos % p.page_size;
            const unsigned char* k = kv + values_at(p, page, slot, kvh, 0u) + d;
            const unsigned char* v = kv + values_at(p, page, slot, kvh, 1u) + d;
            if (width == 16u) {
                ptx_cp_async16(kd, k);
                ptx_cp_async16(vd, v);
            } else {
                ptx_cp_async4(kd, k);
                ptx_cp_async4(vd, v);
            }
        } else if (width == 16u) {
            *reinterpret_cast<uint4*>(kd) = make_uint4(0u, 0u, 0u, 0u);
            *reinterpret_cast<uint4*>(vd) = make_uint4(0u, 0u, 0u, 0u);
        } else {
            *reinterpret_cast<unsigned int*>(kd) = 0u;
            *reinterpret_cast<unsigned int*>(vd) = 0u;
        }
    }
    for (unsigned int key = threadIdx.x; key < BK; key += FP_THREADS) {
        unsigned int pos = k0 + key;
        if (pos < kend) {
            unsigned int page = p.step[table + pos / p.page_size];
            unsigned int slot = pos % p.page_size;
            ptx_cp_async4(ks + key, kv + scale_at(p, page, slot, kvh, 0u));
            ptx_cp_async4(vs + key, kv + scale_at(p, page, slot, kvh, 1u));
        } else {
            ks[key] = 0.0f;
            vs[key] = 0.0f;
        }
    }
    ptx_cp_async_commit();
}

// 16 E4M3 values (a uint4) to f16 at out (16-byte aligned), exactly.
__device__ __forceinline__ void fp_f16x16(uint4 raw, unsigned short* out) {
    unsigned int w[4] = {raw.x, raw.y, raw.z, raw.w};
    unsigned int h[8];
#pragma unroll
    for (unsigned int i = 0u; i < 4u; i++) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
        h[2u * i] = ptx_f16x2_from_e4m3x2((unsigned short)(w[i] & 0xFFFFu));
        h[2u * i + 1u] = ptx_f16x2_from_e4m3x2((unsigned short)(w[i] >> 16));
#else
        h[2u * i] = (unsigned int)f32_to_f16(fp8_decode(byte_of(w[i], 0u))) |
                    ((unsigned int)f32_to_f16(fp8_decode(byte_of(w[i], 1u))) << 16);
        h[2u * i + 1u] = (unsigned int)f32_to_f16(fp8_decode(byte_of(w[i], 2u))) |
                         ((unsigned int)f32_to_f16(fp8_decode(byte_of(w[i], 3u))) << 16);
#endif
    }
    reinterpret_cast<uint4*>(out)[0] = make_uint4(h[0], h[1], h[2], h[3]);
    reinterpret_cast<uint4*>(out)[1] = make_uint4(h[4], h[5], h[6], h[7]);
}

// The lane's address for ldmatrix.x4 of the 16×16 f16 block at (row0, col0) of a
// row-major tile with `stride` halves a row: matrix i = lane / 8 is rows row0 + 8·(i & 1)
// (+ lane % 8), columns col0 + 8·(i >> 1) when rows_first, else rows row0 + 8·(i >> 1),
// columns col0 + 8·(i & 1).
__device__ __forceinline__ const unsigned short* fp_ldm(const unsigned short* tile, unsigned int stride,
                                                        unsigned int row0, unsigned int col0, bool rows_first) {
    unsigned int lane = threadIdx.x % WARP;
    unsigned int i = lane / 8u;
    unsigned int lo = i & 1u, hi = i >> 1;
    unsigned int r = row0 + 8u * (rows_first ? lo : hi) + lane % 8u;
    unsigned int c = col0 + 8u * (rows_first ? hi : lo);
    return tile + r * stride + c;
}

// Dynamic shared memory (bytes), in order: two stages of raw K and V (BK, HD) E4M3 each,
// two stages of K and V scales (BK) f32 each, then f16 K (BK, HD + FP_PAD), V (BK, HD +
// FP_PAD) and q · scale (FP_ROWS, HD + FP_PAD) (launch.rs: prefill_shared_bytes).
template <unsigned int HD>
__device__ __forceinline__ void fp_attention(const KvArgs& p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr unsigned int BK = FP_KEYS(HD);
    constexpr unsigned int ST = HD + FP_PAD; // halves between f16 rows
    constexpr bool QREG = HD <= 128u;        // q's fragments live in registers
    const unsigned int* __restrict__ step = p.step;
    extern __shared__ __align__(16) unsigned char fp_smem[];
    unsigned char* raw = fp_smem;                                         // (2, 2, BK, HD)
    float* raw_scales = reinterpret_cast<float*>(fp_smem + 4u * BK * HD); // (2, 2, BK)
    unsigned short* kh = reinterpret_cast<unsigned short*>(raw_scales + 4u * BK); // (BK, ST)
    unsigned short* vh = kh + BK * ST;                                    // (BK, ST)
    unsigned short* qh = vh + BK * ST;                                    // (FP_ROWS, ST)
    __shared__ float ksc[BK], vsc[BK];                  // (BK) the tile's scales
    __shared__ unsigned int tok_seq[FP_ROWS], tok_pos[FP_ROWS]; // (tokens) of the block's tokens
    unsigned int hd = p.head_dim;
    unsigned int group = p.n_heads / p.n_kv_heads;
    unsigned int hb = fp_heads(p);
    unsigned int head_blocks = (group + hb - 1u) / hb;
    unsigned int kvh = blockIdx.x / head_blocks;
    unsigned int h0 = kvh * group + (blockIdx.x % head_blocks) * hb; // the block's first head
    unsigned int nh = min(hb, (kvh + 1u) * group - h0);             // its heads
    unsigned int tpb = FP_ROWS / hb;                                 // its tokens
    // The last tiles have the longest contexts: they start first.
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
    // Zero the raw stages once: bytes past head_dim are never copied and must be +0.
    for (unsigned int i = tid; i < BK * HD / 4u; i += FP_THREADS) {
        reinterpret_cast<uint4*>(raw)[i] = make_uint4(0u, 0u, 0u, 0u);
    }
    // q · scale as f16, row r = (token r / hb, head h0 + r % hb); zeros past head_dim and
    // in rows of no (token, head).
    for (unsigned int i = tid; i < FP_ROWS * HD; i += FP_THREADS) {
        unsigned int r = i / HD;
        unsigned int d = i % HD;
        unsigned int t = r / hb, h = r % hb;
        float v = 0.0f;
        if (t < nt && h < nh && d < hd) {
            v = p.q[((t0 + t) * p.n_heads + h0 + h) * hd + d] * p.scale;
        }
        qh[r * ST + d] = f32_to_f16(v);
    }
    for (unsigned int t = tid; t < nt; t += FP_THREADS) {
        tok_seq[t] = step[step[STEP_SEQ] + t0 + t];
        tok_pos[t] = step[step[STEP_POSITIONS] + t0 + t];
    }
    __syncthreads();
    unsigned int qa[QREG ? HD / 16u : 1u][4]; // (k-steps, A fragment) q, when in registers
    if (QREG) {
#pragma unroll
        for (unsigned int k = 0u; k < HD / 16u; k++) {
            ptx_ldmatrix_x4(qa[QREG ? k : 0u], fp_ldm(qh, ST, 16u * warp, 16u * k, true));
        }
    }
    // This lane's two rows of the warp's 16, their tokens and heads.
    unsigned int r_lo = 16u * warp + g, r_hi = r_lo + 8u;
    unsigned int tk_lo = r_lo / hb, tk_hi = r_hi / hb;
    bool head_lo = r_lo % hb < nh, head_hi = r_hi % hb < nh;
    const float neg_inf = bits_f32(0xFF800000u);

    unsigned int first = 0u; // the segment's first token
    while (first < nt) {
        // The segment: tokens [first, end) of one sequence, consecutive positions.
        unsigned int seq = tok_seq[first];
        unsigned int end = first + 1u;
        while (end < nt && tok_seq[end] == seq) {
            end++;
        }
        unsigned int kmax = tok_pos[end - 1u] + 1u;
        unsigned int kbegin = window_start(p, tok_pos[first] + 1u); // the earliest row's
        // The positions each of the lane's rows sees: [w, last]; none outside the segment.
        bool in_lo = head_lo && tk_lo >= first && tk_lo < end;
        bool in_hi = head_hi && tk_hi >= first && tk_hi < end;
        unsigned int last_lo = in_lo ? tok_pos[tk_lo] : 0u, last_hi = in_hi ? tok_pos[tk_hi] : 0u;
        unsigned int w_lo = window_start(p, last_lo + 1u), w_hi = window_start(p, last_hi + 1u);
        float m_lo = -1e30f, m_hi = -1e30f; // running max of rows r_lo, r_hi
        float l_lo = 0.0f, l_hi = 0.0f;     // running denominators
        float o[HD / 8u][4];                // (dim n-tiles, C fragment) output
#pragma unroll
        for (unsigned int j = 0u; j < HD / 8u; j++) {
#pragma unroll
            for (unsigned int e = 0u; e < 4u; e++) {
                o[j][e] = 0.0f;
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
                ptx_cp_async_commit(); // an empty group: the wait below is the same
            }
            ptx_cp_async_wait1();
            // Every thread's copies of this tile have landed, and every warp is done with
            // the last tile's f16 K, V and scales.
            __syncthreads();
            const unsigned char* kr = raw + 2u * stage * BK * HD;
            const unsigned char* vr = kr + BK * HD;
            for (unsigned int j = tid; j < BK * HD / 16u; j += FP_THREADS) {
                unsigned int key = j / (HD / 16u);
                unsigned int d = 16u * (j % (HD / 16u));
                fp_f16x16(reinterpret_cast<const uint4*>(kr)[j], kh + key * ST + d);
                fp_f16x16(reinterpret_cast<const uint4*>(vr)[j], vh + key * ST + d);
            }
            for (unsigned int key = tid; key < BK; key += FP_THREADS) {
                ksc[key] = raw_scales[2u * stage * BK + key];
                vsc[key] = raw_scales[(2u * stage + 1u) * BK + key];
            }
            __syncthreads();
            // S = (q · scale) K^T for the warp's 16 rows × BK positions.
            float s[BK / 8u][4];
#pragma unroll
            for (unsigned int j = 0u; j < BK / 8u; j++) {
#pragma unroll
                for (unsigned int e = 0u; e < 4u; e++) {
                    s[j][e] = 0.0f;
                }
            }
#pragma unroll
            for (unsigned int k = 0u; k < HD / 16u; k++) {
                unsigned int a[4];
                if (QREG) {
#pragma unroll
                    for (unsigned int e = 0u; e < 4u; e++) {
                        a[e] = qa[QREG ? k : 0u][e];
                    }
                } else {
                    ptx_ldmatrix_x4(a, fp_ldm(qh, ST, 16u * warp, 16u * k, true));
                }
#pragma unroll
                for (unsigned int j = 0u; j < BK / 16u; j++) {
                    // Keys 16j .. 16j + 15 × dims 16k ..: b of n-tiles 2j and 2j + 1.
                    unsigned int b[4];
                    ptx_ldmatrix_x4(b, fp_ldm(kh, ST, 16u * j, 16u * k, false));
                    ptx_mma_m16n8k16(s[2u * j], a, b);
                    ptx_mma_m16n8k16(s[2u * j + 1u], a, b + 2);
                }
            }
            // K scales, the causal mask (and the window), row maxima.
            float mx_lo = -1e30f, mx_hi = -1e30f;
#pragma unroll
            for (unsigned int j = 0u; j < BK / 8u; j++) {
#pragma unroll
                for (unsigned int e = 0u; e < 4u; e++) {
                    unsigned int key = 8u * j + 2u * c + (e & 1u);
                    unsigned int pos = k0 + key;
                    bool valid = e < 2u ? in_lo && pos <= last_lo && pos >= w_lo
                                        : in_hi && pos <= last_hi && pos >= w_hi;
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
            for (unsigned int j = 0u; j < BK / 8u; j++) {
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
            for (unsigned int j = 0u; j < HD / 8u; j++) {
                o[j][0] *= corr_lo;
                o[j][1] *= corr_lo;
                o[j][2] *= corr_hi;
                o[j][3] *= corr_hi;
            }
            // O += P V: the C fragments of S n-tiles 2kc, 2kc + 1 are the A fragment of
            // positions 16kc .. 16kc + 15.
#pragma unroll
            for (unsigned int kc = 0u; kc < BK / 16u; kc++) {
                unsigned int a[4] = {pack_f16x2(s[2u * kc][0], s[2u * kc][1]), pack_f16x2(s[2u * kc][2], s[2u * kc][3]),
                                     pack_f16x2(s[2u * kc + 1u][0], s[2u * kc + 1u][1]),
                                     pack_f16x2(s[2u * kc + 1u][2], s[2u * kc + 1u][3])};
#pragma unroll
                for (unsigned int j = 0u; j < HD / 16u; j++) {
                    // Positions 16kc .. × dims 16j .., transposed: b of dim n-tiles 2j, 2j + 1.
                    unsigned int b[4];
                    ptx_ldmatrix_x4_trans(b, fp_ldm(vh, ST, 16u * kc, 16u * j, true));
                    ptx_mma_m16n8k16(o[2u * j], a, b);
                    ptx_mma_m16n8k16(o[2u * j + 1u], a, b + 2);
                }
            }
        }
        // The segment's rows: C fragment e = 0, 1 at row r_lo, dims 2c, 2c + 1; 2, 3 at r_hi.
#pragma unroll
        for (unsigned int j = 0u; j < HD / 8u; j++) {
#pragma unroll
            for (unsigned int e = 0u; e < 4u; e++) {
                bool lo = e < 2u;
                unsigned int r = lo ? r_lo : r_hi;
                unsigned int d = 8u * j + 2u * c + (e & 1u);
                if ((lo ? in_lo : in_hi) && d < hd) {
                    unsigned int t = t0 + r / hb, h = h0 + r % hb;
                    p.q_out[(t * p.n_heads + h) * hd + d] = o[j][e] / (lo ? l_lo : l_hi);
                }
            }
        }
        first = end;
    }
#else
    // Tensor-core mma.sync m16n8k16 needs sm_80; the host never launches this below.
    (void)p;
    ptx_trap();
#endif
}

} // namespace

// Grid (KV heads × head blocks, token tiles); blocks of FP_THREADS threads; dynamic
// shared memory as fp_attention says. One entry per head size class: a head size is
// padded to the next (zeros past head_dim).
extern "C" __global__ void __launch_bounds__(FP_THREADS) KILN_PREFILL64(const __grid_constant__ KvArgs p) {
    fp_attention<64u>(p);
}
extern "C" __global__ void __launch_bounds__(FP_THREADS) KILN_PREFILL128(const __grid_constant__ KvArgs p) {
    fp_attention<128u>(p);
}
extern "C" __global__ void __launch_bounds__(FP_THREADS) KILN_PREFILL256(const __grid_constant__ KvArgs p) {
    fp_attention<256u>(p);
}
