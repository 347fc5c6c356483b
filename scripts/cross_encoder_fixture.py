#!/usr/bin/env python3
"""Writes embed-runtime's cross-encoder fixture: a small randomly initialised BERT
sequence-classification model (no pretrained cross-encoder weights can be fetched here), saved
by sentence-transformers' CrossEncoder, and the scores CrossEncoder.predict gives for a fixed
set of (query, passage) pairs. embed-runtime/tests/cross_encoder.rs checks that the Rust
CrossEncoder gives the same scores (within 1e-4).

usage: python scripts/cross_encoder_fixture.py TOKENIZER_DIR OUT_DIR
TOKENIZER_DIR: any BERT model directory with tokenizer files (all-MiniLM-L6-v2's, from
scripts/fetch-model.sh). Needs sentence-transformers and transformers (torch CPU); run once,
the output is checked in."""
import json
import sys

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import CrossEncoder
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

tokenizer_dir, out = sys.argv[1], sys.argv[2]
torch.manual_seed(20261205)

config = BertConfig(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=512,
    num_labels=1,
    # Wider than BERT's 0.02 so that scores differ visibly between pairs.
    initializer_range=0.3,
)
model = BertForSequenceClassification(config).eval()
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
model.save_pretrained(out)
tokenizer.save_pretrained(out)
# max_length 128 (not 512) so the fixture exercises truncation of both texts of a pair.
cross = CrossEncoder(out, max_length=128, model_kwargs={"dtype": torch.float32})
cross.save(out)
# Half-precision storage keeps the checked-in file at ~2 MB; the scores below are computed
# from the stored (rounded) weights in f32, as the Rust side computes them.
weights = load_file(f"{out}/model.safetensors")
save_file({k: v.half() for k, v in weights.items()}, f"{out}/model.safetensors", {"format": "pt"})
cross = CrossEncoder(out, model_kwargs={"dtype": torch.float32})

LONG = " ".join(
    "The dup() system call allocates a new file descriptor that refers to the same open file "
    "description as the descriptor oldfd. {} ".format(i)
    for i in range(40)
)
PAIRS = [
    ("How do I duplicate a file descriptor?", "dup, dup2, dup3 - duplicate a file descriptor"),
    ("How do I duplicate a file descriptor?", "tar -xzvf archive.tar.gz --strip-components=1"),
    ("how to extract a tar archive", "tar -xzvf archive.tar.gz --strip-components=1 -C /opt/app"),
    ("emoji 🚀🔥 and symbols", "∑∫√ ≤ ≥"),
    ("文件描述符的复制", "ファイル記述子を複製する方法は？"),
    ("Ça marche très bien", "naïve café, Größe, Ångström, Ελληνικά, русский текст"),
    ("a short query", LONG),
    (LONG, "a short passage"),
    (LONG, LONG),
    ("query", ""),
    ("  leading and trailing whitespace\n\n", "   "),
    ("word " * 300, "word " * 300),
]

scores = cross.predict(PAIRS, batch_size=4, convert_to_numpy=True)
logits = cross.predict(PAIRS, batch_size=4, convert_to_numpy=True, activation_fn=torch.nn.Identity())
# Tokenised as predict does (lists of texts: an empty passage still makes a pair).
tokens = [
    len(cross.tokenizer([q], [d], truncation=True, max_length=cross.max_seq_length)["input_ids"][0])
    for q, d in PAIRS
]
with open(f"{out}/expected.json", "w") as f:
    json.dump(
        {
            "about": "scripts/cross_encoder_fixture.py: random-init BERT cross-encoder, "
            "sentence-transformers CrossEncoder.predict",
            "max_seq_length": cross.max_seq_length,
            "activation": type(cross.activation_fn).__name__,
            "cases": [
                {
                    "query": q,
                    "document": d,
                    "tokens": n,
                    "score": round(float(s), 7),
                    "logit": round(float(l), 7),
                }
                for (q, d), n, s, l in zip(PAIRS, tokens, scores, logits)
            ],
        },
        f,
        ensure_ascii=False,
        indent=1,
    )
print(f"{len(PAIRS)} pairs; tokens {tokens}; scores {[round(float(s), 4) for s in scores]}")
