// rope_common.wgsl: RoPE in ggml's "normal" mode: adjacent pairs (x[2i], x[2i+1]) of the
// first rope_dims of each head rotate; cos/sin of every (token, pair) come with the step
// (computed on the host in f64, as the CPU backend does).

// Element d of the rotated head whose values start at arena index `head`, token t.
fn rope_at(head: u32, t: u32, d: u32) -> f32 {
    let pairs = step[STEP_ROPE_PAIRS];
    let i = d / 2u;
    if (i >= pairs) {
        return arena[head + d];
    }
    let a = arena[head + 2u * i];
    let b = arena[head + 2u * i + 1u];
    let at = step[STEP_ROPE] + (t * pairs + i) * 2u;
    let c = bitcast<f32>(step[at]);
    let s = bitcast<f32>(step[at + 1u]);
    return select(a * s + b * c, a * c - b * s, d % 2u == 0u);
}
