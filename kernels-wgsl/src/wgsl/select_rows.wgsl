// select_rows.wgsl: out (outputs, cols) = rows `output_rows` of x (tokens, cols).

struct Params {
    cols: u32,
    x: u32,
    out: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, n_wg, lid);
    if (i < step[STEP_N_OUTPUTS] * p.cols) {
        let o = i / p.cols;
        let row = step[step[STEP_OUT_ROWS] + o];
        arena[p.out + i] = arena[p.x + row * p.cols + i % p.cols];
    }
}
