// matvec_q8_add.wgsl: out = residual + x · Wᵀ with int8 activations (matvec_core.wgsl).

const MV_PAIR: bool = false;

fn mv_out(at: u32, y: f32, u: f32) -> f32 {
    return bitcast<f32>(arena[at - p.out + p.res]) + y;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, ln: Lanes) {
    matvec(wg, n_wg, row_group(ln));
}
