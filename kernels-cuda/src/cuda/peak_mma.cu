// peak_mma.cu: the tensor-core peak for Backend::ceilings: every warp issues PEAK_CHAINS
// independent mma.sync m16n8k16 (f16 in, f32 accumulators) per iteration on registers,
// no memory traffic, so the time is the tensor cores' issue rate. 4096 FLOP each.

#define PEAK_CHAINS 8

extern "C" __global__ void __launch_bounds__(128) peak_mma_f16(const PeakArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    // f16 pairs near 1, different per lane (no constant folding of the operands).
    unsigned int x = 0x3c003c00u ^ (threadIdx.x & 7u);
    unsigned int fa[4] = {x, x ^ 1u, x ^ 2u, x ^ 3u};
    unsigned int fb[2] = {x ^ 4u, x ^ 5u};
    float d[PEAK_CHAINS][4];
#pragma unroll
    for (int c = 0; c < PEAK_CHAINS; c++) {
        d[c][0] = d[c][1] = d[c][2] = d[c][3] = 0.0f;
    }
    for (unsigned int i = 0u; i < a.iters; i++) {
#pragma unroll
        for (int c = 0; c < PEAK_CHAINS; c++) {
            ptx_mma_m16n8k16(d[c], fa, fb);
        }
    }
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < PEAK_CHAINS; c++) {
        s += d[c][0] + d[c][1] + d[c][2] + d[c][3];
    }
    a.out[blockIdx.x * blockDim.x + threadIdx.x] = s; // keeps every chain live
#else
    // mma.sync m16n8k16 needs sm_80; the host never launches this below.
    (void)a;
    ptx_trap();
#endif
}
