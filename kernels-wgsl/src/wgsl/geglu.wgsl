// geglu.wgsl: out = gelu(gate) · up, elementwise over (rows, cols); GELU in its tanh
// form, rounded as llama.cpp's CPU backend rounds it (prelude: gelu_f16).

struct Params {
    rows_sel: u32,
    cols: u32,
    gate: u32,
    up: u32,
    out: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, n_wg, lid);
    if (i < step[p.rows_sel] * p.cols) {
        arena[p.out + i] = gelu_f16(arena[p.gate + i]) * arena[p.up + i];
    }
}
