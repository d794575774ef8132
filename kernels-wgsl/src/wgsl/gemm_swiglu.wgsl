// gemm_swiglu.wgsl: out = silu(x · Gateᵀ) · (x · Upᵀ), gate and up interleaved in the
// tile's slots (the tiled twin of matmul_swiglu.wgsl).

const GEMM_NORM: bool = false;
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
