"""Trains a small classifier in JAX with a loss compiled by lossc.

    lossc compile examples/a2.loss --target jax -o build
    python examples/jax_train.py build/a2.py

The module gives `a2(logits, targets, label_smoothing=0.0, reduction="mean")`, whose gradient
is lossc's symbolic one. The data here are synthetic (Gaussian blobs, one per class), so the
script runs anywhere JAX does.
"""

import importlib.util
import sys

import jax
import jax.numpy as jnp


def load_loss(path):
    name = path.rsplit("/", 1)[-1].removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def main():
    loss_fn = load_loss(sys.argv[1] if len(sys.argv) > 1 else "build/a2.py")
    classes, dim, n = 10, 32, 4096
    key = jax.random.PRNGKey(0)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    centres = 3 * jax.random.normal(k1, (classes, dim))
    labels = jax.random.randint(k2, (n,), 0, classes)
    x = centres[labels] + jax.random.normal(k3, (n, dim))
    params = {"w1": 0.1 * jax.random.normal(k4, (dim, 64)), "b1": jnp.zeros(64),
              "w2": 0.1 * jax.random.normal(k1, (64, classes)), "b2": jnp.zeros(classes)}

    def logits(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    @jax.jit
    def step(p, x, y):
        value, grads = jax.value_and_grad(lambda p: loss_fn(logits(p, x), y, label_smoothing=0.1))(p)
        return jax.tree.map(lambda a, g: a - 0.1 * g, p, grads), value

    for epoch in range(20):
        for i in range(0, n, 256):
            params, value = step(params, x[i:i + 256], labels[i:i + 256])
        accuracy = jnp.mean(jnp.argmax(logits(params, x), -1) == labels)
        print(f"epoch {epoch + 1:2d}: loss {float(value):.4f}, training accuracy {float(accuracy):.3f}")


main()
