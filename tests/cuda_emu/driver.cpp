// Runs an emitted loss kernel (KERNEL_FILE, entry points ROWS and ROWS_WARP) on the CUDA
// emulator (emu.h). Reads cases from stdin until EOF, each: u32 layout (0: ROWS, a block per
// row; 1: ROWS_WARP, 8 rows per block), i32 mode, i32 B, i32 C, f32 alpha, then f32
// logits[B*C], u32 labels[B], u32 labels_b[B], f32 lam[B], f32 dense[B*C]; writes f32
// row_loss[B] and f32 grad[B*C] per case to stdout.
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
        std::vector<float> logits, lam, dense, grad(n), row_loss(B);
        std::vector<uint32_t> labels, labels_b;
        if (!read(logits, n) || !read(labels, B) || !read(labels_b, B) || !read(lam, B) || !read(dense, n)) return 1;
        if (layout == 0) {
            emu::launch(B, 256, [&] {
                ROWS(logits.data(), mode, labels.data(), labels_b.data(), lam.data(), dense.data(), alpha, B, C,
                     grad.data(), row_loss.data());
            });
        } else {
            emu::launch((B + 7) / 8, 256, [&] {
                ROWS_WARP(logits.data(), mode, labels.data(), labels_b.data(), lam.data(), dense.data(), alpha, B, C,
                          grad.data(), row_loss.data());
            });
        }
        std::fwrite(row_loss.data(), 4, B, stdout);
        std::fwrite(grad.data(), 4, n, stdout);
    }
}
