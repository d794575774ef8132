// attention.wgsl: causal grouped-query attention over the paged KV cache, online
// softmax, any context length, optionally over a sliding window of the last `window`
// positions (pages behind it may be NO_PAGE and are never read). One workgroup per (query head, token): tiles of WG
// positions; in each, thread j scores position t0 + j (a whole K row against q in
// workgroup memory), then every thread rescales and accumulates its own head_dim / WG
// output dimensions over the tile's V rows.

@group(0) @binding(3) var<storage, read> kv: array<u32>;

const MAX_HEAD_DIM: u32 = 256u;

var<workgroup> q_sh: array<f32, 256>; // (head_dim) q · scale
var<workgroup> scores: array<f32, 64>; // (WG) the tile's scores

fn k_dot(page: u32, slot: u32, h: u32) -> f32 {
    let at = values_at(page, slot, h, 0u) / 4u;
    var s = 0.0;
    if (KV_FP8) {
        for (var w = 0u; w < p.head_dim / 4u; w++) {
            let c = kv[at + w];
            let k = vec4<f32>(fp8_decode(byte_of(c, 0u)), fp8_decode(byte_of(c, 1u)), fp8_decode(byte_of(c, 2u)), fp8_decode(byte_of(c, 3u)));
            s += dot(k, vec4<f32>(q_sh[4u * w], q_sh[4u * w + 1u], q_sh[4u * w + 2u], q_sh[4u * w + 3u]));
        }
        s *= bitcast<f32>(kv[scale_at(page, slot, h, 0u) / 4u]);
    } else {
        for (var w = 0u; w < p.head_dim / 2u; w++) {
            let k = unpack2x16float(kv[at + w]);
            s += k.x * q_sh[2u * w] + k.y * q_sh[2u * w + 1u];
        }
    }
    return s;
}

// V value d of (page, slot, h), without its FP8 scale.
fn v_at(page: u32, slot: u32, h: u32, d: u32) -> f32 {
    let at = values_at(page, slot, h, 1u) + d * KV_VALUE_BYTES;
    if (KV_FP8) {
        return fp8_decode(byte_of(kv[at / 4u], at % 4u));
    }
    let pair = unpack2x16float(kv[at / 4u]);
    return select(pair.x, pair.y, (at & 2u) != 0u);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, ln: Lanes) {
    let h = wg.x;
    let t = wg.y;
    let hd = p.head_dim;
    let kvh = h / (p.n_heads / p.n_kv_heads);
    let row = (t * p.n_heads + h) * hd;
    for (var d = ln.lid; d < hd; d += WG) {
        q_sh[d] = arena[p.q + row + d] * p.scale;
    }
    workgroupBarrier();
    let n = step[step[STEP_POSITIONS] + t] + 1u; // positions first ..= pos
    let first = select(0u, n - min(n, p.window), p.window > 0u);
    var m = -1e30; // running max score
    var l = 0.0;   // running softmax denominator
    var o: array<f32, 4>; // (head_dim / WG) this thread's output dimensions
    for (var t0 = first; t0 < n; t0 += WG) {
        let j = t0 + ln.lid;
        var s = -1e30;
        if (j < n) {
            s = k_dot(page_of(t, j), j % p.page_size, kvh);
        }
        scores[ln.lid] = s;
        workgroupBarrier();
        let cnt = min(WG, n - t0);
        var m_new = m;
        for (var i = 0u; i < cnt; i++) {
            m_new = max(m_new, scores[i]);
        }
        let corr = exp(m - m_new);
        l *= corr;
        for (var e = 0u; e < 4u; e++) {
            o[e] *= corr;
        }
        for (var i = 0u; i < cnt; i++) {
            let pos = t0 + i;
            let page = page_of(t, pos);
            let slot = pos % p.page_size;
            let pj = exp(scores[i] - m_new);
            l += pj;
            var w = pj;
            if (KV_FP8) {
                w *= bitcast<f32>(kv[scale_at(page, slot, kvh, 1u) / 4u]);
            }
            for (var e = 0u; e < 4u; e++) {
                let d = ln.lid + e * WG;
                if (d < hd) {
                    o[e] += w * v_at(page, slot, kvh, d);
                }
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    for (var e = 0u; e < 4u; e++) {
        let d = ln.lid + e * WG;
        if (d < hd) {
            arena[p.q_out + row + d] = o[e] / l;
        }
    }
}
