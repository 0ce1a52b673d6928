#!/usr/bin/env python3
"""Independent reference values for the paper's 16 losses, computed with JAX in float64.

Each loss is written here again, by hand, from SPEC section 7 with the guarded operations of
SPEC section 2, and differentiated with jax.grad through jax.nn.softmax: nothing is shared with
lossc but the formulas. Writes tests/data/reference.json, which tests/reference.rs compares
`lossc`'s interpreter against (1e-9 relative).

Run: scripts/reference.sh   (creates .venv-ref with jax[cpu] and scipy, then runs this file)
"""
import json
import pathlib

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import jax.scipy.special as sp  # noqa: E402
import numpy as np  # noqa: E402

EPS = 1e-7
ln = lambda x: jnp.log(jnp.abs(x) + EPS)  # noqa: E731  guarded ln (op 1)
log = lambda x: ln(x) / jnp.log(10.0)  # noqa: E731   guarded log10 (op 2)
sig = jax.nn.sigmoid
dsig = lambda x: sig(x) * (1.0 - sig(x))  # noqa: E731
dtanh = lambda x: 1.0 - jnp.tanh(x) ** 2  # noqa: E731
inv1p_abs = lambda x: 1.0 / (1.0 + jnp.abs(x))  # noqa: E731  op 6 ("dsoftsign")


def softplus(x):
    # ln(|1 + e^x| + eps), rewritten exactly so it does not overflow
    m = jnp.maximum(x, 0.0)
    return m + jnp.log1p(jnp.exp(-jnp.abs(x)) + EPS * jnp.exp(-m))


def q(y, p):
    return p / (y + EPS)


LOSSES = {
    "b0": lambda y, p: -sig(softplus(q(y, p))),
    "b1": lambda y, p: -dsig(sp.i0e(q(y, p))),
    "b2": lambda y, p: -sp.i1e(sp.erf(q(y, p))),
    "c0": lambda y, p: -ln(jnp.arctan(q(y, p))),
    "c1": lambda y, p: -ln(softplus(q(y, p))),
    "c2": lambda y, p: -sig(log(q(y, p))),
    "m0": lambda y, p: -sp.i1(jnp.arctan(log(p))) * y,
    "m1": lambda y, p: ln(1.0 + jnp.exp(p - y)),
    "m2": lambda y, p: jnp.arcsinh(sp.i0(y - p)),
    "r0": lambda y, p: dtanh(sp.i0e(q(y, p))) + sp.i0e(q(y, p)),
    "r1": lambda y, p: log(q(y, p)) / jnp.sqrt(1.0 + (log(q(y, p)) + y) ** 2),
    "r2": lambda y, p: jnp.abs(log(q(y, p))) ** jnp.abs(sp.i0(y)),
    "a0": lambda y, p: -ln(inv1p_abs(log(p))) * y,
    "a1": lambda y, p: -ln(sp.i0e(log(p))) * y,
    "a2": lambda y, p: y / sp.i0e(jnp.log(p + EPS)),
    "ce": lambda y, p: -y * jnp.log(jnp.abs(p) + EPS),
}


def batch_loss(f, logits, y):
    p = jax.nn.softmax(logits, axis=-1)
    rows = jnp.sum(f(y, p), axis=-1)
    return jnp.mean(rows), rows


def targets_of(case, b, c):
    if "targets" in case:
        return np.array(case["targets"])
    onehot = lambda l: np.eye(c)[np.array(l)]  # noqa: E731
    a = case.get("label_smoothing", 0.0)
    if "lam" in case:
        lam = np.array(case["lam"])[:, None]
        y = lam * onehot(case["labels"]) + (1 - lam) * onehot(case["labels_b"])
    else:
        y = onehot(case["labels"])
    return (1 - a) * y + a / c


def main():
    rng = np.random.default_rng(20240406)
    b, c = 6, 5
    logits = (rng.standard_normal((b, c)) * 3.0).round(6)
    labels = rng.integers(0, c, b).tolist()
    labels_b = rng.integers(0, c, b).tolist()
    lam = rng.uniform(0.05, 0.95, b).round(6).tolist()
    dense = rng.dirichlet(np.ones(c), b).round(6)
    cases = [
        {"name": "onehot", "labels": labels},
        {"name": "smoothed", "labels": labels, "label_smoothing": 0.1},
        {"name": "mixup", "labels": labels, "labels_b": labels_b, "lam": lam},
        {"name": "dense", "targets": dense.tolist()},
    ]
    out = []
    for case in cases:
        case = dict(case, logits=logits.tolist())
        y = targets_of(case, b, c)
        case["expected"] = {}
        for name, f in LOSSES.items():
            (loss, rows), grad = jax.value_and_grad(lambda z: batch_loss(f, z, y), has_aux=True)(jnp.array(logits))
            case["expected"][name] = {
                "loss": float(loss),
                "row_loss": np.asarray(rows).tolist(),
                "grad_logits": np.asarray(grad).tolist(),
            }
        out.append(case)
    path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "reference.json"
    path.write_text(json.dumps({"generator": "scripts/reference.py (JAX %s, float64)" % jax.__version__, "cases": out}, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
