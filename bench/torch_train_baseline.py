#!/usr/bin/env python3
"""PyTorch CPU baseline for `lossc bench-train`: the same surrogate (ResNet9v2 small: conv 8
stem, pre-activation blocks 16 and 32 with 1x1 stride-2 shortcuts, BN-swish, GAP, dropout 0.5,
dense 10), batch 128 of 1x32x32 images, Adam, cross-entropy; prints images/s for 1 and 2
threads. bench/train_bench.sh runs it (in .venv-torch, which that script creates) interleaved
with `lossc bench-train`; torch is a large install, kept out of CI.
"""
import time

import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.bn = nn.ModuleList([nn.BatchNorm2d(cin), nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)])
        self.conv = nn.ModuleList([
            nn.Conv2d(cin, cout, 3, 2, 1, bias=False),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        ])
        self.shortcut = nn.Conv2d(cin, cout, 1, 2, 0, bias=False)

    def forward(self, x):
        y = x
        for bn, conv in zip(self.bn, self.conv):
            y = conv(nn.functional.silu(bn(y)))
        return y + self.shortcut(x)


def surrogate():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, 1, 1, bias=False), Block(8, 16), Block(16, 32), nn.BatchNorm2d(32), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(32, 10),
    )


def main():
    for threads in (1, 2):
        torch.set_num_threads(threads)
        model = surrogate()
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        x = torch.rand(128, 1, 32, 32)
        y = torch.randint(0, 10, (128,))
        for step in range(25):
            if step == 5:
                start = time.perf_counter()
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        rate = 20 * 128 / (time.perf_counter() - start)
        print(f"pytorch {torch.__version__}, batch 128, {threads} thread(s): {rate:.0f} images/s")


if __name__ == "__main__":
    main()
