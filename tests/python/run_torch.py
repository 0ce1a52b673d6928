"""Runs modules written by `lossc compile --target torch` on the cases of a JSON file, in f64
and in f32 on the CPU (the module's PyTorch-ops path): each case's row losses (reduction
"none") and the gradient of the batch mean with respect to the logits (through the module's
autograd.Function). With a GPU, also the fused CUDA kernel's path in f32. Where libnvrtc is
found, each module's kernel is compiled to PTX through the module's own loader. Used by
tests/python_targets.rs; prints one JSON object."""

import importlib.util
import json
import math
import sys

import torch


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finite(values):
    """JSON numbers, with null for what JSON cannot hold (inf, nan)."""
    return [float(v) if math.isfinite(v) else None for v in values.tolist()]


def run(fn, case, dtype, device):
    t = case["targets"]
    logits = torch.tensor(case["logits"], dtype=dtype, device=device, requires_grad=True)
    if t["kind"] == "labels":
        targets = torch.tensor(t["labels"], device=device)
    elif t["kind"] == "mixup":
        targets = (torch.tensor(t["labels"]), torch.tensor(t["labels_b"]), torch.tensor(t["lam"], dtype=dtype))
    else:
        targets = torch.tensor(t["dense"], dtype=dtype, device=device)
    a = case["smoothing"]
    rows = fn(logits, targets, a, "none").detach().cpu()
    fn(logits, targets, a, "mean").backward()
    return {"rows": finite(rows), "grad": finite(logits.grad.detach().cpu().reshape(-1))}


def main():
    cases = json.load(open(sys.argv[1]))
    out, ptx = [], {}
    cuda = torch.cuda.is_available()
    for case in cases:
        module = load(case["path"], case["name"])
        fn = getattr(module, case["name"])
        result = {dtype: run(fn, case, getattr(torch, dtype), "cpu") for dtype in ("float64", "float32")}
        if cuda:
            result["cuda"] = run(fn, case, torch.float32, "cuda")
            result["fused"] = bool(module._kernels.get(torch.cuda.current_device()))
        if case["name"] not in ptx:
            try:
                code = module._ptx("compute_80")
                ptx[case["name"]] = all(f".entry {e}".encode() in code for e in (module._ROWS, module._ROWS_WARP))
            except RuntimeError as e:
                ptx[case["name"]] = str(e)
        out.append(result)
    json.dump({"torch": torch.__version__, "cuda": cuda, "ptx": ptx, "cases": out}, sys.stdout)


main()
