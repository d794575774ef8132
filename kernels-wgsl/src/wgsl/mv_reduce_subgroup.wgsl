// mv_reduce_subgroup.wgsl: the int8 matvec's row groups are subgroups (whatever their
// size), summed with subgroupAdd: no workgroup memory, no barrier. Same functions as
// mv_reduce_workgroup.wgsl.

struct Lanes {
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) n_sg: u32,
    @builtin(subgroup_size) size: u32,
}

// A row group: its index, how many there are, this thread's lane in it, its lanes.
struct Group {
    id: u32,
    count: u32,
    lane: u32,
    size: u32,
}

fn row_group(ln: Lanes) -> Group {
    return Group(ln.sg, ln.n_sg, ln.lane, ln.size);
}

// Σ over the row group's lanes of each of the eight accumulators; every lane gets them.
fn group_sum8(acc: array<f32, 8>, g: Group) -> array<f32, 8> {
    var out: array<f32, 8>;
    for (var t = 0u; t < TILE_T; t++) {
        out[t] = subgroupAdd(acc[t]);
    }
    return out;
}
