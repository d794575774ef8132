// rope_common.cuh: RoPE of geometry `r` of the step's directory (STEP_ROPE_DIR): pair
// i < pairs of each head rotates by the (token, pair) cos/sin of its table (computed on
// the host in f64, as the CPU backend does). ggml's normal mode pairs adjacent values
// (x[2i], x[2i+1]); NeoX mode pairs the halves (x[i], x[i + pairs]). As rope_common.wgsl.

// Element d of the rotated head whose values start at `head`, token t.
__device__ __forceinline__ float rope_at(const float* head, const unsigned int* __restrict__ step, unsigned int t,
                                         unsigned int d, unsigned int r) {
    unsigned int dir = step[STEP_ROPE_DIR] + 3u * r;
    unsigned int pairs = step[dir + 1u];
    bool neox = step[dir + 2u] != 0u;
    // Pair i sits at (ia, ib); `first` is whether d is its first value.
    unsigned int i = d / 2u;
    unsigned int ia = 2u * i;
    unsigned int ib = ia + 1u;
    bool first = d % 2u == 0u;
    if (neox && pairs > 0u) {
        i = d % pairs;
        ia = i;
        ib = i + pairs;
        first = d < pairs;
        if (d >= 2u * pairs) {
            return head[d];
        }
    } else if (i >= pairs) {
        return head[d];
    }
    float a = head[ia];
    float b = head[ib];
    unsigned int at = step[dir] + (t * pairs + i) * 2u;
    float c = bits_f32(step[at]);
    float s = bits_f32(step[at + 1u]);
    return first ? a * c - b * s : a * s + b * c;
}
