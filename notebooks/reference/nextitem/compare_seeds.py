"""Rust against PyTorch over every seed both have: MOE and UserPerExpert test AUC
on ml100k-nextitem, mean ± sample sd, the difference of means and an exact
two-sided permutation test of it (seeds are independent draws on each side, not
pairs: a PyTorch seed and the Rust run of the same seed start from different
weights).

Reads results.json and results_seeds4-8.json (this folder, written by
reference.py) and runs/nextitem/<model>-ml100k-nextitem-seed<s>/metrics.json.
Writes seeds.md. Standard library only:

    python3 notebooks/reference/nextitem/compare_seeds.py
"""

import itertools
import json
import pathlib
import statistics as st

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
MODELS = ["moe", "user_per_expert"]


def pytorch(model):
    out = {}
    for f in ["results.json", "results_seeds4-8.json"]:
        for r in json.loads((HERE / f).read_text())["results"]:
            if r["model"] == model:
                out[r["seed"]] = r["test_auc"]
    return out


def rust(model, seeds):
    out = {}
    for s in seeds:
        f = ROOT / f"runs/nextitem/{model}-ml100k-nextitem-seed{s}/metrics.json"
        if f.is_file():
            out[s] = json.loads(f.read_text())["test"]["auc"]
    return out


def permutation_p(a, b):
    """Share of the splits of a + b into groups of len(a) and len(b) whose
    |difference of means| is at least the observed one (exact, two-sided)."""
    obs = abs(st.mean(b) - st.mean(a))
    pool = a + b
    hits = total = 0
    for idx in itertools.combinations(range(len(pool)), len(a)):
        chosen = set(idx)
        x = [pool[i] for i in idx]
        y = [pool[i] for i in range(len(pool)) if i not in chosen]
        total += 1
        hits += abs(st.mean(y) - st.mean(x)) >= obs - 1e-12
    return hits / total


def main():
    lines = ["# Rust against PyTorch over seeds: MOE and UserPerExpert on ml100k-nextitem", "",
             "Written by `notebooks/reference/nextitem/compare_seeds.py`. Test AUC at the best valid "
             "epoch; mean ± sample sd (ddof 1); p: exact two-sided permutation test of the difference "
             "of means (unpaired: the two sides' seeds are independent draws).", "",
             "| model | seeds | PyTorch | Rust | Rust − PyTorch | p |", "| --- | --- | --- | --- | --- | --- |"]
    per_seed = []
    for m in MODELS:
        pt = pytorch(m)
        rs = rust(m, sorted(pt))
        seeds = sorted(set(pt) & set(rs))
        groups = [(seeds[:3], "1–3"), (seeds[3:], "4–8"), (seeds, "all")] if len(seeds) > 3 else [(seeds, "all")]
        for g, label in groups:
            a, b = [pt[s] for s in g], [rs[s] for s in g]
            if len(g) < 2:
                continue
            lines.append(f"| {m} | {label} ({len(g)}) | {st.mean(a):.4f} ± {st.stdev(a):.4f} | "
                         f"{st.mean(b):.4f} ± {st.stdev(b):.4f} | {st.mean(b) - st.mean(a):+.4f} | "
                         f"{permutation_p(a, b):.3f} |")
        per_seed.append((m, seeds, pt, rs))
    lines += ["", "Per seed (test AUC):", "", "| model | side | " + " | ".join(f"seed {s}" for s in per_seed[0][1]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in per_seed[0][1]) + " |"]
    for m, seeds, pt, rs in per_seed:
        lines.append(f"| {m} | PyTorch | " + " | ".join(f"{pt[s]:.4f}" for s in seeds) + " |")
        lines.append(f"| {m} | Rust | " + " | ".join(f"{rs[s]:.4f}" for s in seeds) + " |")
    (HERE / "seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
