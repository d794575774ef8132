// embed.wgsl: out (tokens, d) = rows `token_ids` of the table, dequantized. One thread
// per 8 values; grid (ceil(d / 8 / WG), tokens). A table larger than a binding is read
// by several dispatches, each over its chunk of rows. Rows of F32/F16/BF16 tables may end
// inside a unit (d not a multiple of 8): the weights buffer leaves slack after each
// matrix for the last row's last unit, whose values past d are not written.

struct Params {
    table: u32,     // byte offset of row `row0` of the table in `weights`
    row_bytes: u32,
    d: u32,
    out: u32,       // arena index of the output
    row0: u32,      // the table rows this dispatch holds: row0 .. row0 + rows
    rows: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let u = wg.x * WG + lid;
    let t = wg.y;
    if (u >= (p.d + 7u) / 8u || t >= step[STEP_N_TOKENS]) {
        return;
    }
    let id = step[step[STEP_IDS] + t];
    if (id < p.row0 || id - p.row0 >= p.rows) {
        return; // another dispatch's rows
    }
    let w = w_unit(p.table + (id - p.row0) * p.row_bytes, u);
    let c = unit_cols(u);
    let row = p.out + t * p.d;
    for (var i = 0u; i < 4u; i++) {
        if (c.x + i < p.d) {
            arena[row + c.x + i] = w.lo[i];
        }
        if (c.y + i < p.d) {
            arena[row + c.y + i] = w.hi[i];
        }
    }
}
