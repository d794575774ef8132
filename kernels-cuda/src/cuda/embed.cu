// embed.cu: out (tokens, d) = rows `token_ids` of the table, dequantized (embed.wgsl).
// One thread per 8 values; grid (ceil(d / 8 / WG), tokens), blocks of WG threads; a
// table larger than a binding is read by several dispatches, each over its rows.

#include "prelude.cuh"
#include "weights/common.cuh"
#include "weights.cuh"

struct EmbedParams {
    unsigned int table;     // byte offset of row `row0` of the table in `weights`
    unsigned int row_bytes; // bytes of one table row
    unsigned int d;         // width
    unsigned int out;       // arena index of the output (tokens, d)
    unsigned int row0;      // the table rows this dispatch holds: row0 .. row0 + rows
    unsigned int rows;
};

KILN_KERNEL {
    KILN_UNUSED_ARGS
    const EmbedParams& p = *reinterpret_cast<const EmbedParams*>(params);
    unsigned int u = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int t = blockIdx.y;
    if (u >= (p.d + 7u) / 8u || t >= step[STEP_N_TOKENS]) {
        return;
    }
    unsigned int id = step[step[STEP_IDS] + t];
    if (id < p.row0 || id - p.row0 >= p.rows) {
        return; // another dispatch's rows
    }
    W8 w = w_unit(weights, p.table + (id - p.row0) * p.row_bytes, u);
    u32x2 c = unit_cols(u);
    float lo[4] = {w.lo.x, w.lo.y, w.lo.z, w.lo.w};
    float hi[4] = {w.hi.x, w.hi.y, w.hi.z, w.hi.w};
    float* row = arena + p.out + t * p.d;
    // Rows of F32/F16/BF16 tables may end inside a unit: values past d are not written.
    for (unsigned int i = 0u; i < 4u; i++) {
        if (c.x + i < p.d) {
            row[c.x + i] = lo[i];
        }
        if (c.y + i < p.d) {
            row[c.y + i] = hi[i];
        }
    }
}
