"""Static instruction mix of CUDA kernels, without a GPU: compiles PTX with ptxas (sm_90) to
machine code, and reports per kernel the registers, spills, and each innermost loop's
instructions: how many, how many are FFMA (the arithmetic) and loads. Fewer instructions per
FFMA is less issue work for the same math; it is not a timing.

    python sass_loops.py PTXAS CUOBJDUMP FILE.ptx [KERNEL ...]

A KERNEL names a kernel or the entry points of a table row's variants (`conv_forward` for
`conv_forward_1`, `_2` and `_4`).
"""
import collections
import re
import subprocess
import sys
import tempfile


def registers(ptxas_log):
    """kernel -> (registers, spill bytes stored)"""
    out, name = {}, None
    for line in ptxas_log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
        m = re.search(r"(\d+) bytes spill stores", line)
        if m and name:
            spill = int(m.group(1))
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            out[name] = (int(m.group(1)), spill)
    return out


def loops(sass, wanted):
    """kernel -> [(instructions, FFMA, loads)] of its innermost loops, largest first"""
    parts = re.split(r"\n\s*Function : (\w+)", sass)
    out = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        if wanted and not any(name == w or re.fullmatch(re.escape(w) + r"_\d+", name) for w in wanted):
            continue
        ins = [(int(a, 16), t.strip()) for a, t in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", body)]
        at = {a: k for k, (a, _) in enumerate(ins)}
        spans = []
        for k, (a, t) in enumerate(ins):
            t = re.sub(r"^@!?U?PT?\d*\s+", "", t)
            m = re.match(r"BRA\b.*?0x([0-9a-f]+)", t)
            if m and int(m.group(1), 16) <= a and int(m.group(1), 16) in at:
                spans.append((at[int(m.group(1), 16)], k))
        inner = [s for s in spans if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in spans)]
        rows = []
        for s, e in inner:
            ops = collections.Counter(re.sub(r"^@!?U?PT?\d*\s+", "", t).split()[0].split(".")[0] for _, t in ins[s : e + 1])
            if e - s + 1 > 1:
                rows.append((e - s + 1, ops["FFMA"], ops["LDG"] + ops["LDS"] + ops["LD"]))
        out[name] = sorted(rows, reverse=True)
    return out


def main():
    ptxas, cuobjdump, path, *wanted = sys.argv[1:]
    with tempfile.TemporaryDirectory() as d:
        log = subprocess.run([ptxas, "-arch=sm_90", "-O3", "-v", path, "-o", f"{d}/k.cubin"],
                             check=True, capture_output=True, text=True).stderr
        sass = subprocess.run([cuobjdump, "-sass", f"{d}/k.cubin"], check=True, capture_output=True, text=True).stdout
    regs, inner = registers(log), loops(sass, set(wanted))
    print(f"{'kernel':24} {'regs':>5} {'spill':>6}  innermost loops: instructions / FFMA / loads (instructions per FFMA)")
    for name in sorted(inner):
        r, spill = regs.get(name, (0, 0))
        desc = ", ".join(f"{n}/{f}/{l}" + (f" ({n / f:.1f})" if f else "") for n, f, l in inner[name][:3])
        print(f"{name:24} {r:>5} {spill:>6}  {desc}")


main()
