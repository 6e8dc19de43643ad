"""PyTorch reference of two models of the user-level expert family (MOE and
UserPerExpert) on the next-item protocol (`ml100k-nextitem`), written from
`src/models/{sequence,moe,user_per_expert}.rs` to check llmctr's Rust runs of
`configs/experiments/nextitem/family.toml`.

It reads only the prepared dataset (`data/prepared/ml100k-nextitem/`: meta.json
and {train,valid,test}/part-*.safetensors) and, with --check-rust, the weights
and test predictions of the Rust runs (`runs/nextitem/<model>-ml100k-nextitem-
seed<s>/`). It calls no Rust code.

    nice -n 10 /tmp/tf/bin/python notebooks/reference/nextitem/reference.py
    nice -n 10 /tmp/tf/bin/python notebooks/reference/nextitem/reference.py \
        --models moe --seeds 1 2 3 --check-rust

See README.md in this folder.
"""

import argparse
import json
import math
import pathlib
import platform
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[3]
HERE = pathlib.Path(__file__).resolve().parent

# family.toml + the model defaults (src/models/{moe,user_per_expert}.rs).
FEATURES = ["user_id", "item_id", "cate_id"]
DIM = 16
EMB_STD = 1e-4
HISTORY = 50
ATTENTION = 80
LR = 1e-3
WEIGHT_DECAY = 1e-5
BATCH = 1024
EVAL_BATCH = 8192
EPOCHS = 5
PATIENCE = 2
MIN_EPOCHS = 1
RUST_NAME = {"moe": "moe", "user_per_expert": "user_per_expert"}


# ----------------------------------------------------------------- data


def read_safetensors(path):
    """Every tensor of a safetensors file as numpy. The `safetensors` package
    when it knows U32; else the header read by hand (8-byte little-endian
    length, JSON header, raw little-endian data)."""
    try:
        from safetensors.numpy import load_file
        return load_file(str(path))
    except Exception:  # old safetensors without U32
        pass
    kinds = {"U8": np.uint8, "U32": np.uint32, "I64": np.int64, "F32": np.float32,
             "F64": np.float64, "I32": np.int32, "U64": np.uint64, "F16": np.float16}
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        a, b = spec["data_offsets"]
        buf = raw[8 + n + a:8 + n + b]
        out[name] = np.frombuffer(buf, dtype=kinds[spec["dtype"]]).reshape(spec["shape"]).copy()
    return out


def truncated(offsets, values, length):
    """The first `length` values of each row (stored most recent first), 0-padded:
    `truncated` in src/data/dataset.rs."""
    n = len(offsets) - 1
    out = np.zeros((n, length), dtype=np.int64)
    for r in range(n):
        v = values[offsets[r]:offsets[r + 1]][:length]
        out[r, :len(v)] = v
    return out


class Split:
    pass


def load_data(prepared):
    meta = json.loads((prepared / "meta.json").read_text())
    card = {f["name"]: f["cardinality"] for f in meta["fields"]}
    domains = [d["name"] for d in meta["domains"]]
    # One table: the features in order, then the domain-id slot (Layout::new).
    cards = [card[f] for f in FEATURES] + [len(domains)]
    offsets = np.concatenate([[0], np.cumsum(cards)[:-1]]).astype(np.int64)
    hist = meta["history"]
    item_slot, cate_slot = FEATURES.index("item_id"), FEATURES.index("cate_id")
    splits = {}
    for name in ("train", "valid", "test"):
        parts = [read_safetensors(prepared / name / s) for s in meta["splits"][name]["shards"]]
        s = Split()
        cols = [np.concatenate([p[f].astype(np.int64) for p in parts]) for f in FEATURES]
        dom = np.concatenate([p["domain"].astype(np.int64) for p in parts])
        for f, c in zip(FEATURES, cols):
            assert c.max() < card[f], f
        ids = np.stack(cols + [dom], 1) + offsets[None, :]
        hi = np.concatenate([truncated(p[hist["items"] + ".offsets"], p[hist["items"] + ".values"],
                                       HISTORY) for p in parts])
        hc = np.concatenate([truncated(p[hist["categories"] + ".offsets"],
                                       p[hist["categories"] + ".values"], HISTORY) for p in parts])
        s.ids = torch.from_numpy(ids)
        s.mask = torch.from_numpy((hi != 0).astype(np.float32))
        s.hist_items = torch.from_numpy(hi + offsets[item_slot])
        s.hist_cats = torch.from_numpy(hc + offsets[cate_slot])
        s.labels = torch.from_numpy(np.concatenate([p["label"] for p in parts]).astype(np.float32))
        s.domains = dom
        s.n = len(s.labels)
        assert s.n == meta["splits"][name]["rows"], name
        splits[name] = s
    info = dict(rows=int(sum(cards)), cards=cards, domains=domains,
                slots=len(cards), item_slot=item_slot, cate_slot=cate_slot)
    return splits, info


def batch(s, idx):
    return dict(ids=s.ids[idx], hist_items=s.hist_items[idx], hist_cats=s.hist_cats[idx],
                mask=s.mask[idx])


# ----------------------------------------------------------------- layers


class Mlp(nn.Module):
    """Linear -> ReLU per hidden size, then an optional output Linear without
    activation (src/nn/linear.rs). Submodules "0", "1", ..., "out" as in Rust."""

    def __init__(self, d_in, hidden, d_out=None):
        super().__init__()
        self.n = len(hidden)
        d = d_in
        for i, h in enumerate(hidden):
            self.add_module(str(i), nn.Linear(d, h))
            d = h
        self.out = nn.Linear(d, d_out) if d_out is not None else None

    def forward(self, x):
        for i in range(self.n):
            x = F.relu(getattr(self, str(i))(x))
        return self.out(x) if self.out is not None else x


class Batched(nn.Module):
    """E Linear(d, h) layers at once: weight (E, d, h), bias (E, 1, h), both
    uniform in +-1/sqrt(d) (ExpertBank)."""

    def __init__(self, count, d, h):
        super().__init__()
        bound = 1.0 / math.sqrt(d)
        self.weight = nn.Parameter(torch.empty(count, d, h).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(count, 1, h).uniform_(-bound, bound))

    def forward(self, x):  # (E, n, d) -> (E, n, h)
        return torch.baddbmm(self.bias, x, self.weight)


class ExpertBank(nn.Module):
    """E experts, each an MLP with ReLU after every layer. `shared`: the first
    layer is one Linear(d_in, E*h0) on an input shared by all experts."""

    def __init__(self, d_in, count, hidden, shared):
        super().__init__()
        self.count, self.hidden, self.shared = count, list(hidden), shared
        d = d_in
        for i, h in enumerate(hidden):
            if i == 0 and shared:
                self.add_module("0", nn.Linear(d, count * h))
            else:
                self.add_module(str(i), Batched(count, d, h))
            d = h

    def forward(self, x):
        """x: (n, in) when shared, (n, E, in) otherwise -> (n, E, out)."""
        n = x.shape[0]
        start = 0
        if self.shared:
            h = F.relu(getattr(self, "0")(x)).reshape(n, self.count, self.hidden[0])
            h = h.transpose(0, 1)
            start = 1
        else:
            h = x.transpose(0, 1)
        for i in range(start, len(self.hidden)):
            h = F.relu(getattr(self, str(i))(h))
        return h.transpose(0, 1)


class Attention(nn.Module):
    """q = LN(ReLU(Wq x)), k = LN(ReLU(Wk x)), v = ReLU(Wv x);
    softmax(q k / sqrt(width)) over the unmasked keys (sequence.rs)."""

    def __init__(self, dq, dk, dv_in, dv, width):
        super().__init__()
        self.q = nn.Linear(dq, width)
        self.k = nn.Linear(dk, width)
        self.v = nn.Linear(dv_in, dv)
        self.ln_q = nn.LayerNorm(width, eps=1e-6)
        self.ln_k = nn.LayerNorm(width, eps=1e-6)
        self.width = width

    def query(self, x):
        return self.ln_q(F.relu(self.q(x)))

    def key(self, x):
        return self.ln_k(F.relu(self.k(x)))

    def value(self, x):
        return F.relu(self.v(x))

    def weights(self, q, k, mask=None):
        s = q @ k.transpose(-1, -2) / math.sqrt(self.width)
        if mask is None:
            return torch.softmax(s, -1)
        m = mask.unsqueeze(1).expand_as(s)
        return torch.softmax(s + (m - 1.0) * 1e9, -1) * m

    def target(self, query, keys, mask):
        """query (n, dq) over keys (n, L, dk) -> (n, dv)."""
        q = self.query(query.unsqueeze(1))
        w = self.weights(q, self.key(keys), mask)
        return (w @ self.value(keys)).squeeze(1)


class Base(nn.Module):
    """The embedding table (one for all slots, N(0, 1e-4^2)) and the backbone:
    fc = [fields; item attention; category attention] (Backbone, keep_domain)."""

    def __init__(self, info):
        super().__init__()
        self.table = nn.Parameter(torch.randn(info["rows"], DIM) * EMB_STD)
        self.slots, self.item_slot, self.cate_slot = info["slots"], info["item_slot"], info["cate_slot"]
        self.item_attention = Attention(DIM, DIM, DIM, DIM, ATTENTION)
        self.cate_attention = Attention(DIM, DIM, DIM, DIM, ATTENTION)

    def backbone(self, b):
        fields = self.table[b["ids"]]  # (n, slots, d)
        item = fields[:, self.item_slot]
        cate = fields[:, self.cate_slot]
        hist, hist_c = self.table[b["hist_items"]], self.table[b["hist_cats"]]
        item_att = self.item_attention.target(item, hist, b["mask"])
        cate_att = self.cate_attention.target(cate, hist_c, b["mask"])
        fc = torch.cat([fields.flatten(1), item_att, cate_att], 1)
        return dict(fields=fields, item=item, item_att=item_att, cate_att=cate_att, fc=fc)

    def dense_count(self):
        return sum(p.numel() for n, p in self.named_parameters() if n != "table")


class Moe(Base):
    """MOE (moe.rs, UserMoe without towers): 50 experts [80, 40] on fc, a gate
    MLP [80, 40] -> Linear -> softmax over the experts, mixture -> MLP [80, 40] -> 1."""

    def __init__(self, info, experts=50, expert_hidden=(80, 40), gate_hidden=(80, 40),
                 hidden=(80, 40)):
        super().__init__(info)
        w = (self.slots + 2) * DIM
        self.experts = ExpertBank(w, experts, expert_hidden, shared=True)
        self.gate_mlp = Mlp(w, gate_hidden)
        self.gate = nn.Module()
        self.gate.logits = nn.Linear(gate_hidden[-1], experts)
        self.tower = Mlp(expert_hidden[-1], hidden, 1)

    def forward(self, b):
        fc = self.backbone(b)["fc"]
        e = self.experts(fc)  # (n, E, h)
        g = torch.softmax(self.gate.logits(self.gate_mlp(fc)), -1)  # (n, E)
        mix = (e * g.unsqueeze(-1)).sum(1)
        return self.tower(mix).squeeze(1)


class UserPerExpert(Base):
    """UserPerExpert (user_per_expert.rs, MVKE): K kernels attend over the 6
    field vectors [user, item, cate, domain, item att, cate att]; one expert
    [80, 40] per kernel on its attended vector; a gate attends from the target
    item over the kernels and mixes ReLU(Wv expert) (40 -> 16); the mixture ->
    MLP [80, 40] -> 1, plus a bias tower [80, 40] -> 1 on fc."""

    def __init__(self, info, kernels=50, kernel_std=1e-3, expert_hidden=(80, 40),
                 hidden=(80, 40), bias_tower=(80, 40)):
        super().__init__(info)
        w = (self.slots + 2) * DIM
        self.kernels = nn.Parameter(torch.randn(kernels, DIM) * kernel_std)
        self.kernel_attention = Attention(DIM, DIM, DIM, DIM, ATTENTION)
        self.experts = ExpertBank(DIM, kernels, expert_hidden, shared=False)
        self.gate = Attention(DIM, DIM, expert_hidden[-1], DIM, ATTENTION)
        self.tower = Mlp(DIM, hidden, 1)
        self.bias_tower = Mlp(w, bias_tower, 1) if bias_tower else None

    def forward(self, b):
        s = self.backbone(b)
        fields = torch.cat([s["fields"], s["item_att"].unsqueeze(1), s["cate_att"].unsqueeze(1)], 1)
        n = fields.shape[0]
        att = self.kernel_attention
        q = att.query(self.kernels).unsqueeze(0).expand(n, -1, -1)  # (n, K, w)
        w = att.weights(q, att.key(fields))  # (n, K, F)
        z = w @ att.value(fields)  # (n, K, d)
        e = self.experts(z)  # (n, K, h)
        gq = self.gate.query(s["item"].unsqueeze(1))  # (n, 1, w)
        gk = self.gate.key(self.kernels).unsqueeze(0).expand(n, -1, -1)  # (n, K, w)
        gw = self.gate.weights(gq, gk)  # (n, 1, K)
        mix = (gw @ self.gate.value(e)).squeeze(1)  # (n, d)
        logit = self.tower(mix).squeeze(1)
        if self.bias_tower is not None:
            logit = logit + self.bias_tower(s["fc"]).squeeze(1)
        return logit


MODELS = {"moe": Moe, "user_per_expert": UserPerExpert}


def expected_counts(model, info):
    """The parameter count of the Rust model, from its architecture (linear:
    in*out + out; LayerNorm: 2*width)."""
    lin = lambda i, o: i * o + o  # noqa: E731
    mlp = lambda i, hs, o=None: sum(lin(a, b) for a, b in zip([i] + list(hs[:-1]), hs)) + (  # noqa: E731
        lin(hs[-1], o) if o else 0)
    att = lambda dq, dk, dvi, dv, w: lin(dq, w) + lin(dk, w) + lin(dvi, dv) + 4 * w  # noqa: E731
    d, w = DIM, (info["slots"] + 2) * DIM
    backbone = 2 * att(d, d, d, d, ATTENTION)
    if model == "moe":
        dense = (backbone + lin(w, 50 * 80) + 50 * lin(80, 40) + mlp(w, [80, 40])
                 + lin(40, 50) + mlp(40, [80, 40], 1))
    else:
        dense = (backbone + 50 * d + att(d, d, d, d, ATTENTION) + 50 * (lin(d, 80) + lin(80, 40))
                 + att(d, d, 40, d, ATTENTION) + mlp(d, [80, 40], 1) + mlp(w, [80, 40], 1))
    return dense + info["rows"] * DIM, dense


# ----------------------------------------------------------------- metrics


def auc(scores, labels):
    """Rank AUC, tied scores at their average rank (src/metrics.rs)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0.5
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos = labels.sum()
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return None
    r = np.empty(len(s))
    r[order] = ranks
    return float((r[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def logloss(p, y):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y) > 0.5
    return float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))


@torch.no_grad()
def predict(model, s):
    model.eval()
    out = []
    for a in range(0, s.n, EVAL_BATCH):
        idx = torch.arange(a, min(a + EVAL_BATCH, s.n))
        out.append(torch.sigmoid(model(batch(s, idx))))
    model.train()
    return torch.cat(out).numpy()


# ----------------------------------------------------------------- training


def train(name, seed, splits, info, log):
    torch.manual_seed(seed)
    model = MODELS[name](info)
    total = sum(p.numel() for p in model.parameters())
    dense = model.dense_count()
    want_total, want_dense = expected_counts(name, info)
    log(f"{name} seed {seed}: {total} parameters ({dense} dense + {total - dense} embedding); "
        f"Rust architecture: {want_total} ({want_dense} dense)"
        + ("" if (total, dense) == (want_total, want_dense) else "  <-- MISMATCH"))
    # L2 coupled into Adam (OptimizerKind::Adam), on every parameter; the table
    # is one dense Parameter, so every row steps every batch (embedding_update
    # "auto" = dense below 200,000 rows).
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8,
                           weight_decay=WEIGHT_DECAY)
    tr, va, te = splits["train"], splits["valid"], splits["test"]
    rng = np.random.default_rng(seed)
    best_auc, best_epoch, bad, best_state, history = None, 0, 0, None, []
    epoch = 0
    t_start = time.time()
    while epoch < EPOCHS and (bad < PATIENCE or epoch < MIN_EPOCHS):
        epoch += 1
        t0 = time.time()
        order = torch.from_numpy(rng.permutation(tr.n))
        loss_sum = 0.0
        for a in range(0, tr.n, BATCH):
            idx = order[a:a + BATCH]
            logits = model(batch(tr, idx))
            loss = F.binary_cross_entropy_with_logits(logits, tr.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
        p = predict(model, va)
        v_auc, v_ll = auc(p, va.labels.numpy()), logloss(p, va.labels.numpy())
        history.append(dict(epoch=epoch, train_loss=loss_sum / tr.n, valid_auc=v_auc,
                            valid_logloss=v_ll, seconds=time.time() - t0))
        log(f"  epoch {epoch}: train loss {loss_sum / tr.n:.4f}, valid AUC {v_auc:.4f}, "
            f"valid logloss {v_ll:.4f}, {time.time() - t0:.1f}s")
        if best_auc is None or v_auc > best_auc:
            best_auc, best_epoch, bad = v_auc, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
    model.load_state_dict(best_state)
    p = predict(model, te)
    y = te.labels.numpy()
    by_domain = {d: auc(p[te.domains == i], y[te.domains == i]) for i, d in enumerate(info["domains"])}
    res = dict(model=name, seed=seed, parameters=total, dense_parameters=dense,
               best_epoch=best_epoch, epochs_run=epoch, valid_auc=best_auc,
               test_auc=auc(p, y), test_logloss=logloss(p, y), test_domain_auc=by_domain,
               seconds=time.time() - t_start, history=history)
    log(f"  best epoch {best_epoch}: valid AUC {best_auc:.4f}, test AUC {res['test_auc']:.4f}")
    return res


# ----------------------------------------------------------------- Rust runs


def rust_run_dir(runs, name, seed):
    return runs / f"{name}-ml100k-nextitem-seed{seed}"


def load_rust_weights(model, path, rust_prefix):
    """Copy a Rust `best.safetensors` (param/<name> flat, table/embedding) into
    the PyTorch model. Linear weights are (in, out) in Rust, (out, in) here;
    LayerNorm's gain is `weight` here."""
    t = read_safetensors(path)
    params = dict(model.named_parameters())
    used = set()
    with torch.no_grad():
        for key, v in t.items():
            if key == "table/embedding":
                params["table"].copy_(torch.from_numpy(v.reshape(params["table"].shape)))
                used.add("table")
                continue
            assert key.startswith(f"param/{rust_prefix}."), key
            rname = key[len(f"param/{rust_prefix}."):]
            tname = rname.replace(".gain", ".weight")
            p = params[tname]
            v = torch.from_numpy(np.asarray(v, dtype=np.float32))
            mod = model.get_submodule(tname.rsplit(".", 1)[0]) if "." in tname else None
            if isinstance(mod, nn.Linear) and tname.endswith(".weight"):
                v = v.reshape(p.shape[1], p.shape[0]).T
            p.copy_(v.reshape(p.shape))
            used.add(tname)
    missing = set(params) - used
    assert not missing, f"not in {path}: {sorted(missing)}"


def check_rust(name, seeds, splits, info, runs, log):
    """Load each Rust run's best weights into the PyTorch model, score test, and
    compare with the run's predictions_test.safetensors and metrics.json."""
    out = []
    for seed in seeds:
        d = rust_run_dir(runs, name, seed)
        if not (d / "best.safetensors").is_file():
            continue
        model = MODELS[name](info)
        load_rust_weights(model, d / "best.safetensors", RUST_NAME[name])
        p = predict(model, splits["test"])
        pred = read_safetensors(d / "predictions_test.safetensors")
        rust = np.zeros(splits["test"].n, dtype=np.float64)
        rust[pred["row"].astype(np.int64)] = pred["score"]
        m = json.loads((d / "metrics.json").read_text())
        diff = float(np.abs(p - rust).max())
        a = auc(p, splits["test"].labels.numpy())
        log(f"{name} seed {seed}: Rust weights in PyTorch: test AUC {a:.6f} (Rust {m['test']['auc']:.6f}), "
            f"max |p_torch - p_rust| = {diff:.2e}")
        out.append(dict(seed=seed, torch_auc=a, rust_auc=m["test"]["auc"], max_abs_diff=diff))
    return out


def rust_metrics(runs, name, seeds):
    out = {}
    for s in seeds:
        f = rust_run_dir(runs, name, s) / "metrics.json"
        if f.is_file():
            m = json.loads(f.read_text())
            out[s] = dict(best_epoch=m["best_epoch"], valid_auc=m["valid_auc"], test_auc=m["test"]["auc"])
        b = rust_run_dir(runs, name, s) / "best.safetensors"
        if b.is_file():
            t = read_safetensors(b)
            n = sum(v.size for v in t.values())
            dense = sum(v.size for k, v in t.items() if k.startswith("param/"))
            out.setdefault(s, {}).update(parameters=int(n), dense_parameters=int(dense))
    return out


# ----------------------------------------------------------------- report


def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    m = float(np.mean(xs))
    sd = float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0
    return f"{m:.4f} ± {sd:.4f}"


def write_md(path, results, checks, rust, env):
    L = ["# PyTorch reference: MOE and UserPerExpert on ml100k-nextitem", "",
         "Written by `notebooks/reference/nextitem/reference.py` (see README.md). "
         "Settings of `configs/experiments/nextitem/family.toml`: Adam (L2 in the gradient) "
         "lr 1e-3, weight decay 1e-5, batch 1024, at most 5 epochs, patience 2 on valid AUC, "
         "test AUC at the best valid epoch.", "",
         "## PyTorch runs", "",
         "| model | seed | parameters (all) | dense | best epoch | epochs run | valid AUC | test AUC | test logloss |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        L.append(f"| {r['model']} | {r['seed']} | {r['parameters']} | {r['dense_parameters']} | "
                 f"{r['best_epoch']} | {r['epochs_run']} | {r['valid_auc']:.4f} | {r['test_auc']:.4f} | "
                 f"{r['test_logloss']:.4f} |")
    L += ["", "| model | seeds | valid AUC (mean ± sd) | test AUC (mean ± sd) |", "| --- | --- | --- | --- |"]
    for name in dict.fromkeys(r["model"] for r in results):
        rs = [r for r in results if r["model"] == name]
        L.append(f"| {name} | {len(rs)} | {mean_sd([r['valid_auc'] for r in rs])} | "
                 f"{mean_sd([r['test_auc'] for r in rs])} |")
    L += ["", "sd: sample standard deviation (ddof 1) over the seeds.", "",
          "Per-epoch valid AUC:", "", "| model | seed | " + " | ".join(f"epoch {e}" for e in range(1, EPOCHS + 1)) + " |",
          "| --- | --- |" + " --- |" * EPOCHS]
    for r in results:
        cells = [f"{h['valid_auc']:.4f}" for h in r["history"]] + [""] * (EPOCHS - len(r["history"]))
        L.append(f"| {r['model']} | {r['seed']} | " + " | ".join(cells) + " |")
    L += ["", "## Rust runs (runs/nextitem)", ""]
    any_rust = False
    for name, per in rust.items():
        if not per:
            L.append(f"- {name}: no Rust run found.")
            continue
        any_rust = True
        L += [f"{name}:", "", "| seed | parameters (all) | dense | best epoch | valid AUC | test AUC |",
              "| --- | --- | --- | --- | --- | --- |"]
        for s, m in sorted(per.items()):
            f = lambda k, fmt="{}": fmt.format(m[k]) if k in m else "n/a"  # noqa: E731
            L.append(f"| {s} | {f('parameters')} | {f('dense_parameters')} | {f('best_epoch')} | "
                     f"{f('valid_auc', '{:.4f}')} | {f('test_auc', '{:.4f}')} |")
        L += ["", f"mean test AUC {mean_sd([m.get('test_auc') for m in per.values()])}", ""]
    if checks:
        L += ["", "## Rust weights loaded into the PyTorch model", "",
              "Each Rust run's `best.safetensors` loaded into the PyTorch module and scored on test, "
              "against the run's `predictions_test.safetensors` and `metrics.json`:", "",
              "| model | seed | test AUC (PyTorch forward) | test AUC (Rust) | max abs prob diff |",
              "| --- | --- | --- | --- | --- |"]
        for name, cs in checks.items():
            for c in cs:
                L.append(f"| {name} | {c['seed']} | {c['torch_auc']:.6f} | {c['rust_auc']:.6f} | "
                         f"{c['max_abs_diff']:.2e} |")
    elif not any_rust:
        L.append("")
    L += ["", "## Environment", "", "```", json.dumps(env, indent=1), "```", ""]
    path.write_text("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["moe", "user_per_expert"], choices=list(MODELS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--prepared", type=pathlib.Path, default=ROOT / "data/prepared/ml100k-nextitem")
    ap.add_argument("--runs", type=pathlib.Path, default=ROOT / "runs/nextitem")
    ap.add_argument("--check-rust", action="store_true",
                    help="load the Rust runs' best weights into the PyTorch models and compare test scores")
    ap.add_argument("--no-train", action="store_true", help="only the parameter counts and --check-rust")
    ap.add_argument("--report-only", action="store_true",
                    help="no training: rewrite results.md from results.json and the Rust runs as they are now")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=pathlib.Path, default=HERE / "results.md")
    ap.add_argument("--json", type=pathlib.Path, default=HERE / "results.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    def log(msg):
        print(msg, flush=True)

    t0 = time.time()
    splits, info = load_data(a.prepared)
    log(f"data: {splits['train'].n} train / {splits['valid'].n} valid / {splits['test'].n} test rows, "
        f"table {info['rows']} rows ({info['cards']}), {time.time() - t0:.1f}s")
    checks, results = {}, []
    if a.report_only:
        old = json.loads(a.json.read_text())
        results, env = old["results"], old["env"]
        names = list(dict.fromkeys(r["model"] for r in results))
        seeds = sorted({r["seed"] for r in results})
        checks = {n: check_rust(n, seeds, splits, info, a.runs, log) for n in names} if a.check_rust \
            else old.get("rust_weight_check", {})
        rust = {n: rust_metrics(a.runs, n, seeds) for n in names}
        a.json.write_text(json.dumps(dict(results=results, rust=rust, rust_weight_check=checks, env=env),
                                     indent=1))
        write_md(a.out, results, checks, rust, env)
        log(f"wrote {a.out} and {a.json}")
        return
    if a.check_rust:
        for name in a.models:
            checks[name] = check_rust(name, a.seeds, splits, info, a.runs, log)
    if a.no_train:
        for name in a.models:
            torch.manual_seed(1)
            m = MODELS[name](info)
            log(f"{name}: {sum(p.numel() for p in m.parameters())} parameters, {m.dense_count()} dense; "
                f"Rust architecture {expected_counts(name, info)}")
        return
    for name in a.models:
        for seed in a.seeds:
            results.append(train(name, seed, splits, info, log))
    rust = {name: rust_metrics(a.runs, name, a.seeds) for name in a.models}
    env = dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
               threads=a.threads, machine=platform.machine(), argv=sys.argv[1:])
    a.json.write_text(json.dumps(dict(results=results, rust=rust, rust_weight_check=checks, env=env),
                                 indent=1))
    write_md(a.out, results, checks, rust, env)
    log(f"wrote {a.out} and {a.json}")


if __name__ == "__main__":
    main()
