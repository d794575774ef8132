// ptx.h: the host twin of kernels-cuda/src/cuda/ptx.cuh, one function per wrapper there
// with the PTX ISA's semantics of its instruction, written from the ISA and not from
// the kernels' own helpers (so that a kernel helper and its instruction can disagree
// and a test sees it). ptx.cuh itself is skipped: this file defines KILN_HOST_PTX.

#define KILN_HOST_PTX 1

// cvt.f32.f16: exact.
static inline float ptx_f16_to_f32(unsigned short h) {
    unsigned int sign = (unsigned int)(h & 0x8000u) << 16;
    unsigned int exp = (h >> 10) & 31u;
    unsigned int man = h & 0x3FFu;
    if (exp == 0u) {
        float m = (float)man * (1.0f / 16777216.0f); // man · 2^-24, exact
        return sign ? -m : m;
    }
    if (exp == 31u) {
        return __uint_as_float(sign | 0x7F800000u | (man << 13));
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// cvt.rn.f16.f32: round to nearest even; overflow to infinity; NaN to the canonical NaN.
static inline unsigned short ptx_f32_to_f16(float f) {
    unsigned int x = __float_as_uint(f);
    unsigned int sign = (x >> 16) & 0x8000u;
    x &= 0x7FFFFFFFu;
    if (x > 0x7F800000u) {
        return 0x7FFFu;
    }
    if (x >= 0x477FF000u) { // 65520 and up (the tie above 65504 rounds to even: infinity)
        return (unsigned short)(sign | 0x7C00u);
    }
    if (x < 0x38800000u) { // below 2^-14: a subnormal, units of 2^-24 (the product is exact)
        return (unsigned short)(sign | (unsigned int)nearbyintf(__uint_as_float(x) * 16777216.0f));
    }
    unsigned int r = (x + 0xFFFu + ((x >> 13) & 1u)) >> 13;
    return (unsigned short)(sign | (r - (112u << 10)));
}

// The value of an E4M3 ("e4m3fn") code: no infinities, S.1111.111 is NaN.
static inline float ptx_e4m3_value(unsigned int code) {
    unsigned int exp = (code >> 3) & 15u;
    unsigned int man = code & 7u;
    float mag;
    if (exp == 15u && man == 7u) {
        mag = NAN;
    } else if (exp == 0u) {
        mag = ldexpf((float)man, -9);
    } else {
        mag = ldexpf(1.0f + (float)man / 8.0f, (int)exp - 7);
    }
    return (code & 0x80u) ? -mag : mag;
}

// cvt.rn.satfinite.e4m3 of one f32: nearest, ties to even; beyond ±448 (infinities
// included) saturates to ±448; NaN is NaN (0x7F).
static inline unsigned int ptx_e4m3_rn_satfinite(float x) {
    unsigned int sign = (__float_as_uint(x) >> 24) & 0x80u;
    if (isnan(x)) {
        return 0x7Fu;
    }
    float a = fabsf(x);
    if (a >= 448.0f) {
        return sign | 0x7Eu;
    }
    if (a < 0.015625f) { // 2^-6, the smallest normal: subnormals in units of 2^-9
        return sign | (unsigned int)nearbyintf(a * 512.0f);
    }
    int e;
    float m = frexpf(a, &e); // a = m · 2^e, m in [0.5, 1)
    e -= 1;                  // a = (2m) · 2^e, 2m in [1, 2)
    unsigned int r = (unsigned int)nearbyintf((2.0f * m - 1.0f) * 8.0f);
    if (r == 8u) {
        r = 0u;
        e += 1;
    }
    unsigned int code = ((unsigned int)(e + 7) << 3) | r;
    return sign | (code > 0x7Eu ? 0x7Eu : code);
}

static inline unsigned short ptx_e4m3x2_from_f32(float hi, float lo) {
    return (unsigned short)((ptx_e4m3_rn_satfinite(hi) << 8) | ptx_e4m3_rn_satfinite(lo));
}

// cvt.rn.f16x2.e4m3x2: exact (every E4M3 value is an f16); NaN to the canonical NaN.
static inline unsigned int ptx_f16x2_from_e4m3x2(unsigned short pair) {
    unsigned int lo = ptx_f32_to_f16(ptx_e4m3_value(pair & 0xFFu));
    unsigned int hi = ptx_f32_to_f16(ptx_e4m3_value(pair >> 8));
    return lo | (hi << 16);
}

// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32, d = a · b + d. Fragments (PTX ISA,
// "Matrix Fragments for mma.m16n8k16", g = lane / 4, c = lane % 4): a[0] holds A[g][2c,
// 2c+1], a[1] A[g+8][2c, 2c+1], a[2] A[g][2c+8, 2c+9], a[3] A[g+8][2c+8, 2c+9]; b[0]
// holds B[2c, 2c+1][g], b[1] B[2c+8, 2c+9][g]; d[0..1] D[g][2c, 2c+1], d[2..3]
// D[g+8][2c, 2c+1]; low half first. The products of halves are exact in f32; the sum is
// taken in f64 and rounded once (the hardware's order is unspecified).
static inline void ptx_mma_m16n8k16(float* d, const unsigned int* a, const unsigned int* b) {
    unsigned int ops[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    unsigned int gen = kiln_emu::warp_exchange(2u, ops, sizeof ops);
    float A[16][16], B[16][8];
    for (unsigned int l = 0; l < 32u; l++) {
        unsigned int f[6];
        memcpy(f, kiln_emu::lane_data(l, gen), sizeof f);
        unsigned int g = l / 4u, c = l % 4u;
        const unsigned int rows[4] = {g, g + 8u, g, g + 8u};
        const unsigned int cols[4] = {2u * c, 2u * c, 2u * c + 8u, 2u * c + 8u};
        for (unsigned int r = 0; r < 4u; r++) {
            A[rows[r]][cols[r]] = ptx_f16_to_f32((unsigned short)(f[r] & 0xFFFFu));
            A[rows[r]][cols[r] + 1u] = ptx_f16_to_f32((unsigned short)(f[r] >> 16));
        }
        for (unsigned int r = 0; r < 2u; r++) {
            B[2u * c + 8u * r][g] = ptx_f16_to_f32((unsigned short)(f[4 + r] & 0xFFFFu));
            B[2u * c + 8u * r + 1u][g] = ptx_f16_to_f32((unsigned short)(f[4 + r] >> 16));
        }
    }
    unsigned int lane = threadIdx.x % 32u;
    unsigned int g = lane / 4u, c = lane % 4u;
    for (unsigned int e = 0; e < 4u; e++) {
        unsigned int row = g + (e >= 2u ? 8u : 0u);
        unsigned int col = 2u * c + (e & 1u);
        double s = d[e];
        for (unsigned int k = 0; k < 16u; k++) {
            s += (double)(A[row][k] * B[k][col]);
        }
        d[e] = (float)s;
    }
}

// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32, d = a · b + d. Fragments (PTX ISA,
// "Matrix Fragments for mma.m16n8k32" with .s8, g = lane / 4, c = lane % 4): a[0] holds
// A[g][4c .. 4c+3], a[1] A[g+8][4c ..], a[2] A[g][16+4c ..], a[3] A[g+8][16+4c ..];
// b[0] B[4c .. 4c+3][g], b[1] B[16+4c ..][g]; byte i of a word is element +i; d[0..1]
// D[g][2c, 2c+1], d[2..3] D[g+8][2c, 2c+1]. Integer sums, wrapping as s32.
static inline void ptx_mma_m16n8k32_s8(int* d, const unsigned int* a, const unsigned int* b) {
    unsigned int ops[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    unsigned int gen = kiln_emu::warp_exchange(4u, ops, sizeof ops);
    int A[16][32], B[32][8];
    for (unsigned int l = 0; l < 32u; l++) {
        unsigned int f[6];
        memcpy(f, kiln_emu::lane_data(l, gen), sizeof f);
        unsigned int g = l / 4u, c = l % 4u;
        const unsigned int rows[4] = {g, g + 8u, g, g + 8u};
        const unsigned int cols[4] = {4u * c, 4u * c, 4u * c + 16u, 4u * c + 16u};
        for (unsigned int r = 0; r < 4u; r++) {
            for (unsigned int i = 0; i < 4u; i++) {
                A[rows[r]][cols[r] + i] = (signed char)(f[r] >> (8u * i));
            }
        }
        for (unsigned int r = 0; r < 2u; r++) {
            for (unsigned int i = 0; i < 4u; i++) {
                B[16u * r + 4u * c + i][g] = (signed char)(f[4 + r] >> (8u * i));
            }
        }
    }
    unsigned int lane = threadIdx.x % 32u;
    unsigned int g = lane / 4u, c = lane % 4u;
    for (unsigned int e = 0; e < 4u; e++) {
        unsigned int row = g + (e >= 2u ? 8u : 0u);
        unsigned int col = 2u * c + (e & 1u);
        unsigned int s = (unsigned int)d[e];
        for (unsigned int k = 0; k < 32u; k++) {
            s += (unsigned int)(A[row][k] * B[k][col]);
        }
        d[e] = (int)s;
    }
}

// mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32, d = a · b + d: a[0] holds
// A[g][4c .. 4c+3], a[1] A[g+8][4c ..]; b B[4c .. 4c+3][g]; D as m16n8k32's.
static inline void ptx_mma_m16n8k16_s8(int* d, const unsigned int* a, unsigned int b) {
    unsigned int ops[3] = {a[0], a[1], b};
    unsigned int gen = kiln_emu::warp_exchange(6u, ops, sizeof ops);
    int A[16][16], B[16][8];
    for (unsigned int l = 0; l < 32u; l++) {
        unsigned int f[3];
        memcpy(f, kiln_emu::lane_data(l, gen), sizeof f);
        unsigned int g = l / 4u, c = l % 4u;
        for (unsigned int i = 0; i < 4u; i++) {
            A[g][4u * c + i] = (signed char)(f[0] >> (8u * i));
            A[g + 8u][4u * c + i] = (signed char)(f[1] >> (8u * i));
            B[4u * c + i][g] = (signed char)(f[2] >> (8u * i));
        }
    }
    unsigned int lane = threadIdx.x % 32u;
    unsigned int g = lane / 4u, c = lane % 4u;
    for (unsigned int e = 0; e < 4u; e++) {
        unsigned int row = g + (e >= 2u ? 8u : 0u);
        unsigned int col = 2u * c + (e & 1u);
        unsigned int s = (unsigned int)d[e];
        for (unsigned int k = 0; k < 16u; k++) {
            s += (unsigned int)(A[row][k] * B[k][col]);
        }
        d[e] = (int)s;
    }
}

// dp4a.s32.s32: c + Σ of the products of the four signed bytes (wrapping).
static inline int ptx_dp4a(unsigned int a, unsigned int b, int c) {
    unsigned int s = (unsigned int)c;
    for (unsigned int i = 0; i < 4u; i++) {
        int x = (signed char)(a >> (8u * i));
        int y = (signed char)(b >> (8u * i));
        s += (unsigned int)(x * y);
    }
    return (int)s;
}

static inline float ptx_selp_f32(bool p, float a, float b) { return p ? a : b; }

static inline uint4 ptx_ld_nc_no_allocate_v4(const void* p) {
    if (((uintptr_t)p & 15u) != 0u) {
        kiln_emu::fail("ld.global.nc.v4 of an address not 16-byte aligned");
    }
    uint4 v;
    memcpy(&v, p, 16);
    return v;
}

static inline uint4 ptx_ld_nc_v4(const void* p) { return ptx_ld_nc_no_allocate_v4(p); }

static inline unsigned int ptx_ld_nc_u32(const unsigned int* p) {
    if (((uintptr_t)p & 3u) != 0u) {
        kiln_emu::fail("ld.global.nc.u32 of an address not 4-byte aligned");
    }
    return *p;
}

static inline void ptx_cp_async16(void* dst, const void* src) {
    if ((((uintptr_t)dst | (uintptr_t)src) & 15u) != 0u) {
        kiln_emu::fail("cp.async of 16 bytes not 16-byte aligned");
    }
    kiln_emu::cp_async(dst, src, 16u);
}

static inline void ptx_cp_async4(void* dst, const void* src) {
    if ((((uintptr_t)dst | (uintptr_t)src) & 3u) != 0u) {
        kiln_emu::fail("cp.async of 4 bytes not 4-byte aligned");
    }
    kiln_emu::cp_async(dst, src, 4u);
}

static inline void ptx_cp_async_commit() { kiln_emu::cp_async_commit(); }
static inline void ptx_cp_async_wait0() { kiln_emu::cp_async_wait(0u); }
static inline void ptx_cp_async_wait1() { kiln_emu::cp_async_wait(1u); }
static inline void ptx_cp_async_wait2() { kiln_emu::cp_async_wait(2u); }

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lane l gives the address of row l % 8 of
// matrix l / 8 (16 bytes, 16-byte aligned, in shared memory); r[i] of lane l is the word
// l % 4 of row l / 4 of matrix i.
static inline void ptx_ldmatrix_x4(unsigned int* r, const void* p) {
    if (((uintptr_t)p & 15u) != 0u) {
        kiln_emu::fail("ldmatrix of a row not 16-byte aligned");
    }
    unsigned int gen = kiln_emu::warp_exchange(5u, &p, sizeof p);
    unsigned int lane = threadIdx.x % 32u;
    for (unsigned int i = 0; i < 4u; i++) {
        const unsigned char* row;
        memcpy(&row, kiln_emu::lane_data(8u * i + lane / 4u, gen), sizeof row);
        memcpy(&r[i], row + 4u * (lane % 4u), 4);
    }
}

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: the rows as ldmatrix's; r[i] of lane l
// holds the halves at (row 2(l % 4), column l / 4) and (row 2(l % 4) + 1, column l / 4) of
// matrix i, the first in the low half.
static inline void ptx_ldmatrix_x4_trans(unsigned int* r, const void* p) {
    if (((uintptr_t)p & 15u) != 0u) {
        kiln_emu::fail("ldmatrix of a row not 16-byte aligned");
    }
    unsigned int gen = kiln_emu::warp_exchange(7u, &p, sizeof p);
    unsigned int lane = threadIdx.x % 32u;
    for (unsigned int i = 0; i < 4u; i++) {
        unsigned short h[2];
        for (unsigned int e = 0; e < 2u; e++) {
            const unsigned char* row;
            memcpy(&row, kiln_emu::lane_data(8u * i + 2u * (lane % 4u) + e, gen), sizeof row);
            memcpy(&h[e], row + 2u * (lane / 4u), 2);
        }
        r[i] = (unsigned int)h[0] | ((unsigned int)h[1] << 16);
    }
}

static inline void ptx_trap() { kiln_emu::fail("trap"); }

// ---- wgmma (sm_90a). A warpgroup is 4 consecutive warps; warp w of it (threadIdx.x / 32
// % 4) holds rows 16w .. 16w + 15 of the 64 of A and D. Each thread computes its own D
// fragment (PTX ISA, "Register Fragments and Shared Memory Matrix Layouts" for
// wgmma.m64nNk16: d[4i + e] is row 16w + g + 8(e / 2), column 8i + 2c + e % 2, g = lane
// / 4, c = lane % 4) from the shared operands through their descriptors; A from
// registers comes from the lanes of its own warp that hold its rows (4g .. 4g + 3). The
// instruction is asynchronous: the twin computes it when a wait_group covers its group.

static inline void ptx_wgmma_fence() {}

// fence.proxy.async: the emulator has one proxy.
static inline void ptx_fence_proxy_async() {}

static inline void ptx_wgmma_commit() { kiln_emu::me().wgmma_group++; }

// The element (row, k) of an operand (row: M of A, N of B) by its descriptor (PTX ISA,
// "Matrix Descriptor Format"): start address, leading byte offset (between core matrices
// adjacent in K) and stride byte offset (adjacent in M or N), each in 16-byte units at
// bits 0, 16 and 32; base offset (bits 49-51) and swizzle mode (62-63) must be 0 (no
// swizzle, the K-major "interleave" layout: 8×8 core matrices of 128 contiguous bytes, row
// r at 16r). Addresses are offsets into the block's dynamic shared memory.
static inline float ptx_wgmma_element(unsigned long long desc, unsigned int row, unsigned int k) {
    if ((desc >> 62) != 0u || ((desc >> 49) & 7u) != 0u) {
        kiln_emu::fail("wgmma descriptor with a swizzle or base offset (not emulated)");
        return 0.0f;
    }
    unsigned long long start = (desc & 0x3FFFu) << 4;
    unsigned long long lbo = ((desc >> 16) & 0x3FFFu) << 4;
    unsigned long long sbo = ((desc >> 32) & 0x3FFFu) << 4;
    unsigned long long at = start + (row / 8u) * sbo + (k / 8u) * lbo + (row % 8u) * 16u + (k % 8u) * 2u;
    if (at + 2u > kiln_emu::g_dynamic_bytes) {
        kiln_emu::fail("wgmma operand past the dynamic shared memory");
        return 0.0f;
    }
    unsigned short h;
    memcpy(&h, kiln_emu::dynamic_shared() + at, 2);
    return ptx_f16_to_f32(h);
}

// The descriptor of an operand at p (16-byte aligned, in dynamic shared memory: its
// offset there stands for the shared address).
static inline unsigned long long ptx_wgmma_desc(const void* p, unsigned int lbo, unsigned int sbo) {
    long long off = (const unsigned char*)p - kiln_emu::dynamic_shared();
    if (off < 0 || off >= (1 << 18) || (off & 15) != 0 || (lbo & 15u) != 0u || (sbo & 15u) != 0u) {
        kiln_emu::fail("wgmma descriptor of an address outside dynamic shared memory or not 16-byte aligned");
        return 0u;
    }
    return ((unsigned long long)off >> 4) | ((unsigned long long)((lbo >> 4) & 0x3FFFu) << 16) |
           ((unsigned long long)((sbo >> 4) & 0x3FFFu) << 32);
}

// Compute one pending wgmma of this thread (m64n64k16, f32 += f16 · f16; products exact in
// f32, the sum in f64 rounded once, as the mma.sync twin).
static inline void ptx_wgmma_run(const kiln_emu::Wgmma& op) {
    unsigned int lane = threadIdx.x % 32u, w = threadIdx.x / 32u % 4u;
    unsigned int g = lane / 4u, c = lane % 4u;
    for (unsigned int e = 0; e < 4u; e++) {
        unsigned int r = g + 8u * (e / 2u); // of the warp's 16 rows
        float a[16];
        for (unsigned int k = 0; k < 16u; k++) {
            if (op.a_regs) {
                // Lane 4g + (k % 8) / 2 holds row g in words 0 (k < 8) and 2, row g + 8 in 1 and 3.
                unsigned int word = op.words[4u * ((k % 8u) / 2u) + (r >= 8u ? 1u : 0u) + (k >= 8u ? 2u : 0u)];
                a[k] = ptx_f16_to_f32((unsigned short)(k % 2u ? word >> 16 : word & 0xFFFFu));
            } else {
                a[k] = ptx_wgmma_element(op.a, 16u * w + r, k);
            }
        }
        for (unsigned int i = 0; i < 8u; i++) {
            unsigned int n = 8u * i + 2u * c + (e & 1u);
            double s = op.accumulate ? op.d[4u * i + e] : 0.0;
            for (unsigned int k = 0; k < 16u; k++) {
                s += (double)(a[k] * ptx_wgmma_element(op.b, n, k));
            }
            op.d[4u * i + e] = (float)s;
        }
    }
}

static inline void ptx_wgmma_issue(float* d, const unsigned int* a, unsigned long long a_desc, unsigned long long b,
                                   int accumulate) {
    using namespace kiln_emu;
    if (blockDim.x % 128u != 0u) {
        fail("wgmma in a block that is not whole warpgroups (blockDim.x % 128)");
        return;
    }
    Wgmma op;
    memset(&op, 0, sizeof op);
    op.d = d;
    op.a = a_desc;
    op.b = b;
    op.a_regs = a != nullptr;
    op.accumulate = accumulate != 0;
    if (a != nullptr) {
        unsigned int gen = warp_exchange(9u, a, 16u);
        unsigned int g = threadIdx.x % 32u / 4u;
        for (unsigned int l = 0; l < 4u; l++) {
            memcpy(&op.words[4u * l], lane_data(4u * g + l, gen), 16);
        }
    }
    Fiber& f = me();
    op.group = f.wgmma_group;
    if (f.n_wgmma == f.cap_wgmma) {
        unsigned int cap = f.cap_wgmma ? 2u * f.cap_wgmma : 32u;
        Wgmma* grown = (Wgmma*)realloc(f.wgmma, cap * sizeof(Wgmma));
        if (grown == nullptr) {
            fail("out of memory for pending wgmma");
            return;
        }
        f.wgmma = grown;
        f.cap_wgmma = cap;
    }
    f.wgmma[f.n_wgmma++] = op;
}

static inline void ptx_wgmma_m64n64k16_ss(float* d, unsigned long long a, unsigned long long b, int accumulate) {
    ptx_wgmma_issue(d, nullptr, a, b, accumulate);
}

static inline void ptx_wgmma_m64n64k16_rs(float* d, const unsigned int* a, unsigned long long b, int accumulate) {
    ptx_wgmma_issue(d, a, 0u, b, accumulate);
}

// wgmma.wait_group N: compute, in issue order, every pending wgmma of all but the N most
// recent committed groups (uncommitted ones are not waited for).
template <int N>
static inline void ptx_wgmma_wait() {
    kiln_emu::Fiber& f = kiln_emu::me();
    unsigned int k = 0;
    for (unsigned int i = 0; i < f.n_wgmma; i++) {
        kiln_emu::Wgmma op = f.wgmma[i];
        if (op.group + (unsigned int)N < f.wgmma_group) {
            ptx_wgmma_run(op);
        } else {
            f.wgmma[k++] = op;
        }
    }
    f.n_wgmma = k;
}

static inline void ptx_wgmma_hold(float* d) { (void)d; }
