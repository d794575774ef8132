// reduce_workgroup.wgsl: workgroup sums and maxima through workgroup memory, for devices
// without subgroup operations. Same functions as reduce_subgroup.wgsl.

struct Lanes {
    @builtin(local_invocation_index) lid: u32,
}

var<workgroup> red: array<f32, 512>; // (TILE_T, WG)

// Σ over the workgroup of each of the eight accumulators; every thread gets the sums.
fn wg_sum8(acc: array<f32, 8>, ln: Lanes) -> array<f32, 8> {
    for (var t = 0u; t < TILE_T; t++) {
        red[t * WG + ln.lid] = acc[t];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (ln.lid < s) {
            for (var t = 0u; t < TILE_T; t++) {
                red[t * WG + ln.lid] += red[t * WG + ln.lid + s];
            }
        }
        workgroupBarrier();
    }
    var out: array<f32, 8>;
    for (var t = 0u; t < TILE_T; t++) {
        out[t] = red[t * WG];
    }
    workgroupBarrier();
    return out;
}

fn wg_sum(v: f32, ln: Lanes) -> f32 {
    red[ln.lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (ln.lid < s) {
            red[ln.lid] += red[ln.lid + s];
        }
        workgroupBarrier();
    }
    let out = red[0];
    workgroupBarrier();
    return out;
}

fn wg_max(v: f32, ln: Lanes) -> f32 {
    red[ln.lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (ln.lid < s) {
            red[ln.lid] = max(red[ln.lid], red[ln.lid + s]);
        }
        workgroupBarrier();
    }
    let out = red[0];
    workgroupBarrier();
    return out;
}
