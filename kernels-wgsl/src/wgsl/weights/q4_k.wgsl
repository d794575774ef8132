// weights/q4_k.wgsl: super-blocks of 256 values in 144 bytes: f16 d, f16 dmin, 12 bytes
// of 6-bit scales and minimums (k_scale_min), 128 bytes of nibbles in 4 chunks of 32:
// chunk c holds sub-block 2c in its low nibbles and 2c + 1 in its high ones;
// value = (d·sc)·q - dmin·m. Unit u: super-block u/32, word w = u%32 of the nibbles
// (chunk w/8): 4 values of sub-block 2c and the 4 of sub-block 2c + 1 32 columns on.

fn unit_cols(u: u32) -> vec2<u32> {
    let w = u % 32u;
    let c = 256u * (u / 32u) + 64u * (w / 8u) + 4u * (w % 8u);
    return vec2<u32>(c, c + 32u);
}

fn w_unit(row: u32, u: u32) -> W8 {
    let blk = row + 144u * (u / 32u);
    let w = u % 32u;
    let dm = unpack2x16float(load_word(blk));
    let j = 2u * (w / 8u);
    let s0 = k_scale_min(blk + 4u, j);
    let s1 = k_scale_min(blk + 4u, j + 1u);
    let q = load_word(blk + 16u + 4u * w);
    let lo = (dm.x * s0.x) * lo_nibbles(q) - dm.y * s0.y;
    let hi = (dm.x * s1.x) * hi_nibbles(q) - dm.y * s1.y;
    return W8(lo, hi);
}
