// kv_store.wgsl: one token's K or V of one KV head into its page slot: FP8 E4M3 with
// scale = max|x| / 448 (so the largest value uses the whole range), or F16. The op file
// defines kv_src(which, t, h, d), the value to store.

@group(0) @binding(3) var<storage, read_write> kv: array<u32>;

fn kv_store(which: u32, h: u32, t: u32, ln: Lanes) {
    let hd = p.head_dim;
    var m = 0.0;
    for (var d = ln.lid; d < hd; d += WG) {
        m = max(m, abs(kv_src(which, t, h, d)));
    }
    let amax = wg_max(m, ln);
    let pos = step[step[STEP_POSITIONS] + t];
    let page = page_of(t, pos);
    let slot = pos % p.page_size;
    let at = values_at(page, slot, h, which) / 4u;
    if (KV_FP8) {
        let scale = select(1.0, amax / FP8_MAX, amax > 0.0);
        for (var w = ln.lid; w < hd / 4u; w += WG) {
            var word = 0u;
            for (var i = 0u; i < 4u; i++) {
                word |= fp8_encode(kv_src(which, t, h, 4u * w + i) / scale) << (8u * i);
            }
            kv[at + w] = word;
        }
        if (ln.lid == 0u) {
            kv[scale_at(page, slot, h, which) / 4u] = bitcast<u32>(scale);
        }
    } else {
        for (var w = ln.lid; w < hd / 2u; w += WG) {
            kv[at + w] = pack2x16float(vec2<f32>(kv_src(which, t, h, 2u * w), kv_src(which, t, h, 2u * w + 1u)));
        }
    }
}
