// rmsnorm_gemm.wgsl: RMSNorm folded into the tiled matmul it feeds: each tile computes
// the 1/rms of its tokens, and the normed input is never stored (the tiled twin of
// rmsnorm_matmul.wgsl).

const GEMM_NORM: bool = true;
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
