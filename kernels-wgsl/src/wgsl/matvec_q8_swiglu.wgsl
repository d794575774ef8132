// matvec_q8_swiglu.wgsl: out = silu(x · Gateᵀ) · (x · Upᵀ) with int8 activations
// (matvec_core.wgsl), for MatMulSwiGlu and RmsNormMatMulSwiGlu launches.

const MV_PAIR: bool = true;

fn mv_out(at: u32, y: f32, u: f32) -> f32 {
    return silu(y) * u;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, ln: Lanes) {
    matvec(wg, n_wg, row_group(ln));
}
