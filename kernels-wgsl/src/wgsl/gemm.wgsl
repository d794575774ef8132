// gemm.wgsl: out (rows, n) = x (rows, k) · Wᵀ, the tiled twin of matmul.wgsl for steps
// of many tokens (gemm_core.wgsl). A MatMul of several weights is one dispatch per weight.

const GEMM_NORM: bool = false;
const GEMM_GATED: bool = false;

@compute @workgroup_size(256)
fn main(ids: GemmIds) {
    let g = gemm_tile(ids);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let o = gemm_out(g, i, j);
            if (o.live) {
                arena[o.at] = g.acc[i][j];
            }
        }
    }
}
