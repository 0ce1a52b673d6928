"""Medians of two builds' kernel times, alternated by a bench script, and their ratio.

    python3 bench/ratio_table.py LOG SLOW:NAME FAST:NAME

LOG holds lines `SIDE LOSS TARGETS MS`; per loss and target form this prints a markdown row
with the median of each side and SLOW / FAST (above 1: FAST is faster).
"""
import statistics
import sys

log, slow, fast = sys.argv[1], sys.argv[2].split(":", 1), sys.argv[3].split(":", 1)
runs = {}
for line in open(log):
    side, loss, targets, ms = line.split()
    runs.setdefault((loss, targets, side), []).append(float(ms))
print(f"| loss | targets | {slow[1]} ms | {fast[1]} ms | {slow[1]} / {fast[1]} |")
print("|---|---|---|---|---|")
for loss, targets in sorted({(l, t) for l, t, _ in runs}):
    a = statistics.median(runs[(loss, targets, slow[0])])
    b = statistics.median(runs[(loss, targets, fast[0])])
    print(f"| {loss} | {targets} | {a:.3f} | {b:.3f} | {a / b:.2f}x |")
