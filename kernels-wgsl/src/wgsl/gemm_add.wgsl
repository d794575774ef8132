// gemm_add.wgsl: out = residual + x · Wᵀ, the residual added in the epilogue (the tiled
// twin of matmul_add.wgsl).

const GEMM_NORM: bool = false;
const GEMM_GATED: bool = false;

@compute @workgroup_size(256)
fn main(ids: GemmIds) {
    let g = gemm_tile(ids);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let o = gemm_out(g, i, j);
            if (o.live) {
                arena[o.at] = arena[o.at - p.out + p.res] + g.acc[i][j];
            }
        }
    }
}
