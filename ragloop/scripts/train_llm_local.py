#!/usr/bin/env python3
"""Seed step 3 under ragloop's job contract, offline: a stand-in for your LLM trainer.

ragloop runs `[llm_fine_tune] command` as a job with

    --data <root>qa-pairs/ --output <root>models/<name>/ --base-model <model>

and the same environment a PAI-DLC job gets (RAGLOOP_OUTPUT, RAGLOOP_INPUT_DATA,
RAGLOOP_BASE_MODEL, RAGLOOP_HP_<NAME> for each hyper-parameter), plus RAGLOOP_STORE: the loop's
store as JSON, e.g. {"backend": "local", "root": "/abs/work/store"} or
{"backend": "oss", "region": "cn-hangzhou"}. The stage succeeds when the job exits 0 *and* `_SUCCESS` exists
under the output prefix; stage 4 then deploys that prefix.

This script does everything a trainer must except train: it reads and checks the chat
`messages` JSONL that `ragloop qa-pairs` writes (train.jsonl, validation.jsonl), reports what
it would train on, writes a model card where the weights would go, and `_SUCCESS` last. Replace
the marked part with your training (transformers/TRL, DeepSpeed, LLaMA-Factory …).

    [llm_fine_tune]
    backend = "local"
    base_model = "Qwen/Qwen2.5-0.5B-Instruct"
    command = ["python3", "ragloop/scripts/train_llm_local.py"]
"""

import argparse
import hashlib
import json
import os
import pathlib
import sys


def local_path(uri: str) -> pathlib.Path:
    """`oss://bucket/key` → <root>/bucket/key in a local store (RAGLOOP_STORE's root)."""
    if "://" not in uri:
        return pathlib.Path(uri)
    store = json.loads(os.environ.get("RAGLOOP_STORE") or "{}")
    if store.get("backend") != "local":
        sys.exit(f"{uri}: this stand-in reads local stores only (RAGLOOP_STORE: {store or 'not set'})")
    return pathlib.Path(store["root"]) / uri.split("://", 1)[1].lstrip("/")


def read_examples(path: pathlib.Path) -> list:
    examples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        messages = json.loads(line).get("messages")
        roles = [m.get("role") for m in messages or []]
        if not roles or roles[-1] != "assistant" or "user" not in roles:
            sys.exit(f"{path}:{n}: expected chat messages ending with the assistant's answer")
        examples.append(messages)
    return examples


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=os.environ.get("RAGLOOP_INPUT_DATA"))
    p.add_argument("--output", default=os.environ.get("RAGLOOP_OUTPUT"))
    p.add_argument("--base-model", default=os.environ.get("RAGLOOP_BASE_MODEL"))
    args = p.parse_args()
    data, out = local_path(args.data), local_path(args.output)
    train = read_examples(data / "train.jsonl")
    validation = read_examples(data / "validation.jsonl") if (data / "validation.jsonl").exists() else []
    if not train:
        sys.exit(f"{data}/train.jsonl has no examples")
    hyper = {k[len("RAGLOOP_HP_"):].lower(): v for k, v in os.environ.items() if k.startswith("RAGLOOP_HP_")}
    print(f"fine-tuning {args.base_model} on {len(train)} examples ({len(validation)} validation), {hyper}")

    # --- your training goes here: load args.base_model, train on `train`, evaluate on
    # `validation`, save the weights (or a LoRA adapter) into `out`. ---

    digest = hashlib.sha256((data / "train.jsonl").read_bytes()).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    card = {"base_model": args.base_model, "train_examples": len(train),
            "validation_examples": len(validation), "train_sha256": digest,
            "hyper_parameters": hyper, "trained": False,
            "note": "written by ragloop/scripts/train_llm_local.py, a stand-in with no training"}
    (out / "model-card.json").write_text(json.dumps(card, indent=2))
    (out / "_SUCCESS").write_text("")
    print(f"wrote {out}/model-card.json and _SUCCESS")


if __name__ == "__main__":
    main()
