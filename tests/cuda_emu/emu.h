// CUDA's execution model on CPU threads, for testing the logic of the emitted CUDA C kernels
// where there is no GPU (tests/emitters.rs). One block at a time: each of its threads is a
// std::thread, `__syncthreads` a barrier over the block, `__shfl_xor_sync` an exchange through
// a per-warp slot array between two barriers over the warp, and `__shared__` a static (shared
// by the block's threads; the blocks run one after another). Floating point follows the host
// compiler, not the GPU (FMA contraction may differ), so results are compared with the
// interpreter's tolerance, as on a GPU.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
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
static thread_local uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

namespace emu {
inline std::barrier<>* block_barrier;
struct Warp {
    float slot[32];
    std::barrier<> bar{32};
};
inline thread_local Warp* warp;
}  // namespace emu

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int mask) {
    unsigned lane = threadIdx.x & 31;
    emu::warp->slot[lane] = v;
    emu::warp->bar.arrive_and_wait();
    float r = emu::warp->slot[lane ^ mask];
    emu::warp->bar.arrive_and_wait();
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
// Runs `kernel()` as a grid of `grid` blocks of `block` threads (block a multiple of 32).
template <class F>
void launch(unsigned grid, unsigned block, F kernel) {
    std::barrier<> bar(block);
    block_barrier = &bar;
    std::vector<std::unique_ptr<Warp>> warps;
    for (unsigned w = 0; w < block / 32; w++) warps.push_back(std::make_unique<Warp>());
    blockDim = {block, 1, 1};
    gridDim = {grid, 1, 1};
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; t++) {
        threads.emplace_back([&, t] {
            threadIdx = {t, 0, 0};
            warp = warps[t / 32].get();
            for (unsigned b = 0; b < grid; b++) {
                blockIdx = {b, 0, 0};
                kernel();
                // The block's threads all finish before the next block reuses the statics.
                bar.arrive_and_wait();
            }
        });
    }
    for (auto& t : threads) t.join();
}
}  // namespace emu
