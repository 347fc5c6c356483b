//! Training a cross-encoder: the trainer learns a ranking task, and the directory it writes
//! loads in the inference [`CrossEncoder`] with the trainer's own scores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use embed_runtime::CrossEncoder;
use embed_runtime::train::pairs::{Negative, Pair, PairOrigin};
use embed_runtime::train::{CrossEncoderTrainer, CrossTrainConfig};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-cross-encoder")
}

const TOPICS: [&str; 12] = [
    "river", "castle", "engine", "garden", "violin", "planet", "kernel", "bridge", "forest",
    "harbor", "printer", "glacier",
];

fn passage(topic: &str) -> String {
    format!("these notes describe the {topic} in some detail")
}

/// Query = a topic word; positive = the passage about it; negatives = three other topics.
fn task() -> (Vec<Pair>, Vec<Vec<Negative>>) {
    let mut pairs = Vec::new();
    let mut negatives = Vec::new();
    for (i, topic) in TOPICS.iter().enumerate() {
        pairs.push(Pair {
            query: format!("about the {topic}"),
            passage: passage(topic),
            doc_id: topic.to_string(),
            origin: PairOrigin::Query,
        });
        negatives.push(
            (1..4)
                .map(|k| {
                    let other = TOPICS[(i + k * 5) % TOPICS.len()];
                    Negative {
                        passage: passage(other),
                        doc_id: other.to_string(),
                        margin: None,
                    }
                })
                .collect(),
        );
    }
    (pairs, negatives)
}

/// Share of pairs whose positive outscores each of its negatives.
fn accuracy(trainer: &CrossEncoderTrainer, pairs: &[Pair], negatives: &[Vec<Negative>]) -> f64 {
    let mut right = 0;
    for (p, negs) in pairs.iter().zip(negatives) {
        let mut texts = vec![(p.query.as_str(), p.passage.as_str())];
        texts.extend(negs.iter().map(|n| (p.query.as_str(), n.passage.as_str())));
        let scores = trainer.score(&texts, 64).unwrap();
        if scores[1..].iter().all(|&s| s < scores[0]) {
            right += 1;
        }
    }
    right as f64 / pairs.len() as f64
}

#[test]
fn training_learns_the_task_and_the_saved_model_scores_the_same() {
    let (pairs, negatives) = task();
    let mut trainer = CrossEncoderTrainer::load(&fixture(), 7).unwrap();
    let before = accuracy(&trainer, &pairs, &negatives);
    let config = CrossTrainConfig {
        epochs: 40,
        batch_size: 4,
        group_size: 4,
        learning_rate: 2e-3,
        warmup_ratio: 0.05,
        max_tokens: 64,
        dropout: Some(0.0),
        ..Default::default()
    };
    let mut losses = Vec::new();
    let report = trainer
        .train(&pairs, &negatives, &config, &mut |s| losses.push(s.loss))
        .unwrap();
    assert_eq!(
        report.steps.len(),
        40 * 3,
        "12 pairs in batches of 4, 40 epochs"
    );
    let first: f64 = losses[..12].iter().sum::<f64>() / 12.0;
    let last: f64 = losses[losses.len() - 12..].iter().sum::<f64>() / 12.0;
    assert!(last < 0.5 * first, "loss {first:.3} → {last:.3}");
    let after = accuracy(&trainer, &pairs, &negatives);
    assert!(
        after >= 0.9 && after > before,
        "accuracy {before:.2} → {after:.2}"
    );

    // The saved directory is a cross-encoder the inference engine loads, scoring as trained.
    let out = tempfile::tempdir().unwrap();
    trainer.save(out.path(), 64).unwrap();
    let model = CrossEncoder::load(out.path()).unwrap();
    assert_eq!(model.max_seq_length(), 64);
    let texts: Vec<(&str, &str)> = pairs
        .iter()
        .map(|p| (p.query.as_str(), p.passage.as_str()))
        .chain(
            negatives
                .iter()
                .flatten()
                .map(|n| ("about the river", n.passage.as_str())),
        )
        .collect();
    let want = trainer.score(&texts, 64).unwrap();
    let got = model.logits(&texts).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "inference {g} vs trainer {w}");
    }
}

#[test]
fn bad_training_input_is_refused() {
    let (pairs, negatives) = task();
    let mut trainer = CrossEncoderTrainer::load(&fixture(), 7).unwrap();
    let config = CrossTrainConfig::default();
    let mut quiet = |_: &embed_runtime::train::StepLog| {};
    assert!(
        trainer
            .train(&pairs[..1], &[], &config, &mut quiet)
            .is_err()
    );
    assert!(
        trainer
            .train(&pairs, &negatives[..3], &config, &mut quiet)
            .is_err()
    );
    let one = CrossTrainConfig {
        group_size: 1,
        ..Default::default()
    };
    assert!(trainer.train(&pairs, &negatives, &one, &mut quiet).is_err());
}
