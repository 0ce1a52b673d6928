// Included at the top of every module the fake NVRTC (libnvrtc.cpp) builds: the emulator, and
// `fake::bind`, which turns a kernel and cuLaunchKernel's argument pointers into a Launch. The
// argument types come from the kernel's own signature, so no table has to describe them.
#pragma once
#include <tuple>
#include <type_traits>
#include <utility>

#include "emu.h"
#include "fake_launch.h"

namespace fake {
template <class... A>
struct Bound final : Launch {
    void (*kernel)(A...);
    std::tuple<std::decay_t<A>...> args;

    Bound(void (*k)(A...), std::decay_t<A>... a) : kernel(k), args(a...) {}

    void run(unsigned grid, unsigned block) override {
        emu::launch(grid, block, [&] { std::apply(kernel, args); });
    }

    std::vector<const void*> pointers() const override {
        std::vector<const void*> out;
        std::apply([&](const auto&... a) { (push(out, a), ...); }, args);
        return out;
    }

   private:
    template <class T>
    static void push(std::vector<const void*>& out, const T& a) {
        if constexpr (std::is_pointer_v<T>) out.push_back((const void*)a);
    }
};

template <class... A, std::size_t... I>
Launch* bind_at(void (*kernel)(A...), void** params, std::index_sequence<I...>) {
    return new Bound<A...>(kernel, *static_cast<std::decay_t<A>*>(params[I])...);
}

template <class... A>
Launch* bind(void (*kernel)(A...), void** params) {
    return bind_at(kernel, params, std::index_sequence_for<A...>{});
}
}  // namespace fake
