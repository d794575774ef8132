// attention_combine.cu: the merge of attention_decode.cu's splits (entry KILN_COMBINE). Split s of (token, head) left acc_s = Σ w_i v_i and (m_s, l_s) with
// its own running max; the exact result is Σ_s e^(m_s - M) acc_s / Σ_s e^(m_s - M) l_s,
// M = max_s m_s. An empty split has m_s = -1e30 and l_s = 0: its factor is 0.
// Included by attention.cu after attention_decode.cu.

// Grid (n_heads, tokens); blocks of WG threads, each thread some output dimensions.
//   p.partial: (tokens, n_heads, splits, head_dim) f32 acc, then (tokens, n_heads, splits,
//              2) f32 (m, l), as KILN_DECODE wrote it for this step's tokens.
//   p.splits:  the decode launch's gridDim.z.
extern "C" __global__ void KILN_COMBINE(const __grid_constant__ KvArgs p) {
    const float* __restrict__ partial = p.partial;
    unsigned int splits = p.splits;
    unsigned int h = blockIdx.x;
    unsigned int t = blockIdx.y;
    unsigned int hd = p.head_dim;
    unsigned int base = (t * p.n_heads + h) * splits; // (token, head, split 0)
    const float* ml = partial + gridDim.y * p.n_heads * splits * hd;
    // Every thread reads the few (m, l) itself: no shared memory, no barrier.
    float big = -1e30f;
    for (unsigned int s = 0u; s < splits; s++) {
        big = fmaxf(big, ml[2u * (base + s)]);
    }
    float denom = 0.0f;
    for (unsigned int s = 0u; s < splits; s++) {
        denom += ml[2u * (base + s) + 1u] * expf(ml[2u * (base + s)] - big);
    }
    for (unsigned int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (unsigned int s = 0u; s < splits; s++) {
            acc += partial[(base + s) * hd + d] * expf(ml[2u * (base + s)] - big);
        }
        p.q_out[(t * p.n_heads + h) * hd + d] = acc / denom;
    }
}
