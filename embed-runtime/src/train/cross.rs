//! Domain training of a cross-encoder reranker: a BERT encoder (any BERT directory, e.g. the
//! base bi-encoder's transformer) with BERT's pooler and a one-output classifier on top, fine-
//! tuned end to end on (query, positive, hard negatives) groups with a listwise loss — the
//! softmax cross-entropy of the positive among its group's logits, as FlagEmbedding trains
//! its rerankers. [`CrossEncoderTrainer::save`] writes a directory that
//! [`CrossEncoder`](crate::CrossEncoder) and sentence-transformers' `CrossEncoder` load.
//!
//! Each group is the pair's positive, its hard negatives (mined by the caller, e.g. with the
//! bi-encoder) and, up to `group_size`, the positives of the batch's other pairs whose
//! documents are not relevant to the query.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rag_core::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::fused::Ops;
use super::model::{Batch, Dropout, TrainableBert, candle};
use super::pairs::{Negative, Pair};
use super::{StepLog, TrainConfig, TrainReport, optimise};
use crate::bert::Family;
use crate::cross::ScoreActivation;
use crate::layout::Pooling;

/// Hyper-parameters of [`CrossEncoderTrainer::train`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CrossTrainConfig {
    /// Passes over the pairs.
    pub epochs: usize,
    /// Groups (queries) per step.
    pub batch_size: usize,
    /// Sequences per group: the positive and up to `group_size − 1` negatives.
    pub group_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Share of the steps spent warming the learning rate up from 0.
    pub warmup_ratio: f64,
    /// AdamW decoupled weight decay (not applied to biases and layer norms).
    pub weight_decay: f64,
    /// Gradients are scaled down when their global L2 norm exceeds this.
    pub max_grad_norm: f64,
    /// Tokens of a (query, passage) pair kept, both texts cut longest first.
    pub max_tokens: usize,
    /// Dropout probability; `None` takes the model's `hidden_dropout_prob`.
    pub dropout: Option<f32>,
    /// Seed of shuffling, dropout and the classifier's initial weights.
    pub seed: u64,
    /// Stops after this many steps (the schedule still spans the full run).
    pub max_steps: Option<usize>,
}

/// Two epochs at 1e-4: a head that starts from nothing needs more than the one epoch at 3e-5
/// of a pretrained cross-encoder's fine-tune (at 3e-5 the listwise loss stayed at ln 4 for the
/// first 20 steps on the man pages' 865 queries; at 1e-4 it fell to 1.10 in one epoch and 0.61
/// in two) — chosen on the training loss.
impl Default for CrossTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 2,
            batch_size: 8,
            group_size: 4,
            learning_rate: 1e-4,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            max_tokens: 256,
            dropout: None,
            seed: 42,
            max_steps: None,
        }
    }
}

/// Fine-tunes a cross-encoder (see the module docs).
pub struct CrossEncoderTrainer {
    /// Where the transformer's tokenizer and configs are.
    transformer_dir: std::path::PathBuf,
    model: TrainableBert,
    pooler_w: Var,
    pooler_b: Var,
    classifier_w: Var,
    classifier_b: Var,
    tokenizer: Tokenizer,
    /// The encoder's prefix in the saved classifier (`bert.`, `roberta.`, `gte.`, …).
    prefix: &'static str,
}

impl std::fmt::Debug for CrossEncoderTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoderTrainer")
            .field("transformer_dir", &self.transformer_dir)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// The transformer directory of `dir`: a sentence-transformers model's first module, else
/// `dir` itself.
fn transformer_dir(dir: &Path) -> std::path::PathBuf {
    match crate::layout::ModelLayout::read(dir) {
        Ok(layout) => layout.transformer_dir,
        Err(_) => dir.to_path_buf(),
    }
}

fn var(t: Tensor) -> Result<Var> {
    let t = t.to_dtype(DType::F32).map_err(candle("to f32"))?;
    Var::from_tensor(&t).map_err(candle("variable"))
}

impl CrossEncoderTrainer {
    /// Loads the BERT encoder in `dir` (a transformer directory, a sentence-transformers
    /// bi-encoder, or a cross-encoder to train further). Its pooler is kept when it has one;
    /// the classifier is kept from a cross-encoder, else drawn small and seeded with `seed`.
    pub fn load(dir: &Path, seed: u64) -> Result<Self> {
        let tdir = transformer_dir(dir);
        let mut model = TrainableBert::load(&tdir, Pooling::Cls)?;
        let h = model.config().hidden_size;
        let family = model.config().family()?;
        let prefix = match model.prefix() {
            "" => model.config().classifier_prefix(),
            found => found,
        };
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // BERT's initialisation: N(0, 0.02) weights, zero biases (a sum of uniforms stands in
        // for the normal draw).
        let mut normal = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    let u: f32 = (0..12).map(|_| rng.random::<f32>()).sum::<f32>() - 6.0;
                    0.02 * u
                })
                .collect()
        };
        let mut take = |names: [&str; 2], fresh: Tensor| -> Result<Var> {
            let found = names.iter().find_map(|n| model.take_frozen(n));
            match found {
                Some(t) if t.dims() == fresh.dims() => var(t),
                Some(t) => Err(Error::invalid(format!(
                    "{}: {} has shape {:?}, expected {:?}",
                    tdir.display(),
                    names[0],
                    t.dims(),
                    fresh.dims()
                ))),
                None => var(fresh),
            }
        };
        let t = |v: Vec<f32>, shape: &[usize]| {
            Tensor::from_vec(v, shape, &dev).map_err(candle("initial weights"))
        };
        // A cross-encoder's head, else a bi-encoder's pooler for the dense layer.
        let [dense, out] = family.classifier_head(prefix);
        let pooler_w = take(
            [&format!("{dense}.weight"), "pooler.dense.weight"],
            t(normal(h * h), &[h, h])?,
        )?;
        let pooler_b = take(
            [&format!("{dense}.bias"), "pooler.dense.bias"],
            t(vec![0.0; h], &[h])?,
        )?;
        let classifier_w = take(
            [&format!("{out}.weight"), &format!("{out}.weight")],
            t(normal(h), &[1, h])?,
        )?;
        let classifier_b = take(
            [&format!("{out}.bias"), &format!("{out}.bias")],
            t(vec![0.0], &[1])?,
        )?;
        let tok_path = tdir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::invalid(format!("{}: {e}", tok_path.display())))?;
        tokenizer.with_padding(None);
        Ok(Self {
            transformer_dir: tdir,
            model,
            pooler_w,
            pooler_b,
            classifier_w,
            classifier_b,
            tokenizer,
            prefix,
        })
    }

    /// Every trained variable: the encoder's, then the pooler and classifier.
    fn vars(&self) -> Vec<(String, Var)> {
        let mut vars = self.model.vars().to_vec();
        let [dense, out] = self.family().classifier_head(self.prefix);
        vars.extend([
            (format!("{dense}.weight"), self.pooler_w.clone()),
            (format!("{dense}.bias"), self.pooler_b.clone()),
            (format!("{out}.weight"), self.classifier_w.clone()),
            (format!("{out}.bias"), self.classifier_b.clone()),
        ]);
        vars
    }

    fn family(&self) -> Family {
        // Checked when the model was loaded.
        self.model.config().family().unwrap_or(Family::Bert)
    }

    /// Token ids and types of the pairs, cut to `max_tokens` longest text first.
    fn tokenize(
        &self,
        pairs: &[(&str, &str)],
        max_tokens: usize,
    ) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        let max_len = max_tokens.min(self.model.config().max_tokens()).max(3);
        let tokenizer = crate::runtime::tokenizer_from(self.tokenizer.clone(), max_len)?;
        let cap = max_len * crate::runtime::BYTES_PER_TOKEN_BOUND;
        let inputs: Vec<tokenizers::EncodeInput<'static>> = pairs
            .iter()
            .map(|(q, d)| {
                (
                    crate::runtime::capped(q, cap).0,
                    crate::runtime::capped(d, cap).0,
                )
                    .into()
            })
            .collect();
        let encodings = tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| Error::invalid(format!("tokenizer: {e}")))?;
        Ok(encodings
            .into_iter()
            .map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec()))
            .collect())
    }

    /// The logits of a padded batch of pairs: `rows`.
    fn logits(&self, batch: &Batch, dropout: &mut Dropout<'_>) -> candle_core::Result<Tensor> {
        let cls = self.model.cls(batch, dropout)?;
        let pooled =
            super::fused::linear(&cls, self.pooler_w.as_tensor(), self.pooler_b.as_tensor())?
                .tanh()?;
        let pooled = dropout.apply(&pooled)?;
        super::fused::linear(
            &pooled,
            self.classifier_w.as_tensor(),
            self.classifier_b.as_tensor(),
        )?
        .squeeze(1)
    }

    /// Scores (logits) of (query, passage) pairs with the current weights, no dropout.
    pub fn score(&self, pairs: &[(&str, &str)], max_tokens: usize) -> Result<Vec<f32>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let tokens = self.tokenize(pairs, max_tokens)?;
        let ids: Vec<&[u32]> = tokens.iter().map(|(i, _)| i.as_slice()).collect();
        let types: Vec<&[u32]> = tokens.iter().map(|(_, t)| t.as_slice()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut off = Dropout {
            p: 0.0,
            rng: &mut rng,
        };
        self.logits(&Batch::pad_typed(&ids, Some(&types)), &mut off)
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(candle("scoring"))
    }

    /// Trains on `pairs` (query, positive passage, its document) with `negatives[i]` as pair
    /// `i`'s hard negatives (one list per pair, or none at all); `on_step` sees every step.
    /// Passages of documents relevant to a query (the documents of every pair with its text)
    /// are never its negatives.
    pub fn train(
        &mut self,
        pairs: &[Pair],
        negatives: &[Vec<Negative>],
        config: &CrossTrainConfig,
        on_step: &mut dyn FnMut(&StepLog),
    ) -> Result<TrainReport> {
        if pairs.len() < 2 {
            return Err(Error::invalid(format!(
                "{} training pairs: at least 2 are needed",
                pairs.len()
            )));
        }
        if config.group_size < 2 || config.batch_size < 1 {
            return Err(Error::invalid(
                "group_size must be at least 2 (a positive and a negative) and batch_size at least 1",
            ));
        }
        if !negatives.is_empty() && negatives.len() != pairs.len() {
            return Err(Error::invalid(format!(
                "{} negative lists for {} pairs: give one per pair, or none",
                negatives.len(),
                pairs.len()
            )));
        }
        let started = Instant::now();
        let mut relevant: HashMap<&str, HashSet<&str>> = HashMap::new();
        for p in pairs.iter().filter(|p| !p.doc_id.is_empty()) {
            relevant
                .entry(p.query.as_str())
                .or_default()
                .insert(p.doc_id.as_str());
        }
        // Pair i's hard negatives that are not relevant to its query, at most group_size − 1.
        let hard: Vec<Vec<&str>> = (0..pairs.len())
            .map(|i| {
                let rel = relevant.get(pairs[i].query.as_str());
                negatives
                    .get(i)
                    .map(|list| {
                        list.iter()
                            .filter(|n| !rel.is_some_and(|r| r.contains(n.doc_id.as_str())))
                            .map(|n| n.passage.as_str())
                            .take(config.group_size - 1)
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let positives = self.tokenize(
            &pairs
                .iter()
                .map(|p| (p.query.as_str(), p.passage.as_str()))
                .collect::<Vec<_>>(),
            config.max_tokens,
        )?;
        let flat: Vec<(usize, &str)> = hard
            .iter()
            .enumerate()
            .flat_map(|(i, list)| list.iter().map(move |&n| (i, n)))
            .collect();
        let hard_tokens = self.tokenize(
            &flat
                .iter()
                .map(|&(i, n)| (pairs[i].query.as_str(), n))
                .collect::<Vec<_>>(),
            config.max_tokens,
        )?;
        let mut per_pair: Vec<Vec<&(Vec<u32>, Vec<u32>)>> = vec![Vec::new(); pairs.len()];
        for ((i, _), t) in flat.iter().zip(&hard_tokens) {
            per_pair[*i].push(t);
        }
        // (query i, positive of pair j) encodings made on demand for in-batch fill-ins.
        let mut cross_cache: HashMap<(usize, usize), (Vec<u32>, Vec<u32>)> = HashMap::new();
        let prepare_seconds = started.elapsed().as_secs_f64();

        let dropout_p = config
            .dropout
            .unwrap_or(self.model.config().hidden_dropout_prob as f32);
        let vars = self.vars();
        let base = TrainConfig {
            epochs: config.epochs,
            batch_size: config.batch_size.max(2),
            learning_rate: config.learning_rate,
            warmup_ratio: config.warmup_ratio,
            weight_decay: config.weight_decay,
            max_grad_norm: config.max_grad_norm,
            dropout: config.dropout,
            seed: config.seed,
            max_steps: config.max_steps,
            ..TrainConfig::default()
        };
        let g = config.group_size;
        let this = &*self;
        let steps = optimise(
            pairs,
            &base,
            &vars,
            Ops::Fused,
            on_step,
            &mut |batch, rng| {
                // Fill-ins first (they need the tokenizer; the batch's other positives).
                let mut groups: Vec<Vec<(Vec<u32>, Vec<u32>)>> = Vec::with_capacity(batch.len());
                for &i in batch {
                    let mut group = vec![positives[i].clone()];
                    group.extend(per_pair[i].iter().map(|t| (*t).clone()));
                    let rel = relevant.get(pairs[i].query.as_str());
                    for &j in batch {
                        if group.len() >= g {
                            break;
                        }
                        let other = pairs[j].doc_id.as_str();
                        if j == i
                            || other == pairs[i].doc_id
                            || rel.is_some_and(|r| r.contains(other))
                        {
                            continue;
                        }
                        if let std::collections::hash_map::Entry::Vacant(e) =
                            cross_cache.entry((i, j))
                        {
                            let t = this
                                .tokenize(
                                    &[(pairs[i].query.as_str(), pairs[j].passage.as_str())],
                                    config.max_tokens,
                                )
                                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                            e.insert(t.into_iter().next().unwrap_or_default());
                        }
                        group.push(cross_cache[&(i, j)].clone());
                    }
                    groups.push(group);
                }
                let ids: Vec<&[u32]> = groups.iter().flatten().map(|(i, _)| i.as_slice()).collect();
                let types: Vec<&[u32]> =
                    groups.iter().flatten().map(|(_, t)| t.as_slice()).collect();
                let mut dropout = Dropout { p: dropout_p, rng };
                let logits = this.logits(&Batch::pad_typed(&ids, Some(&types)), &mut dropout)?;
                // Scatter into a (groups × g) matrix; missing members masked out.
                let mut index = Vec::with_capacity(groups.len() * g);
                let mut mask = Vec::with_capacity(groups.len() * g);
                let mut at = 0u32;
                for group in &groups {
                    for k in 0..g {
                        if k < group.len() {
                            index.push(at + k as u32);
                            mask.push(0f32);
                        } else {
                            index.push(at);
                            mask.push(-10_000.0);
                        }
                    }
                    at += group.len() as u32;
                }
                let n = groups.len();
                let dev = Device::Cpu;
                let index = Tensor::from_vec(index, n * g, &dev)?;
                let mask = Tensor::from_vec(mask, (n, g), &dev)?;
                let table = (logits.index_select(&index, 0)?.reshape((n, g))? + mask)?;
                listwise_loss(&table)
            },
        )?;
        Ok(TrainReport {
            steps,
            pairs: pairs.len(),
            parameters: vars.iter().map(|(_, v)| v.elem_count()).sum(),
            prepare_seconds,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Writes the trained cross-encoder: `config.json` (the encoder's, as a
    /// `BertForSequenceClassification` — `XLMRobertaForSequenceClassification` for XLM-R —
    /// with one label), `model.safetensors` (`bert.`- / `roberta.`-prefixed encoder, pooler /
    /// classification head and classifier), the tokenizer files, and sentence-transformers'
    /// `config_sentence_transformers.json` (sigmoid activation) and `tokenizer_config.json`
    /// limit (`max_tokens`).
    pub fn save(&self, out: &Path, max_tokens: usize) -> Result<()> {
        let io = |what: String| move |e: std::io::Error| Error::io(e, what);
        std::fs::create_dir_all(out).map_err(io(format!("creating {}", out.display())))?;
        let mut tensors = HashMap::new();
        let prefix = self.prefix;
        for (name, t) in self.model.tensors() {
            let name = if name.starts_with(prefix) {
                name
            } else {
                format!("{prefix}{name}")
            };
            tensors.insert(name, t);
        }
        for (name, v) in self.vars().into_iter().skip(self.model.vars().len()) {
            tensors.insert(name, v.as_tensor().detach());
        }
        let weights = out.join("model.safetensors");
        let tmp = weights.with_extension("safetensors.tmp");
        candle_core::safetensors::save(&tensors, &tmp)
            .map_err(candle("writing model.safetensors"))?;
        std::fs::rename(&tmp, &weights).map_err(io(format!("writing {}", weights.display())))?;

        let read = |name: &str| -> Result<serde_json::Value> {
            crate::layout::read_json(&self.transformer_dir.join(name))
        };
        let mut config = read("config.json")?;
        config["architectures"] =
            serde_json::json!([self.model.config().classifier_architecture()]);
        config["id2label"] = serde_json::json!({"0": "LABEL_0"});
        config["label2id"] = serde_json::json!({"LABEL_0": 0});
        if let Some(o) = config.as_object_mut() {
            o.remove("num_labels");
        }
        let write = |name: &str, value: &serde_json::Value| -> Result<()> {
            let path = out.join(name);
            let text = serde_json::to_string_pretty(value)
                .map_err(|e| Error::backend("trainer", "serialising", e))?;
            std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))
        };
        write("config.json", &config)?;
        let max_len = max_tokens.min(self.model.config().max_tokens());
        let mut tok_config =
            read("tokenizer_config.json").unwrap_or_else(|_| serde_json::json!({}));
        tok_config["model_max_length"] = serde_json::json!(max_len);
        write("tokenizer_config.json", &tok_config)?;
        write(
            "config_sentence_transformers.json",
            &serde_json::json!({
                "model_type": "CrossEncoder",
                "activation_fn": ScoreActivation::Sigmoid.torch_name(),
                "__version__": {"ragloop": env!("CARGO_PKG_VERSION")},
            }),
        )?;
        for name in ["tokenizer.json", "vocab.txt", "special_tokens_map.json"] {
            let from = self.transformer_dir.join(name);
            if from.exists() {
                std::fs::copy(&from, out.join(name))
                    .map_err(io(format!("copying {}", from.display())))?;
            }
        }
        Ok(())
    }
}

/// The listwise loss: for each row of `logits` (column 0 the positive, masked members at
/// −10⁴), the negative log-softmax of column 0, averaged over rows.
fn listwise_loss(logits: &Tensor) -> candle_core::Result<Tensor> {
    let n = logits.dim(0)?;
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(1)?.log()?;
    let log_p = shifted.broadcast_sub(&log_z)?;
    log_p.narrow(1, 0, 1)?.sum_all()? * (-1.0 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listwise_loss_is_the_positives_cross_entropy() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2f32, 0.0, 1.0], [0.5, 0.5, -1e4]], &dev).unwrap();
        let got = listwise_loss(&logits).unwrap().to_scalar::<f32>().unwrap();
        let row0 = -(2f32.exp() / (2f32.exp() + 1.0 + 1f32.exp())).ln();
        let row1 = -(0.5f32).ln();
        assert!((got - (row0 + row1) / 2.0).abs() < 1e-5, "{got}");
    }
}
