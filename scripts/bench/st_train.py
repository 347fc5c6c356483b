#!/usr/bin/env python3
"""Reference training step time: sentence-transformers' fit with MultipleNegativesRankingLoss
(torch CPU) on the same pairs, batch size and token limits as the Rust trainer.

usage: st_train.py MODEL_DIR PAIRS_JSONL --steps N --batch-size B --max-query-tokens Q
                   --max-passage-tokens P --threads T
Prints one JSON object: {"mean_step_seconds", "steps", "st_version", "torch_version"}.
Not a dependency of the project: run by `cargo bench -p embed-runtime --bench train`."""
import argparse, json, os, random, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("pairs")
ap.add_argument("--steps", type=int, default=8)
ap.add_argument("--batch-size", type=int, default=32)
ap.add_argument("--max-query-tokens", type=int, default=64)
ap.add_argument("--max-passage-tokens", type=int, default=128)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--device", default="cpu")
a = ap.parse_args()
os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))

import torch
import sentence_transformers
from sentence_transformers import SentenceTransformer, losses

torch.set_num_threads(a.threads)
torch.manual_seed(42)
random.seed(42)
model = SentenceTransformer(a.model, device=a.device)
pairs = [json.loads(l) for l in open(a.pairs)]
random.shuffle(pairs)
loss_fn = losses.MultipleNegativesRankingLoss(model, scale=20.0)
optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
model.train()


def features(texts, max_len):
    model.max_seq_length = max_len
    f = model.tokenize(texts)
    return {k: v.to(a.device) for k, v in f.items()}


times = []
for step in range(a.steps):
    batch = pairs[step * a.batch_size:(step + 1) * a.batch_size]
    if len(batch) < a.batch_size:
        break
    # Tokenising is outside the timed step, as in the Rust trainer (which tokenises up front).
    q = features([p["query"] for p in batch], a.max_query_tokens)
    p = features([p["passage"] for p in batch], a.max_passage_tokens)
    t = time.perf_counter()
    loss = loss_fn([q, p], None)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    if a.device != "cpu":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    times.append(dt)
    print(f"torch step {step + 1}/{a.steps}: loss {loss.item():.4f}, {dt:.2f}s", file=sys.stderr)
tail = times[1:] if len(times) > 1 else times
print(json.dumps({
    "mean_step_seconds": sum(tail) / len(tail),
    "steps": len(times),
    "st_version": sentence_transformers.__version__,
    "torch_version": torch.__version__,
}))
