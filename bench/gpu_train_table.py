#!/usr/bin/env python3
"""The training benchmark of `scripts/gpu-check.sh .gpu train` as a table, with the goals of the
CUDA device checked: reads the log of one run (`lossc bench-train --device cuda` at each K, then
bench/torch_gpu_train_baseline.py on the same GPU) and prints a markdown row per K.

    python3 bench/gpu_train_table.py gpu-check.txt

Goals (docs/gpu.md): one model at least 3x PyTorch eager; a population at least 4,000
candidate-steps/s (the paper-scale search in one hour) and at least 3x the torch.func ensemble
at the same K. A rate that is missing from the log (a timeout, no PyTorch) shows as `-`, and a
goal that cannot be checked says so.
"""
import re
import sys

LOSSC = re.compile(r"^surrogate .*, population (\d+), cuda \((.*)\): ([\d.]+) images/s, ([\d.]+) candidate-steps/s")
TORCH = re.compile(r"^(torch eager, 1 model|torch\.func ensemble, K = (\d+)|torch\.compile \(reduce-overhead\), 1 model): ([\d.]+) candidate-steps/s")
POPULATION_GOAL = 4000.0
RATIO_GOAL = 3.0


def parse(lines):
    """lossc's candidate-steps/s and images/s per K (the first line of each K: a profile trains
    again after it), the ensemble's candidate-steps/s per K, eager's and compile's, and the
    device's name."""
    lossc, ensemble, single, device = {}, {}, {}, None
    for line in lines:
        if m := LOSSC.match(line):
            k = int(m.group(1))
            lossc.setdefault(k, (float(m.group(4)), float(m.group(3))))
            device = device or m.group(2)
        elif m := TORCH.match(line):
            rate = float(m.group(3))
            if m.group(2):
                ensemble.setdefault(int(m.group(2)), rate)
            else:
                single.setdefault("eager" if "eager" in m.group(1) else "compile", rate)
    return lossc, ensemble, single, device


def fmt(x, unit=""):
    return "-" if x is None else f"{x:,.0f}{unit}" if x >= 100 else f"{x:.1f}{unit}"


def ratio(a, b):
    return None if a is None or b is None else a / b


def table(lossc, ensemble, single, device):
    out = [f"lossc on {device or 'no CUDA device'}; PyTorch on the same GPU (candidate-steps/s, batch 128)", ""]
    out.append("| K | lossc | images/s | torch.func ensemble | lossc / ensemble | lossc / eager | lossc / torch.compile |")
    out.append("|---|---|---|---|---|---|---|")
    for k in sorted(set(lossc) | set(ensemble)):
        r, images = lossc.get(k, (None, None))
        vs_one = lambda side: fmt(ratio(r, single.get(side)), "x") if k == 1 else ""  # noqa: E731
        out.append(
            f"| {k} | {fmt(r)} | {fmt(images)} | {fmt(ensemble.get(k))} | "
            f"{fmt(ratio(r, ensemble.get(k)), 'x')} | {vs_one('eager')} | {vs_one('compile')} |"
        )
    out.append("")
    out.append(f"PyTorch one model: eager {fmt(single.get('eager'))}, torch.compile {fmt(single.get('compile'))}")
    out.extend(goals(lossc, ensemble, single))
    return "\n".join(out)


def verdict(value, goal):
    return "not measured" if value is None else "met" if value >= goal else "not met"


def goals(lossc, ensemble, single):
    rate = {k: r for k, (r, _) in lossc.items()}
    one = ratio(rate.get(1), single.get("eager"))
    pops = [k for k in rate if k > 1]
    best = max(pops, key=rate.get) if pops else None
    paired = [(k, rate[k] / ensemble[k]) for k in sorted(pops) if k in ensemble]
    at = lambda ok: ", ".join(f"K = {k}" for k, r in paired if (r >= RATIO_GOAL) == ok) or "none"  # noqa: E731
    return [
        f"goal: K = 1 at least {RATIO_GOAL:.0f}x eager: {fmt(one, 'x')}, {verdict(one, RATIO_GOAL)}",
        f"goal: a population at least {POPULATION_GOAL:,.0f} candidate-steps/s: "
        + (f"{fmt(rate[best])} at K = {best}, {verdict(rate[best], POPULATION_GOAL)}" if best else "not measured"),
        f"goal: a population at least {RATIO_GOAL:.0f}x the torch.func ensemble of the same K: "
        + (f"met at {at(True)}; not met at {at(False)}" if paired else "not measured"),
    ]


if __name__ == "__main__":
    with open(sys.argv[1], errors="replace") as f:
        print(table(*parse(f)))
