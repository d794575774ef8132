// embed.cu: out (tokens, d) = rows `token_ids` of the table, dequantized (embed.wgsl).
// One thread per 8 values; grid (ceil(d / 8 / WG), tokens), blocks of WG threads.

#include "prelude.cuh"
#include "weights/common.cuh"
#include "weights.cuh"

struct EmbedParams {
    unsigned int table;     // byte offset of the table in `weights`
    unsigned int row_bytes; // bytes of one table row
    unsigned int d;         // width
    unsigned int out;       // arena index of the output (tokens, d)
};

KILN_KERNEL {
    KILN_UNUSED_ARGS
    const EmbedParams& p = *reinterpret_cast<const EmbedParams*>(params);
    unsigned int u = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int t = blockIdx.y;
    if (u >= p.d / 8u || t >= step[STEP_N_TOKENS]) {
        return;
    }
    unsigned int id = step[step[STEP_IDS] + t];
    W8 w = w_unit(weights, p.table + id * p.row_bytes, u);
    u32x2 c = unit_cols(u);
    float* lo = arena + p.out + t * p.d + c.x;
    float* hi = arena + p.out + t * p.d + c.y;
    lo[0] = w.lo.x;
    lo[1] = w.lo.y;
    lo[2] = w.lo.z;
    lo[3] = w.lo.w;
    hi[0] = w.hi.x;
    hi[1] = w.hi.y;
    hi[2] = w.hi.z;
    hi[3] = w.hi.w;
}
