#!/usr/bin/env python3
"""PyTorch on a CUDA GPU, the baselines of `lossc bench-train --device cuda --population K`: the
same surrogate as bench/torch_train_baseline.py (ResNet9v2 small), batch 128 of 1x32x32 random
images, Adam, cross-entropy, timed three ways:

  eager      one model, eager PyTorch;
  compile    one model, torch.compile(mode="reduce-overhead") (CUDA graphs);
  ensemble   K models at once with torch.func: stack_module_state + vmap(functional_call),
             batch norm without running statistics (torch.func's requirement), dropout drawn
             per model.

Prints candidate-steps/s and images/s (all models) for each; `scripts/gpu-check.sh .gpu train`
runs it right after `lossc bench-train --device cuda` on the same GPU.

    python3 bench/torch_gpu_train_baseline.py [K,K,...]     # default 1,8,32,64,128
    TORCH_DEVICE=cpu TORCH_STEPS=3 python3 bench/torch_gpu_train_baseline.py 1,2   # the same code on the CPU
"""
import copy
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from torch_train_baseline import surrogate  # noqa: E402

BATCH = 128
STEPS = int(os.environ.get("TORCH_STEPS", 30))
WARMUP = 10
DEVICE = os.environ.get("TORCH_DEVICE", "cuda")


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(step, models):
    """Candidate-steps/s of `step` (one training step of `models` models), after warm-up."""
    for _ in range(WARMUP):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    sync()
    return STEPS * models / (time.perf_counter() - start)


def report(what, rate):
    print(f"{what}: {rate:.1f} candidate-steps/s, {rate * BATCH:.0f} images/s", flush=True)


def single(compiled):
    model = surrogate().to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(BATCH, 1, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (BATCH,), device=DEVICE)

    # Compiling the module compiles its forward and backward (AOTAutograd), both replayed as
    # CUDA graphs in this mode.
    run = torch.compile(model, mode="reduce-overhead") if compiled else model

    def step():
        opt.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(run(x), y).backward()
        opt.step()

    return timed(step, 1)


def ensemble(k):
    from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state, vmap

    base = surrogate().to(DEVICE)
    replace_all_batch_norm_modules_(base)
    models = [copy.deepcopy(base) for _ in range(k)]
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(base).to("meta")
    opt = torch.optim.Adam(list(params.values()), 1e-3)
    x = torch.rand(BATCH, 1, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (BATCH,), device=DEVICE)

    def one(p, b, x):
        return functional_call(skeleton, (p, b), (x,))

    run = vmap(one, in_dims=(0, 0, None), randomness="different")

    def step():
        opt.zero_grad(set_to_none=False)
        logits = run(params, buffers, x)  # [K, B, 10]
        loss = nn.functional.cross_entropy(logits.reshape(k * BATCH, 10), y.repeat(k), reduction="sum") / BATCH
        loss.backward()
        opt.step()

    return timed(step, k)


def main():
    ks = [int(k) for k in sys.argv[1].split(",")] if len(sys.argv) > 1 else [1, 8, 32, 64, 128]
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    print(f"pytorch {torch.__version__} on {name}, batch {BATCH}, 1x32x32, Adam, CE")
    report("torch eager, 1 model", single(False))
    for k in ks:
        try:
            report(f"torch.func ensemble, K = {k}", ensemble(k))
        except Exception as e:  # noqa: BLE001 - the baseline is reported as missing, not fatal
            print(f"torch.func ensemble K = {k} failed: {type(e).__name__}: {e}")
    # Last: its compilation takes the longest, and a timeout should cut nothing else.
    try:
        report("torch.compile (reduce-overhead), 1 model", single(True))
    except Exception as e:  # noqa: BLE001
        print(f"torch.compile failed: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
