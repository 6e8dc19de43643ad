#!/usr/bin/env python3
"""Golden fixture for the Rust SmolLM2 decoder: tokenizer ids, hidden states, logits.

Run from the repo root:
    python3 notebooks/reference/llm/golden_smollm2.py --out tests/fixtures/smollm2_golden.json
"""
import os

os.environ.setdefault("TQDM_DISABLE", "1")  # silence the GGUF dequantization progress bar

import argparse
import json
import re
import shlex
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEFAULT_DIR, DEFAULT_GGUF, load, sha256, versions  # noqa: E402

TOKEN_TEXTS = [
    "Hello world",
    " leading space",
    "1234567",
    "Price: $19.99 in 2024",
    "naïve café — 東京",
    "  two  spaces",
    "emoji 🤖 ok",
    "student\nwriter",
    "<|im_start|>user\nHi<|im_end|>",
]
PROMPT = 'The domain "homemaker" has 299 ratings. Describe its tastes.'
PREFIX_P = 4  # virtual tokens for the deterministic prefix-tuning check


def prefix_weights(p, width):
    """Deterministic PEFT prefix table (p, width): W[v, j] = 0.5*sin(0.37*v + 0.0011*j), computed in f64, stored f32."""
    v = torch.arange(p, dtype=torch.float64)[:, None]
    j = torch.arange(width, dtype=torch.float64)[None, :]
    return (0.5 * torch.sin(0.37 * v + 0.0011 * j)).float()


def prefix_section(model, ids):
    """Hidden states of the prompt with a PEFT P-Tuning v2 prefix (no projection) whose table is prefix_weights()."""
    import peft

    cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=PREFIX_P)
    pm = peft.get_peft_model(model, cfg)
    pc = pm.peft_config["default"]
    emb = pm.prompt_encoder["default"].embedding
    with torch.no_grad():
        emb.weight.copy_(prefix_weights(*emb.weight.shape))
        h = pm(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        # Check the documented layout against PEFT's own get_prompt(): W[v] -> (layers, K/V, kv_heads, head_dim).
        cache = pm.get_prompt(1)
        Wv = emb.weight.view(PREFIX_P, pc.num_layers, 2, pc.num_attention_heads, -1)
        for l in range(pc.num_layers):
            assert torch.equal(cache.layers[l].keys[0], Wv[:, l, 0].permute(1, 0, 2)), l
            assert torch.equal(cache.layers[l].values[0], Wv[:, l, 1].permute(1, 0, 2)), l
    out = {
        "peft": "PrefixTuningConfig(task_type='CAUSAL_LM', num_virtual_tokens=%d), prefix_projection=False" % PREFIX_P,
        "prompt_embeddings_shape": list(emb.weight.shape),
        "prompt_embeddings_formula": "W[v, j] = float32(0.5*sin(0.37*v + 0.0011*j)) computed in float64, v in 0..P, j in 0..11520",
        "layout": "row v reshaped to (num_layers=30, 2 [0=key,1=value], num_kv_heads=3, head_dim=64); layer l key for kv head g "
        "at virtual position v = W[v, ((l*2+0)*3+g)*64 : +64]. Injected as-is (no RoPE) into the cache before the real "
        "tokens; real tokens use positions P..P+T-1 and attend to all P prefix slots plus causal real tokens.",
        "resolved_config": {"token_dim": pc.token_dim, "num_attention_heads": pc.num_attention_heads, "num_layers": pc.num_layers},
        "ids": ids,
        "shape": [1] + list(h.shape),
        "first8_per_position": [r(h[t, :8].tolist()) for t in range(h.shape[0])],
        "last_position_first64": r(h[-1, :64].tolist()),
        "mean": float(h.mean()),
        "std": float(h.std()),
    }
    return out


def r(x):
    """Shortest decimal that round-trips each float32 value exactly."""
    return [float(str(np.float32(v))) for v in x]


def dumps(obj):
    """Indented JSON with each list of numbers on one line (ensure_ascii=False: texts stay readable UTF-8)."""
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    num_list = re.compile(r"\[\s*(-?[0-9][0-9.eE+-]*(?:,\s*-?[0-9][0-9.eE+-]*)*)\s*\]")
    return num_list.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=DEFAULT_DIR)
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--out", default="tests/fixtures/smollm2_golden.json")
    ap.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    args = ap.parse_args()

    torch.set_num_threads(2)
    tok, model = load(args.model_dir, args.gguf, attn=args.attn)

    tokens = []
    for t in TOKEN_TEXTS:
        ids = tok(t, add_special_tokens=False).input_ids
        assert tok.decode(ids) == t, (t, tok.decode(ids))
        tokens.append({"text": t, "ids": ids})

    ids = tok(PROMPT, add_special_tokens=False).input_ids
    x = torch.tensor([ids])
    with torch.no_grad():
        h = model.model(input_ids=x).last_hidden_state[0]  # (T, 576), after final RMSNorm
        logits = model(input_ids=x).logits[0]  # (T, vocab)

    T, D = h.shape
    out = {
        "meta": {
            "model": "SmolLM2-135M-Instruct",
            "gguf_file": args.gguf,
            "gguf_sha256": sha256(os.path.join(args.model_dir, args.gguf)),
            "versions": versions(),
            "dtype": "float32 (transformers dequantizes Q4_1/Q8_0 to f32 and reverse-permutes Q/K to the HF half-split rotary layout)",
            "attn_implementation": args.attn,
            "torch_num_threads": 2,
            "command": "python3 " + " ".join(shlex.quote(a) for a in sys.argv),
            "note": "hidden = model.model(input_ids).last_hidden_state (after final RMSNorm); logits = model(input_ids).logits (tied lm_head = token_embd). ids have no special tokens. Vectors are float32 values written as their shortest round-trip decimal (exact); mean/std are float32 reductions.",
            "config": {
                "hidden_size": model.config.hidden_size,
                "num_hidden_layers": model.config.num_hidden_layers,
                "num_attention_heads": model.config.num_attention_heads,
                "num_key_value_heads": model.config.num_key_value_heads,
                "head_dim": model.config.head_dim,
                "intermediate_size": model.config.intermediate_size,
                "rms_norm_eps": model.config.rms_norm_eps,
                "rope_theta": model.config.rope_parameters["rope_theta"],
                "vocab_size": model.config.vocab_size,
                "tie_word_embeddings": model.config.tie_word_embeddings,
            },
        },
        "tokens": tokens,
        "hidden": {
            "prompt": PROMPT,
            "ids": ids,
            "shape": [1, T, D],
            "first8_per_position": [r(h[t, :8].tolist()) for t in range(T)],
            "last_position_full": r(h[-1].tolist()),
            "mean": float(h.mean()),
            "std": float(h.std()),  # torch default: unbiased (N-1) over all T*D values
            "std_population": float(h.std(unbiased=False)),
        },
        "logits_last": r(logits[-1, :16].tolist()),
        "logits_last_argmax": int(logits[-1].argmax()),
    }
    out["prefix_hidden"] = prefix_section(model, ids)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(dumps(out))
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes): {len(tokens)} token cases, hidden shape {[1, T, D]}")


if __name__ == "__main__":
    main()
