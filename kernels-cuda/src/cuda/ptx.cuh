// ptx.cuh: every inline PTX instruction of the kernels, each in one small wrapper, and
// nothing else. Kernels call these, never `asm` themselves, so that the host emulator
// (backends/cuda-emu) can stand in a C++ twin of exactly this file (it defines
// KILN_HOST_PTX and its own ptx_* functions of the same signatures); NVRTC never defines
// it and compiles the same instructions as before they were gathered here.

#ifndef KILN_HOST_PTX

// IEEE half -> f32 (exact).
__device__ __forceinline__ float ptx_f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// f32 -> IEEE half, round to nearest even.
__device__ __forceinline__ unsigned short ptx_f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Two f32 -> two E4M3 (round to nearest even, saturating to ±448, sm_89+): `hi` goes to
// the upper byte, `lo` to the lower (the instruction's first source is the upper).
__device__ __forceinline__ unsigned short ptx_e4m3x2_from_f32(float hi, float lo) {
    unsigned short pair;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(hi), "f"(lo));
    return pair;
}

// Two E4M3 -> two IEEE halves (exact, sm_89+): low byte to the low half.
__device__ __forceinline__ unsigned int ptx_f16x2_from_e4m3x2(unsigned short pair) {
    unsigned int h;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h) : "h"(pair));
    return h;
}

// d += a (16×16 f16, row) · b (16×8 f16, col), f32 accumulators; the fragments of the
// PTX ISA's m16n8k16 layout. A warp-wide instruction: every lane calls it (sm_80+).
__device__ __forceinline__ void ptx_mma_m16n8k16(float* d, const unsigned int* a, const unsigned int* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d += a (16×32 s8, row) · b (32×8 s8, col), s32 accumulators; the PTX ISA's m16n8k32
// fragments (a[0] A[g][4c .. 4c+3], a[1] A[g+8][4c ..], a[2] A[g][16+4c ..], a[3]
// A[g+8][16+4c ..]; b[0] B[4c .. 4c+3][g], b[1] B[16+4c ..][g]; g = lane / 4, c = lane % 4).
// A warp-wide instruction (IMMA, sm_80+).
__device__ __forceinline__ void ptx_mma_m16n8k32_s8(int* d, const unsigned int* a, const unsigned int* b) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Σ a_i · b_i over the four signed bytes of each word, plus c (IDP.4A). Volatile: see
// mv/common.cuh's mv_dp4a for why the order of these matters.
__device__ __forceinline__ int ptx_dp4a(unsigned int a, unsigned int b, int c) {
    int d;
    asm volatile("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// p ? a : b as a register select (selp), never a select of addresses.
__device__ __forceinline__ float ptx_selp_f32(bool p, float a, float b) {
    float r;
    asm("{\n\t.reg .pred q;\n\tsetp.ne.u32 q, %3, 0;\n\tselp.f32 %0, %1, %2, q;\n\t}"
        : "=f"(r)
        : "f"(a), "f"(b), "r"((unsigned int)p));
    return r;
}

// 16 read-only bytes (16-byte aligned) not kept in L1.
__device__ __forceinline__ uint4 ptx_ld_nc_no_allocate_v4(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// 16 read-only bytes (16-byte aligned), cached.
__device__ __forceinline__ uint4 ptx_ld_nc_v4(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

// One read-only word, cached.
__device__ __forceinline__ unsigned int ptx_ld_nc_u32(const unsigned int* p) {
    unsigned int v;
    asm volatile("ld.global.nc.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}

// The shared-window address of a generic pointer to shared memory (cp.async's operand).
__device__ __forceinline__ unsigned int ptx_shared_addr(const void* p) {
    unsigned long long a;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
    return (unsigned int)a;
}

// Asynchronous copies global -> shared of 16 bytes (bypassing L1) and 4 bytes (sm_80+).
__device__ __forceinline__ void ptx_cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(ptx_shared_addr(dst)), "l"(src));
}

__device__ __forceinline__ void ptx_cp_async4(void* dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(ptx_shared_addr(dst)), "l"(src));
}

// Close the group of the copies issued since the last commit.
__device__ __forceinline__ void ptx_cp_async_commit() { asm volatile("cp.async.commit_group;"); }

// Wait until no committed group (wait0), at most one (wait1) or two (wait2) is still in
// flight.
__device__ __forceinline__ void ptx_cp_async_wait0() { asm volatile("cp.async.wait_group 0;"); }
__device__ __forceinline__ void ptx_cp_async_wait1() { asm volatile("cp.async.wait_group 1;"); }
__device__ __forceinline__ void ptx_cp_async_wait2() { asm volatile("cp.async.wait_group 2;"); }

// d += a (16×16 s8, row) · b (16×8 s8, col), s32 accumulators: m16n8k32's first (or
// second) half (a[0] A[g][4c .. 4c+3], a[1] A[g+8][4c ..]; b[0] B[4c .. 4c+3][g]). IMMA,
// sm_80+.
__device__ __forceinline__ void ptx_mma_m16n8k16_s8(int* d, const unsigned int* a, unsigned int b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b));
}

// Four 8×8 matrices of 16-bit elements (8 rows of 16 bytes each) from shared memory: lane
// l gives the address of row l % 8 of matrix l / 8, and gets in r[i] the word l % 4 of row
// l / 4 of matrix i. A warp-wide instruction (LDSM, sm_75+); rows 16-byte aligned.
__device__ __forceinline__ void ptx_ldmatrix_x4(unsigned int* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(ptx_shared_addr(p)));
}

// The same, each matrix transposed: r[i] of lane l holds the elements (2(l % 4), l / 4)
// and (2(l % 4) + 1, l / 4) of matrix i (row, column), the first in the low half: from a
// row-major (k, n) tile, the B fragment of mma.m16n8k16.
__device__ __forceinline__ void ptx_ldmatrix_x4_trans(unsigned int* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(ptx_shared_addr(p)));
}

// Stop the kernel (a path the host never launches).
__device__ __forceinline__ void ptx_trap() { asm volatile("trap;"); }

// Hopper's warpgroup MMA (wgmma, sm_90a: NVRTC --gpu-architecture=sm_90a defines
// __CUDA_ARCH_FEAT_SM90_ALL; other targets compile without these, and the kernels that
// call them trap there). A warpgroup is 4 consecutive warps (threads 128i .. 128i + 127);
// every thread of it calls each of these together. Shared-memory operands are read by
// the async proxy: generic stores to them need ptx_fence_proxy_async and a barrier first.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// Order this thread's earlier register writes (accumulators, A fragments) before the
// wgmma that follow (wgmma.fence: required before the first wgmma and whenever the
// accumulators or A registers were written in between).
__device__ __forceinline__ void ptx_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }

// Close the group of the wgmma issued since the last commit.
__device__ __forceinline__ void ptx_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }

// Wait until at most N committed wgmma groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void ptx_wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }

// After a wait: tie each of the 32 accumulators d to this point (an empty asm that
// "writes" them), so that the compiler moves no read of d above the wait.
__device__ __forceinline__ void ptx_wgmma_hold(float* d) {
#pragma unroll
    for (int i = 0; i < 32; i++) {
        asm volatile("" : "+f"(d[i])::"memory");
    }
}

// Make this thread's generic-proxy writes to shared memory visible to the async proxy
// (wgmma's operand reads); a barrier then orders every thread's.
__device__ __forceinline__ void ptx_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// The matrix descriptor of a shared-memory operand (PTX ISA, "Matrix Descriptor Format"),
// no swizzle (mode 0), base offset 0: bits 0-13 the start address, 16-29 the leading
// byte offset, 32-45 the stride byte offset, each in units of 16 bytes. The layout this
// describes (K-major, the only one the kernels use): 8×8 "core matrices" of f16, each 128
// contiguous bytes (row r at 16r); `lbo` bytes between core matrices adjacent in K,
// `sbo` bytes between those adjacent in M (A) or N (B).
__device__ __forceinline__ unsigned long long ptx_wgmma_desc(const void* p, unsigned int lbo, unsigned int sbo) {
    unsigned long long a = (unsigned long long)((ptx_shared_addr(p) & 0x3FFFFu) >> 4);
    return a | ((unsigned long long)((lbo >> 4) & 0x3FFFu) << 16) | ((unsigned long long)((sbo >> 4) & 0x3FFFu) << 32);
}

// d (64×64 f32, 32 a thread) = A (64×16 f16, descriptor a) · B (16×64 f16, descriptor b,
// K-major: N rows of K) + (accumulate ? d : 0), both operands from shared memory, no
// transposes. Fragment of d: warp w of the warpgroup holds rows 16w .. 16w + 15; lane l,
// g = l / 4, c = l % 4: d[4i + e] is row 16w + g + 8(e / 2), column 8i + 2c + e % 2.
// Asynchronous: d is not to be touched until ptx_wgmma_wait.
__device__ __forceinline__ void ptx_wgmma_m64n64k16_ss(float* d, unsigned long long a, unsigned long long b,
                                                         int accumulate) {
    asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %34, 0;\n\t"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n\t}"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(a), "l"(b), "r"(accumulate));
}

// The same with A from registers: a[0..3] as mma.m16n8k16's A fragment of the warp's 16
// rows (16w .. 16w + 15 of the 64): a[0] (g, 2c .. 2c+1), a[1] (g+8, 2c ..), a[2] (g,
// 2c+8 ..), a[3] (g+8, 2c+8 ..), low half first.
__device__ __forceinline__ void ptx_wgmma_m64n64k16_rs(float* d, const unsigned int* a, unsigned long long b,
                                                         int accumulate) {
    asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %37, 0;\n\t"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n\t}"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
}

#endif // __CUDA_ARCH_FEAT_SM90_ALL

#endif // KILN_HOST_PTX
