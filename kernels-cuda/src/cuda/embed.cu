// embed.cu: out (tokens, d) = rows `token_ids` of the table, dequantized (embed.wgsl).
// One thread per 8 values; grid (ceil(d / 8 / WG), tokens), blocks of WG threads.

#include "prelude.cuh"
#include "weights/common.cuh"
#include "weights.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ EmbedArgs a) {
    const unsigned int* __restrict__ step = a.step;
    unsigned int u = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int t = blockIdx.y;
    if (u >= (a.d + 7u) / 8u || t >= step[STEP_N_TOKENS]) {
        return;
    }
    unsigned int id = step[step[STEP_IDS] + t];
    if (id >= a.rows) {
        return; // the step checks ids against the vocabulary; never past the table
    }
#if W_PACKED
    // Packed (src/repack.rs): the planes of the (rows, d) table.
    PackedW pw = pw_make(a.table, a.rows, a.d / 32u);
    W8 w = pw_unit(pw, id, u);
#else
    W8 w = w_unit(a.table, id * a.row_bytes, u);
#endif
    u32x2 c = unit_cols(u);
    float lo[4] = {w.lo.x, w.lo.y, w.lo.z, w.lo.w};
    float hi[4] = {w.hi.x, w.hi.y, w.hi.z, w.hi.w};
    float* row = a.out + t * a.d;
    // Rows of F32/F16/BF16 tables may end inside a unit: values past d are not written.
    for (unsigned int i = 0u; i < 4u; i++) {
        if (c.x + i < a.d) {
            row[c.x + i] = lo[i];
        }
        if (c.y + i < a.d) {
            row[c.y + i] = hi[i];
        }
    }
}
