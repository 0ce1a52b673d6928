#!/usr/bin/env python3
"""PyTorch baseline for scripts/gpu-check.sh: eager and torch.compile forward+backward of the
same losses (CE and A2, written from SPEC section 7) on CUDA, integer labels, float32.
Timed like `lossc gpu-bench`: 50 calls queued back to back, one synchronisation, the median
per call over 9 samples. torch.compile only for the shapes named in COMPILED (each shape is
a fresh compilation of tens of seconds).
Prints one line per configuration: loss, shape, eager ms, torch.compile ms.
"""
import sys
import time

import torch

EPS = 1e-7
COMPILED = {"8192x100", "65536x1000"}


def i0e(x):
    return torch.special.i0e(x)


LOSSES = {
    "ce": lambda y, p: -y * torch.log(p.abs() + EPS),
    "a2": lambda y, p: y / i0e(torch.log(p.abs() + EPS)),
}


def step(name, z, labels):
    z = z.detach().requires_grad_(True)
    y = torch.nn.functional.one_hot(labels, z.shape[1]).to(z.dtype)
    p = torch.softmax(z, dim=-1)
    loss = LOSSES[name](y, p).sum(dim=-1).mean()
    loss.backward()
    return loss, z.grad


def median_ms(f, calls=50, samples=9):
    for _ in range(5):
        f()
    torch.cuda.synchronize()
    t = []
    for _ in range(samples):
        s = time.perf_counter()
        for _ in range(calls):
            f()
        torch.cuda.synchronize()
        t.append(1e3 * (time.perf_counter() - s) / calls)
    return sorted(t)[len(t) // 2]


def main():
    shapes = sys.argv[1].split(",") if len(sys.argv) > 1 else ["8192x100", "65536x1000"]
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    for shape in shapes:
        b, c = map(int, shape.split("x"))
        z = torch.randn(b, c, device="cuda") * 2
        labels = torch.randint(0, c, (b,), device="cuda")
        for name in LOSSES:
            eager = median_ms(lambda: step(name, z, labels))
            comp = "-"
            if shape in COMPILED:
                compiled = torch.compile(lambda zz, ll, n=name: step(n, zz, ll))
                comp = f"{median_ms(lambda: compiled(z, labels)):.4f} ms"
            print(f"torch {name} {shape}: eager {eager:.4f} ms, torch.compile {comp}", flush=True)


if __name__ == "__main__":
    main()
