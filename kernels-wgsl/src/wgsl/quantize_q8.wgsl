// quantize_q8.wgsl: a matmul launch's input rows quantized once to int8 blocks
// (quantize_core.wgsl) for its int8 matvecs.

fn quant_src(t: u32, c: u32, scale: f32) -> f32 {
    return x_at(t, c);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (wg.x >= step[p.rows_sel]) {
        return;
    }
    quantize_row(wg.x, lid, 1.0);
}
