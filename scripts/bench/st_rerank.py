#!/usr/bin/env python3
"""sentence-transformers' CrossEncoder side of embed-runtime/benches/rerank.rs: scores the
same (query, passage) pairs on the same cross-encoder directory, `runs` times, one call per
run, on `threads` torch threads; prints one JSON line with the latencies and the scores.

usage: st_rerank.py MODEL_DIR PAIRS.json RUNS THREADS"""
import json
import sys
import time

import torch
from sentence_transformers import CrossEncoder

model_dir, pairs_path, runs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
pairs = [tuple(p) for p in json.load(open(pairs_path))]
model = CrossEncoder(model_dir, device="cpu", model_kwargs={"dtype": torch.float32})
for _ in range(2):
    model.predict(pairs, batch_size=len(pairs))
times = []
for _ in range(runs):
    t = time.perf_counter()
    scores = model.predict(pairs, batch_size=len(pairs))
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "scores": [float(s) for s in scores],
                  "version": __import__("sentence_transformers").__version__,
                  "torch": torch.__version__}))
