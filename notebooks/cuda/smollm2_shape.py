"""A randomly initialised checkpoint in SmolLM2-135M-Instruct's shapes (f32).

For timing the decoder where the real GGUF cannot be copied (a GPU machine with
no network): `pipeline bench llm` feeds fixed token ids and the decoder's work
does not depend on the weights' values, so its times equal the real model's in
f32. The tokenizer is a small fixture's (ids below the vocabulary size are all
the loader checks); nothing here is meant to produce text.

    python3 notebooks/cuda/smollm2_shape.py OUT_DIR
"""

import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out = Path(sys.argv[1])
cfg = LlamaConfig(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    hidden_act="silu",
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    tie_word_embeddings=True,
)
torch.manual_seed(0)
LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(out)
root = Path(__file__).resolve().parents[2]
shutil.copy(root / "tests/fixtures/families/llama/tokenizer.json", out / "tokenizer.json")
print(f"wrote {out}")
