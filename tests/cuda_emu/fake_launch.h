// What the fake CUDA driver (libcuda.cpp) and the kernel modules its NVRTC (libnvrtc.cpp)
// builds share: a kernel launch with its arguments copied, as cuLaunchKernel takes them.
#pragma once
#include <vector>

namespace fake {
struct Launch {
    virtual ~Launch() = default;
    // Runs the grid on the calling thread (the emulator of emu.h).
    virtual void run(unsigned grid, unsigned block) = 0;
    // The pointer arguments, which the driver checks against its live allocations.
    virtual std::vector<const void*> pointers() const = 0;
};

// `fake_bind_<kernel>` in a module: copies the arguments that `params` points at, as
// cuLaunchKernel's kernelParams, into a new Launch.
using Bind = Launch* (*)(void** params);
}  // namespace fake
