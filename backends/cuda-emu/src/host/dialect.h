// dialect.h: the CUDA C that kiln's kernels use, defined for the host C++ compiler:
// qualifiers, the built-in indices (runtime.h), the intrinsics the .cu files call and
// nothing more (a kernel that starts using another one fails to compile here, which is
// the point: add it with its exact semantics). Included after runtime.h.

#include <math.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
// Blocks run one at a time, so a function-scope static is exactly one block's shared
// memory. (Dynamic `extern __shared__` arrays are rewritten by the Rust side into
// pointers at kiln_emu::dynamic_shared().)
#define __shared__ static

static inline void __syncthreads() { kiln_emu::barrier(); }

template <class T>
static inline T __shfl_xor_sync(unsigned int mask, T v, int lane_mask) {
    if (mask != 0xFFFFFFFFu) {
        kiln_emu::fail("__shfl_xor_sync with a partial mask (not emulated)");
    }
    unsigned int lane = threadIdx.x % 32u; // blocks of kiln's kernels are 1-D
    return kiln_emu::shuffle(v, lane ^ (unsigned int)lane_mask);
}

template <class T>
static inline T __shfl_sync(unsigned int mask, T v, int src_lane) {
    if (mask != 0xFFFFFFFFu) {
        kiln_emu::fail("__shfl_sync with a partial mask (not emulated)");
    }
    return kiln_emu::shuffle(v, (unsigned int)src_lane);
}

// Bit l set where lane l's predicate holds; every lane of the warp takes part.
static inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
    if (mask != 0xFFFFFFFFu) {
        kiln_emu::fail("__ballot_sync with a partial mask (not emulated)");
    }
    return kiln_emu::ballot(predicate != 0);
}

static inline int __popc(unsigned int x) { return __builtin_popcount(x); }

// A block's threads run one at a time and switch only at barriers and warp collectives,
// so a read-modify-write is atomic here (shared and global memory alike).
static inline unsigned int atomicAdd(unsigned int* address, unsigned int v) {
    unsigned int old = *address;
    *address = old + v;
    return old;
}

template <class T>
static inline T __ldg(const T* p) {
    return *p;
}

static inline float __uint_as_float(unsigned int u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    memcpy(&u, &f, 4);
    return u;
}

// Round-to-nearest products and sums, never contracted (the build has -ffp-contract=off).
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __int2float_rn(int i) { return (float)i; }

// The low word of (hi:lo) >> (s mod 32).
static inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned int)(v >> (s & 31u));
}

static inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
