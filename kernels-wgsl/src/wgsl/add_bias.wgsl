// add_bias.wgsl: out = x + bias on every row, elementwise over (rows, cols) (Qwen 2's
// q/k/v biases). The bias is a vector weight (f32 in `weights`).

struct Params {
    rows_sel: u32,
    cols: u32,
    x: u32,    // arena index of the input (rows, cols)
    out: u32,  // arena index of the output (rows, cols)
    bias: u32, // word index of the bias (cols) in `weights`
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, n_wg, lid);
    if (i < step[p.rows_sel] * p.cols) {
        arena[p.out + i] = arena[p.x + i] + vector_at(p.bias + i % p.cols);
    }
}
