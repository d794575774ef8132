// scale.wgsl: out = x · factor, elementwise over (rows, cols) (Gemma's embedding scale).

struct Params {
    rows_sel: u32,
    cols: u32,
    x: u32,   // arena index of the input (rows, cols)
    out: u32, // arena index of the output (rows, cols)
    factor: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, n_wg, lid);
    if (i < step[p.rows_sel] * p.cols) {
        arena[p.out + i] = arena[p.x + i] * p.factor;
    }
}
