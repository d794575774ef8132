// rmsnorm_common.cuh: the RMSNorm of one row by one block (rmsnorm, head_rmsnorm,
// rmsnorm_add): out = x / sqrt(mean(x²) + eps) · weight (+ res).

// Row `r` of `d` values (`live`: r is a row of the step; every thread of the block
// calls this, live or not, for the block reduction). `res` may be null.
__device__ __forceinline__ void rmsnorm_row(const RmsNormArgs& a, unsigned int r, bool live) {
    __shared__ float red[32]; // (warps) partial sums
    const float* x = a.x + (unsigned long long)r * a.d;
    float sq = 0.0f;
    if (live) {
        for (unsigned int c = threadIdx.x; c < a.d; c += blockDim.x) {
            float v = x[c];
            sq += v * v;
        }
    }
    float scale = 1.0f / sqrtf(block_sum(sq, red) / (float)a.d + a.eps);
    if (live) {
        float* out = a.out + (unsigned long long)r * a.d;
        const float* res = a.res ? a.res + (unsigned long long)r * a.d : nullptr;
        for (unsigned int c = threadIdx.x; c < a.d; c += blockDim.x) {
            float y = x[c] * scale * vector_at(a.weight, c);
            out[c] = res ? y + res[c] : y;
        }
    }
}
