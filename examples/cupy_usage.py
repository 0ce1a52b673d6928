#!/usr/bin/env python3
"""Using a kernel that `lossc compile` emitted, from outside lossc, with CuPy.

    lossc compile examples/a2.loss --target cuda -o build/
    python3 examples/cupy_usage.py build/a2.cu

The .cu file is self-contained (no headers), so CuPy's NVRTC compiles it as is. To train with
it in PyTorch, wrap the two launches in a torch.autograd.Function: forward returns `loss` and
saves `grad`; backward returns `grad * grad_output` (exchange tensors with torch.utils.dlpack
or cupy.asarray on the tensor's data pointer).
"""
import pathlib
import sys

import cupy as cp
import numpy as np

src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build/a2.cu").read_text()
name = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build/a2.cu").stem
module = cp.RawModule(code=src)
rows = module.get_function(f"lossc_{name}_rows")
mean = module.get_function(f"lossc_{name}_mean")

B, C = 128, 10
logits = cp.random.standard_normal((B, C), dtype=cp.float32)
labels = cp.random.randint(0, C, B).astype(cp.uint32)
grad = cp.empty_like(logits)
row_loss = cp.empty(B, dtype=cp.float32)
loss = cp.empty(1, dtype=cp.float64)
unused_f = cp.zeros(1, dtype=cp.float32)

# mode 0: integer labels with label smoothing alpha = 0.1; one block of 256 threads per row.
rows((B,), (256,), (logits, np.int32(0), labels, labels, unused_f, unused_f, np.float32(0.1),
                    np.int32(B), np.int32(C), grad, row_loss))
mean((1,), (256,), (row_loss, np.int32(B), loss))
print(f"{name}: batch loss {float(loss[0]):.6f}, |grad| {float(cp.abs(grad).sum()):.6f}")
