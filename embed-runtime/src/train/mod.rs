//! Domain training of sentence-transformers BERT models (seed step 2), in Rust on candle's
//! autograd — the same trainer runs on a laptop and as the command of a PAI-DLC job.
//!
//! - [`EmbeddingTrainer`] fine-tunes every weight of the encoder with the multiple-negatives
//!   ranking loss (InfoNCE over in-batch negatives, cosine similarity × `scale`), AdamW with
//!   decoupled weight decay, linear warmup then linear decay, global-norm gradient clipping and
//!   dropout — the recipe of sentence-transformers' `fit` with `MultipleNegativesRankingLoss`.
//!   Seeded: the same pairs, config and seed give the same weights.
//! - [`pairs`] makes the training data: pairs mined from raw documents, pairs from queries with
//!   known answers, user JSONL; dedup and a held-out split.
//! - [`synthetic`] asks any `ChatModel` for questions about each document (pairs whose queries
//!   read like a user's).
//! - [`evaluate`] measures document retrieval (hit@k, MRR@10, nDCG@10) of any
//!   [`SentenceEmbedder`](crate::SentenceEmbedder) on a query set, so base and trained models are compared the same way.
//! - [`AdapterTrainer`] is the cheap mode for small data: the encoder stays frozen and a
//!   linear adapter (a `Dense` module) is fitted on its embeddings in seconds.
//! - [`EmbeddingTrainer::save`] writes a sentence-transformers directory (the base model's
//!   configs and tokenizer, the trained `model.safetensors`) that [`SentenceEmbedder`](crate::SentenceEmbedder) and
//!   sentence-transformers both load.
//!
//! ```no_run
//! use embed_runtime::train::{EmbeddingTrainer, TrainConfig, pairs::Pair};
//!
//! # fn demo(pairs: Vec<Pair>) -> rag_core::Result<()> {
//! let mut trainer = EmbeddingTrainer::load("models/all-MiniLM-L6-v2".as_ref())?;
//! let report = trainer.train(&pairs, &TrainConfig::default(), &mut |step| {
//!     println!("step {} loss {:.4}", step.step, step.loss);
//! })?;
//! trainer.save("models/emb-v1".as_ref())?;
//! println!("{} steps in {:.0}s", report.steps.len(), report.seconds);
//! # Ok(()) }
//! ```

mod adapter;
pub mod cross;
mod eval;
mod fused;
mod gelu;
pub mod hard;
pub(crate) mod model;
mod optim;
pub mod pairs;
pub mod synthetic;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rag_core::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub use adapter::AdapterTrainer;
pub use cross::{CrossEncoderTrainer, CrossTrainConfig};
pub use eval::{evaluate, evaluate_sets};
use fused::Ops;
pub use model::TrainableBert;
use model::{Batch, Dropout, candle, margin_mse_loss, masked_mnrl_loss, mnrl_loss};
use optim::{AdamW, warmup_linear};
use pairs::{Negative, Pair};

use crate::layout::ModelLayout;

/// Hyper-parameters of [`EmbeddingTrainer::train`]. The defaults are sentence-transformers'
/// `fit` defaults for this loss, with passages cut to 128 tokens for 2-core budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Passes over the pairs.
    pub epochs: usize,
    /// Pairs per step (each query's negatives are the other passages of its batch).
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Share of the steps spent warming the learning rate up from 0.
    pub warmup_ratio: f64,
    /// AdamW decoupled weight decay (not applied to biases and layer norms).
    pub weight_decay: f64,
    /// Gradients are scaled down when their global L2 norm exceeds this.
    pub max_grad_norm: f64,
    /// Similarity scale (1 / temperature) of the loss.
    pub scale: f64,
    /// Tokens of a query kept.
    pub max_query_tokens: usize,
    /// Tokens of a passage kept.
    pub max_passage_tokens: usize,
    /// Dropout probability; `None` takes the model's `hidden_dropout_prob`.
    pub dropout: Option<f32>,
    /// Seed of shuffling and dropout.
    pub seed: u64,
    /// Stops after this many steps (the schedule still spans the full run).
    pub max_steps: Option<usize>,
    /// What the loss is made of.
    pub objective: Objective,
}

/// The loss of full fine-tuning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Multiple-negatives ranking (InfoNCE): each query's positive against the batch's other
    /// positives and every hard negative.
    #[default]
    Contrastive,
    /// GPL's margin-MSE distillation: for each (query, positive, negative) the student's
    /// cosine margin `cos(q, p) − cos(q, n)` is regressed onto the teacher's margin
    /// ([`Negative::margin`]). Soft targets: a teacher that prefers the "negative" (a
    /// pseudo-query that fits another document better) teaches that, where a contrastive loss
    /// would push the wrong way.
    MarginMse,
    /// Both terms, summed.
    Both,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 32,
            learning_rate: 2e-5,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            scale: 20.0,
            max_query_tokens: 64,
            max_passage_tokens: 128,
            dropout: None,
            seed: 42,
            max_steps: None,
            objective: Objective::Contrastive,
        }
    }
}

impl TrainConfig {
    /// Defaults for [`AdapterTrainer`]: a linear map on frozen embeddings takes a far larger
    /// learning rate and many more passes (each is milliseconds), with weight decay towards
    /// the base model.
    pub fn adapter() -> Self {
        Self {
            epochs: 30,
            batch_size: 64,
            learning_rate: 1e-3,
            weight_decay: 0.01,
            ..Self::default()
        }
    }
}

/// One optimisation step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based step number.
    pub step: usize,
    /// Total steps of the run.
    pub total: usize,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Loss of the batch.
    pub loss: f64,
    /// Learning rate used.
    pub learning_rate: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Seconds the step took.
    pub seconds: f64,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Every step.
    pub steps: Vec<StepLog>,
    /// Pairs trained on.
    pub pairs: usize,
    /// Trained parameters.
    pub parameters: usize,
    /// Seconds spent preparing the data: tokenising (full fine-tuning) or embedding with the
    /// frozen encoder (adapter).
    #[serde(alias = "tokenize_seconds")]
    pub prepare_seconds: f64,
    /// Wall time of the run.
    pub seconds: f64,
}

impl TrainReport {
    /// Mean seconds per step, without the first (warm-up of allocations).
    pub fn mean_step_seconds(&self) -> f64 {
        let tail = if self.steps.len() > 1 {
            &self.steps[1..]
        } else {
            &self.steps[..]
        };
        tail.iter().map(|s| s.seconds).sum::<f64>() / tail.len().max(1) as f64
    }
}

/// Fine-tunes a sentence-transformers BERT model (see the module docs).
pub struct EmbeddingTrainer {
    base_dir: std::path::PathBuf,
    layout: ModelLayout,
    model: TrainableBert,
    tokenizer: Tokenizer,
    /// The trained variables as loaded (copies: the optimiser updates the variables in
    /// place), for [`EmbeddingTrainer::save_merged`].
    initial: HashMap<String, Tensor>,
}

impl std::fmt::Debug for EmbeddingTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingTrainer")
            .field("base_dir", &self.base_dir)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// Weight files of other formats that a copied model directory must not keep: they would hold
/// the base weights next to the trained ones.
const STALE_WEIGHTS: &[&str] = &[
    "pytorch_model.bin",
    "tf_model.h5",
    "flax_model.msgpack",
    "rust_model.ot",
    "model.onnx",
];
const STALE_DIRS: &[&str] = &["onnx", "openvino"];

impl EmbeddingTrainer {
    /// Loads the sentence-transformers model in `dir` for training on the CPU.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_on(dir, &Device::Cpu)
    }

    /// Loads the model in `dir` for training on `device` (see [`crate::device`]): on the CPU
    /// the fused ops run, elsewhere candle's composed ones; the same seed draws the same
    /// batches and dropout masks on both.
    pub fn load_on(dir: &Path, device: &Device) -> Result<Self> {
        let layout = ModelLayout::read(dir)?;
        let model = TrainableBert::load_on(&layout.transformer_dir, layout.pooling, device)?;
        let tok_path = layout.transformer_dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::invalid(format!("{}: {e}", tok_path.display())))?;
        tokenizer.with_padding(None);
        let initial = model
            .vars()
            .iter()
            .map(|(name, var)| {
                Ok((
                    name.clone(),
                    var.as_tensor().copy()?.to_device(&Device::Cpu)?,
                ))
            })
            .collect::<candle_core::Result<_>>()
            .map_err(candle("copying the base weights"))?;
        Ok(Self {
            base_dir: dir.to_path_buf(),
            layout,
            model,
            tokenizer,
            initial,
        })
    }

    /// The model being trained.
    pub fn model(&self) -> &TrainableBert {
        &self.model
    }

    fn tokenize(&self, texts: Vec<String>, max_tokens: usize) -> Result<Vec<Vec<u32>>> {
        let max_len = max_tokens
            .min(self.layout.max_seq_length)
            .min(self.model.config().max_tokens())
            .max(2);
        let mut tok = self.tokenizer.clone();
        tok.with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| Error::invalid(format!("truncation: {e}")))?;
        // A token is rarely longer than 16 bytes of text: cut huge texts before tokenising.
        let texts: Vec<String> = texts
            .into_iter()
            .map(|t| {
                let t = t.trim();
                let mut end = t.len().min(max_len * 16);
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                t[..end].to_string()
            })
            .collect();
        let encodings = tok
            .encode_batch(texts, true)
            .map_err(|e| Error::invalid(format!("tokenizer: {e}")))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Trains on `pairs` with in-batch negatives; `on_step` sees every step as it finishes.
    pub fn train(
        &mut self,
        pairs: &[Pair],
        config: &TrainConfig,
        on_step: &mut dyn FnMut(&StepLog),
    ) -> Result<TrainReport> {
        self.train_with_negatives(pairs, &[], config, on_step)
    }

    /// Trains on `pairs` with hard negatives: `negatives[i]` are pair `i`'s (empty, or one
    /// list per pair). Each query is scored against every passage of its batch — the
    /// positives, then every pair's negatives (the n-tuple multiple-negatives loss) — except
    /// the passages of documents relevant to it (the documents of every pair with the same
    /// query text), which are masked out: another pair's negative may be this query's answer.
    /// Without any negative this is [`train`](Self::train), bit for bit.
    pub fn train_with_negatives(
        &mut self,
        pairs: &[Pair],
        negatives: &[Vec<Negative>],
        config: &TrainConfig,
        on_step: &mut dyn FnMut(&StepLog),
    ) -> Result<TrainReport> {
        check_inputs(pairs, config)?;
        if !negatives.is_empty() && negatives.len() != pairs.len() {
            return Err(Error::invalid(format!(
                "{} negative lists for {} pairs: give one per pair, or none",
                negatives.len(),
                pairs.len()
            )));
        }
        let started = Instant::now();
        let queries = self.tokenize(
            pairs.iter().map(|p| p.query.clone()).collect(),
            config.max_query_tokens,
        )?;
        let passages = self.tokenize(
            pairs.iter().map(|p| p.passage.clone()).collect(),
            config.max_passage_tokens,
        )?;
        let flat: Vec<(usize, &Negative)> = negatives
            .iter()
            .enumerate()
            .flat_map(|(i, list)| list.iter().map(move |n| (i, n)))
            .collect();
        let negative_tokens = self.tokenize(
            flat.iter().map(|(_, n)| n.passage.clone()).collect(),
            config.max_passage_tokens,
        )?;
        let objective = config.objective;
        if objective != Objective::Contrastive {
            if flat.is_empty() {
                return Err(Error::invalid(
                    "the margin-MSE objective needs hard negatives with teacher margins",
                ));
            }
            if let Some((i, _)) = flat
                .iter()
                .find(|(_, n)| !n.margin.is_some_and(f32::is_finite))
            {
                return Err(Error::invalid(format!(
                    "a negative of pair {i} has no finite teacher margin (the margin-MSE objective needs one on every negative)"
                )));
            }
        }
        // Pair i's negatives as (token ids, document, teacher margin).
        let mut per_pair: Vec<Vec<(&[u32], &str, f32)>> = vec![Vec::new(); pairs.len()];
        for ((i, n), ids) in flat.iter().zip(&negative_tokens) {
            per_pair[*i].push((ids.as_slice(), n.doc_id.as_str(), n.margin.unwrap_or(0.0)));
        }
        let mut relevant: HashMap<&str, HashSet<&str>> = HashMap::new();
        for p in pairs.iter().filter(|p| !p.doc_id.is_empty()) {
            relevant
                .entry(p.query.as_str())
                .or_default()
                .insert(p.doc_id.as_str());
        }
        let prepare_seconds = started.elapsed().as_secs_f64();

        let dropout_p = config
            .dropout
            .unwrap_or(self.model.config().hidden_dropout_prob as f32);
        let model = &self.model;
        let steps = optimise(
            pairs,
            config,
            model.vars(),
            model.ops(),
            on_step,
            &mut |batch, rng| {
                let q: Vec<&[u32]> = batch.iter().map(|&i| queries[i].as_slice()).collect();
                let mut p: Vec<&[u32]> = batch.iter().map(|&i| passages[i].as_slice()).collect();
                let mut dropout = Dropout { p: dropout_p, rng };
                if flat.is_empty() {
                    let qe = model.embed(&Batch::pad(&q), &mut dropout)?;
                    let pe = model.embed(&Batch::pad(&p), &mut dropout)?;
                    return mnrl_loss(&qe, &pe, config.scale);
                }
                let mut docs: Vec<&str> = batch.iter().map(|&i| pairs[i].doc_id.as_str()).collect();
                // (row, column of the negative, teacher margin) for the margin-MSE term.
                let mut triples = Vec::new();
                for (row, &i) in batch.iter().enumerate() {
                    for &(ids, doc, margin) in &per_pair[i] {
                        triples.push((row, p.len(), margin));
                        p.push(ids);
                        docs.push(doc);
                    }
                }
                let qe = model.embed(&Batch::pad(&q), &mut dropout)?;
                let pe = model.embed(&Batch::pad(&p), &mut dropout)?;
                let contrastive = || {
                    let mask = relevance_mask(batch, pairs, &docs, &relevant);
                    let mask = Tensor::from_vec(mask, (batch.len(), docs.len()), qe.device())?;
                    masked_mnrl_loss(&qe, &pe, &mask, config.scale)
                };
                match objective {
                    Objective::Contrastive => contrastive(),
                    Objective::MarginMse => margin_mse_loss(&qe, &pe, &triples, config.scale),
                    Objective::Both => {
                        contrastive()? + margin_mse_loss(&qe, &pe, &triples, config.scale)?
                    }
                }
            },
        )?;
        Ok(TrainReport {
            steps,
            pairs: pairs.len(),
            parameters: self.model.parameter_count(),
            prepare_seconds,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Writes the trained model as a sentence-transformers directory: every file of the base
    /// directory (configs, tokenizer, pooling, README) except weights of other formats, and the
    /// trained `model.safetensors` in place of the base one.
    pub fn save(&self, out: &Path) -> Result<()> {
        self.write(out, self.model.host_tensors()?)
    }

    /// [`save`](Self::save) with every trained weight interpolated towards the base model,
    /// `base + alpha·(trained − base)` — the weight merging LM-Cocktail uses against
    /// forgetting: `alpha` 1 is the trained model, 0 the base one.
    pub fn save_merged(&self, out: &Path, alpha: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(Error::invalid(format!(
                "merge weight {alpha} is outside 0..=1"
            )));
        }
        let mut tensors = self.model.host_tensors()?;
        for (name, base) in &self.initial {
            if let Some(trained) = tensors.get_mut(name) {
                let merge = || ((&*trained - base)? * alpha)? + base;
                *trained = merge().map_err(candle("merging with the base weights"))?;
            }
        }
        self.write(out, tensors)
    }

    fn write(&self, out: &Path, tensors: HashMap<String, Tensor>) -> Result<()> {
        let io = |what: String| move |e: std::io::Error| Error::backend("trainer", what, e);
        copy_tree(&self.base_dir, out, Some(&self.layout.transformer_dir)).map_err(io(format!(
            "copying {} to {}",
            self.base_dir.display(),
            out.display()
        )))?;
        let rel = self
            .layout
            .transformer_dir
            .strip_prefix(&self.base_dir)
            .unwrap_or(Path::new(""));
        let weights = out.join(rel).join("model.safetensors");
        let tmp = weights.with_extension("safetensors.tmp");
        candle_core::safetensors::save(&tensors, &tmp)
            .map_err(candle("writing model.safetensors"))?;
        std::fs::rename(&tmp, &weights).map_err(io(format!("writing {}", weights.display())))?;
        Ok(())
    }
}

/// The optimisation loop both trainers share: every epoch's batches drawn up front (no two
/// pairs of one document in a batch), then per step the batch's loss, backward, global-norm
/// clipping, the warmup-linear learning rate and an AdamW step over `vars`. `loss` gets the
/// batch's pair indices and the generator that shuffled them (dropout draws from it next).
fn optimise(
    pairs: &[Pair],
    config: &TrainConfig,
    vars: &[(String, candle_core::Var)],
    ops: Ops,
    on_step: &mut dyn FnMut(&StepLog),
    loss: &mut dyn FnMut(&[usize], &mut ChaCha8Rng) -> candle_core::Result<Tensor>,
) -> Result<Vec<StepLog>> {
    // Gradients of pairs the model already ranks well are small enough to be subnormal, which
    // Intel cores multiply ~60× slower: flushed to zero for the whole run (`denormals.rs`).
    let _flush = crate::denormals::FlushDenormals::new();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let epochs: Vec<Vec<Vec<usize>>> = (0..config.epochs)
        .map(|_| {
            pairs::epoch_batches(pairs, config.batch_size, &mut rng)
                .into_iter()
                .filter(|b| b.len() >= 2)
                .collect()
        })
        .collect();
    let total: usize = epochs.iter().map(Vec::len).sum();
    let total = config.max_steps.map_or(total, |m| m.min(total));
    let warmup = (total as f64 * config.warmup_ratio).ceil() as usize;
    let mut optimizer =
        AdamW::new(vars, config.weight_decay, ops == Ops::Portable).map_err(candle("optimizer"))?;
    let mut steps = Vec::with_capacity(total);
    for (epoch, batch) in epochs
        .iter()
        .enumerate()
        .flat_map(|(e, batches)| batches.iter().map(move |b| (e, b)))
        .take(total)
    {
        let t0 = Instant::now();
        let loss = loss(batch, &mut rng).map_err(candle("forward pass"))?;
        let loss_value = loss
            .to_scalar::<f32>()
            .map_err(candle("reading the loss"))? as f64;
        if !loss_value.is_finite() {
            return Err(Error::backend_msg(
                "trainer",
                format!("the loss became {loss_value} at step {}", steps.len() + 1),
            ));
        }
        let grads = loss.backward().map_err(candle("backward pass"))?;
        let grad_norm = optimizer
            .grad_norm(&grads)
            .map_err(candle("gradient norm"))?;
        let clip = if grad_norm > config.max_grad_norm && grad_norm > 0.0 {
            config.max_grad_norm / grad_norm
        } else {
            1.0
        };
        let lr = warmup_linear(steps.len(), warmup, total, config.learning_rate);
        optimizer
            .step(&grads, lr, clip)
            .map_err(candle("optimizer step"))?;
        let log = StepLog {
            step: steps.len() + 1,
            total,
            epoch,
            loss: loss_value,
            learning_rate: lr,
            grad_norm,
            seconds: t0.elapsed().as_secs_f64(),
        };
        on_step(&log);
        steps.push(log);
    }
    Ok(steps)
}

/// The additive mask of [`masked_mnrl_loss`]: row `r` (pair `batch[r]`) must not count column
/// `c` (a passage of document `docs[c]`) as a negative when that document is relevant to the
/// row's query — unless `c` is the row's own positive.
fn relevance_mask(
    batch: &[usize],
    pairs: &[Pair],
    docs: &[&str],
    relevant: &HashMap<&str, HashSet<&str>>,
) -> Vec<f32> {
    let mut mask = vec![0f32; batch.len() * docs.len()];
    for (r, &i) in batch.iter().enumerate() {
        let Some(rel) = relevant.get(pairs[i].query.as_str()) else {
            continue;
        };
        for (c, doc) in docs.iter().enumerate() {
            if c != r && !doc.is_empty() && rel.contains(doc) {
                mask[r * docs.len() + c] = -10_000.0;
            }
        }
    }
    mask
}

/// What both trainers refuse: fewer than two pairs, batches without negatives.
fn check_inputs(pairs: &[Pair], config: &TrainConfig) -> Result<()> {
    if config.batch_size < 2 {
        return Err(Error::invalid(
            "batch_size must be at least 2 (the other passages are the negatives)",
        ));
    }
    if pairs.len() < 2 {
        return Err(Error::invalid(format!(
            "{} training pairs: at least 2 are needed",
            pairs.len()
        )));
    }
    Ok(())
}

/// Copies `from` to `to`, leaving out hidden files and, in `retrained` (the transformer's
/// directory when its weights are written afterwards), its weights.
fn copy_tree(from: &Path, to: &Path, retrained: Option<&Path>) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    let is_transformer = retrained == Some(from);
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let target = to.join(name.as_ref());
        if entry.file_type()?.is_dir() {
            if !(is_transformer && STALE_DIRS.contains(&name.as_ref())) {
                copy_tree(&entry.path(), &target, retrained)?;
            }
        } else if !(is_transformer
            && (STALE_WEIGHTS.contains(&name.as_ref()) || name == "model.safetensors"))
        {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairs::PairOrigin;

    #[test]
    fn the_mask_hides_only_passages_relevant_to_the_row_but_its_own() {
        let pair = |q: &str, d: &str| Pair {
            query: q.into(),
            passage: format!("{d} text"),
            doc_id: d.into(),
            origin: PairOrigin::Query,
        };
        // "q" has two relevant documents (a and b); "r" one (c).
        let pairs = vec![pair("q", "a"), pair("q", "b"), pair("r", "c")];
        let mut relevant: HashMap<&str, HashSet<&str>> = HashMap::new();
        for p in &pairs {
            relevant.entry(&p.query).or_default().insert(&p.doc_id);
        }
        // Batch: pairs 0 and 2; columns: their positives (a, c), then negatives b, c, "".
        let docs = ["a", "c", "b", "c", ""];
        let mask = relevance_mask(&[0, 2], &pairs, &docs, &relevant);
        let hidden = |r: usize| -> Vec<usize> {
            (0..docs.len())
                .filter(|&c| mask[r * docs.len() + c] < 0.0)
                .collect()
        };
        assert_eq!(hidden(0), vec![2], "b is q's answer too");
        assert_eq!(hidden(1), vec![3], "a negative that is r's own document");
    }
}
