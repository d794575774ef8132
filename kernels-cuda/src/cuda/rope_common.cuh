// rope_common.cuh: RoPE in ggml's "normal" mode: adjacent pairs (x[2i], x[2i+1]) of the
// first rope_dims of each head rotate; cos/sin of every (token, pair) come with the step
// (computed on the host in f64, as the CPU backend does). As rope_common.wgsl.

// Element d of the rotated head whose values start at arena index `head`, token t.
__device__ __forceinline__ float rope_at(const float* arena, const unsigned int* __restrict__ step,
                                         unsigned int head, unsigned int t, unsigned int d) {
    unsigned int pairs = step[STEP_ROPE_PAIRS];
    unsigned int i = d / 2u;
    if (i >= pairs) {
        return arena[head + d];
    }
    float a = arena[head + 2u * i];
    float b = arena[head + 2u * i + 1u];
    unsigned int at = step[STEP_ROPE] + (t * pairs + i) * 2u;
    float c = bits_f32(step[at]);
    float s = bits_f32(step[at + 1u]);
    return d % 2u == 0u ? a * c - b * s : a * s + b * c;
}
