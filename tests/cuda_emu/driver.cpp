// Runs an emitted loss kernel (KERNEL_FILE, entry points ROWS, ROWS_WARP and MEAN) on the CUDA
// emulator (emu.h). Reads cases from stdin until EOF, each: u32 layout (0: ROWS, a block per
// row; 1: ROWS_WARP, 8 rows per block), i32 mode, i32 B, i32 C, f32 alpha, then f32
// logits[B*C], u32 labels[B], u32 labels_b[B], f32 lam[B], f32 dense[B*C]; writes f32
// row_loss[B], f32 grad[B*C] and f64 mean (MEAN of row_loss) per case to stdout; the kernel gets
// only the targets its mode reads.
// Each case runs twice, the emulator's threads and blocks first to last and then last to first
// (emu.h's `backward`); exit code 3 where the two differ in a bit: a race.
// With -DEMU_PCH, the two headers below come precompiled as emu_pch.h (tests/emitters.rs).
#ifdef EMU_PCH
#include "emu_pch.h"
#else
#include "emu.h"
#include <cstdio>
#endif
#include KERNEL_FILE

template <class T>
static bool read(std::vector<T>& v, size_t n) {
    v.resize(n);
    return std::fread(v.data(), sizeof(T), n, stdin) == n;
}

template <class T>
static bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

int main() {
    for (;;) {
        uint32_t layout;
        int32_t mode, B, C;
        float alpha;
        if (std::fread(&layout, 4, 1, stdin) != 1) return 0;
        if (std::fread(&mode, 4, 1, stdin) != 1 || std::fread(&B, 4, 1, stdin) != 1 ||
            std::fread(&C, 4, 1, stdin) != 1 || std::fread(&alpha, 4, 1, stdin) != 1)
            return 1;
        size_t n = (size_t)B * C;
        std::vector<float> logits, lam, dense;
        std::vector<uint32_t> labels, labels_b;
        if (!read(logits, n) || !read(labels, B) || !read(labels_b, B) || !read(lam, B) || !read(dense, n)) return 1;
        // Only the targets of the mode are passed (the others as null), so that reading another
        // is an error (under AddressSanitizer, as tests/emitters.rs builds this).
        auto drop = [](auto& v) { std::decay_t<decltype(v)>().swap(v); };
        if (mode == 2) drop(labels);
        if (mode != 1) drop(labels_b), drop(lam);
        if (mode != 2) drop(dense);
        struct Out {
            std::vector<float> row_loss, grad;
            std::vector<double> mean;
        };
        auto run = [&](bool backward) {
            emu::backward = backward;
            Out o{std::vector<float>(B), std::vector<float>(n), std::vector<double>(1)};
            float *g = o.grad.data(), *l = o.row_loss.data();
            if (layout == 0) {
                emu::launch(B, 256, [&] {
                    ROWS(logits.data(), mode, labels.data(), labels_b.data(), lam.data(), dense.data(), alpha, B, C, g,
                         l);
                });
            } else {
                emu::launch((B + 7) / 8, 256, [&] {
                    ROWS_WARP(logits.data(), mode, labels.data(), labels_b.data(), lam.data(), dense.data(), alpha, B,
                              C, g, l);
                });
            }
            emu::launch(1, 256, [&] { MEAN(l, B, o.mean.data()); });
            return o;
        };
        Out o = run(false), back = run(true);
        if (!same_bits(o.row_loss, back.row_loss) || !same_bits(o.grad, back.grad) || !same_bits(o.mean, back.mean)) {
            std::fprintf(stderr, "layout %u, mode %d, %d x %d: the results depend on the order the threads run in\n",
                         layout, mode, B, C);
            return 3;
        }
        std::fwrite(o.row_loss.data(), 4, B, stdout);
        std::fwrite(o.grad.data(), 4, n, stdout);
        std::fwrite(o.mean.data(), 8, 1, stdout);
    }
}
