"""scipy's paired t-test on the pairs given as JSON on stdin: [[a, b], ...] with a and b lists
of equal length; prints [[t, p], ...] (NaN as null). The reference for
lossc::search::stats::paired_t (tests/search.rs)."""
import json
import math
import sys

from scipy import stats

out = []
for a, b in json.load(sys.stdin):
    r = stats.ttest_rel(a, b)
    out.append([None if math.isnan(v) else v for v in (float(r.statistic), float(r.pvalue))])
print(json.dumps(out))
