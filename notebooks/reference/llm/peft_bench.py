#!/usr/bin/env python3
"""transformers + PEFT speed/memory reference for SmolLM2-135M (float32, CPU, 2 threads).

Workload: 21 sequences x 64 tokens (bench_ids.json), one batch, no padding.
  forward : base decoder `model.model(ids).last_hidden_state` under no_grad; tokens/s.
  lora    : LoRA r=8/alpha=16 on q_proj,v_proj; one step = decoder forward ->
            loss = (h.mean(1) @ w).sum() -> backward -> AdamW(lr=1e-3).step -> zero_grad.
  lora-top: the same LoRA on the top 8 layers only (layers_to_transform=22..29); PEFT still
            runs all 30 layers forward, autograd stops below layer 22.
  prefix  : P-Tuning v2 (PrefixTuningConfig, 16 virtual tokens, no projection); same step,
            the decoder gets PEFT's prefix cache (`get_prompt`) as past_key_values.
Each mode runs in its own process (peak RSS = ru_maxrss of that process).

Run from the repo root (one command, all four modes):
    python3 notebooks/reference/llm/peft_bench.py
Writes notebooks/reference/llm/results/peft_bench.json.
"""
import os

os.environ.setdefault("TQDM_DISABLE", "1")  # silence the GGUF dequantization progress bar

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

IDS_PATH = os.path.join(HERE, "bench_ids.json")
OUT_PATH = os.path.join(HERE, "results", "peft_bench.json")
CACHE_ROOT = os.path.join(HERE, ".cache")  # git-ignored

N_SEQ, SEQ_LEN, STRIDE = 21, 64, 7
WARMUP, TIMED = 2, 5
TOP_LAYERS = 8  # lora-top: LoRA on the top 8 layers only (layers_to_transform), as configs/default.toml
SEED = 0

# Fixed English paragraph; tokenized WITHOUT special tokens, then 21 windows of 64 ids at offsets 0, 7, ..., 140.
PARAGRAPH = (
    "The small library at the end of the street opens every morning at eight. "
    "Students come in with backpacks full of notebooks, retired teachers read the newspapers by the window, "
    "and a few writers sit in the corner with their laptops and cold coffee. "
    "The librarian knows most of them by name and remembers which books they borrowed last month. "
    "On Tuesdays she runs a reading club for children, and on Thursdays a volunteer teaches older people "
    "how to use email, video calls and online banking. "
    "The building is old: the heating is loud in winter, the roof leaks when it rains hard, "
    "and the wooden floor creaks under every step. "
    "Still, people keep coming back, because the place is quiet, the chairs are comfortable, "
    "and nobody asks them to buy anything. "
    "Last year the city council wanted to close it and move the collection to a larger building downtown, "
    "but the neighbours collected more than three thousand signatures in two weeks, "
    "and the council changed its mind. "
    "Now the library plans a small garden behind the building, where people can read outside in the summer."
)


def make_ids(tok):
    ids = tok(PARAGRAPH, add_special_tokens=False).input_ids
    need = (N_SEQ - 1) * STRIDE + SEQ_LEN
    assert len(ids) >= need, (len(ids), need)
    return [ids[i * STRIDE : i * STRIDE + SEQ_LEN] for i in range(N_SEQ)], len(ids)


def rss_now_mib():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def time_it(fn, warmup, timed):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(timed):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def adapter_layout(pm, tmp):
    from safetensors import safe_open

    pm.save_pretrained(tmp)
    with open(os.path.join(tmp, "adapter_config.json")) as f:
        cfg = json.load(f)
    tensors = []
    with safe_open(os.path.join(tmp, "adapter_model.safetensors"), "pt") as f:
        meta = f.metadata()
        for k in f.keys():  # safetensors keys come back sorted
            t = f.get_tensor(k)
            tensors.append({"name": k, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")})
    return {"adapter_config": cfg, "tensors": tensors, "safetensors_metadata": meta}


def run_mode(mode, args):
    import torch
    import peft

    from common import load, load_model_cached

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.no_cache:
        _, model = load(args.model_dir, args.gguf, attn=args.attn)
        how = "gguf"
    else:
        model, how = load_model_cached(args.model_dir, args.gguf, attn=args.attn, cache_root=CACHE_ROOT)
        # keep adapter_config.base_model_name_or_path as with a GGUF load ("data/models")
        model.name_or_path = model.config._name_or_path = args.model_dir
    load_s = time.perf_counter() - t0
    with open(IDS_PATH) as f:
        ids = torch.tensor(json.load(f)["ids"], dtype=torch.long)
    assert ids.shape == (N_SEQ, SEQ_LEN), ids.shape
    res = {
        "mode": mode,
        "loaded_from": how,
        "load_s": round(load_s, 2),
        "rss_after_load_mib": round(rss_now_mib(), 1),
        "peak_rss_after_load_mib": round(peak_rss_mib(), 1),
    }
    ntok = N_SEQ * SEQ_LEN

    if mode == "forward":
        model.eval()

        def fwd():
            with torch.no_grad():
                return model.model(input_ids=ids, use_cache=False).last_hidden_state

        ts = time_it(fwd, args.warmup, args.timed)
        med = statistics.median(ts)
        res.update(seconds=ts, median_s=med, tokens_per_s=ntok / med)
    else:
        torch.manual_seed(SEED)
        if mode in ("lora", "lora-top"):
            n_layers = model.config.num_hidden_layers
            top = list(range(n_layers - TOP_LAYERS, n_layers)) if mode == "lora-top" else None
            cfg = peft.LoraConfig(
                r=8,
                lora_alpha=16,
                lora_dropout=0.0,
                target_modules=["q_proj", "v_proj"],
                bias="none",
                layers_to_transform=top,
            )
        else:
            cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=16)
        pm = peft.get_peft_model(model, cfg)
        with tempfile.TemporaryDirectory() as tmp:
            res["adapter"] = adapter_layout(pm, tmp)
        res["peft_config_resolved"] = {
            k: (sorted(v) if isinstance(v, (set, frozenset)) else v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v))
            for k, v in pm.peft_config["default"].to_dict().items()
        }
        res["trainable_params"], res["all_params"] = pm.get_nb_trainable_parameters()
        pm.train()
        decoder = pm.get_base_model().model  # LlamaModel (LoRA layers injected in place for mode=lora)
        gen = torch.Generator().manual_seed(SEED)
        w = torch.randn(model.config.hidden_size, generator=gen)
        params = [p for p in pm.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        B = ids.shape[0]

        if mode == "prefix":
            # Same path as PeftModelForCausalLM._prefix_tuning_forward, minus the lm_head:
            # past_key_values = get_prompt(B) (a DynamicCache holding the prefix K/V per layer).
            with torch.no_grad():
                a = pm(input_ids=ids[:2], output_hidden_states=True).hidden_states[-1]
                b = decoder(input_ids=ids[:2], past_key_values=pm.get_prompt(2)).last_hidden_state
            res["check_decoder_path_equals_peft_forward_maxabs"] = float((a - b).abs().max())
            pkv = pm.get_prompt(1)
            res["prefix_cache"] = {
                "type": type(pkv).__name__,
                "seq_length": pkv.get_seq_length(),
                "layers": len(pkv.layers),
                "layer0_keys_shape_batch1": list(pkv.layers[0].keys.shape),
                "layer0_values_shape_batch1": list(pkv.layers[0].values.shape),
            }

            def hidden():
                return decoder(input_ids=ids, past_key_values=pm.get_prompt(B)).last_hidden_state
        else:

            def hidden():
                return decoder(input_ids=ids, use_cache=False).last_hidden_state

        losses = []

        def step():
            h = hidden()
            loss = (h.mean(dim=1) @ w).sum()
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())

        ts = time_it(step, args.warmup, args.timed)
        med = statistics.median(ts)
        res.update(seconds=ts, median_s_per_step=med, tokens_per_s=ntok / med, losses=losses)

    res["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["all", "forward", "lora", "lora-top", "prefix"], default="all")
    ap.add_argument("--model-dir", default="data/models")
    ap.add_argument("--gguf", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=WARMUP)
    ap.add_argument("--timed", type=int, default=TIMED)
    ap.add_argument("--out", default=OUT_PATH)
    ap.add_argument("--quick", action="store_true", help="1 warm-up + 3 timed instead of 2 + 5")
    ap.add_argument(
        "--no-cache",
        action="store_true",
        help="load from the GGUF in every mode process (default: the first run saves a dequantized f32 "
        "safetensors copy under notebooks/reference/llm/.cache/ and later processes load that)",
    )
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. 'quiet machine')")
    ap.add_argument("--write-ids", action="store_true", help="(re)build bench_ids.json from PARAGRAPH and exit")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.write_ids:
        from common import load_tokenizer

        tok = load_tokenizer(args.model_dir, args.gguf)
        windows, n = make_ids(tok)
        with open(IDS_PATH, "w") as f:
            json.dump(
                {
                    "construction": f"tok(PARAGRAPH, add_special_tokens=False).input_ids ({n} ids); "
                    f"window i = ids[{STRIDE}*i : {STRIDE}*i + {SEQ_LEN}] for i in 0..{N_SEQ}",
                    "paragraph": PARAGRAPH,
                    "paragraph_num_ids": n,
                    "n_seq": N_SEQ,
                    "seq_len": SEQ_LEN,
                    "stride": STRIDE,
                    "ids": windows,
                },
                f,
                ensure_ascii=False,
            )
            f.write("\n")
        print(f"wrote {IDS_PATH}: {N_SEQ} x {SEQ_LEN} from {n} paragraph ids")
        return

    if args.child:
        print(json.dumps(run_mode(args.mode, args)))
        return

    if args.quick:
        args.warmup, args.timed = 1, 3
    modes = ["forward", "lora", "lora-top", "prefix"] if args.mode == "all" else [args.mode]
    from common import load_model_cached, loadavg, machine_info, versions

    t_all = time.perf_counter()
    if not args.no_cache:  # build the f32 cache once, outside the measured processes
        import torch

        torch.set_num_threads(args.threads)
        load_model_cached(args.model_dir, args.gguf, attn=args.attn, cache_root=CACHE_ROOT)

    results = {}
    load_before = loadavg()
    for mode in modes:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--mode", mode]
        for k in ("model_dir", "gguf", "attn", "threads", "warmup", "timed"):
            cmd += ["--" + k.replace("_", "-"), str(getattr(args, k))]
        if args.no_cache:
            cmd.append("--no-cache")
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if p.returncode != 0:
            sys.exit(f"mode {mode} failed (rc={p.returncode})")
        results[mode] = json.loads(p.stdout.strip().splitlines()[-1])
        results[mode]["process_wall_s"] = round(time.perf_counter() - t0, 1)
        r = results[mode]
        if mode == "forward":
            print(f"forward: median {r['median_s']:.3f} s  {r['tokens_per_s']:.0f} tok/s  peak RSS {r['peak_rss_mib']:.0f} MiB")
        else:
            print(
                f"{mode}: median {r['median_s_per_step']:.3f} s/step  {r['tokens_per_s']:.0f} tok/s  "
                f"peak RSS {r['peak_rss_mib']:.0f} MiB  trainable {r['trainable_params']}"
            )

    out = {
        "workload": {
            "ids_file": os.path.relpath(IDS_PATH),
            "n_seq": N_SEQ,
            "seq_len": SEQ_LEN,
            "tokens_per_batch": N_SEQ * SEQ_LEN,
            "warmup": args.warmup,
            "timed": args.timed,
            "statistic": "median",
            "dtype": "float32",
            "attn_implementation": args.attn,
            "threads": args.threads,
            "loss": "(last_hidden_state.mean(dim=1) @ w).sum(), w = torch.randn(576, generator=Generator().manual_seed(0))",
            "optimizer": "torch.optim.AdamW(trainable, lr=1e-3) (defaults: betas=(0.9,0.999), eps=1e-8, weight_decay=0.01)",
            "seed": "torch.manual_seed(0) right before get_peft_model",
            "peak_rss": "resource.getrusage(RUSAGE_SELF).ru_maxrss of the mode's own process, model load included "
            "(from the f32 safetensors cache unless --no-cache; a GGUF load+dequantization alone peaks at ~1.55 GB)",
        },
        "command": "python3 " + " ".join(shlex.quote(a) for a in sys.argv),
        "note": args.note,
        "total_wall_s": round(time.perf_counter() - t_all, 1),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "machine": machine_info(),
        "versions": versions(),
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
