#!/usr/bin/env python3
"""Writes embed-runtime's GTE fixtures (Alibaba's gte-multilingual-base family: rotary
positions, a gated GELU MLP, post-norm layers). Real GTE weights cannot be fetched here, so the
architecture is checked on small randomly initialised models made with transformers' own GTE
port (`GteModel`, model_type "gte"), with the Unigram tokenizer of scripts/xlmr_fixture.py:

- OUT/tiny-gte: a sentence-transformers bi-encoder saved from `GteModel` (CLS pooling,
  normalised, as gte-multilingual-base) and expected.json;
- OUT/tiny-gte-cross-encoder: a CrossEncoder (`GteForSequenceClassification`, one label, as
  gte-multilingual-reranker-base) and expected.json (token counts, logits and scores per pair);
- OUT/tiny-gte-new: the same weights with the config of the checkpoints on the hub
  (model_type "new", `NewModel` with trust_remote_code) and NTK-scaled rotary frequencies
  (`rope_scaling: {type: ntk, factor: 2}`), and expected.json. The NTK frequencies follow the
  hub's modeling.py (`NTKScalingRotaryEmbedding`, fixed NTK without mixed_b): inv_freq of
  base·factor divided by factor^(2/head_dim), set into `GteModel`'s rotary embedding.

embed-runtime/tests/gte.rs checks the Rust side against them (max |Δ| ≤ 1e-4).

usage: python scripts/gte_fixture.py OUT_DIR (from the repository root; needs what
scripts/xlmr_fixture.py needs). Run once; the output is checked in."""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file
from transformers import GteConfig, GteForSequenceClassification, GteModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xlmr_fixture import (  # noqa: E402
    TEXTS,
    save_bi_encoder,
    save_cross_encoder,
    unigram_tokenizer,
    write_expected,
)

out = sys.argv[1]
torch.manual_seed(20261207)
tok = unigram_tokenizer()
vocab = tok.get_vocab_size()
THETA = 160000.0
NTK = 2.0

config = GteConfig(
    vocab_size=vocab,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=64,
    type_vocab_size=1,
    pad_token_id=1,
    initializer_range=0.2,
    rope_parameters={"rope_type": "default", "rope_theta": THETA},
)

# --- transformers' names ---------------------------------------------------------------------
gte_dir = os.path.join(out, "tiny-gte")
model = GteModel(config)
st = save_bi_encoder(model, tok, gte_dir, "cls", 48)
os.remove(os.path.join(gte_dir, "README.md"))

# transformers 5 saves GTE under the hub checkpoints' tensor names (it reverses its own
# renaming, conversion_mapping.py "gte"): fused `attention.qkv_proj`, `mlp.up_gate_proj` (up,
# then gate), `attn_ln`, `mlp_ln`. The Rust side reads those names.
names = load_file(os.path.join(gte_dir, "model.safetensors")).keys()
for name in ["encoder.layer.0.attention.qkv_proj.weight", "encoder.layer.0.mlp.up_gate_proj.weight"]:
    assert name in names, sorted(names)

# --- the hub's config (model_type "new"), NTK-scaled rotary ----------------------------------
new_dir = os.path.join(out, "tiny-gte-new")
shutil.copytree(gte_dir, new_dir)
hub_config = {
    "architectures": ["NewModel"],
    "auto_map": {
        "AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig",
        "AutoModel": "Alibaba-NLP/new-impl--modeling.NewModel",
    },
    "model_type": "new",
    "vocab_size": vocab,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.0,
    "max_position_embeddings": 64,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-12,
    "layer_norm_type": "layer_norm",
    "position_embedding_type": "rope",
    "rope_theta": THETA,
    "rope_scaling": {"type": "ntk", "factor": NTK},
    "logn_attention_scale": False,
    "logn_attention_clip1": False,
    "pad_token_id": 1,
    "pack_qkv": True,
    "unpad_inputs": False,
    "use_memory_efficient_attention": False,
}
with open(os.path.join(new_dir, "config.json"), "w") as f:
    json.dump(hub_config, f, indent=2)

dim = config.hidden_size // config.num_attention_heads
base = THETA * NTK
inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
inv_freq = inv_freq / NTK ** (2 / dim)
model.rotary_emb.inv_freq.copy_(inv_freq)
model.eval()
embeddings = []
with torch.no_grad():
    for text in TEXTS:
        enc = st.tokenizer(text, truncation=True, max_length=st.max_seq_length, return_tensors="pt")
        cls = model(**enc).last_hidden_state[0, 0]
        embeddings.append(torch.nn.functional.normalize(cls, dim=0).tolist())
write_expected(new_dir, st, embeddings, note="NTK rotary (factor 2) set into GteModel")

# --- the cross-encoder -----------------------------------------------------------------------
ce_config = GteConfig(**{**config.to_dict(), "num_labels": 1})
save_cross_encoder(
    GteForSequenceClassification(ce_config), tok, os.path.join(out, "tiny-gte-cross-encoder")
)
print("vocab", vocab, "written to", out)
