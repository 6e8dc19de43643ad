#!/usr/bin/env python3
"""Independent PyTorch reference for two multi-domain CTR models.

This script is a deliberately small, dependency-light reference that the Rust
(candle) implementation of `llmctr` is compared against. It reads the datasets
written by `pipeline data prepare` (safetensors shards + meta.json) and trains

* MMoE -- Multi-gate Mixture-of-Experts.
  J. Ma, Z. Zhao, X. Yi, J. Chen, L. Hong, E. H. Chi. "Modeling Task
  Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts".
  KDD 2018.
* CGC -- Customized Gate Control, i.e. a one-level PLE.
  H. Tang, J. Liu, M. Zhao, X. Gong. "Progressive Layered Extraction (PLE): A
  Novel Multi-Task Learning (MTL) Model for Personalized Recommendations".
  RecSys 2020.

Here each *domain* (e.g. a user occupation) plays the role of a task: every
sample has exactly one domain and is scored only by that domain's gate and
tower (and, for CGC, that domain's specific experts).

Architecture (fixed, see README.md):
  x      = concat(emb_f(field_f) for the 8 categorical fields, emb_dom(domain))
           -> n x 144 (9 tables x 16 dims, init N(0, 1e-4^2))
  expert = Linear(144 -> 16) -> ReLU
  tower  = Linear(in -> 8) -> ReLU -> Linear(8 -> 1)       (a logit)
  MMoE   : 3 shared experts; gate_d = softmax(Linear(144 -> 3));
           logit = tower_d(sum_e gate_d(x)_e * expert_e(x))
  CGC    : per domain 2 specific experts + 1 shared expert;
           gate_d = softmax(Linear(144 -> 3)) over [spec_d1, spec_d2, shared];
           logit = tower_d(weighted sum)
Linear layers keep PyTorch's default init. Loss: mean BCE with logits.
Optimizer: torch.optim.Adam(lr=1e-3, weight_decay=1e-5) (coupled L2).

Usage:
  python3 notebooks/reference/ctr_torch.py --model mmoe --recipe ml100k-occupation \
      --seeds 1 2 3 --out notebooks/reference/results/mmoe_ml100k-occupation.json
  python3 notebooks/reference/ctr_torch.py --model cgc --recipe ml100k-occupation \
      --bench --out notebooks/reference/results/bench_cgc_ml100k-occupation.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import load_file

# The 8 categorical fields used as features (each has its own embedding table).
FIELDS = ["user_id", "item_id", "gender", "age", "occupation", "zip", "cate_id", "year"]
EMB_DIM = 16
EXPERT_DIM = 16
TOWER_HIDDEN = 8
BATCH_SIZE = 1024
EMB_INIT_STD = 1e-4


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

class Split:
    """One split of a prepared dataset, held as torch tensors."""

    def __init__(self, path: Path):
        cols = load_file(str(path))
        # U32 columns -> int64 (index dtype for nn.Embedding); 0 = unseen value.
        self.x = torch.from_numpy(
            np.stack([cols[f].astype(np.int64) for f in FIELDS], axis=1))
        self.domain = torch.from_numpy(cols["domain"].astype(np.int64))
        self.label = torch.from_numpy(cols["label"].astype(np.float32))

    def __len__(self) -> int:
        return self.label.shape[0]


def load_recipe(root: Path, recipe: str):
    base = root / "data" / "prepared" / recipe
    meta = json.loads((base / "meta.json").read_text())
    splits = {s: Split(base / s / "part-00000.safetensors")
              for s in ("train", "valid", "test")}
    return meta, splits


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

def expert(in_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, EXPERT_DIM), nn.ReLU())


def tower(in_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, TOWER_HIDDEN), nn.ReLU(),
                         nn.Linear(TOWER_HIDDEN, 1))


class Embedder(nn.Module):
    """One dense embedding table per field plus a domain-id table; concat."""

    def __init__(self, cardinalities: list[int], n_domains: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(c, EMB_DIM) for c in cardinalities)
        self.domain_table = nn.Embedding(n_domains, EMB_DIM)
        for t in [*self.tables, self.domain_table]:
            nn.init.normal_(t.weight, mean=0.0, std=EMB_INIT_STD)
        self.out_dim = EMB_DIM * (len(cardinalities) + 1)  # 144

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        embs = [t(x[:, i]) for i, t in enumerate(self.tables)]
        embs.append(self.domain_table(domain))
        return torch.cat(embs, dim=1)


def by_domain(domain: torch.Tensor, n_domains: int):
    """Group batch rows by domain.

    Returns (order, inverse, segments): `order` sorts rows by domain (stable),
    `inverse` undoes that permutation, and `segments` is a list of
    (domain, start, end) for the non-empty contiguous runs in sorted order.
    """
    order = torch.argsort(domain, stable=True)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    counts = torch.bincount(domain, minlength=n_domains).tolist()
    segments, start = [], 0
    for d, c in enumerate(counts):
        if c:
            segments.append((d, start, start + c))
        start += c
    return order, inverse, segments


class MMoE(nn.Module):
    """MMoE (Ma et al., KDD 2018) with one gate and one tower per domain."""

    def __init__(self, cardinalities, n_domains, n_experts=3):
        super().__init__()
        self.n_domains = n_domains
        self.emb = Embedder(cardinalities, n_domains)
        d_in = self.emb.out_dim
        self.experts = nn.ModuleList(expert(d_in) for _ in range(n_experts))
        self.gates = nn.ModuleList(nn.Linear(d_in, n_experts) for _ in range(n_domains))
        self.towers = nn.ModuleList(tower(EXPERT_DIM) for _ in range(n_domains))

    def forward(self, x, domain):
        h = self.emb(x, domain)
        order, inverse, segments = by_domain(domain, self.n_domains)
        h = h[order]
        # Shared experts on all rows: (n, E, 16).
        ex = torch.stack([e(h) for e in self.experts], dim=1)
        outs = []
        for d, s, t in segments:
            g = F.softmax(self.gates[d](h[s:t]), dim=-1)           # (m, E)
            mix = (g.unsqueeze(-1) * ex[s:t]).sum(dim=1)            # (m, 16)
            outs.append(self.towers[d](mix).squeeze(-1))            # (m,)
        return torch.cat(outs)[inverse]


class CGC(nn.Module):
    """CGC / one-level PLE (Tang et al., RecSys 2020), one 'task' per domain."""

    def __init__(self, cardinalities, n_domains, n_specific=2, n_shared=1):
        super().__init__()
        self.n_domains = n_domains
        self.emb = Embedder(cardinalities, n_domains)
        d_in = self.emb.out_dim
        self.specific = nn.ModuleList(
            nn.ModuleList(expert(d_in) for _ in range(n_specific))
            for _ in range(n_domains))
        self.shared = nn.ModuleList(expert(d_in) for _ in range(n_shared))
        self.gates = nn.ModuleList(
            nn.Linear(d_in, n_specific + n_shared) for _ in range(n_domains))
        self.towers = nn.ModuleList(tower(EXPERT_DIM) for _ in range(n_domains))

    def forward(self, x, domain):
        h = self.emb(x, domain)
        order, inverse, segments = by_domain(domain, self.n_domains)
        h = h[order]
        shared = [e(h) for e in self.shared]                        # each (n, 16)
        outs = []
        for d, s, t in segments:
            hd = h[s:t]
            # Order of gate outputs: [specific_1, specific_2, shared].
            ex = torch.stack([e(hd) for e in self.specific[d]]
                             + [o[s:t] for o in shared], dim=1)      # (m, 3, 16)
            g = F.softmax(self.gates[d](hd), dim=-1)                 # (m, 3)
            mix = (g.unsqueeze(-1) * ex).sum(dim=1)
            outs.append(self.towers[d](mix).squeeze(-1))
        return torch.cat(outs)[inverse]


MODELS = {"mmoe": MMoE, "cgc": CGC}


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------

def auc(labels: np.ndarray, scores: np.ndarray):
    """Rank-based ROC AUC (Mann-Whitney U); ties get their average rank.

    Returns None when only one class is present.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # Boundaries of tie groups in the sorted scores.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], scores.size]
    avg_rank = (starts + ends + 1) / 2.0          # 1-based average rank per group
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    y = labels.astype(np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@torch.no_grad()
def predict(model: nn.Module, split: Split) -> np.ndarray:
    """Sigmoid probabilities for a whole split, in batches of BATCH_SIZE."""
    model.eval()
    out = []
    for s in range(0, len(split), BATCH_SIZE):
        logits = model(split.x[s:s + BATCH_SIZE], split.domain[s:s + BATCH_SIZE])
        out.append(torch.sigmoid(logits))
    return torch.cat(out).double().numpy()


def test_metrics(meta: dict, split: Split, probs: np.ndarray) -> dict:
    y = split.label.numpy()
    dom = split.domain.numpy()
    n_domains = len(meta["domains"])
    per_domain, weights = [], []
    for d in range(n_domains):
        m = dom == d
        per_domain.append(auc(y[m], probs[m]) if m.any() else None)
        weights.append(int(m.sum()))
    defined = [(a, w) for a, w in zip(per_domain, weights) if a is not None]
    weighted = (sum(a * w for a, w in defined) / sum(w for _, w in defined)
                if defined else None)
    # 7 smallest domains by total (train + valid + test) rows in meta.json;
    # only meaningful with more than 7 domains (ml100k-occupation), else null.
    totals = [(sum(d["rows"].values()), d["id"]) for d in meta["domains"]]
    smallest = [i for _, i in sorted(totals)[:7]]
    small_aucs = [per_domain[i] for i in smallest if per_domain[i] is not None]
    if n_domains <= 7:
        smallest, small_aucs = [], []
    return {
        "test_auc": auc(y, probs),
        "test_logloss": logloss(y, probs),
        "weighted_domain_auc": weighted,
        "smallest7_auc": float(np.mean(small_aucs)) if small_aucs else None,
        "smallest7_domains": [meta["domains"][i]["name"] for i in smallest],
        "domain_auc": {meta["domains"][d]["name"]: per_domain[d] for d in range(n_domains)},
    }


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------

def build(model_name: str, meta: dict, seed: int):
    torch.manual_seed(seed)
    card = {f["name"]: f["cardinality"] for f in meta["fields"]}
    model = MODELS[model_name]([card[f] for f in FIELDS], len(meta["domains"]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    return model, opt


def train_step(model, opt, x, domain, y):
    model.train()
    # PyTorch's default set_to_none=True: the gates and towers of domains absent
    # from the batch get no gradient and Adam skips them (the embedding tables are
    # dense, so every row takes a step). llmctr's trainer does the same.
    opt.zero_grad(set_to_none=True)
    loss = F.binary_cross_entropy_with_logits(model(x, domain), y)
    loss.backward()
    opt.step()
    return loss.item()


def train_one_seed(model_name, meta, splits, seed, max_epochs=50, patience=4):
    t0 = time.time()
    model, opt = build(model_name, meta, seed)
    rng = np.random.default_rng(seed)
    tr = splits["train"]
    best_auc, best_epoch, best_state, since_best = -1.0, 0, None, 0
    history = []
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        perm = torch.from_numpy(rng.permutation(len(tr)))
        losses = []
        for s in range(0, len(tr), BATCH_SIZE):
            idx = perm[s:s + BATCH_SIZE]
            losses.append(train_step(model, opt, tr.x[idx], tr.domain[idx], tr.label[idx]))
        v_auc = auc(splits["valid"].label.numpy(), predict(model, splits["valid"]))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                        "valid_auc": v_auc})
        print(f"  seed {seed} epoch {epoch:2d} loss {np.mean(losses):.4f} "
              f"valid_auc {v_auc:.4f}", flush=True)
        if v_auc > best_auc:
            best_auc, best_epoch, since_best = v_auc, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            if since_best >= patience:
                break
    model.load_state_dict(best_state)
    res = {"seed": seed, "best_epoch": best_epoch, "epochs_run": epoch,
           "valid_auc": best_auc}
    res.update(test_metrics(meta, splits["test"], predict(model, splits["test"])))
    res["wall_s"] = time.time() - t0
    res["history"] = history
    return res


def summarize(runs: list[dict]) -> dict:
    out = {}
    for k in ("test_auc", "test_logloss", "weighted_domain_auc", "smallest7_auc",
              "valid_auc", "best_epoch", "epochs_run", "wall_s"):
        vals = [r[k] for r in runs if r[k] is not None]
        if vals:
            out[k] = {"mean": float(np.mean(vals)),
                      "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
    return out


# --------------------------------------------------------------------------
# Throughput benchmark
# --------------------------------------------------------------------------

def bench(model_name, meta, splits, seed=1, warmup=10, timed=60, reps=3):
    """Samples/s for training (fwd+bwd+Adam step) and inference (fwd, no grad)."""
    model, opt = build(model_name, meta, seed)
    tr, te = splits["train"], splits["test"]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(tr)))
    n_batches = warmup + timed
    assert n_batches * BATCH_SIZE <= len(tr)
    batches = [(tr.x[perm[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]],
                tr.domain[perm[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]],
                tr.label[perm[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]])
               for i in range(n_batches)]  # gathered up front: not timed
    train_rates = []
    for _ in range(reps):
        for b in batches[:warmup]:
            train_step(model, opt, *b)
        t = time.perf_counter()
        for b in batches[warmup:]:
            train_step(model, opt, *b)
        train_rates.append(timed * BATCH_SIZE / (time.perf_counter() - t))
    infer_rates = []
    predict(model, te)  # warm-up pass
    for _ in range(reps):
        t = time.perf_counter()
        predict(model, te)
        infer_rates.append(len(te) / (time.perf_counter() - t))
    n_params = sum(p.numel() for p in model.parameters())
    return {"train_samples_per_s": statistics.median(train_rates),
            "train_samples_per_s_reps": train_rates,
            "infer_samples_per_s": statistics.median(infer_rates),
            "infer_samples_per_s_reps": infer_rates,
            "n_params": n_params, "batch_size": BATCH_SIZE,
            "warmup_batches": warmup, "timed_batches": timed, "reps": reps}


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), required=True)
    ap.add_argument("--recipe", default="ml100k-occupation")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--max-epochs", type=int, default=50)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", action="store_true", help="throughput only")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2]),
                    help="repository root (holds data/prepared)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    meta, splits = load_recipe(Path(args.root), args.recipe)
    env = {"torch": torch.__version__, "numpy": np.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine()}
    report = {"model": args.model, "recipe": args.recipe, "env": env,
              "rows": {s: len(v) for s, v in splits.items()},
              "n_domains": len(meta["domains"])}
    t0 = time.time()
    if args.bench:
        report["bench"] = bench(args.model, meta, splits, seed=args.seeds[0])
        print(json.dumps(report["bench"], indent=2))
    else:
        runs = []
        for seed in args.seeds:
            r = train_one_seed(args.model, meta, splits, seed,
                               args.max_epochs, args.patience)
            print(f"seed {seed}: best_epoch {r['best_epoch']} test_auc {r['test_auc']:.4f} "
                  f"logloss {r['test_logloss']:.4f} wdAUC {r['weighted_domain_auc']:.4f} "
                  f"({r['wall_s']:.0f}s)", flush=True)
            runs.append(r)
        report["runs"] = runs
        report["summary"] = summarize(runs)
        s = report["summary"]
        print(f"{args.model} {args.recipe}: test_auc {s['test_auc']['mean']:.4f} "
              f"± {s['test_auc']['std']:.4f}")
    report["total_wall_s"] = time.time() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
