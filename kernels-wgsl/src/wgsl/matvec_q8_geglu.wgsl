// matvec_q8_geglu.wgsl: out = gelu(x · Gateᵀ) · (x · Upᵀ) with int8 activations
// (matvec_core.wgsl), GELU as llama.cpp rounds it through f16, for MatMulGeGlu and
// RmsNormMatMulGeGlu launches.

const MV_PAIR: bool = true;

fn mv_out(at: u32, y: f32, u: f32) -> f32 {
    return gelu_f16(y) * u;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, ln: Lanes) {
    matvec(wg, n_wg, row_group(ln));
}
