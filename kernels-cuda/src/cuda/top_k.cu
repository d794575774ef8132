// top_k.cu: a sampler's top-k filter on the device: the k largest logits of each row of
// the plan's output (rows, cols) with their ids, larger first and the lower id first on
// equal logits (-0 equals +0), every candidate (0xFFFFFFFF, NaN) for a row holding a NaN
// or +inf: exactly kiln_ir::step::top_k, so that sampling reads back k candidates a row
// instead of the vocabulary's logits. One block per row:
//   1. a radix select over order-preserving keys (4 passes of 8-bit digits, most
//      significant first, each a 256-bin shared histogram of the elements whose higher
//      digits match those chosen so far) finds the exact k-th largest key T and how many
//      of the elements equal to T the top k holds (the lowest ids among them);
//   2. two passes over the row, each warp over its own contiguous range: the first counts
//      each warp's elements > T and == T, the second writes them to deterministic slots
//      (a warp's counts before it, plus ballot / popc within the warp), those > T first,
//      then the first ones == T in id order;
//   3. a bitonic sort of the k candidates in shared memory by (key desc, id asc), and the
//      pairs (id, logit) written with the logit's own bits read again (so -0 stays -0).
// The row is read six times; 262,144 logits (Gemma 3) are 1 MiB, which stays in L2.

#include "prelude.cuh"

// Candidates one block sorts: one per thread, 8 KiB of shared memory; a larger k is
// chosen on the host (kiln_kernels_cuda::launch::TOP_K_MAX, the same number).
#define TOP_K_MAX 1024u
#define TOP_K_THREADS 1024u
#define TOP_K_BINS 256u

// The bits of a logit as an unsigned key that orders as the floats do (-0 made +0; NaN
// rows never get here): negatives flipped whole, positives above them.
__device__ __forceinline__ unsigned int order_key(float x) {
    unsigned int b = f32_bits(x);
    b = b == 0x80000000u ? 0u : b;
    return (b & 0x80000000u) != 0u ? ~b : (b | 0x80000000u);
}

// A candidate as one word that sorts descending by (key desc, id asc).
__device__ __forceinline__ unsigned long long candidate(unsigned int key, unsigned int id) {
    return ((unsigned long long)key << 32) | (unsigned long long)(~id);
}

__device__ __forceinline__ unsigned int warp_sum_u32(unsigned int v) {
#pragma unroll
    for (unsigned int s = WARP / 2u; s > 0u; s /= 2u) {
        v += __shfl_xor_sync(0xFFFFFFFFu, v, s);
    }
    return v;
}

// The digit (0..255) of the histogram `hist` where the count from the top reaches `rank`
// (1-based), and the rank left within that digit: the next radix step. Warp 0 scans, lane
// l owning bins 255 - 8l down to 248 - 8l; every thread gets the answer through `sel`.
// Starts and ends at a block barrier.
__device__ __forceinline__ void select_digit(const unsigned int* hist, unsigned int rank,
                                             unsigned int* sel, unsigned int& digit,
                                             unsigned int& rank_left) {
    unsigned int lane = threadIdx.x % WARP;
    if (threadIdx.x < WARP) {
        unsigned int top = TOP_K_BINS - 1u - 8u * lane;
        unsigned int own = 0u;
#pragma unroll
        for (unsigned int j = 0u; j < 8u; j++) {
            own += hist[top - j];
        }
        // Inclusive sums over the lanes (lane 0 holds the highest bins).
        unsigned int incl = own;
#pragma unroll
        for (unsigned int s = 1u; s < WARP; s *= 2u) {
            unsigned int o = __shfl_sync(0xFFFFFFFFu, incl, lane >= s ? lane - s : lane);
            incl += lane >= s ? o : 0u;
        }
        unsigned int acc = incl - own;
        if (acc < rank && rank <= incl) {
            for (unsigned int j = 0u; j < 8u; j++) {
                unsigned int h = hist[top - j];
                if (acc + h >= rank) {
                    sel[0] = top - j;
                    sel[1] = rank - acc;
                    break;
                }
                acc += h;
            }
        }
    }
    __syncthreads();
    digit = sel[0];
    rank_left = sel[1];
}

//   p.out (rows, k, 2) each candidate's id and logit bits.
extern "C" __global__ void __launch_bounds__(TOP_K_THREADS) KILN_MAIN(const __grid_constant__ TopKArgs p) {
    __shared__ unsigned int hist[TOP_K_BINS];
    __shared__ unsigned int warp_gt[WARP]; // (warps) elements > T of each warp's range
    __shared__ unsigned int warp_eq[WARP]; // (warps) elements == T
    __shared__ unsigned int sel[2];        // select_digit's answer
    __shared__ unsigned int non_finite;    // a NaN or +inf somewhere in the row
    __shared__ unsigned long long cand[TOP_K_MAX];
    unsigned int r = blockIdx.x;
    unsigned int k = p.k;
    unsigned int cols = p.cols;
    if (r >= p.step[p.rows_sel] || k == 0u || k > TOP_K_MAX || k > cols) {
        return; // uniform across the block (the host refuses such k)
    }
    const float* row = p.logits + (unsigned long long)r * cols;
    unsigned int* out = p.out + (unsigned long long)r * k * 2u;
    unsigned int t = threadIdx.x;
    unsigned int lane = t % WARP;
    unsigned int warp = t / WARP;
    unsigned int warps = blockDim.x / WARP;

    // 1. The top digit's histogram, and the row checked for NaN / +inf.
    for (unsigned int i = t; i < TOP_K_BINS; i += blockDim.x) {
        hist[i] = 0u;
    }
    if (t == 0u) {
        non_finite = 0u;
    }
    __syncthreads();
    const float inf = bits_f32(0x7F800000u);
    bool bad = false;
    for (unsigned int c = t; c < cols; c += blockDim.x) {
        float x = row[c];
        bad = bad || !(x < inf); // NaN compares false
        atomicAdd(&hist[order_key(x) >> 24], 1u);
    }
    if (bad) {
        non_finite = 1u; // every writer writes the same value
    }
    __syncthreads();
    if (non_finite != 0u) {
        for (unsigned int q = t; q < k; q += blockDim.x) {
            out[2u * q] = 0xFFFFFFFFu;
            out[2u * q + 1u] = 0x7FC00000u;
        }
        return; // uniform: every thread read the flag after the barrier
    }
    unsigned int digit;
    unsigned int rank; // of the k-th largest among the elements matching `prefix`
    select_digit(hist, k, sel, digit, rank);
    unsigned int prefix = digit << 24;
    // The lower digits, each among the elements whose higher digits are `prefix`'s.
    for (unsigned int shift = 16u;; shift -= 8u) {
        for (unsigned int i = t; i < TOP_K_BINS; i += blockDim.x) {
            hist[i] = 0u; // select_digit's reads ended at its barrier
        }
        __syncthreads();
        unsigned int high = 0xFFFFFFFFu << (shift + 8u);
        for (unsigned int c = t; c < cols; c += blockDim.x) {
            unsigned int key = order_key(row[c]);
            if ((key & high) == prefix) {
                atomicAdd(&hist[(key >> shift) & 0xFFu], 1u);
            }
        }
        __syncthreads();
        select_digit(hist, rank, sel, digit, rank);
        prefix |= digit << shift;
        if (shift == 0u) {
            break;
        }
    }
    // The k-th largest key, the elements equal to it the top k takes (the lowest ids),
    // and so the elements above it (all taken).
    const unsigned int threshold = prefix;
    const unsigned int take_eq = rank;
    const unsigned int n_gt = k - take_eq;

    // 2. Each warp's contiguous range (whole 32-element chunks), its counts, then its
    // candidates at the slots those counts give.
    unsigned int span = (cols + warps * WARP - 1u) / (warps * WARP) * WARP;
    unsigned int lo = min(warp * span, cols);
    unsigned int hi = min(lo + span, cols);
    unsigned int gt = 0u;
    unsigned int eq = 0u;
    for (unsigned int c = lo + lane; c < hi; c += WARP) {
        unsigned int key = order_key(row[c]);
        gt += key > threshold ? 1u : 0u;
        eq += key == threshold ? 1u : 0u;
    }
    gt = warp_sum_u32(gt);
    eq = warp_sum_u32(eq);
    if (lane == 0u) {
        warp_gt[warp] = gt;
        warp_eq[warp] = eq;
    }
    __syncthreads();
    unsigned int gt_at = 0u;
    unsigned int eq_at = 0u;
    for (unsigned int w = 0u; w < warp; w++) {
        gt_at += warp_gt[w];
        eq_at += warp_eq[w];
    }
    unsigned int below = (1u << lane) - 1u; // lanes before this one
    for (unsigned int base = lo; base < hi && (gt_at < n_gt || eq_at < take_eq); base += WARP) {
        unsigned int c = base + lane;
        unsigned int key = c < hi ? order_key(row[c]) : 0u;
        bool is_gt = c < hi && key > threshold;
        bool is_eq = c < hi && key == threshold;
        unsigned int gt_lanes = __ballot_sync(0xFFFFFFFFu, is_gt);
        unsigned int eq_lanes = __ballot_sync(0xFFFFFFFFu, is_eq);
        if (is_gt) {
            cand[gt_at + __popc(gt_lanes & below)] = candidate(key, c);
        }
        unsigned int e = eq_at + __popc(eq_lanes & below);
        if (is_eq && e < take_eq) {
            cand[n_gt + e] = candidate(key, c);
        }
        gt_at += __popc(gt_lanes);
        eq_at += __popc(eq_lanes);
    }

    // 3. Bitonic sort, descending, of k candidates padded to a power of two with 0 (key
    // 0 is below every logit's, -inf's included).
    unsigned int n = 1u;
    while (n < k) {
        n *= 2u;
    }
    for (unsigned int q = k + t; q < n; q += blockDim.x) {
        cand[q] = 0ull;
    }
    for (unsigned int size = 2u; size <= n; size *= 2u) {
        for (unsigned int stride = size / 2u; stride > 0u; stride /= 2u) {
            __syncthreads();
            for (unsigned int q = t; q < n / 2u; q += blockDim.x) {
                unsigned int i = 2u * stride * (q / stride) + q % stride;
                unsigned int j = i + stride;
                bool descending = (i & size) == 0u;
                unsigned long long a = cand[i];
                unsigned long long b = cand[j];
                if ((a < b) == descending) {
                    cand[i] = b;
                    cand[j] = a;
                }
            }
        }
    }
    __syncthreads();
    for (unsigned int q = t; q < k; q += blockDim.x) {
        unsigned int id = ~(unsigned int)cand[q];
        out[2u * q] = id;
        out[2u * q + 1u] = f32_bits(row[id]);
    }
}
