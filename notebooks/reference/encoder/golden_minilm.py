"""Golden values for the sentence-encoder baseline (`embed --method encoder`).

Reads data/models/all-MiniLM-L6-v2 (from `pipeline data fetch minilm`) with the
reference libraries and writes tests/fixtures/minilm_golden.json:

- `ids`: each sentence's token ids from the checkpoint's tokenizer (transformers,
  special tokens [CLS] ... [SEP] added);
- `mean`: sentence-transformers' output with the Transformer + mean Pooling
  modules of all-MiniLM-L6-v2 (no Normalize module), i.e. the last layer's token
  states averaged over the attention mask;
- `normalized`: the same with the model's Normalize module (unit length), what
  `SentenceTransformer("all-MiniLM-L6-v2").encode` returns;
- `hidden_first8`: the first 8 values of transformers' `last_hidden_state` at
  every position of sentence 0.

The sentences are encoded as one padded batch, so padding is exercised. The
script also checks that transformers' own masked mean equals
sentence-transformers' output (to 1e-6). Run from the repository root:

    pip install torch sentence-transformers
    python3 notebooks/reference/encoder/golden_minilm.py
"""

import argparse
import hashlib
import json
import pathlib

import numpy as np
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer, models

SENTENCES = [
    'In a movie recommender, describe the group of users "engineer".',
    "Sci-Fi",
    'The domain "homemaker" has 299 ratings, 53.1% liked. Describe its tastes.',
    "Café au lait, naïve RÉSUMÉ — 1998!",
    "a",
]


def f32(x):
    """Shortest decimals that read back as the same float32 values."""
    return [float(np.format_float_positional(np.float32(v), unique=True)) for v in x]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="data/models/all-MiniLM-L6-v2")
    ap.add_argument("--out", default="tests/fixtures/minilm_golden.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    path = args.model

    tok = transformers.AutoTokenizer.from_pretrained(path)
    bert = transformers.AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**batch).last_hidden_state  # (n, T, 384)
    m = batch["attention_mask"].unsqueeze(-1).float()
    manual = (hidden * m).sum(1) / m.sum(1)

    word = models.Transformer(path, max_seq_length=256)
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pooling = models.Pooling(dim(), pooling_mode="mean")
    st_mean = SentenceTransformer(modules=[word, pooling], device="cpu")
    st_norm = SentenceTransformer(modules=[word, pooling, models.Normalize()], device="cpu")
    mean = st_mean.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
    norm = st_norm.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
    gap = float(np.abs(mean - manual.numpy()).max())
    assert gap < 1e-5, f"transformers' masked mean and sentence-transformers differ by {gap}"

    ids = [tok(s)["input_ids"] for s in SENTENCES]
    weights = pathlib.Path(path) / "model.safetensors"
    out = {
        "model": path,
        "model_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "sentences": SENTENCES,
        "ids": ids,
        "mean": [f32(v) for v in mean],
        "normalized": [f32(v) for v in norm],
        "hidden_first8": [f32(h[:8]) for h in hidden[0, : len(ids[0])].numpy()],
        "transformers_vs_sentence_transformers_max_diff": gap,
    }
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}: {len(SENTENCES)} sentences, max |ST - transformers| {gap:.2e}")


if __name__ == "__main__":
    main()
