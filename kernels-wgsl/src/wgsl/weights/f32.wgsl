// weights/f32.wgsl: plain f32 rows. Unit u: columns 8u .. 8u+7.

fn unit_cols(u: u32) -> vec2<u32> {
    return vec2<u32>(8u * u, 8u * u + 4u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let i = (row >> 2u) + 8u * u;
    let lo = vec4<f32>(bitcast<f32>(weights[i]), bitcast<f32>(weights[i + 1u]), bitcast<f32>(weights[i + 2u]), bitcast<f32>(weights[i + 3u]));
    let hi = vec4<f32>(bitcast<f32>(weights[i + 4u]), bitcast<f32>(weights[i + 5u]), bitcast<f32>(weights[i + 6u]), bitcast<f32>(weights[i + 7u]));
    return W8(lo, hi);
}
