// weights/q4_0.wgsl: blocks of 32 values, f16 d and 16 bytes of nibbles (low nibbles
// elements 0-15, high 16-31); value = (q - 8)·d. Rows packed at load (repack.rs): groups
// of 8 blocks of 144 bytes, the 8 scales (16 bytes) then the 8 blocks' nibbles.
// Unit u: block u/4, word u%4.

fn unit_cols(u: u32) -> vec2<u32> {
    let c = 32u * (u / 4u) + 4u * (u % 4u);
    return vec2<u32>(c, c + 16u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let b = u / 4u;
    let group = row + 144u * (b / 8u);
    let d = f16_at(group + 2u * (b % 8u));
    let q = weights[(group + 16u + 16u * (b % 8u) + 4u * (u % 4u)) >> 2u];
    return W8((lo_nibbles(q) - 8.0) * d, (hi_nibbles(q) - 8.0) * d);
}
