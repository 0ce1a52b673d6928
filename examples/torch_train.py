"""Trains a small classifier in PyTorch with a loss compiled by lossc.

    lossc compile examples/a2.loss --target torch -o build
    python examples/torch_train.py build/a2.py

The module gives `a2(logits, targets, label_smoothing=0.0, reduction="mean")`, a
torch.autograd.Function whose gradient is lossc's symbolic one: the fused CUDA kernel on a GPU,
PyTorch ops on the CPU. The data here are synthetic (Gaussian blobs, one per class), so the
script runs anywhere PyTorch does.
"""

import importlib.util
import sys

import torch


def load_loss(path):
    name = path.rsplit("/", 1)[-1].removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def main():
    loss_fn = load_loss(sys.argv[1] if len(sys.argv) > 1 else "build/a2.py")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    classes, dim, n = 10, 32, 4096
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(classes, dim, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    x = (centres[labels] + torch.randn(n, dim, generator=g)).to(device)
    labels = labels.to(device)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(dim, 64), torch.nn.Tanh(), torch.nn.Linear(64, classes)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(20):
        for i in range(0, n, 256):
            opt.zero_grad()
            value = loss_fn(model(x[i:i + 256]), labels[i:i + 256], label_smoothing=0.1)
            value.backward()
            opt.step()
        with torch.no_grad():
            accuracy = (model(x).argmax(-1) == labels).float().mean()
        print(f"epoch {epoch + 1:2d}: loss {value.item():.4f}, training accuracy {accuracy.item():.3f} ({device})")


main()
