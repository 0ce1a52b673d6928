// CUDA's execution model on the CPU, for testing the logic of CUDA C kernels where there is
// no GPU (tests/emitters.rs, runtime/tests/gpu.rs, and the fake driver of libcuda.cpp). One
// block at a time, its threads as fibers on the calling thread, switched only at barriers:
// `__syncthreads` waits for the block, `__shfl_xor_sync` exchanges through a per-warp slot
// array between two barriers over the warp (its warp's lanes run meanwhile, not the block's),
// and `__shared__` is a static (shared by the block's threads; the blocks run one after
// another). Threads and blocks run first to last, or last to first (`backward`): a race, as a
// rule, gives different bits in the two orders. One launch at a time in a process: the
// block's state and `threadIdx` are statics too (thread-local ones would cost a call at each
// use in a shared library). Floating point follows the host compiler, not the GPU (FMA
// contraction may differ), so results are compared with the interpreter's tolerance, as on a
// GPU.
//
// A fiber starts on its own stack through ucontext and then switches with GCC's
// __builtin_setjmp/__builtin_longjmp, which unlike swapcontext make no system call (the
// signal mask stays as it is; a block switches hundreds of times), and unlike the library's
// longjmp are not intercepted by AddressSanitizer (whose interceptor clears the shadow of
// the stack it leaves at every switch; build-fake.sh's FAKE_ASAN=1).
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(threads)

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct uint3 {
    unsigned x = 0, y = 0, z = 0;
};
static uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

namespace emu {
// A barrier over `n` fibers: the last to arrive opens it; the others switch away until then.
struct Barrier {
    unsigned n = 0, arrived = 0, generation = 0;
};

// The fibers of the block running on this thread.
struct Block {
    std::vector<ucontext_t> fibers;
    // Where each fiber, and the launching thread, left off (valid once it has switched away).
    struct Jump {
        void* at[5];  // what __builtin_setjmp keeps
    };
    std::vector<Jump> jumps;
    Jump main;
    std::vector<std::unique_ptr<char[]>> stacks;
    std::vector<char> done, started;
    unsigned current = 0, grid = 0;
    const std::function<void()>* kernel = nullptr;
    Barrier block;
    Barrier warps[32];
    float slots[32][32];
};
inline Block* running;

// Fibers start and take turns, and blocks run, last to first rather than first to last. A
// thread that reads what another writes between the same two barriers (or another block in
// the same launch) sees the write in one order and not in the other.
inline bool backward = false;

constexpr size_t STACK = 256 * 1024;

// On the functions that switch fibers: AddressSanitizer, as before any call that does not
// return, would otherwise look for the stack to clean at every switch (a system call each).
#define EMU_SWITCH __attribute__((no_sanitize_address))

// Continues fiber `to` where it left off, or starts it. Not inlined: __builtin_longjmp may not
// be called from the function that calls __builtin_setjmp.
EMU_SWITCH __attribute__((noinline)) inline void enter(Block& b, unsigned to) {
    if (b.started[to]) __builtin_longjmp(b.jumps[to].at, 1);
    b.started[to] = true;
    setcontext(&b.fibers[to]);
    __builtin_unreachable();
}

// Switches to the next fiber in [lo, hi) that has not finished (round robin, in `backward`'s
// order).
EMU_SWITCH inline void yield(unsigned lo, unsigned hi) {
    Block& b = *running;
    unsigned from = b.current, to = from;
    do to = backward ? (to == lo ? hi - 1 : to - 1) : (to + 1 == hi ? lo : to + 1);
    while (b.done[to]);
    if (to == from) return;
    b.current = to;
    threadIdx = {to, 0, 0};
    if (__builtin_setjmp(b.jumps[from].at) == 0) enter(b, to);
    threadIdx = {from, 0, 0};
}

// Waits at `bar`, a barrier over the fibers [lo, hi), running those until it opens: a warp
// waiting at a shuffle lets only its own lanes run, so each warp goes on alone up to the
// block's next barrier, and a thread that reads another warp's shared memory without one sees
// it all written or none of it.
inline void wait(Barrier& bar, unsigned lo, unsigned hi) {
    unsigned generation = bar.generation;
    if (++bar.arrived == bar.n) {
        bar.arrived = 0;
        bar.generation++;
        return;
    }
    while (bar.generation == generation) yield(lo, hi);
}

// A fiber's life: every block of the grid, in step with the others.
EMU_SWITCH inline void fiber() {
    Block& b = *running;
    for (unsigned i = 0; i < b.grid; i++) {
        blockIdx = {backward ? b.grid - 1 - i : i, 0, 0};
        (*b.kernel)();
        // The block's threads all finish before the next block reuses the statics.
        wait(b.block, 0, b.fibers.size());
    }
    b.done[b.current] = true;
    __builtin_longjmp(b.main.at, 1);
}
}  // namespace emu

inline void __syncthreads() { emu::wait(emu::running->block, 0, blockDim.x); }

inline float __shfl_xor_sync(unsigned, float v, int mask) {
    unsigned lane = threadIdx.x & 31, w = threadIdx.x / 32;
    emu::Block& b = *emu::running;
    b.slots[w][lane] = v;
    emu::wait(b.warps[w], 32 * w, 32 * w + 32);
    float r = b.slots[w][lane ^ mask];
    emu::wait(b.warps[w], 32 * w, 32 * w + 32);
    return r;
}

// CUDA's built-in min and max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }

namespace emu {
// The fibers' state, one for every kernel of the program (one launch runs at a time); a static
// of `launch`, a template, would be one for each kernel, each with stacks of its own.
inline Block& state() {
    static Block b;
    return b;
}

// Runs `kernel()` as a grid of `grid` blocks of `block` threads (block a multiple of 32, at most
// 1024).
template <class F>
EMU_SWITCH void launch(unsigned grid, unsigned block, F kernel) {
    Block& b = state();
    const std::function<void()> k = kernel;
    b.kernel = &k;
    b.grid = grid;
    b.block = Barrier{block};
    for (auto& w : b.warps) w = Barrier{32};
    b.fibers.resize(block);
    b.jumps.resize(block);
    b.done.assign(block, false);
    b.started.assign(block, false);
    // Not zeroed: a fiber touches a few of its stack's pages, and only those get mapped.
    while (b.stacks.size() < block) b.stacks.push_back(std::unique_ptr<char[]>(new char[STACK]));
    blockDim = {block, 1, 1};
    gridDim = {grid, 1, 1};
    running = &b;
    for (unsigned t = 0; t < block; t++) {
        getcontext(&b.fibers[t]);
        b.fibers[t].uc_stack = {b.stacks[t].get(), 0, STACK};
        b.fibers[t].uc_link = nullptr;  // a fiber ends by jumping to `main`
        makecontext(&b.fibers[t], fiber, 0);
    }
    // A fiber that finishes jumps back here; the next unfinished one goes on.
    for (unsigned i = 0; i < block; i++) {
        unsigned t = backward ? block - 1 - i : i;
        while (!b.done[t]) {
            b.current = t;
            threadIdx = {t, 0, 0};
            if (__builtin_setjmp(b.main.at) == 0) enter(b, t);
        }
    }
    running = nullptr;
}
}  // namespace emu
