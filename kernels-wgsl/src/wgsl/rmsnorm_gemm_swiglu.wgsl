// rmsnorm_gemm_swiglu.wgsl: RMSNorm, gate/up matmuls and SwiGLU in one tiled kernel (the
// tiled twin of rmsnorm_matmul_swiglu.wgsl).

const GEMM_NORM: bool = true;
const GEMM_GATED: bool = true;

@compute @workgroup_size(256)
fn main(ids: GemmIds) {
    let g = gemm_tile(ids);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 2u; j++) {
            let o = gemm_out(g, i, j);
            if (o.live) {
                arena[o.at] = silu(g.acc[i][j]) * g.acc[i][j + 2u];
            }
        }
    }
}
