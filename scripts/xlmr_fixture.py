#!/usr/bin/env python3
"""Writes embed-runtime's XLM-RoBERTa fixtures. Real XLM-R weights (multilingual-e5,
bge-m3, bge-reranker) cannot be fetched here, so the architecture is checked on small randomly
initialised models made with transformers, with what transformers and sentence-transformers
compute for a fixed set of texts:

- OUT/tiny-xlmr: a sentence-transformers bi-encoder (XLMRobertaModel, mean pooling, normalised)
  and expected.json (token ids and embeddings per text);
- OUT/tiny-xlmr-cross-encoder: a CrossEncoder (XLMRobertaForSequenceClassification, one label)
  and expected.json (token counts, logits and scores per pair).

Both share a Unigram (SentencePiece-style) tokenizer trained here with `tokenizers` on the
bundled English and Chinese man pages, laid out as XLM-R's is: NFKC, Metaspace (▁),
`<s> A </s></s> B </s>` (RobertaProcessing), ids <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last.
embed-runtime/tests/xlmr.rs checks the Rust side against them (max |Δ| ≤ 1e-4).

usage: python scripts/xlmr_fixture.py OUT_DIR
Needs torch (CPU is enough), transformers 5, sentence-transformers 6 and tokenizers; run once
from the repository root, the output is checked in."""
import gzip
import json
import os
import sys

import torch
from sentence_transformers import CrossEncoder, SentenceTransformer
from sentence_transformers.sentence_transformer import modules as models
from tokenizers import Tokenizer, normalizers, pre_tokenizers, decoders, processors
from tokenizers.models import Unigram
from tokenizers.trainers import UnigramTrainer
from transformers import (
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
)

# --- the tokenizer -------------------------------------------------------------------------
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]


def corpus():
    for path in ["data/manpages/docs/corpus.jsonl.gz", "data/manpages-zh/docs/corpus.jsonl.gz"]:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= 300:
                    break
                yield json.loads(line)["text"]


def unigram_tokenizer():
    """The fixtures' Unigram tokenizer (deterministic: same corpus, same vocabulary)."""
    tok = Tokenizer(Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = UnigramTrainer(vocab_size=2000, special_tokens=SPECIAL, unk_token="<unk>")
    tok.train_from_iterator(corpus(), trainer)
    tok.add_special_tokens(["<mask>"])
    ids = {t: tok.token_to_id(t) for t in SPECIAL + ["<mask>"]}
    assert [ids[t] for t in SPECIAL] == [0, 1, 2, 3], ids
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", ids["</s>"]), ("<s>", ids["<s>"]), trim_offsets=True, add_prefix_space=True
    )
    return tok


def hf_tokenizer(tok, max_length):
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_length,
        model_input_names=["input_ids", "attention_mask"],
    )


def config(vocab, **extra):
    return XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        # 64 positions after the padding offset (pad_token_id + 1 = 2).
        max_position_embeddings=66,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        # Wider than XLM-R's 0.02 so that outputs differ visibly between texts.
        initializer_range=0.2,
        **extra,
    )


LONG = " ".join(
    "The dup() system call allocates a new file descriptor that refers to the same open file "
    "description as the descriptor oldfd. {} ".format(i)
    for i in range(20)
)
TEXTS = [
    "How do I duplicate a file descriptor?",
    "dup, dup2, dup3 - duplicate a file descriptor",
    "如何复制文件描述符",
    "ls 命令列出目录内容 (list directory contents)",
    "emoji 🚀🔥 and symbols ∑∫√ ≤ ≥",
    "Ça marche très bien: naïve café, Größe, Ελληνικά, русский текст",
    "",
    LONG,
]


def save_bi_encoder(model, tok, out_dir, pooling_mode, max_seq_length):
    """Saves `model` with `tok` as a sentence-transformers model (pooling, normalised) in
    `out_dir`, reloads it and writes what it computes for TEXTS to `out_dir/expected.json`."""
    hf_dir = os.path.join(out_dir, "_hf")
    model.eval().save_pretrained(hf_dir)
    hf_tokenizer(tok, 64).save_pretrained(hf_dir)
    transformer = models.Transformer(
        hf_dir, max_seq_length=max_seq_length, model_kwargs={"dtype": torch.float32}
    )
    pooling = models.Pooling(model.config.hidden_size, pooling_mode=pooling_mode)
    st = SentenceTransformer(modules=[transformer, pooling, models.Normalize()])
    st.save(out_dir)
    for name in os.listdir(hf_dir):
        os.remove(os.path.join(hf_dir, name))
    os.rmdir(hf_dir)
    st = SentenceTransformer(out_dir, device="cpu")
    emb = st.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False, batch_size=3)
    write_expected(out_dir, st, emb)
    return st


def write_expected(out_dir, st, embeddings, note=None):
    token_ids = [
        st.tokenizer(t, truncation=True, max_length=st.max_seq_length)["input_ids"] for t in TEXTS
    ]
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(
            {
                "made_by": made_by() + (f"; {note}" if note else ""),
                "max_seq_length": st.max_seq_length,
                "cases": [
                    {"text": t, "ids": ids, "embedding": [float(x) for x in e]}
                    for t, ids, e in zip(TEXTS, token_ids, embeddings)
                ],
            },
            f,
            ensure_ascii=False,
            indent=1,
        )


PAIRS = [
    ("How do I duplicate a file descriptor?", "dup, dup2, dup3 - duplicate a file descriptor"),
    ("How do I duplicate a file descriptor?", "tar -xzvf archive.tar.gz --strip-components=1"),
    ("如何复制文件描述符", "dup 复制一个现有的文件描述符"),
    ("emoji 🚀🔥", "∑∫√ ≤ ≥"),
    ("a short query", LONG),
    (LONG, "a short passage"),
]


def save_cross_encoder(model, tok, out_dir):
    """Saves the sequence classifier `model` with `tok` as a sentence-transformers CrossEncoder
    (max length 40, so long pairs are cut on both sides) in `out_dir`, reloads it and writes
    its token counts, logits and scores for PAIRS to `out_dir/expected.json`."""
    model.eval().save_pretrained(out_dir)
    hf_tokenizer(tok, 64).save_pretrained(out_dir)
    cross = CrossEncoder(out_dir, max_length=40, model_kwargs={"dtype": torch.float32})
    cross.save(out_dir)
    cross = CrossEncoder(out_dir, device="cpu", model_kwargs={"dtype": torch.float32})
    scores = cross.predict(PAIRS, convert_to_numpy=True)
    logits = cross.predict(PAIRS, activation_fn=torch.nn.Identity(), convert_to_numpy=True)
    tokens = [
        len(cross.tokenizer(q, d, truncation=True, max_length=cross.max_seq_length)["input_ids"])
        for q, d in PAIRS
    ]
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(
            {
                "made_by": made_by(),
                "max_seq_length": cross.max_seq_length,
                "cases": [
                    {"query": q, "document": d, "tokens": n, "score": float(s), "logit": float(l)}
                    for (q, d), n, s, l in zip(PAIRS, tokens, scores, logits)
                ],
            },
            f,
            ensure_ascii=False,
            indent=1,
        )
    # The generated model card says nothing the tests use.
    os.remove(os.path.join(out_dir, "README.md"))


def made_by():
    return "%s with torch %s, transformers %s, sentence-transformers %s" % (
        os.path.basename(sys.argv[0]),
        torch.__version__,
        __import__("transformers").__version__,
        __import__("sentence_transformers").__version__,
    )


def main(out):
    torch.manual_seed(20261206)
    tok = unigram_tokenizer()
    vocab = tok.get_vocab_size()

    # --- the bi-encoder ------------------------------------------------------------------------
    bi_dir = os.path.join(out, "tiny-xlmr")
    save_bi_encoder(XLMRobertaModel(config(vocab)), tok, bi_dir, "mean", 48)

    # --- the cross-encoder ---------------------------------------------------------------------
    ce_dir = os.path.join(out, "tiny-xlmr-cross-encoder")
    save_cross_encoder(XLMRobertaForSequenceClassification(config(vocab, num_labels=1)), tok, ce_dir)
    os.remove(os.path.join(bi_dir, "README.md"))
    print("vocab", vocab, "written to", out)


if __name__ == "__main__":
    main(sys.argv[1])
