// rope_common.wgsl: RoPE of geometry `r` of the step's directory (STEP_ROPE_DIR): pair
// i < pairs of each head rotates by the (token, pair) cos/sin of its table (computed on
// the host in f64, as the CPU backend does). ggml's normal mode pairs adjacent values
// (x[2i], x[2i+1]); NeoX mode pairs the halves (x[i], x[i + pairs]).

// The op file defines rope_src(head, d): value d of the head before the rotation.

// Element d of the rotated head whose values start at arena index `head`, token t.
fn rope_at(head: u32, t: u32, d: u32, r: u32) -> f32 {
    let dir = step[STEP_ROPE_DIR] + 3u * r;
    let pairs = step[dir + 1u];
    let neox = step[dir + 2u] != 0u;
    // Pair i sits at (ia, ib); `first` is whether d is its first value.
    var i = d / 2u;
    var ia = 2u * i;
    var ib = ia + 1u;
    var first = d % 2u == 0u;
    if (neox && pairs > 0u) {
        i = d % pairs;
        ia = i;
        ib = i + pairs;
        first = d < pairs;
        if (d >= 2u * pairs) {
            return rope_src(head, d);
        }
    } else if (i >= pairs) {
        return rope_src(head, d);
    }
    let a = rope_src(head, ia);
    let b = rope_src(head, ib);
    let at = step[dir] + (t * pairs + i) * 2u;
    let c = bitcast<f32>(step[at]);
    let s = bitcast<f32>(step[at + 1u]);
    return select(a * s + b * c, a * c - b * s, first);
}
