#!/usr/bin/env python3
"""JAX baseline for `lossc bench --jax`: times jax.jit(jax.value_and_grad(loss)) on one thread.

The losses are the same formulas as scripts/reference.py (imported from there), in float32,
with targets built inside the jitted function from integer labels (one-hot) or given densely,
exactly the work lossc's kernel does. Prints one JSON list of
{"loss", "rows", "classes", "targets", "ms", "compile_ms"} on stdout.
"""
import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "scripts"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import reference  # noqa: E402  (the 16 losses, written independently of lossc)

jax.config.update("jax_enable_x64", False)


def median_ms(f, *args, budget=0.3, min_reps=5):
    jax.block_until_ready(f(*args))
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget and len(times) < 1000):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--losses", default="ce,a2")
    ap.add_argument("--shapes", default="256x10,8192x10,8192x100,65536x1000")
    ap.add_argument("--targets", default="labels,dense")
    a = ap.parse_args()
    out = []
    rng = np.random.default_rng(1)
    for shape in a.shapes.split(","):
        b, c = map(int, shape.split("x"))
        z = jnp.asarray((2 * rng.standard_normal((b, c))).astype(np.float32))
        labels = jnp.asarray(rng.integers(0, c, b).astype(np.int32))
        dense = jax.nn.one_hot(labels, c, dtype=jnp.float32) * 0.9 + 0.1 / c
        for kind in a.targets.split(","):
            for name in a.losses.split(","):
                f = reference.LOSSES.get(name)
                if f is None:
                    print(f"jax {name}: no hand-written version (scripts/reference.py has the paper's losses); not timed",
                          file=sys.stderr)
                    continue
                if kind == "labels":
                    def batch(z, t, f=f, c=c):
                        y = jax.nn.one_hot(t, c, dtype=z.dtype)
                        return jnp.mean(jnp.sum(f(y, jax.nn.softmax(z, axis=-1)), axis=-1))
                    t = labels
                else:
                    def batch(z, t, f=f):
                        return jnp.mean(jnp.sum(f(t, jax.nn.softmax(z, axis=-1)), axis=-1))
                    t = dense
                g = jax.jit(jax.value_and_grad(batch))
                t0 = time.perf_counter()
                jax.block_until_ready(g(z, t))
                compile_ms = 1e3 * (time.perf_counter() - t0)
                ms = median_ms(g, z, t)
                out.append({"loss": name, "rows": b, "classes": c, "targets": kind, "ms": ms, "compile_ms": compile_ms})
                print(f"jax {name} {shape} {kind}: {ms:.3f} ms (first call {compile_ms:.0f} ms)", file=sys.stderr)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
