// runtime.h: the threads of a CUDA block as cooperative fibers on one OS thread. A launch
// runs its blocks one after another; a block's threads are ucontext fibers that run until
// they reach a block barrier (__syncthreads), a warp collective (shuffles, mma.sync) or
// their end, so the interleaving is deterministic and a wrong barrier is a reported
// deadlock, not a hang. Warp collectives exchange through per-lane slots, double-buffered
// by the collective's generation so one warp barrier per collective is enough: a lane
// cannot overwrite a slot of generation g before every lane of its warp has arrived at
// generation g + 1, that is, has read generation g.
// A fiber is created once per launch (makecontext, entered once by swapcontext) and
// runs the kernel once per block in a loop; every later switch is _setjmp/_longjmp,
// which, unlike swapcontext, does not save the signal mask with a system call (the
// module is built without _FORTIFY_SOURCE, whose longjmp refuses to change stacks).
// The .so compiled from one kernel module includes this once; the Rust side serialises
// launches (one global lock), so the state below is plain statics.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <setjmp.h>
#include <ucontext.h>
#include <sys/mman.h>

struct uint2 {
    unsigned int x, y;
};
struct uint3 {
    unsigned int x, y, z;
};
struct __attribute__((aligned(16))) uint4 {
    unsigned int x, y, z, w;
};
static inline uint2 make_uint2(unsigned int x, unsigned int y) { return uint2{x, y}; }
static inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) { return uint4{x, y, z, w}; }

// The built-in indices of the running thread (set by the scheduler before it resumes a
// fiber).
static uint3 threadIdx, blockIdx, blockDim, gridDim;

namespace kiln_emu {

enum State { READY, AT_BARRIER, AT_WARP, EXITED };

// What a lane deposits for a warp collective: the generation it belongs to, which
// collective (a mismatch is a divergence bug), and up to 32 bytes of operands.
struct Slot {
    unsigned int gen;
    unsigned int tag;
    unsigned char data[32];
};

// A cp.async copy not yet landed: it lands when a wait_group covers its group, so a
// kernel that reads a tile before waiting for it reads stale bytes here too.
struct Copy {
    void* dst;
    const void* src;
    unsigned int bytes;
    unsigned int group;
};

// A wgmma issued and not yet waited for (ptx.h): it computes when a wait_group covers
// its group, so a kernel that reads the accumulators (or rewrites the shared operands)
// before waiting sees what the hardware would not promise either.
struct Wgmma {
    float* d;                // the thread's 32 accumulators
    unsigned long long a, b; // descriptors (a unused when A came from registers)
    unsigned int words[16];  // A from registers: the words of lanes 4g .. 4g + 3
    bool a_regs;
    bool accumulate;
    unsigned int group;
};

struct Fiber {
    ucontext_t ctx;    // its first entry
    jmp_buf env;       // where it yielded
    bool started;
    State state;
    unsigned int wgen; // warp collectives this thread has completed
    unsigned int tag;  // the collective it waits at
    Copy* copies;      // pending cp.async copies
    unsigned int n_copies, cap_copies;
    unsigned int group; // cp.async groups committed so far
    Wgmma* wgmma;       // pending wgmma
    unsigned int n_wgmma, cap_wgmma;
    unsigned int wgmma_group; // wgmma groups committed so far
};

struct Block {
    ucontext_t sched;
    jmp_buf sched_env;
    Fiber* fibers;
    unsigned int n;
    unsigned int cur;
    unsigned int live;
    unsigned int at_barrier;
    unsigned int* warp_arrived; // (warps) lanes waiting at a collective
    Slot* slots;                // (2, n) by generation parity
    void (*entry)(const void*);
    const void* args;
    char* error; // first error of the launch, or null
};

static Block* g_block;
static char g_error[512];

static inline void fail(const char* what) {
    if (g_block != nullptr && g_block->error == nullptr) {
        snprintf(g_error, sizeof g_error, "thread (%u,%u,%u) of block (%u,%u,%u): %s", threadIdx.x, threadIdx.y,
                 threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z, what);
        g_block->error = g_error;
    }
}

static inline Fiber& me() { return g_block->fibers[g_block->cur]; }

// Back to the scheduler until it resumes this fiber.
static inline void yield(State s) {
    Block* b = g_block;
    Fiber& f = b->fibers[b->cur];
    f.state = s;
    if (_setjmp(f.env) == 0) {
        _longjmp(b->sched_env, 1);
    }
}

static inline void barrier() { yield(AT_BARRIER); }

static inline Slot& slot_of(unsigned int t, unsigned int gen) { return g_block->slots[(gen & 1u) * g_block->n + t]; }

// Deposit `bytes` of operands for collective `tag`, wait for the warp; returns the
// generation whose slots the lanes read.
static inline unsigned int warp_exchange(unsigned int tag, const void* data, unsigned int bytes) {
    Fiber& f = me();
    unsigned int gen = f.wgen;
    Slot& s = slot_of(g_block->cur, gen);
    s.gen = gen;
    s.tag = tag;
    memcpy(s.data, data, bytes);
    f.tag = tag;
    yield(AT_WARP);
    me().wgen = gen + 1u;
    return gen;
}

// The operands lane `lane` of this thread's warp deposited at generation `gen`.
static inline const unsigned char* lane_data(unsigned int lane, unsigned int gen) {
    unsigned int t = (g_block->cur & ~31u) + lane;
    if (t >= g_block->n) {
        fail("a warp collective reads a lane past the block");
        return slot_of(g_block->cur, gen).data;
    }
    Slot& s = slot_of(t, gen);
    if (s.gen != gen) {
        fail("a warp collective reads a lane that did not take part (exited or diverged)");
    }
    return s.data;
}

template <class T>
static inline T shuffle(T v, unsigned int src_lane) {
    static_assert(sizeof(T) <= 32, "shuffle operand");
    unsigned int gen = warp_exchange(1u, &v, sizeof(T));
    T r;
    memcpy(&r, lane_data(src_lane % 32u, gen), sizeof(T));
    return r;
}

// The predicates of the warp's 32 lanes as bits (lane l: bit l).
static inline unsigned int ballot(bool p) {
    unsigned int v = p ? 1u : 0u;
    unsigned int gen = warp_exchange(8u, &v, sizeof v);
    unsigned int bits = 0u;
    for (unsigned int lane = 0u; lane < 32u; lane++) {
        unsigned int x;
        memcpy(&x, lane_data(lane, gen), sizeof x);
        bits |= (x & 1u) << lane;
    }
    return bits;
}

// A fiber's life: the kernel once per block of the launch (the scheduler marks every
// fiber READY at a block's start; an exited one resumes here).
static void fiber_main() {
    for (;;) {
        g_block->entry(g_block->args);
        yield(EXITED);
    }
}

// Run fiber `i` until it yields.
static void resume(Block* b, Fiber& f) {
    if (_setjmp(b->sched_env) != 0) {
        return;
    }
    if (!f.started) {
        f.started = true;
        swapcontext(&b->sched, &f.ctx);
        return; // not reached: fibers come back by _longjmp
    }
    _longjmp(f.env, 1);
}

static inline void set_thread(unsigned int t) {
    threadIdx.x = t % blockDim.x;
    threadIdx.y = t / blockDim.x % blockDim.y;
    threadIdx.z = t / (blockDim.x * blockDim.y);
}

// Release the block barrier once every live thread waits at it.
static void check_barrier(Block* b) {
    if (b->at_barrier > 0u && b->at_barrier == b->live) {
        for (unsigned int i = 0; i < b->n; i++) {
            if (b->fibers[i].state == AT_BARRIER) {
                b->fibers[i].state = READY;
            }
        }
        b->at_barrier = 0u;
    }
}

// Release warp `w`'s collective once every live lane waits at it.
static void check_warp(Block* b, unsigned int w) {
    unsigned int lo = 32u * w, hi = lo + 32u < b->n ? lo + 32u : b->n;
    unsigned int live = 0;
    for (unsigned int i = lo; i < hi; i++) {
        live += b->fibers[i].state != EXITED;
    }
    if (b->warp_arrived[w] == 0u || b->warp_arrived[w] != live) {
        return;
    }
    unsigned int tag = 0;
    for (unsigned int i = lo; i < hi; i++) {
        Fiber& f = b->fibers[i];
        if (f.state == AT_WARP) {
            if (tag != 0u && f.tag != tag && b->error == nullptr) {
                snprintf(g_error, sizeof g_error, "block (%u,%u,%u) warp %u: lanes at different collectives",
                         blockIdx.x, blockIdx.y, blockIdx.z, w);
                b->error = g_error;
            }
            tag = f.tag;
            f.state = READY;
        }
    }
    b->warp_arrived[w] = 0u;
}

static void land_copies(Fiber& f, unsigned int keep_groups);

// Run one block to completion (or to the first error).
static void run_block(Block* b, unsigned char* stacks, size_t stack_bytes) {
    unsigned int warps = (b->n + 31u) / 32u;
    for (unsigned int w = 0; w < warps; w++) {
        b->warp_arrived[w] = 0u;
    }
    for (unsigned int i = 0; i < 2u * b->n; i++) {
        b->slots[i].gen = ~0u;
    }
    for (unsigned int i = 0; i < b->n; i++) {
        Fiber& f = b->fibers[i];
        if (!f.started) {
            getcontext(&f.ctx);
            // The lowest page of each stack is a guard (PROT_NONE), so an overflow faults.
            f.ctx.uc_stack.ss_sp = stacks + i * stack_bytes + 4096;
            f.ctx.uc_stack.ss_size = stack_bytes - 4096;
            f.ctx.uc_link = nullptr; // fiber_main never returns
            makecontext(&f.ctx, fiber_main, 0);
        }
        f.state = READY;
        f.wgen = 0u;
        f.tag = 0u;
        f.n_copies = 0u;
        f.group = 0u;
        f.n_wgmma = 0u;
        f.wgmma_group = 0u;
    }
    b->live = b->n;
    b->at_barrier = 0u;
    while (b->live > 0u && b->error == nullptr) {
        bool ran = false;
        for (unsigned int i = 0; i < b->n && b->error == nullptr; i++) {
            Fiber& f = b->fibers[i];
            if (f.state != READY) {
                continue;
            }
            ran = true;
            b->cur = i;
            set_thread(i);
            resume(b, f);
            switch (f.state) {
            case EXITED:
                if (f.n_copies > 0u) {
                    land_copies(f, 0u);
                }
                if (f.n_wgmma > 0u && b->error == nullptr) {
                    snprintf(g_error, sizeof g_error, "thread %u of block (%u,%u,%u): exited with wgmma in flight", i,
                             blockIdx.x, blockIdx.y, blockIdx.z);
                    b->error = g_error;
                }
                b->live--;
                check_barrier(b);
                check_warp(b, i / 32u);
                break;
            case AT_BARRIER:
                b->at_barrier++;
                check_barrier(b);
                break;
            case AT_WARP:
                b->warp_arrived[i / 32u]++;
                check_warp(b, i / 32u);
                break;
            case READY:
                break;
            }
        }
        if (!ran && b->live > 0u && b->error == nullptr) {
            snprintf(g_error, sizeof g_error,
                     "block (%u,%u,%u): deadlock (%u threads wait, %u at the block barrier: a barrier or warp "
                     "collective that not every thread reaches)",
                     blockIdx.x, blockIdx.y, blockIdx.z, b->live, b->at_barrier);
            b->error = g_error;
        }
    }
}

// cp.async: queue the copy; commit closes a group; wait_group N lands every copy of all
// but the N most recent groups.
static void land_copies(Fiber& f, unsigned int keep_groups) {
    unsigned int k = 0;
    for (unsigned int i = 0; i < f.n_copies; i++) {
        Copy& c = f.copies[i];
        // Uncommitted copies (group == f.group) are not waited for; nor are the newest.
        if (c.group + keep_groups < f.group) {
            memcpy(c.dst, c.src, c.bytes);
        } else {
            f.copies[k++] = c;
        }
    }
    if (keep_groups == 0u && k > 0u && f.state == EXITED) {
        // Copies never committed nor waited for: land them (a kernel may exit first).
        for (unsigned int i = 0; i < k; i++) {
            memcpy(f.copies[i].dst, f.copies[i].src, f.copies[i].bytes);
        }
        k = 0;
    }
    f.n_copies = k;
}

static inline void cp_async(void* dst, const void* src, unsigned int bytes) {
    Fiber& f = me();
    if (f.n_copies == f.cap_copies) {
        unsigned int cap = f.cap_copies ? 2u * f.cap_copies : 64u;
        Copy* c = (Copy*)realloc(f.copies, cap * sizeof(Copy));
        if (c == nullptr) {
            fail("out of memory for cp.async copies");
            return;
        }
        f.copies = c;
        f.cap_copies = cap;
    }
    f.copies[f.n_copies++] = Copy{dst, src, bytes, f.group};
}

static inline void cp_async_commit() { me().group++; }

static inline void cp_async_wait(unsigned int pending) { land_copies(me(), pending); }

// The dynamic shared memory of the running block (extern __shared__ arrays point here).
static unsigned char* g_dynamic_shared;
static unsigned int g_dynamic_bytes;
static inline unsigned char* dynamic_shared() { return g_dynamic_shared; }

} // namespace kiln_emu

namespace kiln_emu {

// The fibers and their stacks, kept from launch to launch of this module (creating 128
// contexts and mapping their stacks per launch cost more than small kernels run). A
// fiber that finished its kernel waits in yield(EXITED) and runs the next launch's
// entry when resumed; after a failed launch every fiber is made anew.
static Fiber* g_fibers;
static unsigned int g_fiber_count;
static unsigned char* g_stacks;
static size_t g_stack_bytes;

static bool pool(unsigned int n, size_t sb) {
    if (n <= g_fiber_count && sb == g_stack_bytes) {
        return true;
    }
    if (g_stacks != nullptr) {
        munmap(g_stacks, g_stack_bytes * g_fiber_count);
        for (unsigned int i = 0; i < g_fiber_count; i++) {
            free(g_fibers[i].copies);
            free(g_fibers[i].wgmma);
        }
        free(g_fibers);
    }
    g_fiber_count = 0;
    g_stacks = (unsigned char*)mmap(nullptr, sb * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                                    -1, 0);
    if (g_stacks == MAP_FAILED) {
        g_stacks = nullptr;
        return false;
    }
    for (unsigned int i = 0; i < n; i++) {
        mprotect(g_stacks + i * sb, 4096, PROT_NONE);
    }
    g_fibers = (Fiber*)calloc(n, sizeof(Fiber));
    g_fiber_count = n;
    g_stack_bytes = sb;
    return true;
}

} // namespace kiln_emu

// Launch `entry` (a trampoline that copies the argument bytes into the kernel's struct and
// calls the kernel) over grid × block threads with `shared_bytes` of dynamic shared
// memory. Returns null, or the first error (static storage, valid until the next launch).
extern "C" const char* kiln_emu_launch(void (*entry)(const void*), const void* args, const unsigned int* grid,
                                       const unsigned int* block, unsigned int shared_bytes,
                                       unsigned int stack_bytes) {
    using namespace kiln_emu;
    unsigned int n = block[0] * block[1] * block[2];
    if (n == 0u || n > 1024u) {
        return "block of 0 or more than 1024 threads";
    }
    size_t sb = ((size_t)stack_bytes + 4095u) / 4096u * 4096u;
    if (!pool(n, sb)) {
        return "mmap of the fiber stacks failed";
    }
    Block b;
    memset(&b, 0, sizeof b);
    b.n = n;
    b.fibers = g_fibers;
    b.warp_arrived = (unsigned int*)calloc((n + 31u) / 32u, sizeof(unsigned int));
    b.slots = (Slot*)calloc(2u * n, sizeof(Slot));
    unsigned char* dyn = (unsigned char*)aligned_alloc(16, ((size_t)shared_bytes + 16u) / 16u * 16u);
    b.entry = entry;
    b.args = args;
    g_block = &b;
    g_dynamic_shared = dyn;
    g_dynamic_bytes = shared_bytes;
    blockDim = uint3{block[0], block[1], block[2]};
    gridDim = uint3{grid[0], grid[1], grid[2]};
    for (unsigned int z = 0; z < grid[2] && b.error == nullptr; z++) {
        for (unsigned int y = 0; y < grid[1] && b.error == nullptr; y++) {
            for (unsigned int x = 0; x < grid[0] && b.error == nullptr; x++) {
                blockIdx = uint3{x, y, z};
                // Shared memory starts undefined on a GPU: poison it (NaN floats).
                memset(dyn, 0xFF, shared_bytes);
                run_block(&b, g_stacks, sb);
            }
        }
    }
    const char* err = b.error;
    if (err != nullptr) {
        // Fibers stopped inside a kernel cannot be resumed into another: start afresh.
        for (unsigned int i = 0; i < g_fiber_count; i++) {
            g_fibers[i].started = false;
        }
    }
    free(b.warp_arrived);
    free(b.slots);
    free(dyn);
    g_block = nullptr;
    return err;
}
