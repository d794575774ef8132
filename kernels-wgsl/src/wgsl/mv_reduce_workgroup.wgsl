// mv_reduce_workgroup.wgsl: the int8 matvec's row groups without subgroup operations:
// four groups of 16 threads, summed through workgroup memory (a tree within each
// group). Same functions as mv_reduce_subgroup.wgsl.

struct Lanes {
    @builtin(local_invocation_index) lid: u32,
}

const MV_GROUP: u32 = 16u;

var<workgroup> mv_red: array<f32, 512>; // (TILE_T, WG)

// A row group: its index, how many there are, this thread's lane in it, its lanes.
struct Group {
    id: u32,
    count: u32,
    lane: u32,
    size: u32,
}

fn row_group(ln: Lanes) -> Group {
    return Group(ln.lid / MV_GROUP, WG / MV_GROUP, ln.lid % MV_GROUP, MV_GROUP);
}

// Σ over the row group's lanes of each of the eight accumulators; every lane gets them.
// Called by the whole workgroup at once (its barriers).
fn group_sum8(acc: array<f32, 8>, g: Group) -> array<f32, 8> {
    let lid = g.id * MV_GROUP + g.lane;
    for (var t = 0u; t < TILE_T; t++) {
        mv_red[t * WG + lid] = acc[t];
    }
    workgroupBarrier();
    for (var s = MV_GROUP / 2u; s > 0u; s = s / 2u) {
        if (g.lane < s) {
            for (var t = 0u; t < TILE_T; t++) {
                mv_red[t * WG + lid] += mv_red[t * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
    var out: array<f32, 8>;
    for (var t = 0u; t < TILE_T; t++) {
        out[t] = mv_red[t * WG + g.id * MV_GROUP];
    }
    workgroupBarrier();
    return out;
}
