// weights/bf16.wgsl: bfloat16 rows (the high half of an f32). Unit u: columns 8u .. 8u+7.

fn unit_cols(u: u32) -> vec2<u32> {
    return vec2<u32>(8u * u, 8u * u + 4u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let at = row + 16u * u;
    let a = bf16x2(load_word(at));
    let b = bf16x2(load_word(at + 4u));
    let c = bf16x2(load_word(at + 8u));
    let d = bf16x2(load_word(at + 12u));
    return W8(vec4<f32>(a, b), vec4<f32>(c, d));
}
