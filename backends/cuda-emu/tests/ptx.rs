//! The emulator's PTX twin (src/host/ptx.h) against independent Rust conversions: f32 →
//! f16 against the `half` crate, f32 → E4M3 (cvt.rn.satfinite) against kiln_ir's FP8
//! encoder, E4M3 → f16 (every code) against its decoder, on the values where rounding
//! is decided: ties, the subnormal ranges, the saturation edge, infinities.

use kiln_backend_cuda_emu::Module;
use kiln_ir::quant::fp8;

const SOURCE: &str = r#"
struct ConvArgs {
    const float* x;
    unsigned short* f16;
    unsigned short* e4m3;
    unsigned int* back;
    unsigned int n;
};
extern "C" __global__ void conv(const ConvArgs a) {
    for (unsigned int i = threadIdx.x; i < a.n; i += blockDim.x) {
        a.f16[i] = ptx_f32_to_f16(a.x[i]);
        a.e4m3[i] = ptx_e4m3x2_from_f32(a.x[i], -a.x[i]);
    }
    unsigned int pair = 2u * threadIdx.x;
    a.back[threadIdx.x] = ptx_f16x2_from_e4m3x2((unsigned short)(pair | ((pair + 1u) << 8)));
}
"#;

fn inputs() -> Vec<f32> {
    let mut x = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        448.0,
        449.0,
        464.0,
        465.0,
        1e9,
    ];
    x.extend([
        65504.0, 65519.0, 65520.0, 65536.0, 6.0e-8, 2.9e-8, 3.0e-8, 1.0e-40,
    ]);
    // E4M3 ties and their neighbours.
    for c in 0u8..0x7E {
        let (a, b) = (fp8::decode(c), fp8::decode(c + 1));
        let mid = (a + b) / 2.0;
        x.extend([
            mid,
            f32::from_bits(mid.to_bits() + 1),
            f32::from_bits(mid.to_bits() - 1),
        ]);
    }
    // f16 ties across the normal and subnormal ranges.
    for e in -26i32..16 {
        let base = 2f32.powi(e);
        for m in [1.0f32, 1.3, 1.75] {
            let v = base * m;
            let h = half::f16::from_f32(v);
            let next = half::f16::from_bits(h.to_bits() + 1).to_f32();
            x.push((h.to_f32() + next) / 2.0);
            x.push(v);
        }
    }
    let mut s = 0x9E37_79B9u32;
    for _ in 0..2000 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        // Exponents 2^-30 .. 2^33 and both signs.
        x.push(f32::from_bits(
            (s & 0x8000_0000) | ((s % 64 + 97) << 23) | (s >> 9 & 0x7F_FFFF),
        ));
    }
    x
}

/// The kernel writes through these: pointers from a mutable borrow.
fn addr_mut<T>(v: &mut [T]) -> u64 {
    v.as_mut_ptr() as u64
}

#[test]
fn conversions_match_the_rust_ones() {
    if let Err(e) = kiln_backend_cuda_emu::compile::available() {
        eprintln!("skipped: {e}");
        return;
    }
    let m = Module::build("ptx_conversions", SOURCE, &["conv".into()], 900).unwrap();
    let x = inputs();
    let n = x.len();
    let mut f16 = vec![0u16; n];
    let mut e4m3 = vec![0u16; n];
    let mut back = vec![0u32; 128];
    let mut args = Vec::new();
    let inputs = x.as_ptr() as u64;
    for a in [
        inputs,
        addr_mut(&mut f16),
        addr_mut(&mut e4m3),
        addr_mut(&mut back),
    ] {
        args.extend(a.to_le_bytes());
    }
    args.extend((n as u32).to_le_bytes());
    args.extend([0u8; 4]);
    // SAFETY: the four addresses are the vectors above, of n, n, n and 128 elements,
    // which is what the kernel reads and writes; nothing else touches them meanwhile.
    unsafe { m.launch("conv", [1, 1, 1], [128, 1, 1], 0, &args) }.unwrap();
    for (i, &v) in x.iter().enumerate() {
        assert_eq!(f16[i], half::f16::from_f32(v).to_bits(), "f16 of {v:e}");
        let (hi, lo) = ((e4m3[i] >> 8) as u8, e4m3[i] as u8);
        assert_eq!(hi, fp8::encode(v), "e4m3 of {v:e}");
        assert_eq!(lo, fp8::encode(-v), "e4m3 of {:e}", -v);
    }
    for (p, &w) in back.iter().enumerate() {
        for (c, h) in [(2 * p, w as u16), (2 * p + 1, (w >> 16) as u16)] {
            let want = fp8::decode(c as u8);
            let got = half::f16::from_bits(h).to_f32();
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "e4m3 code {c:#x}: {got} vs {want}"
            );
        }
    }
}

/// One warp builds the int8 mma fragments from row-major A (16×32) and B (8×32, a row per
/// column n) by the PTX ISA's layouts ("Matrix Fragments for mma.m16n8k32" and k16, .s8),
/// the A fragments also by ldmatrix from shared memory, and writes D by its layout.
const MMA_SOURCE: &str = r#"
struct MmaArgs {
    const signed char* a;
    const signed char* b;
    int* d32;
    int* d16;
    unsigned int* ld;
};
extern "C" __global__ void mma(const MmaArgs p) {
    __shared__ __align__(16) unsigned char as[16 * 32];
    unsigned int l = threadIdx.x, g = l / 4u, c = l % 4u;
    for (unsigned int i = l; i < 16u * 32u; i += 32u) {
        as[i] = (unsigned char)p.a[i];
    }
    __syncthreads();
    const unsigned int* a = reinterpret_cast<const unsigned int*>(p.a);
    const unsigned int* b = reinterpret_cast<const unsigned int*>(p.b);
    unsigned int fa[4] = {a[g * 8u + c], a[(g + 8u) * 8u + c], a[g * 8u + 4u + c], a[(g + 8u) * 8u + 4u + c]};
    unsigned int fb[2] = {b[g * 8u + c], b[g * 8u + 4u + c]};
    int d[4] = {1, -2, 3, -4};
    ptx_mma_m16n8k32_s8(d, fa, fb);
    int lo[4] = {0, 0, 0, 0};
    int hi[4] = {0, 0, 0, 0};
    ptx_mma_m16n8k16_s8(lo, &fa[0], fb[0]);
    ptx_mma_m16n8k16_s8(hi, &fa[2], fb[1]);
    for (unsigned int e = 0u; e < 4u; e++) {
        unsigned int at = (g + 8u * (e / 2u)) * 8u + 2u * c + (e & 1u);
        p.d32[at] = d[e];
        p.d16[at] = lo[e];
        p.d16[128u + at] = hi[e];
    }
    unsigned int r[4];
    ptx_ldmatrix_x4(r, as + 32u * (l % 16u) + 16u * (l / 16u));
    for (unsigned int i = 0u; i < 4u; i++) {
        p.ld[4u * l + i] = r[i] == fa[i] ? 1u : 0u;
    }
}
"#;

#[test]
fn int8_mma_and_ldmatrix_follow_the_isa_fragments() {
    if let Err(e) = kiln_backend_cuda_emu::compile::available() {
        eprintln!("skipped: {e}");
        return;
    }
    let m = Module::build("ptx_int8_mma", MMA_SOURCE, &["mma".into()], 900).unwrap();
    let mut s = 0x1234_5678u32;
    let mut byte = || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s >> 24) as i8
    };
    let a: Vec<i8> = (0..16 * 32).map(|_| byte()).collect();
    let b: Vec<i8> = (0..8 * 32).map(|_| byte()).collect();
    let (mut d32, mut d16, mut ld) = (vec![0i32; 128], vec![0i32; 256], vec![0u32; 128]);
    let mut args = Vec::new();
    for p in [
        a.as_ptr() as u64,
        b.as_ptr() as u64,
        addr_mut(&mut d32),
        addr_mut(&mut d16),
        addr_mut(&mut ld),
    ] {
        args.extend(p.to_le_bytes());
    }
    // SAFETY: a and b hold the 16×32 and 8×32 bytes the kernel reads; d32, d16 and ld the
    // 128, 256 and 128 words it writes; nothing else touches them meanwhile.
    unsafe { m.launch("mma", [1, 1, 1], [32, 1, 1], 0, &args) }.unwrap();
    let dot = |i: usize, j: usize, ks: std::ops::Range<usize>| -> i32 {
        ks.map(|k| i32::from(a[i * 32 + k]) * i32::from(b[j * 32 + k]))
            .sum()
    };
    let init = [1, -2, 3, -4];
    for i in 0..16 {
        for j in 0..8 {
            // d's initial values sit at element (lane / 4 + 8·(e / 2), 2·(lane % 4) + e % 2).
            let e = (i / 8) * 2 + j % 2;
            assert_eq!(d32[i * 8 + j], init[e] + dot(i, j, 0..32), "D[{i}][{j}]");
            assert_eq!(d16[i * 8 + j], dot(i, j, 0..16), "k16 lo D[{i}][{j}]");
            assert_eq!(
                d16[128 + i * 8 + j],
                dot(i, j, 16..32),
                "k16 hi D[{i}][{j}]"
            );
        }
    }
    assert!(
        ld.iter().all(|&x| x == 1),
        "ldmatrix x4 differs from the A fragments"
    );
}

/// One warp reads a row-major 16×16 tile of halves (k rows, n columns) by ldmatrix.x4.trans
/// and builds the B fragments of mma.m16n8k16 for its two 8-column halves by the PTX
/// ISA's layout (b[0] holds B[2c, 2c+1][g], b[1] B[2c+8, 2c+9][g]): they must agree.
const TRANS_SOURCE: &str = r#"
struct TransArgs {
    const unsigned short* b;
    unsigned int* same;
};
extern "C" __global__ void trans(const TransArgs p) {
    __shared__ __align__(16) unsigned short bs[16 * 16];
    unsigned int l = threadIdx.x, g = l / 4u, c = l % 4u;
    for (unsigned int i = l; i < 16u * 16u; i += 32u) {
        bs[i] = p.b[i];
    }
    __syncthreads();
    unsigned int r[4];
    // Matrix i = l / 8: rows 8·(i % 2) .., columns 8·(i / 2) ..
    unsigned int i = l / 8u;
    ptx_ldmatrix_x4_trans(r, bs + (8u * (i % 2u) + l % 8u) * 16u + 8u * (i / 2u));
    for (unsigned int m = 0u; m < 4u; m++) {
        unsigned int k = 2u * c + 8u * (m % 2u), n = g + 8u * (m / 2u);
        unsigned int want = (unsigned int)p.b[k * 16u + n] | ((unsigned int)p.b[(k + 1u) * 16u + n] << 16);
        p.same[4u * l + m] = r[m] == want ? 1u : 0u;
    }
}
"#;

#[test]
fn ldmatrix_trans_gives_the_b_fragments_of_a_row_major_tile() {
    if let Err(e) = kiln_backend_cuda_emu::compile::available() {
        eprintln!("skipped: {e}");
        return;
    }
    let m = Module::build("ptx_ldmatrix_trans", TRANS_SOURCE, &["trans".into()], 900).unwrap();
    // Distinct halves, so that any element read from the wrong place shows.
    let b: Vec<u16> = (0..256u16).map(|i| i.wrapping_mul(257) ^ 0x5A3C).collect();
    let mut same = vec![7u32; 128];
    let mut args = Vec::new();
    for p in [b.as_ptr() as u64, addr_mut(&mut same)] {
        args.extend(p.to_le_bytes());
    }
    // SAFETY: b holds the 256 halves the kernel reads, same the 128 words it writes;
    // nothing else touches them meanwhile.
    unsafe { m.launch("trans", [1, 1, 1], [32, 1, 1], 0, &args) }.unwrap();
    assert!(
        same.iter().all(|&x| x == 1),
        "ldmatrix x4 trans differs from the B fragments: {same:?}"
    );
}

/// One warpgroup multiplies a 64×32 A by a 32×64 B (stored as 64 rows n of 32 k) with the
/// wgmma twins, every operand laid out from row-major copies by the PTX ISA's K-major
/// no-swizzle layout (8×8 core matrices of 128 bytes): A and B row-group-major (LBO 128,
/// SBO 512) for m64n64k16 from shared memory, twice along K (the second accumulating);
/// then A as registers (mma.m16n8k16's A fragment of each warp's 16 rows) times a copy of
/// B laid out K-group-major (LBO 1024, SBO 128), accumulating onto known values. D's
/// fragments go back by the ISA's layout; the accumulators read before the wait must
/// still hold their old values (the twin computes at the wait, as the hardware may).
const WGMMA_SOURCE: &str = r#"
struct WgArgs {
    const unsigned short* a; // (64, 32) row-major
    const unsigned short* b; // (64, 32): row n holds B[0..32][n]
    float* ss;               // (64, 64)
    float* rs;               // (64, 64)
    float* early;            // (128)
};
extern "C" __global__ void wg(const WgArgs p) {
    extern __shared__ __align__(16) unsigned char wg_smem[];
    unsigned short* as = reinterpret_cast<unsigned short*>(wg_smem); // 4096 bytes
    unsigned short* bs = as + 64 * 32;                                  // row-group-major
    unsigned short* bt = bs + 64 * 32;                                  // k-group-major
    unsigned int t = threadIdx.x;
    for (unsigned int i = t; i < 64u * 32u; i += 128u) {
        unsigned int r = i / 32u, k = i % 32u;
        unsigned int rg = ((r / 8u) * 4u + k / 8u) * 64u + (r % 8u) * 8u + k % 8u;
        unsigned int kg = ((k / 8u) * 8u + r / 8u) * 64u + (r % 8u) * 8u + k % 8u;
        as[rg] = p.a[i];
        bs[rg] = p.b[i];
        bt[kg] = p.b[i];
    }
    ptx_fence_proxy_async();
    __syncthreads();
    unsigned int lane = t % 32u, w = t / 32u, g = lane / 4u, c = lane % 4u;
    float d[32];
    for (unsigned int i = 0u; i < 32u; i++) {
        d[i] = -1.0f; // overwritten: the first wgmma does not accumulate
    }
    ptx_wgmma_fence();
    for (unsigned int kk = 0u; kk < 2u; kk++) {
        ptx_wgmma_m64n64k16_ss(d, ptx_wgmma_desc(as + 16u * kk * 8u, 128u, 512u),
                               ptx_wgmma_desc(bs + 16u * kk * 8u, 128u, 512u), kk > 0u ? 1 : 0);
    }
    ptx_wgmma_commit();
    p.early[t] = d[5];
    ptx_wgmma_wait<0>();
    ptx_wgmma_hold(d);
    float e[32];
    for (unsigned int i = 0u; i < 32u; i++) {
        unsigned int row = 16u * w + g + 8u * ((i % 4u) / 2u), col = 8u * (i / 4u) + 2u * c + i % 2u;
        p.ss[row * 64u + col] = d[i];
        e[i] = 0.25f * (float)(row * 64u + col);
    }
    ptx_wgmma_fence();
    for (unsigned int kk = 0u; kk < 2u; kk++) {
        unsigned int r0 = 16u * w + g, k0 = 16u * kk + 2u * c;
        const unsigned int* a = reinterpret_cast<const unsigned int*>(p.a);
        unsigned int f[4] = {a[(r0 * 32u + k0) / 2u], a[((r0 + 8u) * 32u + k0) / 2u], a[(r0 * 32u + k0 + 8u) / 2u],
                             a[((r0 + 8u) * 32u + k0 + 8u) / 2u]};
        ptx_wgmma_m64n64k16_rs(e, f, ptx_wgmma_desc(bt + 2u * kk * 8u * 64u, 1024u, 128u), 1);
    }
    ptx_wgmma_commit();
    ptx_wgmma_wait<0>();
    ptx_wgmma_hold(e);
    for (unsigned int i = 0u; i < 32u; i++) {
        unsigned int row = 16u * w + g + 8u * ((i % 4u) / 2u), col = 8u * (i / 4u) + 2u * c + i % 2u;
        p.rs[row * 64u + col] = e[i];
    }
}
"#;

#[test]
fn wgmma_follows_the_isa_fragments_and_descriptors() {
    if let Err(e) = kiln_backend_cuda_emu::compile::available() {
        eprintln!("skipped: {e}");
        return;
    }
    let m = Module::build("ptx_wgmma", WGMMA_SOURCE, &["wg".into()], 900).unwrap();
    let mut s = 0x2545_F491u32;
    let mut half = || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        // Values in ±[1/16, 4) with 10-bit mantissas: exact products, distinct elements.
        let v = ((s >> 8) % 4096) as f32 / 1024.0 + 0.0625;
        half::f16::from_f32(if s & 1 == 1 { -v } else { v }).to_bits()
    };
    let a: Vec<u16> = (0..64 * 32).map(|_| half()).collect();
    let b: Vec<u16> = (0..64 * 32).map(|_| half()).collect();
    let (mut ss, mut rs, mut early) = (vec![f32::NAN; 4096], vec![f32::NAN; 4096], vec![0f32; 128]);
    let mut args = Vec::new();
    for p in [
        a.as_ptr() as u64,
        b.as_ptr() as u64,
        addr_mut(&mut ss),
        addr_mut(&mut rs),
        addr_mut(&mut early),
    ] {
        args.extend(p.to_le_bytes());
    }
    // SAFETY: a and b hold the 2048 halves each the kernel reads; ss, rs and early the
    // 4096, 4096 and 128 floats it writes; nothing else touches them meanwhile; the
    // 12,288 bytes of dynamic shared memory are the three operand copies.
    unsafe { m.launch("wg", [1, 1, 1], [128, 1, 1], 3 * 4096, &args) }.unwrap();
    let f = |h: u16| half::f16::from_bits(h).to_f32() as f64;
    for row in 0..64 {
        for col in 0..64 {
            let dot: f64 = (0..32)
                .map(|k| f(a[row * 32 + k]) * f(b[col * 32 + k]))
                .sum();
            let init = 0.25 * (row * 64 + col) as f64;
            let (got_ss, got_rs) = (ss[row * 64 + col] as f64, rs[row * 64 + col] as f64);
            assert!(
                (got_ss - dot).abs() <= 1e-5 * (1.0 + dot.abs()),
                "ss D[{row}][{col}]: {got_ss} vs {dot}"
            );
            let want = init + dot;
            assert!(
                (got_rs - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "rs D[{row}][{col}]: {got_rs} vs {want}"
            );
        }
    }
    assert!(
        early.iter().all(|&x| x == -1.0),
        "accumulators changed before the wait: {early:?}"
    );
}
