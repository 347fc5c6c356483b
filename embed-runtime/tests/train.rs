//! The trainer on the real all-MiniLM-L6-v2 (tiny runs, so CI stays fast): the loss falls, the
//! saved directory reloads with `SentenceEmbedder`, its embeddings moved, and a seed reproduces
//! a run bit for bit.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;
use support::model_dir;

use std::path::Path;

use embed_runtime::SentenceEmbedder;
use embed_runtime::train::pairs::{Negative, Pair, PairOrigin};
use embed_runtime::train::{AdapterTrainer, EmbeddingTrainer, TrainConfig};
use rag_core::EmbeddingModel;

/// Queries whose words barely overlap their passages, so the base model ranks them poorly.
fn pairs() -> Vec<Pair> {
    let raw = [
        (
            "zq1 alpha",
            "pidfd_getfd obtains a duplicate of another process's file descriptor",
        ),
        (
            "zq2 bravo",
            "mount attaches the filesystem found on a device to the directory tree",
        ),
        (
            "zq3 charlie",
            "iconv converts text from one character encoding to another",
        ),
        (
            "zq4 delta",
            "getent displays entries from databases supported by name service switch",
        ),
        (
            "zq5 echo",
            "crontab maintains the tables that drive the cron daemon",
        ),
        (
            "zq6 foxtrot",
            "tar stores and extracts files from a tape or disk archive",
        ),
        (
            "zq7 golf",
            "kill sends a signal to a process, by default the terminate signal",
        ),
        (
            "zq8 hotel",
            "chmod changes the file mode bits of each given file",
        ),
    ];
    raw.iter()
        .enumerate()
        .map(|(i, (q, p))| Pair {
            query: (*q).into(),
            passage: (*p).into(),
            doc_id: format!("doc{i}"),
            origin: PairOrigin::Supplied,
        })
        .collect()
}

fn config() -> TrainConfig {
    TrainConfig {
        epochs: 6,
        batch_size: 8,
        learning_rate: 1e-4,
        warmup_ratio: 0.0,
        max_query_tokens: 16,
        max_passage_tokens: 32,
        dropout: Some(0.0),
        seed: 7,
        ..Default::default()
    }
}

fn train_and_save(out: &Path) -> embed_runtime::train::TrainReport {
    let mut trainer = EmbeddingTrainer::load(&model_dir()).unwrap();
    let report = trainer.train(&pairs(), &config(), &mut |_| {}).unwrap();
    trainer.save(out).unwrap();
    report
}

#[test]
fn training_lowers_the_loss_and_the_saved_model_reloads_changed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb-v1");
    let report = train_and_save(&out);
    assert_eq!(report.steps.len(), 6);
    let first = report.steps[0].loss;
    let last = report.steps.last().unwrap().loss;
    assert!(
        last < first * 0.5,
        "loss {first} → {last}: {:?}",
        report.steps
    );

    // A sentence-transformers directory: configs, tokenizer, pooling, the new weights.
    for f in [
        "config.json",
        "modules.json",
        "tokenizer.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "model.safetensors",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let base = SentenceEmbedder::load(&model_dir()).unwrap();
    let trained = SentenceEmbedder::load(&out).unwrap();
    assert_ne!(base.layout().dims, 0);
    let all = pairs();
    let queries: Vec<&str> = all.iter().map(|p| p.query.as_str()).collect();
    let b = base.embed_raw(&queries).unwrap();
    let t = trained.embed_raw(&queries).unwrap();
    let moved = rag_core::embedding::cosine(&b[0], &t[0]);
    assert!(
        moved < 0.999,
        "the trained model embeds like the base (cosine {moved})"
    );

    // The trained model ranks each pair's passage first more often than the base does.
    let (before, after) = (top1(&base), top1(&trained));
    assert!(after > before, "top-1 {before} → {after}");
}

/// How many pairs' queries rank their own passage first among all passages.
fn top1(m: &SentenceEmbedder) -> usize {
    let all = pairs();
    let queries: Vec<&str> = all.iter().map(|p| p.query.as_str()).collect();
    let passages: Vec<&str> = all.iter().map(|p| p.passage.as_str()).collect();
    let q = m.embed_raw(&queries).unwrap();
    let p = m.embed_raw(&passages).unwrap();
    (0..q.len())
        .filter(|&i| {
            let best = (0..p.len())
                .max_by(|&a, &c| {
                    rag_core::embedding::cosine(&q[i], &p[a])
                        .total_cmp(&rag_core::embedding::cosine(&q[i], &p[c]))
                })
                .unwrap();
            best == i
        })
        .count()
}

#[test]
fn the_adapter_starts_as_the_base_model_and_trains_a_dense_module() {
    let dir = tempfile::tempdir().unwrap();
    let base = SentenceEmbedder::load(&model_dir()).unwrap();
    let texts = ["zq1 alpha", "tar stores and extracts files from a tape"];
    let b = base.embed_raw(&texts).unwrap();

    // Untrained, the adapter is the identity: the saved model embeds like the base.
    let identity = dir.path().join("identity");
    AdapterTrainer::load(&model_dir())
        .unwrap()
        .save(&identity)
        .unwrap();
    let same = SentenceEmbedder::load(&identity).unwrap();
    assert_eq!(same.layout().dense.len(), 1);
    // The id's hash covers the adapter's weights too.
    let hash = |m: &SentenceEmbedder| m.model_id().rsplit('-').next().unwrap().to_string();
    assert_ne!(hash(&same), hash(&base), "the adapter is part of the id");
    for (x, y) in b.iter().zip(same.embed_raw(&texts).unwrap()) {
        let c = rag_core::embedding::cosine(x, &y);
        assert!(c > 0.99999, "identity adapter moved the embedding: {c}");
    }

    let mut trainer = AdapterTrainer::load(&model_dir()).unwrap();
    let config = TrainConfig {
        epochs: 40,
        batch_size: 8,
        learning_rate: 5e-3,
        ..TrainConfig::adapter()
    };
    let report = trainer.train(&pairs(), &config, &mut |_| {}).unwrap();
    assert_eq!(report.steps.len(), 40);
    let (first, last) = (report.steps[0].loss, report.steps.last().unwrap().loss);
    assert!(last < first * 0.5, "loss {first} → {last}");
    let out = dir.path().join("adapter");
    trainer.save(&out).unwrap();
    assert!(out.join("2_Dense/config.json").exists());
    assert!(out.join("2_Dense/model.safetensors").exists());
    let modules = std::fs::read_to_string(out.join("modules.json")).unwrap();
    assert!(
        modules.find("2_Dense").unwrap() < modules.find("Normalize").unwrap(),
        "{modules}"
    );
    // The encoder is untouched; the adapter moved the embeddings and helps retrieval.
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(model_dir().join("model.safetensors")).unwrap()
    );
    let trained = SentenceEmbedder::load(&out).unwrap();
    let t = trained.embed_raw(&texts).unwrap();
    assert!(rag_core::embedding::cosine(&b[0], &t[0]) < 0.999);
    let norm: f32 = t[0].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "Normalize still follows: {norm}");
    let (before, after) = (top1(&base), top1(&trained));
    assert!(after > before, "top-1 {before} → {after}");
}

#[test]
fn a_seed_reproduces_the_weights_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.epochs = 1;
    c.dropout = Some(0.1);
    c.batch_size = 4;
    let run = |out: &Path| {
        let mut trainer = EmbeddingTrainer::load(&model_dir()).unwrap();
        trainer.train(&pairs(), &c, &mut |_| {}).unwrap();
        trainer.save(out).unwrap();
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    let a = run(&dir.path().join("a"));
    let b = run(&dir.path().join("b"));
    assert!(a == b, "same seed, different weights");

    let mut trainer = EmbeddingTrainer::load(&model_dir()).unwrap();
    let err = trainer.train(&pairs()[..1], &c, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("at least 2"), "{err}");
    let mut one = c.clone();
    one.batch_size = 1;
    let err = trainer.train(&pairs(), &one, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
}

/// `save_merged` interpolates every trained weight between the base (α 0) and the trained
/// model (α 1, the same file as `save`); the untrained tensors stay as they were.
#[test]
fn merging_interpolates_between_the_base_and_the_trained_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = EmbeddingTrainer::load(&model_dir()).unwrap();
    let mut c = config();
    c.epochs = 2;
    trainer.train(&pairs(), &c, &mut |_| {}).unwrap();
    trainer.save(&dir.path().join("trained")).unwrap();
    for a in ["0", "0.5", "1"] {
        trainer
            .save_merged(&dir.path().join(a), a.parse().unwrap())
            .unwrap();
    }
    let load = |d: &Path| {
        candle_core::safetensors::load(d.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap()
    };
    let base = load(&model_dir());
    let trained = load(&dir.path().join("trained"));
    let (zero, half, one) = (
        load(&dir.path().join("0")),
        load(&dir.path().join("0.5")),
        load(&dir.path().join("1")),
    );
    let values = |m: &std::collections::HashMap<String, candle_core::Tensor>, k: &str| {
        m[k].flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let key = base
        .keys()
        .find(|k| k.contains("layer.0.attention.self.query.weight"))
        .unwrap()
        .clone();
    let (b, t) = (values(&base, &key), values(&trained, &key));
    let max_diff = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    };
    assert!(max_diff(&b, &t) > 1e-6, "training moved the weight");
    // base + 1·(trained − base) and base + 0·(…) round to within an ulp or so.
    assert!(max_diff(&values(&one, &key), &t) < 1e-6);
    assert!(max_diff(&values(&zero, &key), &b) < 1e-6);
    let mid: Vec<f32> = b.iter().zip(&t).map(|(x, y)| (x + y) / 2.0).collect();
    assert!(max_diff(&values(&half, &key), &mid) < 1e-6);
    assert_eq!(trained.len(), zero.len(), "every tensor is saved");
    assert!(trainer.save_merged(&dir.path().join("bad"), 1.5).is_err());
}

/// Mean `cos(q, positive) − cos(q, first negative)` of `m` over the pairs `rows`.
fn mean_margin(
    m: &SentenceEmbedder,
    all: &[Pair],
    negatives: &[Vec<Negative>],
    rows: &[usize],
) -> f32 {
    let q: Vec<&str> = rows.iter().map(|&i| all[i].query.as_str()).collect();
    let pos: Vec<&str> = rows.iter().map(|&i| all[i].passage.as_str()).collect();
    let neg: Vec<&str> = rows
        .iter()
        .map(|&i| negatives[i][0].passage.as_str())
        .collect();
    let (q, pos, neg) = (
        m.embed_raw(&q).unwrap(),
        m.embed_raw(&pos).unwrap(),
        m.embed_raw(&neg).unwrap(),
    );
    (0..q.len())
        .map(|i| {
            rag_core::embedding::cosine(&q[i], &pos[i])
                - rag_core::embedding::cosine(&q[i], &neg[i])
        })
        .sum::<f32>()
        / q.len() as f32
}

/// Full fine-tuning with hard negatives: each query's negative is a passage that repeats the
/// query's words but is about something else (the lexical trap BM25-mined negatives are).
/// Trained with them, the model puts the traps further below the positives than the same run
/// with in-batch negatives only; lists that do not match the pairs are refused.
#[test]
fn hard_negatives_push_their_passages_below_the_positives() {
    let all = pairs();
    let negatives: Vec<Vec<Negative>> = all
        .iter()
        .enumerate()
        .map(|(i, p)| {
            vec![Negative {
                passage: format!(
                    "{} is a code word in the weather report for sector {i}",
                    p.query
                ),
                doc_id: format!("trap{i}"),
                margin: None,
            }]
        })
        .collect();
    let rows: Vec<usize> = (0..all.len()).collect();
    let margin = |m: &SentenceEmbedder| mean_margin(m, &all, &negatives, &rows);
    let c = TrainConfig {
        epochs: 3,
        ..config()
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |negs: &[Vec<Negative>], out: &Path| {
        let mut trainer = EmbeddingTrainer::load(&model_dir()).unwrap();
        let report = trainer
            .train_with_negatives(&all, negs, &c, &mut |_| {})
            .unwrap();
        trainer.save(out).unwrap();
        (report, SentenceEmbedder::load(out).unwrap())
    };
    let (_, plain) = run(&[], &dir.path().join("plain"));
    let (report, hard) = run(&negatives, &dir.path().join("hard"));
    assert_eq!(report.steps.len(), 3);
    let base = margin(&SentenceEmbedder::load(&model_dir()).unwrap());
    let (plain, hard) = (margin(&plain), margin(&hard));
    assert!(
        hard > plain && hard > base,
        "mean positive − negative cosine: base {base}, in-batch {plain}, hard negatives {hard}"
    );

    let mut trainer = EmbeddingTrainer::load(&model_dir()).unwrap();
    let err = trainer
        .train_with_negatives(&all, &negatives[..2], &c, &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("one per pair"), "{err}");
}

/// Margin-MSE distillation follows the teacher's margins, whichever way they point. Even pairs
/// get a lexical trap (the query's words, another topic; the base model prefers it) that the
/// teacher scores far below the positive: their student margin grows. Odd pairs get an
/// unrelated passage that the teacher scores *above* the positive: their margin shrinks, where
/// a contrastive loss would push it up. A negative without a margin is refused.
#[test]
fn margin_mse_moves_the_student_margins_towards_the_teacher() {
    use embed_runtime::train::Objective;
    let all = pairs();
    let negatives: Vec<Vec<Negative>> = all
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (passage, margin) = if i % 2 == 0 {
                (
                    format!(
                        "{} is a code word in the weather report for sector {i}",
                        p.query
                    ),
                    0.8,
                )
            } else {
                (
                    format!("Sector {i} expects light rain and a westerly wind tomorrow."),
                    -0.4,
                )
            };
            vec![Negative {
                passage,
                doc_id: format!("neg{i}"),
                margin: Some(margin),
            }]
        })
        .collect();
    // Mean student margin cos(q, p) − cos(q, negative) over the pairs of one parity.
    let margins = |m: &SentenceEmbedder, parity: usize| {
        let rows: Vec<usize> = (0..all.len()).filter(|i| i % 2 == parity).collect();
        mean_margin(m, &all, &negatives, &rows)
    };
    let c = TrainConfig {
        epochs: 3,
        objective: Objective::MarginMse,
        ..config()
    };
    let mut trainer = EmbeddingTrainer::load(&model_dir()).unwrap();
    let report = trainer
        .train_with_negatives(&all, &negatives, &c, &mut |_| {})
        .unwrap();
    let (first, last) = (report.steps[0].loss, report.steps.last().unwrap().loss);
    assert!(last < first, "loss {first} → {last}");
    let dir = tempfile::tempdir().unwrap();
    trainer.save(dir.path()).unwrap();
    let trained = SentenceEmbedder::load(dir.path()).unwrap();
    let base = SentenceEmbedder::load(&model_dir()).unwrap();
    let (up_before, up_after) = (margins(&base, 0), margins(&trained, 0));
    let (down_before, down_after) = (margins(&base, 1), margins(&trained, 1));
    assert!(
        up_after > up_before && down_after < down_before,
        "teacher +0.8 (trap): {up_before} → {up_after}; teacher −0.4: {down_before} → {down_after}"
    );

    let mut unscored = negatives.clone();
    unscored[3][0].margin = None;
    let mut trainer = EmbeddingTrainer::load(&model_dir()).unwrap();
    let err = trainer
        .train_with_negatives(&all, &unscored, &c, &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("teacher margin"), "{err}");
    let err = trainer
        .train_with_negatives(&all, &[], &c, &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("needs hard negatives"), "{err}");
}

/// The passage-level recipe over precomputed vectors: each pair's positive is the best of its
/// document's two chunks, negatives come from other documents, and the adapter trained on the
/// vectors alone (no encoder pass) ranks the queries' documents better.
#[test]
fn the_adapter_trains_on_cached_vectors_with_mined_hard_negatives() {
    use embed_runtime::train::hard::{HardOptions, mine};
    let base = SentenceEmbedder::load(&model_dir()).unwrap();
    let all = pairs();
    // Two chunks per document: its passage and a generic line.
    let mut chunk_texts = Vec::new();
    let mut chunk_docs = Vec::new();
    for (i, p) in all.iter().enumerate() {
        chunk_texts.push(p.passage.clone());
        chunk_texts.push(format!("See also the manual page number {i}."));
        chunk_docs.extend([i as u32, i as u32]);
    }
    let refs: Vec<&str> = chunk_texts.iter().map(String::as_str).collect();
    let chunks = base.embed_unnormalized(&refs, false).unwrap();
    let queries: Vec<&str> = all.iter().map(|p| p.query.as_str()).collect();
    let q = base.embed_unnormalized(&queries, true).unwrap();
    let relevant: Vec<Vec<u32>> = (0..all.len() as u32).map(|i| vec![i]).collect();
    let (hard, report) = mine(
        &q,
        &relevant,
        &chunks,
        &chunk_docs,
        &[],
        &HardOptions::default(),
    );
    assert_eq!(report.pairs, all.len());
    for h in &hard {
        assert_eq!(chunk_docs[h.positive], h.query as u32, "own document");
        assert!(h.negatives.iter().all(|&n| chunk_docs[n] != h.query as u32));
    }
    let mut trainer = AdapterTrainer::from_embedder(&model_dir(), base).unwrap();
    let config = TrainConfig {
        epochs: 40,
        batch_size: 8,
        learning_rate: 5e-3,
        ..TrainConfig::adapter()
    };
    let report = trainer
        .train_hard(&q, &chunks, &chunk_docs, &hard, &config, &mut |_| {})
        .unwrap();
    let (first, last) = (report.steps[0].loss, report.steps.last().unwrap().loss);
    assert!(last < first * 0.5, "loss {first} → {last}");
    // Document-level top-1 over all chunks, as the loop's dense retriever ranks: base vectors
    // against the trained model's (`apply`: the adapter on the same vectors, no encoder pass).
    let top1_docs = |q: &[Vec<f32>], c: &[Vec<f32>]| {
        (0..q.len())
            .filter(|&i| {
                let best = (0..c.len())
                    .max_by(|&a, &b| {
                        rag_core::embedding::cosine(&q[i], &c[a])
                            .total_cmp(&rag_core::embedding::cosine(&q[i], &c[b]))
                    })
                    .unwrap();
                chunk_docs[best] == i as u32
            })
            .count()
    };
    let before = top1_docs(&q, &chunks);
    let after = top1_docs(
        &trainer.apply(&q).unwrap(),
        &trainer.apply(&chunks).unwrap(),
    );
    assert!(after > before, "top-1 {before} → {after}");
    // `apply` is what the saved model embeds.
    let dir = tempfile::tempdir().unwrap();
    trainer.save(dir.path()).unwrap();
    let saved = SentenceEmbedder::load(dir.path()).unwrap();
    let direct = saved.embed_raw(&refs[..1]).unwrap();
    let applied = trainer.apply(&chunks[..1]).unwrap();
    assert!(rag_core::embedding::cosine(&direct[0], &applied[0]) > 0.9999);

    // Pairs that point past the vectors are refused, not indexed out of bounds.
    let mut bad = hard.clone();
    bad[0].positive = chunks.len();
    let err = trainer
        .train_hard(&q, &chunks, &chunk_docs, &bad, &config, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, rag_core::Error::InvalidInput { .. }), "{err}");
}
