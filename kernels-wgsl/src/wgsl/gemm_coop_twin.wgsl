// gemm_coop_twin.wgsl: gemm_coop_native.wgsl in plain WGSL, so that everything of the
// cooperative-matrix GEMM but the matrix operations themselves (its tiling, indexing,
// scales, epilogues and edges) runs where there are no cooperative matrices: the
// conformance suite's vulkan_coop_twin on lavapipe. Its subgroups are lid / 64 in
// workgroups of even id (4 subgroups of 4 blocks each, as a device of 64-wide subgroups
// runs) and lid / 32 in the others (8 of 2 blocks, as NVIDIA's 32: the blocks past 16
// skipped), whatever the device's are. A and B are where they lie in workgroup memory
// (the tiles do not change between a load and the multiply-add that reads it); C is
// spread over the subgroup, 256 / lanes elements a thread, as a device holds it.

struct GemmIds {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) n_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

struct GemmA {
    at: u32,
}

struct GemmB {
    at: u32,
}

// Element e = 16·row + column of the block is lane e % lanes's v[e / lanes].
struct GemmC {
    v: array<f32, 8>,
}

// The subgroup's width, and this thread's lane in it.
var<private> gemm_lanes: u32;
var<private> gemm_lane: u32;

fn gemm_subgroup(ids: GemmIds) -> vec2<u32> {
    gemm_lanes = select(64u, 32u, (ids.wg.x + ids.wg.y + ids.wg.z) % 2u == 1u);
    gemm_lane = ids.lid % gemm_lanes;
    return vec2<u32>(ids.lid / gemm_lanes, 256u / gemm_lanes);
}

fn gemm_load_a(at: u32) -> GemmA {
    return GemmA(at);
}

fn gemm_load_b(at: u32) -> GemmB {
    return GemmB(at);
}

// coopMultiplyAdd: c + a·b, A (r, k) at xs[a.at + r·GEMM_XS + k] (row-major, coopLoadT),
// B (k, s) at ws[b.at + s·GEMM_XS + k] (column-major, coopLoad).
fn gemm_mma(a: GemmA, b: GemmB, c: GemmC) -> GemmC {
    var out = c;
    for (var i = 0u; i < 256u / gemm_lanes; i++) {
        let e = gemm_lane + i * gemm_lanes;
        let r = e / 16u;
        let s = e % 16u;
        var sum = out.v[i];
        for (var k = 0u; k < 16u; k++) {
            sum += f32(xs[a.at + r * GEMM_XS + k]) * f32(ws[b.at + s * GEMM_XS + k]);
        }
        out.v[i] = sum;
    }
    return out;
}

// coopStoreT: element (r, s) to cs[at + r·GEMM_CS + s].
fn gemm_store_c(c: GemmC, at: u32) {
    for (var i = 0u; i < 256u / gemm_lanes; i++) {
        let e = gemm_lane + i * gemm_lanes;
        cs[at + (e / 16u) * GEMM_CS + e % 16u] = c.v[i];
    }
}
