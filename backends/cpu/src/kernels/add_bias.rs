//! out = x + bias, the bias added to every row (Qwen 2's q/k/v biases, as ggml_add
//! broadcasts them).

pub fn add_bias(x: &[f32], bias: &[f32], out: &mut [f32]) {
    for (o, xr) in out
        .chunks_exact_mut(bias.len())
        .zip(x.chunks_exact(bias.len()))
    {
        for ((o, &v), &b) in o.iter_mut().zip(xr).zip(bias) {
            *o = v + b;
        }
    }
}
