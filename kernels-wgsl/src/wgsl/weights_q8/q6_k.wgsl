// weights_q8/q6_k.wgsl: a 32-value block of Q6_K for the int8 matvec, from the packed
// rows (repack.rs: groups of 8 super-blocks, 105 vec4s: the 8 f16 d, then each
// super-block's 13: ql (8), qh (4), the 16 signed scales (1)). Block j of a super-block
// is values 32j .. 32j+31: half h = j/4, quarter s = j%4; its low 4 bits are the
// nibbles (low for s < 2, high for s >= 2) of ql[64h + 32·(s%2) ..], its high 2 bits
// those of qh[32h ..] at shift 2s; its two 16-value halves take scales 8h + 2s and
// 8h + 2s + 1. value = (d·scale)·(q − 32): q − 32 (−32..31) is the signed byte, c = 0.

// The 6-bit values of a word (0..63 a byte) as signed bytes q − 32: flipping bit 5 gives
// q − 32 in 6-bit two's complement; bit 5 then copied to bits 6 and 7 (0x20·6 = 0xC0,
// no carry between bytes).
fn q6_signed(q: vec4<u32>) -> vec4<u32> {
    let t = q ^ vec4<u32>(0x20202020u);
    return t | ((t & vec4<u32>(0x20202020u)) * 6u);
}

fn w_block(row: u32, b: u32) -> WBlock {
    let group = row + 105u * (b / 64u);
    let k = (b / 8u) % 8u;
    let sb = group + 1u + 13u * k;
    let j = b % 8u;
    let h = j / 4u;
    let s = j % 4u;
    let ql = sb + 4u * h + 2u * (s % 2u);
    let qh = sb + 8u + 2u * h;
    let nib = vec4<u32>(4u * (s / 2u));
    let hs = vec4<u32>(2u * s);
    let m4 = vec4<u32>(0x0F0F0F0Fu);
    let m2 = vec4<u32>(0x03030303u);
    let lo = ((wv[ql] >> nib) & m4) | (((wv[qh] >> hs) & m2) << vec4<u32>(4u));
    let hi = ((wv[ql + 1u] >> nib) & m4) | (((wv[qh + 1u] >> hs) & m2) << vec4<u32>(4u));
    let d = unpack2x16float(wv[group][k / 2u])[k % 2u];
    // Scales 8h + 2s and the next: bytes 2·(s%2) and +1 of word h·2 + s/2.
    let sw = wv[sb + 12u][2u * h + s / 2u];
    let sh = 16u * (s % 2u);
    let sc_lo = f32(bitcast<i32>(sw << (24u - sh)) >> 24u);
    let sc_hi = f32(bitcast<i32>(sw << (16u - sh)) >> 24u);
    return WBlock(q6_signed(lo), q6_signed(hi), d * vec2<f32>(sc_lo, sc_hi), 0.0);
}
