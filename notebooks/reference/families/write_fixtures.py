"""Tiny random checkpoints of the decoder families `embed.model` may name, written
by transformers, with transformers' last hidden states for one prompt.

Writes tests/fixtures/families/<name>/{config.json, model.safetensors,
tokenizer.json, reference.json}; `cargo test --test families` loads each folder
with the Rust decoder and compares its states with reference.json.

    python -m venv /tmp/tf && /tmp/tf/bin/pip install torch transformers
    /tmp/tf/bin/python notebooks/reference/families/write_fixtures.py

Every weight is drawn again after transformers' own initialisation (norm
weights around 1, or around 0 for Gemma's (1 + w) norm; projections with a
spread that makes attention peaked), so that each architectural difference
(q/k norms, scaled embeddings, GeLU, fused projections, scaled rotary
frequencies) moves the states well beyond the 1e-4 tolerance.
"""

import json
import pathlib
import sys

import torch
import transformers as T
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = pathlib.Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "fixtures" / "families"
PROMPT = ("Users who work as an executive manager, aged 35-44, rate films: "
          "describe this group of viewers in one sentence.")
CORPUS = [
    "users who work as an executive manager rate films",
    "a group of viewers aged 35-44 describe one sentence",
    "students, programmers, writers, artists and retired people watch movies",
    "the quick brown fox jumps over the lazy dog 0123456789",
]
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=8,
             vocab_size=300, rms_norm_eps=1e-6, tie_word_embeddings=True,
             bos_token_id=None, eos_token_id=None, pad_token_id=None)


def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def families():
    """name -> (config class, model class, config overrides)."""
    return {
        "llama": (T.LlamaConfig, T.LlamaForCausalLM,
                  dict(tie_word_embeddings=False)),
        "llama3-rope-scaling": (T.LlamaConfig, T.LlamaForCausalLM, dict(
            rope_parameters=dict(rope_type="llama3", rope_theta=100.0, factor=8.0,
                                 low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=64))),
        "mistral": (T.MistralConfig, T.MistralForCausalLM, dict(sliding_window=4096)),
        "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM, {}),
        "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM, {}),
        "gemma": (T.GemmaConfig, T.GemmaForCausalLM,
                  dict(hidden_act="gelu_pytorch_tanh")),
        "phi3": (T.Phi3Config, T.Phi3ForCausalLM, {}),
    }


def redraw(model, gemma_norm):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                base = 0.0 if gemma_norm else 1.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def states(model, ids):
    with torch.no_grad():
        out = model.model(input_ids=torch.tensor([ids]))
    return out.last_hidden_state[0].float()


def main():
    torch.manual_seed(0)
    tok = tokenizer()
    ids = tok.encode(PROMPT).ids
    for name, (cfg_cls, model_cls, over) in families().items():
        kw = dict(SMALL, **over)
        cfg = cfg_cls(**kw)
        model = model_cls(cfg).float().eval()
        redraw(model, gemma_norm=name == "gemma")
        d = OUT / name
        d.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(d)
        (d / "generation_config.json").unlink(missing_ok=True)
        tok.save(str(d / "tokenizer.json"))
        h = states(model, ids)
        ref = {
            "transformers": T.__version__,
            "torch": torch.__version__,
            "model_type": cfg.model_type,
            "prompt": PROMPT,
            "ids": ids,
            "shape": list(h.shape),
            "last_hidden_state": [float(x) for x in h.flatten()],
        }
        if name == "llama3-rope-scaling":
            # The same weights with the scaling left out: how far a decoder that
            # ignored `rope_parameters` would be.
            plain = model_cls(cfg_cls(**dict(kw, rope_parameters=dict(
                rope_type="default", rope_theta=100.0)))).float().eval()
            plain.load_state_dict(model.state_dict())
            h0 = states(plain, ids)
            ref["without_rope_scaling_max_rel"] = float(
                (h0 - h).abs().max() / h.abs().max())
        (d / "reference.json").write_text(json.dumps(ref) + "\n")
        size = sum(f.stat().st_size for f in d.iterdir())
        print(f"{name}: {cfg.model_type}, {len(ids)} tokens, {size / 1024:.0f} KiB",
              file=sys.stderr)


if __name__ == "__main__":
    main()
