// gemm_coop_native.wgsl: gemm_tiles_coop.wgsl's matrix operations as WGSL's cooperative
// matrices (the variant's source starts with `enable wgpu_cooperative_matrix;`): each
// is one subgroup's, in control flow uniform across it. The twin that runs anywhere is
// gemm_coop_twin.wgsl.

struct GemmIds {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) n_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
}

alias GemmA = coop_mat16x16<f16, A>;
alias GemmB = coop_mat16x16<f16, B>;
alias GemmC = coop_mat16x16<f32, C>;

// (this thread's subgroup, the workgroup's subgroups)
fn gemm_subgroup(ids: GemmIds) -> vec2<u32> {
    return vec2<u32>(ids.sg_id, ids.sg_count);
}

// 16 tokens × 16 columns from xs[at]: element (r, c) at xs[at + r·GEMM_XS + c].
fn gemm_load_a(at: u32) -> GemmA {
    return coopLoadT<GemmA>(&xs[at], GEMM_XS);
}

// 16 columns × 16 slots from ws[at]: element (c, s) at ws[at + s·GEMM_XS + c].
fn gemm_load_b(at: u32) -> GemmB {
    return coopLoad<GemmB>(&ws[at], GEMM_XS);
}

fn gemm_mma(a: GemmA, b: GemmB, c: GemmC) -> GemmC {
    return coopMultiplyAdd(a, b, c);
}

// 16 tokens × 16 slots to cs[at]: element (r, s) at cs[at + r·GEMM_CS + s].
fn gemm_store_c(c: GemmC, at: u32) {
    coopStoreT(c, &cs[at], GEMM_CS);
}
