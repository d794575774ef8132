// argmax.wgsl: the greedy LM head: the index of the largest logit of each row of the
// plan's output (rows, cols), the lowest index on ties (-0 equals +0), NON_FINITE_ROW for
// a row holding a NaN or +inf (kiln_ir::step::argmax), so that a greedy step reads back
// one word a row instead of its logits. One workgroup per row, appended to the step's
// last launch. The comparisons are on order-preserving u32 keys of the logits' bits (no
// device's float NaN rules matter); the id is stored as an f32 (exact below 2^24; -1 for
// a non-finite row): an id's bits are a denormal, which a device may flush.

struct Params {
    rows_sel: u32,
    cols: u32,
    logits: u32, // arena index of the logits (rows, cols)
    ids: u32,    // arena index of the ids (rows)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

const NO_ID: u32 = 0xFFFFFFFFu;

var<workgroup> best_key: array<u32, 64>; // (WG) each thread's best key
var<workgroup> best_id: array<u32, 64>;  // (WG) and its index
var<workgroup> non_finite: array<u32, 64>; // (WG) a NaN or +inf seen

// The bits of a logit as a key that orders as the numbers do (-0 made +0): negatives
// flipped whole, positives above them. -inf's key is 0x007FFFFF, above 0.
fn order_key(bits: u32) -> u32 {
    let b = select(bits, 0u, bits == 0x80000000u);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = wg.y * n_wg.x + wg.x;
    let live = r < step[p.rows_sel];
    var key = 0u;
    var id = NO_ID;
    var bad = 0u;
    if (live) {
        // Columns in increasing order: an equal key later keeps the lower index.
        for (var c = lid; c < p.cols; c += WG) {
            let bits = bitcast<u32>(arena[p.logits + r * p.cols + c]);
            if ((bits & 0x7FFFFFFFu) > 0x7F800000u || bits == 0x7F800000u) {
                bad = 1u;
            }
            let k = order_key(bits);
            if (k > key) {
                key = k;
                id = c;
            }
        }
    }
    best_key[lid] = key;
    best_id[lid] = id;
    non_finite[lid] = bad;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            let k2 = best_key[lid + s];
            let i2 = best_id[lid + s];
            if (k2 > best_key[lid] || (k2 == best_key[lid] && i2 < best_id[lid])) {
                best_key[lid] = k2;
                best_id[lid] = i2;
            }
            non_finite[lid] = non_finite[lid] | non_finite[lid + s];
        }
        workgroupBarrier();
    }
    if (live && lid == 0u) {
        // An empty row: token 0, as the host's argmax gives.
        let chosen = select(best_id[0], 0u, best_id[0] == NO_ID);
        arena[p.ids + r] = select(f32(chosen), -1.0, non_finite[0] != 0u);
    }
}
