"""Shared loading helpers for the SmolLM2 reference scripts."""
import hashlib
import os
import sys

import torch

DEFAULT_DIR = "data/models"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def versions():
    import gguf
    import importlib.metadata as md
    import transformers

    out = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gguf": md.version("gguf"),
        "tokenizers": md.version("tokenizers"),
        "safetensors": md.version("safetensors"),
        "numpy": md.version("numpy"),
    }
    try:
        out["peft"] = md.version("peft")
    except md.PackageNotFoundError:
        pass
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(model_dir=DEFAULT_DIR, gguf_file=DEFAULT_GGUF, attn="sdpa"):
    """Tokenizer + float32 LlamaForCausalLM dequantized from the GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if not os.path.exists(os.path.join(model_dir, gguf_file)):
        sys.exit(f"missing {model_dir}/{gguf_file}: run `./target/release/pipeline data fetch smollm2`")
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, gguf_file=gguf_file, dtype=torch.float32, attn_implementation=attn
    )
    model.eval()
    return tok, model


def load_tokenizer(model_dir=DEFAULT_DIR, gguf_file=DEFAULT_GGUF):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def machine_info():
    import platform

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "nproc": os.cpu_count(), "platform": platform.platform()}


def load_model_cached(model_dir=DEFAULT_DIR, gguf_file=DEFAULT_GGUF, attn="sdpa", cache_root=None):
    """float32 model; the first call saves the GGUF-dequantized weights (safetensors) and config under
    cache_root/<gguf sha256[:16]>/ so later loads skip the ~15 s GGUF dequantization.
    (save_pretrained refuses GGUF-"quantized" models, hence safetensors.torch.save_model.)
    Returns (model, how) where how is "gguf" or "cache"."""
    import json

    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    key = sha256(os.path.join(model_dir, gguf_file))[:16]
    path = os.path.join(cache_root, key)
    if os.path.exists(os.path.join(path, "model.safetensors")):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
        model.eval()
        return model, "cache"
    _, model = load(model_dir, gguf_file, attn=attn)
    tmp = path + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    save_model(model, os.path.join(tmp, "model.safetensors"))
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    os.replace(tmp, path)
    return model, "gguf"
