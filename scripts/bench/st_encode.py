#!/usr/bin/env python3
"""Loads a model directory with sentence-transformers and prints the embeddings of the texts
given as a JSON list on stdin (a JSON list of lists on stdout). Used to check that a model the
Rust trainer wrote loads in sentence-transformers and embeds as embed-runtime does.
usage: st_encode.py MODEL_DIR < texts.json"""
import json, sys

from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
texts = json.load(sys.stdin)
print(json.dumps(model.encode(texts, normalize_embeddings=False).tolist()))
