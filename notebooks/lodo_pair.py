"""Paired differences between two arms of two leave-one-domain-out studies on the
same recipe and folds, e.g. the adapters trained with episodes against those
trained without.

Each study's CSV (results/ablation/<study>.csv) holds, per held-out domain, the
test AUC and logloss of each arm averaged over seeds. This pairs `A.csv:arm_a`
with `B.csv:arm_b` over the domains both have (optionally only those with at
least N test rows) and gives the mean difference A − B, the +/− count and the
two-sided sign-flip p (20,000 draws), as the study tables do.

    python3 notebooks/lodo_pair.py \\
        results/ablation/occupation-cgc-cond-lora-episodes.csv:adapted-lora-ep25 \\
        results/ablation/occupation-cgc-cond-lora.csv:adapted-lora
"""

import argparse
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lodo_min_rows import sign_flip  # noqa: E402


def read(spec):
    path, _, arm = spec.rpartition(":")
    if not path:
        sys.exit(f"{spec}: expected FILE.csv:ARM")
    if not os.path.isfile(path):
        sys.exit(f"{path}: no such file (a study's CSV, results/ablation/<study>.csv)")
    rows = {r["domain"]: r for r in csv.DictReader(open(path))}
    if rows and f"{arm}_auc" not in next(iter(rows.values())):
        arms = [k[: -len("_auc")] for k in next(iter(rows.values())) if k.endswith("_auc")]
        sys.exit(f"{path} has no arm `{arm}` (arms: {', '.join(arms)})")
    return path, arm, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="FILE.csv:ARM, the arm whose difference is taken")
    ap.add_argument("b", help="FILE.csv:ARM, the reference")
    ap.add_argument("--min-rows", type=int, default=0)
    a = ap.parse_args()
    (pa, arm_a, ra), (pb, arm_b, rb) = read(a.a), read(a.b)
    shared = [
        d for d in ra if d in rb and int(ra[d]["test_rows"]) >= a.min_rows
    ]
    if any(ra[d]["test_rows"] != rb[d]["test_rows"] for d in shared):
        sys.exit("the two studies' test rows differ: not the same recipe and folds")
    print(f"`{arm_a}` ({pa}) − `{arm_b}` ({pb}), {len(shared)} held-out domains"
          + (f" with >= {a.min_rows} test rows" if a.min_rows else ""))
    print("| ΔAUC (+/−, p) | Δlogloss (+/−, p) |")
    print("| --- | --- |")
    cells = []
    for m in ("auc", "logloss"):
        d = [
            float(ra[x][f"{arm_a}_{m}"]) - float(rb[x][f"{arm_b}_{m}"])
            for x in shared
            if ra[x][f"{arm_a}_{m}"] and rb[x][f"{arm_b}_{m}"]
        ]
        if not d:
            cells.append("n/a")
            continue
        up, down = sum(x > 0 for x in d), sum(x < 0 for x in d)
        cells.append(f"{sum(d) / len(d):+.4f} ({up}/{down}, p {sign_flip(d):.4f})")
    print(f"| {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
