// quantize_core.wgsl: f32 activation rows to the int8 blocks the int8 matvec reads
// (matvec_core.wgsl), once per launch: per 32 values, d = amax / 127 and q = round(x / d)
// (four to a word, column order), with d and Σq (exact, an i32) beside them. The arena
// is read and written as words here (the quants are not floats).
//
// Grid (rows of the step, 1, 1): workgroup t quantizes row t; a thread per block.

struct Params {
    rows_sel: u32, // STEP_N_TOKENS or STEP_N_OUTPUTS: what the rows count
    k: u32,        // columns (a multiple of 32)
    x: u32,        // arena index of the input (rows, k)
    q: u32,        // arena word of the quants (rows, k / 4)
    ds: u32,       // arena word of the (d, Σq) pairs (rows, k / 32, 2)
    norm: u32,     // word index of the RMSNorm weight (k), rmsnorm_quantize_q8's
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<u32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

fn x_at(t: u32, c: u32) -> f32 {
    return bitcast<f32>(arena[p.x + t * p.k + c]);
}

// Row t of the input (`quant_src`, the op file's: with `scale` and the norm), quantized by
// thread `lid` of the workgroup.
fn quantize_row(t: u32, lid: u32, scale: f32) {
    let blocks = p.k / 32u;
    for (var b = lid; b < blocks; b += WG) {
        let c0 = 32u * b;
        var amax = 0.0;
        for (var i = 0u; i < 32u; i++) {
            amax = max(amax, abs(quant_src(t, c0 + i, scale)));
        }
        let d = amax / 127.0;
        let id = select(0.0, 1.0 / d, d != 0.0);
        var sum = 0i;
        for (var j = 0u; j < 8u; j++) {
            var word = 0u;
            for (var i = 0u; i < 4u; i++) {
                // |x / d| <= 127 up to rounding: the clamp only guards the conversion.
                let q = i32(clamp(round(quant_src(t, c0 + 4u * j + i, scale) * id), -127.0, 127.0));
                sum += q;
                word |= (bitcast<u32>(q) & 0xFFu) << (8u * i);
            }
            arena[p.q + t * (p.k / 4u) + 8u * b + j] = word;
        }
        let at = p.ds + 2u * (t * blocks + b);
        arena[at] = bitcast<u32>(d);
        arena[at + 1u] = bitcast<u32>(sum);
    }
}
