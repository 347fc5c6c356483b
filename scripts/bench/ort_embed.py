#!/usr/bin/env python3
"""The ONNX Runtime side of embed-runtime's bench: exports the sentence-transformers model's
transformer to ONNX with torch.onnx.export (once, cached beside the output), optionally
quantises it with onnxruntime's quantize_dynamic (int8 weights per channel, dynamic uint8
activations: ONNX Runtime's recommended CPU int8 recipe), embeds the same texts the Rust side
does (length-sorted batches of 32, mean pooling, L2 normalisation, like sentence-transformers),
writes the vectors as little-endian f32 to VECTORS_OUT and prints one JSON line
{engine, texts, seconds, p50_ms, rss_mib}.

usage: ort_embed.py MODEL_DIR CORPUS_JSONL_GZ THREADS fp32|int8 WORK_DIR VECTORS_OUT [LIMIT]
(run by benches/embed.rs; needs torch, transformers, onnx, onnxruntime)"""
import gzip
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

model_dir, corpus, threads, precision, work, vectors_out = sys.argv[1:7]
threads = int(threads)
limit = int(sys.argv[7]) if len(sys.argv) > 7 else None
os.makedirs(work, exist_ok=True)
fp32_path = os.path.join(work, "model.onnx")
int8_path = os.path.join(work, "model-int8.onnx")

from tokenizers import Tokenizer  # noqa: E402 (not transformers: it would load torch)

max_len = json.load(open(os.path.join(model_dir, "sentence_bert_config.json")))["max_seq_length"]
tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
tokenizer.enable_truncation(max_len)
tokenizer.enable_padding()

def export():
    import torch
    from transformers import AutoModel, AutoTokenizer

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = AutoModel.from_pretrained(model_dir).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    model = Encoder().eval()
    enc = AutoTokenizer.from_pretrained(model_dir)(["a b c", "d"], padding=True,
                                                  return_tensors="pt")
    axes = {0: "batch", 1: "seq"}
    torch.onnx.export(
        model,
        (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]),
        fp32_path,
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                      "last_hidden_state": axes},
        opset_version=17,
        dynamo=False,
    )


if precision == "export":
    export()
    sys.exit(0)
if not os.path.exists(fp32_path):
    # In a child process, so torch's memory does not count in this engine's peak RSS.
    import subprocess

    subprocess.run([sys.executable, *sys.argv[:4], "export", *sys.argv[5:]], check=True)
if precision == "int8" and not os.path.exists(int8_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8, per_channel=True)

import onnxruntime as ort  # noqa: E402

options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(int8_path if precision == "int8" else fp32_path, options,
                               providers=["CPUExecutionProvider"])


def embed(texts):
    enc = tokenizer.encode_batch(texts)
    feed = {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }
    hidden = session.run(None, feed)[0]
    mask = feed["attention_mask"][..., None].astype(np.float32)
    pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


docs = [json.loads(line) for line in gzip.open(corpus, "rt")]
texts = [d["title"] + "\n" + d["text"] for d in docs][:limit]
start = time.perf_counter()
# sentence-transformers' batching: longest first, batches of 32, results put back in order.
order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
out = np.zeros((len(texts), session.get_outputs()[0].shape[-1] or 384), dtype=np.float32)
for b in range(0, len(order), 32):
    idx = order[b:b + 32]
    out[idx] = embed([texts[i] for i in idx])
seconds = time.perf_counter() - start
out.astype("<f4").tofile(vectors_out)
queries = ["how do I duplicate a file descriptor", "list open files", "change file permissions"]
latencies = []
for i in range(60):
    t = time.perf_counter()
    embed([queries[i % 3]])
    latencies.append((time.perf_counter() - t) * 1e3)
rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"texts": len(texts), "seconds": seconds,
                  "p50_ms": statistics.median(latencies), "rss_mib": rss_mib,
                  "engine": f"ONNX Runtime {ort.__version__} {precision}"}))
