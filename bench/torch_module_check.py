"""On a GPU: modules from `lossc compile --target torch` run their fused CUDA kernel, agree
with their own PyTorch-ops path in float64, and time one training step of a small CNN against
the same loss written in eager PyTorch (autograd through the formula), in one run.

    lossc compile examples/a2.loss --target torch -o build/torch
    python3 bench/torch_module_check.py build/torch/a2.py [more modules...]
"""

import importlib.util
import sys
import time

import torch


def load(path):
    name = path.rsplit("/", 1)[-1].removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return name, module


def eager(module):
    """The same loss as plain PyTorch: softmax, the module's elementwise formula, autograd."""

    def loss(logits, labels, smoothing=0.0):
        classes = logits.shape[-1]
        y = torch.nn.functional.one_hot(labels, classes).to(logits.dtype)
        y = (1 - smoothing) * y + smoothing / classes
        value, _ = module._parts(y, torch.softmax(logits, dim=-1))
        return value.sum(dim=-1).mean()

    return loss


def agree(name, module):
    fn = getattr(module, name)
    torch.manual_seed(0)
    worst = 0.0
    for b, c in [(256, 10), (1000, 100), (64, 1000), (8, 5000)]:
        z = 3 * torch.randn(b, c, device="cuda")
        labels = torch.randint(0, c, (b,), device="cuda")
        lam = torch.rand(b, device="cuda")
        dense = torch.softmax(torch.randn(b, c, device="cuda"), -1)
        for targets, a in [(labels, 0.0), (labels, 0.1), ((labels, labels.flip(0), lam), 0.1), (dense, 0.0)]:
            got_z = z.clone().requires_grad_()
            rows = fn(got_z, targets, a, "none")
            fn(got_z, targets, a, "mean").backward()
            ref_z = z.double().cpu().requires_grad_()
            cpu_targets = tuple(t.cpu() for t in targets) if isinstance(targets, tuple) else targets.cpu()
            ref_rows = fn(ref_z, cpu_targets, a, "none")
            fn(ref_z, cpu_targets, a, "mean").backward()
            scale = ref_z.grad.abs().max().item() or 1.0
            d_rows = ((rows.double().cpu() - ref_rows.detach()).abs() / ref_rows.detach().abs().clamp(min=1)).max().item()
            d_grad = (got_z.grad.double().cpu() - ref_z.grad).abs().max().item() / scale
            worst = max(worst, d_rows, d_grad)
    fused = bool(module._kernels.get(torch.cuda.current_device()))
    print(f"{name}: fused kernel ran: {fused}; worst relative difference from its float64 path: {worst:.2e}")
    return fused and worst < 1e-4


def net(classes):
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 128, 3, padding=1, stride=2), torch.nn.BatchNorm2d(128), torch.nn.ReLU(),
        torch.nn.Conv2d(128, 256, 3, padding=1, stride=2), torch.nn.BatchNorm2d(256), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(256, classes),
    ).cuda()


def step_ms(loss, classes, batch=128, steps=50):
    torch.manual_seed(0)
    model = net(classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device="cuda")
    labels = torch.randint(0, classes, (batch,), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        loss(model(x), labels, 0.1).backward()
        opt.step()

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / steps


def loss_ms(loss, b, c, reps=100):
    z = torch.randn(b, c, device="cuda", requires_grad=True)
    labels = torch.randint(0, c, (b,), device="cuda")
    for _ in range(10):
        loss(z, labels, 0.1).backward()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        loss(z, labels, 0.1).backward()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / reps


def main():
    print(f"PyTorch {torch.__version__}, {torch.cuda.get_device_name()}")
    ok = True
    for path in sys.argv[1:]:
        name, module = load(path)
        ok &= agree(name, module)
        fn, plain = getattr(module, name), eager(module)
        for classes in (10, 100):
            ours, theirs = step_ms(fn, classes), step_ms(plain, classes)
            print(f"{name}: training step (CNN, batch 128, 32x32, {classes} classes): module {ours:.3f} ms, "
                  f"eager PyTorch loss {theirs:.3f} ms, ratio {theirs / ours:.2f}x")
        for b, c in ((8192, 100), (65536, 1000)):
            ours, theirs = loss_ms(fn, b, c), loss_ms(plain, b, c)
            print(f"{name}: loss forward+backward {b}x{c}: module {ours:.3f} ms, eager PyTorch {theirs:.3f} ms, "
                  f"ratio {theirs / ours:.2f}x")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
