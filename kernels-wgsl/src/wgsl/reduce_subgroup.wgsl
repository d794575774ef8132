// reduce_subgroup.wgsl: workgroup sums and maxima with subgroup operations (one
// subgroupAdd per subgroup, then the per-subgroup results through workgroup memory).
// Whatever the subgroup size; same functions as reduce_workgroup.wgsl.

struct Lanes {
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) n_sg: u32,
}

var<workgroup> red: array<f32, 512>; // (TILE_T, subgroups)

fn wg_sum8(acc: array<f32, 8>, ln: Lanes) -> array<f32, 8> {
    for (var t = 0u; t < TILE_T; t++) {
        let s = subgroupAdd(acc[t]);
        if (ln.lane == 0u) {
            red[t * WG + ln.sg] = s;
        }
    }
    workgroupBarrier();
    var out: array<f32, 8>;
    for (var t = 0u; t < TILE_T; t++) {
        var s = 0.0;
        for (var i = 0u; i < ln.n_sg; i++) {
            s += red[t * WG + i];
        }
        out[t] = s;
    }
    workgroupBarrier();
    return out;
}

fn wg_sum(v: f32, ln: Lanes) -> f32 {
    let s = subgroupAdd(v);
    if (ln.lane == 0u) {
        red[ln.sg] = s;
    }
    workgroupBarrier();
    var out = 0.0;
    for (var i = 0u; i < ln.n_sg; i++) {
        out += red[i];
    }
    workgroupBarrier();
    return out;
}

fn wg_max(v: f32, ln: Lanes) -> f32 {
    let s = subgroupMax(v);
    if (ln.lane == 0u) {
        red[ln.sg] = s;
    }
    workgroupBarrier();
    var out = red[0];
    for (var i = 1u; i < ln.n_sg; i++) {
        out = max(out, red[i]);
    }
    workgroupBarrier();
    return out;
}
