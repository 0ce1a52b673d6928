"""Runs modules written by `lossc compile --target jax` on the cases of a JSON file, in f64 and
in f32, under jax.jit: each case's row losses (reduction "none") and the gradient of the batch
mean with respect to the logits (through the module's custom_vjp). Used by
tests/python_targets.rs; prints one JSON object."""

import importlib.util
import json
import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def finite(values):
    """JSON numbers, with null for what JSON cannot hold (inf, nan)."""
    return [float(v) if jnp.isfinite(v) else None for v in values]


def main():
    cases = json.load(open(sys.argv[1]))
    out = []
    for case in cases:
        fn = load(case["path"], case["name"])
        t = case["targets"]
        result = {}
        for dtype in ("float64", "float32"):
            logits = jnp.asarray(case["logits"], dtype=dtype)
            if t["kind"] == "labels":
                targets = jnp.asarray(t["labels"])
            elif t["kind"] == "mixup":
                targets = (jnp.asarray(t["labels"]), jnp.asarray(t["labels_b"]), jnp.asarray(t["lam"], dtype=dtype))
            else:
                targets = jnp.asarray(t["dense"], dtype=dtype)
            a = case["smoothing"]
            rows = lambda z: fn(z, targets, a, "none")  # noqa: E731
            grad = jax.grad(lambda z: fn(z, targets, a, "mean"))
            if t["kind"] == "labels" and a == 0:
                # Compiled once per module and dtype (compiling every case would take minutes);
                # the other cases run op by op, through the same code.
                rows, grad = jax.jit(rows), jax.jit(grad)
            result[dtype] = {"rows": finite(rows(logits)), "grad": finite(grad(logits).reshape(-1))}
        out.append(result)
    json.dump(out, sys.stdout)


main()
