// matvec_q8.wgsl: out = x · Wᵀ with int8 activations (matvec_core.wgsl), for MatMul and
// RmsNormMatMul launches of decode-sized steps (the norm is in their quantization).

const MV_PAIR: bool = false;

fn mv_out(at: u32, y: f32, u: f32) -> f32 {
    return y;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, ln: Lanes) {
    matvec(wg, n_wg, row_group(ln));
}
