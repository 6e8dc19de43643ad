"""Paired differences of a leave-one-domain-out study restricted to the held-out
domains with at least N test rows.

The study tables of `pipeline lodo` / `pipeline ablate` average over every held-out
domain with a defined AUC, so a domain with a handful of test rows (ml100k-genre's
War has 4) moves the mean AUC as much as one with thousands. This reads a study's
CSV (results/ablation/<study>.csv) and repeats the paired tests of the study's table
(the arm minus the reference per domain; two-sided sign-flip permutation test of
the mean, 20,000 draws) on the domains with >= N test rows.

    python3 notebooks/lodo_min_rows.py results/ablation/genre-cgc-cond-ptuning.csv --min-rows 100
"""

import argparse
import csv
import random


def sign_flip(d, draws=20000, seed=7):
    rng = random.Random(seed)
    obs = abs(sum(d))
    hits = 1
    for _ in range(draws):
        s = sum(x if rng.random() < 0.5 else -x for x in d)
        if abs(s) >= obs - 1e-12:
            hits += 1
    return hits / (draws + 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--min-rows", type=int, default=100)
    a = ap.parse_args()
    for path in a.csv:
        rows = list(csv.DictReader(open(path)))
        keep = [r for r in rows if int(r["test_rows"]) >= a.min_rows]
        arms = [k[: -len("_auc")] for k in rows[0] if k.endswith("_auc")]
        refs = [x for x in ("none", "random") if x in arms]
        print(f"{path}: {len(keep)} of {len(rows)} held-out domains with >= {a.min_rows} test rows")
        print("| arm | reference | ΔAUC (+/−, p) | Δlogloss (+/−, p) |")
        print("| --- | --- | --- | --- |")
        for arm in arms:
            for ref in refs:
                if arm == ref or (arm == "none" and ref == "random"):
                    continue
                cells = []
                for m in ("auc", "logloss"):
                    d = [
                        float(r[f"{arm}_{m}"]) - float(r[f"{ref}_{m}"])
                        for r in keep
                        if r[f"{arm}_{m}"] and r[f"{ref}_{m}"]
                    ]
                    if not d:
                        cells.append("n/a")
                        continue
                    up = sum(x > 0 for x in d)
                    down = sum(x < 0 for x in d)
                    cells.append(f"{sum(d) / len(d):+.4f} ({up}/{down}, p {sign_flip(d):.4f})")
                print(f"| `{arm}` | `{ref}` | {cells[0]} | {cells[1]} |")
        print()


if __name__ == "__main__":
    main()
