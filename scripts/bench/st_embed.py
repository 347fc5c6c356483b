#!/usr/bin/env python3
"""The sentence-transformers (torch CPU) side of embed-runtime's bench: embeds the same texts
the Rust side does and prints one JSON line {texts, seconds, p50_ms, rss_mib}.

usage: st_embed.py MODEL_DIR CORPUS_JSONL_GZ THREADS [LIMIT] [--device cuda]  (run by benches/embed.rs)"""
import gzip
import json
import resource
import statistics
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

argv = sys.argv[1:]
device = "cpu"
if "--device" in argv:
    i = argv.index("--device")
    device = argv[i + 1]
    del argv[i:i + 2]
model_dir, corpus, threads = argv[0], argv[1], int(argv[2])
limit = int(argv[3]) if len(argv) > 3 else None
torch.set_num_threads(threads)
docs = [json.loads(line) for line in gzip.open(corpus, "rt")]
texts = [d["title"] + "\n" + d["text"] for d in docs][:limit]
model = SentenceTransformer(model_dir, device=device)
if device != "cpu":
    model.encode(texts[:64], batch_size=32)  # CUDA context and kernels warmed up first
start = time.perf_counter()
vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
seconds = time.perf_counter() - start
assert len(vectors) == len(texts)
queries = ["how do I duplicate a file descriptor", "list open files", "change file permissions"]
latencies = []
for i in range(60):
    t = time.perf_counter()
    model.encode([queries[i % 3]], normalize_embeddings=True)
    latencies.append((time.perf_counter() - t) * 1e3)
rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"texts": len(texts), "seconds": seconds,
                  "p50_ms": statistics.median(latencies), "rss_mib": rss_mib,
                  "engine": f"sentence-transformers (torch {torch.__version__}"
                            + ("" if device == "cpu" else f", {device}") + ")"}))
