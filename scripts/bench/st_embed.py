#!/usr/bin/env python3
"""The sentence-transformers (torch CPU) side of embed-runtime's bench: embeds the same texts
the Rust side does and prints one JSON line {texts, seconds, p50_ms, rss_mib}.

usage: st_embed.py MODEL_DIR CORPUS_JSONL_GZ THREADS [LIMIT]  (run by benches/embed.rs)"""
import gzip
import json
import resource
import statistics
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

model_dir, corpus, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
limit = int(sys.argv[4]) if len(sys.argv) > 4 else None
torch.set_num_threads(threads)
docs = [json.loads(line) for line in gzip.open(corpus, "rt")]
texts = [d["title"] + "\n" + d["text"] for d in docs][:limit]
model = SentenceTransformer(model_dir, device="cpu")
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
                  "engine": f"sentence-transformers (torch {torch.__version__})"}))
