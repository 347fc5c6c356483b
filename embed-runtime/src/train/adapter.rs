//! The cheap training mode for small data: the encoder stays frozen and a linear adapter
//! (a sentence-transformers `Dense` module, `W·x + b`) is fitted on its embeddings.
//!
//! Every query and passage is embedded once with the base model; training then only touches a
//! `d × d` matrix and a bias, so hundreds of epochs take seconds. The adapter starts as the
//! identity (the base model exactly) and is parametrised as `W = I + Δ`, so weight decay pulls
//! it back towards the base model rather than towards zero. The saved directory is the base
//! model plus a `Dense` module between pooling and normalisation, which embed-runtime and
//! sentence-transformers both load.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rag_core::{Error, Result};

use super::hard::HardPair;
use super::model::{candle, l2_normalize, masked_mnrl_loss, mnrl_loss};
use super::pairs::{Pair, PairOrigin};
use super::{StepLog, TrainConfig, TrainReport, copy_tree};
use crate::SentenceEmbedder;
use crate::layout::{Activation, ModelLayout};

/// Fits a linear adapter on a frozen sentence-transformers model (see the module docs).
pub struct AdapterTrainer {
    base_dir: std::path::PathBuf,
    layout: ModelLayout,
    base: SentenceEmbedder,
    delta: Var,
    bias: Var,
}

impl std::fmt::Debug for AdapterTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterTrainer")
            .field("base_dir", &self.base_dir)
            .field("dims", &self.layout.dims)
            .finish_non_exhaustive()
    }
}

impl AdapterTrainer {
    /// Loads the sentence-transformers model in `dir`; the adapter starts as the identity.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::from_embedder(dir, SentenceEmbedder::load(dir)?)
    }

    /// Uses an already loaded `base` (the model in `dir`).
    pub fn from_embedder(dir: &Path, base: SentenceEmbedder) -> Result<Self> {
        let layout = base.layout().clone();
        let d = layout.dims;
        let delta = Var::zeros((d, d), DType::F32, &Device::Cpu).map_err(candle("adapter"))?;
        let bias = Var::zeros(d, DType::F32, &Device::Cpu).map_err(candle("adapter"))?;
        Ok(Self {
            base_dir: dir.to_path_buf(),
            layout,
            base,
            delta,
            bias,
        })
    }

    /// The adapter's weight `I + Δ` (`d × d`, torch's `out × in` layout).
    pub fn weight(&self) -> Result<Tensor> {
        let d = self.layout.dims;
        let eye = Tensor::eye(d, DType::F32, &Device::Cpu).map_err(candle("adapter"))?;
        (eye + self.delta.as_tensor()).map_err(candle("adapter"))
    }

    /// Back to the identity map (no training), e.g. to fit another adapter on other pairs
    /// with the same frozen model.
    pub fn reset(&mut self) -> Result<()> {
        let d = self.layout.dims;
        let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu);
        self.delta
            .set(&zeros(&[d, d]).map_err(candle("adapter"))?)
            .map_err(candle("adapter"))?;
        self.bias
            .set(&zeros(&[d]).map_err(candle("adapter"))?)
            .map_err(candle("adapter"))
    }

    /// The trained model's vectors from the base model's un-normalised ones (`W·x + b`,
    /// normalised): what the saved directory would embed, without an encoder pass.
    pub fn apply(&self, vectors: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let d = self.layout.dims;
        if let Some(bad) = vectors.iter().find(|v| v.len() != d) {
            return Err(Error::DimensionMismatch {
                expected: d,
                actual: bad.len(),
            });
        }
        if vectors.is_empty() {
            return Ok(Vec::new());
        }
        let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
        let x =
            Tensor::from_vec(flat, (vectors.len(), d), &Device::Cpu).map_err(candle("vectors"))?;
        self.forward(&x)
            .and_then(|y| y.to_vec2::<f32>())
            .map_err(candle("adapter"))
    }

    /// `x·Wᵀ + b`, normalised.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = (x.matmul(&self.delta.as_tensor().t()?)? + x)?;
        l2_normalize(&y.broadcast_add(self.bias.as_tensor())?)
    }

    /// Embeds the pairs with the frozen base model, then fits the adapter. Uses `epochs`,
    /// `batch_size`, `learning_rate`, `warmup_ratio`, `weight_decay` (towards the identity),
    /// `max_grad_norm`, `scale`, `seed` and `max_steps` of `config`; token limits and dropout do
    /// not apply (the base model's own limit is used). `report.prepare_seconds` is the embedding
    /// time.
    pub fn train(
        &mut self,
        pairs: &[Pair],
        config: &TrainConfig,
        on_step: &mut dyn FnMut(&StepLog),
    ) -> Result<TrainReport> {
        super::check_inputs(pairs, config)?;
        let started = Instant::now();
        let queries = self.embed_unique(pairs.iter().map(|p| p.query.as_str()), true)?;
        let passages = self.embed_unique(pairs.iter().map(|p| p.passage.as_str()), false)?;
        let prepare_seconds = started.elapsed().as_secs_f64();

        let vars = [
            ("linear.delta".to_string(), self.delta.clone()),
            ("linear.bias".to_string(), self.bias.clone()),
        ];
        let steps = super::optimise(
            pairs,
            config,
            &vars,
            super::Ops::Fused,
            on_step,
            &mut |batch, _rng| {
                let ids = Tensor::new(
                    batch.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                    &Device::Cpu,
                )?;
                let q = self.forward(&queries.index_select(&ids, 0)?)?;
                let p = self.forward(&passages.index_select(&ids, 0)?)?;
                mnrl_loss(&q, &p, config.scale)
            },
        )?;
        let d = self.layout.dims;
        Ok(TrainReport {
            steps,
            pairs: pairs.len(),
            parameters: d * d + d,
            prepare_seconds,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Fits the adapter on vectors the caller has already computed (un-normalised, e.g. the
    /// pooled-vector cache of stage 5): `queries` and `chunks` are rows, `chunk_docs[c]` the
    /// document of chunk `c`, `pairs` from [`super::hard::mine`]. Each step scores a batch's
    /// queries against its positives and all its hard negatives (InfoNCE); a column from a
    /// document relevant to the row's query, other than its own positive, is masked out, so
    /// no relevant passage is ever pushed away. No encoder pass.
    pub fn train_hard(
        &mut self,
        queries: &[Vec<f32>],
        chunks: &[Vec<f32>],
        chunk_docs: &[u32],
        pairs: &[HardPair],
        config: &TrainConfig,
        on_step: &mut dyn FnMut(&StepLog),
    ) -> Result<TrainReport> {
        let d = self.layout.dims;
        if pairs.len() < 2 {
            return Err(Error::invalid(format!(
                "only {} training pairs: at least 2 are needed",
                pairs.len()
            )));
        }
        if queries.iter().chain(chunks).any(|v| v.len() != d) {
            let bad = queries.iter().chain(chunks).find(|v| v.len() != d);
            return Err(Error::DimensionMismatch {
                expected: d,
                actual: bad.map_or(0, Vec::len),
            });
        }
        let in_range = |p: &HardPair| {
            p.query < queries.len()
                && p.positive < chunks.len()
                && p.negatives.iter().all(|&n| n < chunks.len())
        };
        if chunk_docs.len() != chunks.len() || !pairs.iter().all(in_range) {
            return Err(Error::invalid(
                "hard pairs refer to queries or chunks that are not there",
            ));
        }
        let started = Instant::now();
        let table = |rows: &[Vec<f32>]| {
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            Tensor::from_vec(flat, (rows.len(), d), &Device::Cpu).map_err(candle("vectors"))
        };
        let q_table = table(queries)?;
        let c_table = table(chunks)?;
        // The batch sampler keeps two pairs of one positive document out of one batch.
        let keys: Vec<Pair> = pairs
            .iter()
            .map(|p| Pair {
                query: String::new(),
                passage: String::new(),
                doc_id: chunk_docs[p.positive].to_string(),
                origin: PairOrigin::Query,
            })
            .collect();
        let vars = [
            ("linear.delta".to_string(), self.delta.clone()),
            ("linear.bias".to_string(), self.bias.clone()),
        ];
        let steps = super::optimise(
            &keys,
            config,
            &vars,
            super::Ops::Fused,
            on_step,
            &mut |batch, _rng| {
                let mut columns: Vec<u32> =
                    batch.iter().map(|&i| pairs[i].positive as u32).collect();
                columns.extend(
                    batch
                        .iter()
                        .flat_map(|&i| pairs[i].negatives.iter().map(|&n| n as u32)),
                );
                let mut mask = vec![0f32; batch.len() * columns.len()];
                for (r, &i) in batch.iter().enumerate() {
                    for (c, &col) in columns.iter().enumerate() {
                        if c != r && pairs[i].relevant.contains(&chunk_docs[col as usize]) {
                            mask[r * columns.len() + c] = -1e4;
                        }
                    }
                }
                let mask = Tensor::from_vec(mask, (batch.len(), columns.len()), &Device::Cpu)?;
                let rows: Vec<u32> = batch.iter().map(|&i| pairs[i].query as u32).collect();
                let q =
                    self.forward(&q_table.index_select(&Tensor::new(rows, &Device::Cpu)?, 0)?)?;
                let p =
                    self.forward(&c_table.index_select(&Tensor::new(columns, &Device::Cpu)?, 0)?)?;
                masked_mnrl_loss(&q, &p, &mask, config.scale)
            },
        )?;
        Ok(TrainReport {
            steps,
            pairs: pairs.len(),
            parameters: d * d + d,
            prepare_seconds: 0.0,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Embeds each distinct text once (un-normalised: the adapter comes before `Normalize`);
    /// row `i` of the result belongs to the `i`-th input.
    fn embed_unique<'a>(
        &self,
        texts: impl Iterator<Item = &'a str>,
        query: bool,
    ) -> Result<Tensor> {
        let texts: Vec<&str> = texts.collect();
        let mut slot: HashMap<&str, usize> = HashMap::new();
        let mut unique = Vec::new();
        let rows: Vec<u32> = texts
            .iter()
            .map(|t| {
                *slot.entry(t).or_insert_with(|| {
                    unique.push(*t);
                    unique.len() - 1
                }) as u32
            })
            .collect();
        let vectors = self.base.embed_unnormalized(&unique, query)?;
        let d = self.layout.dims;
        let flat: Vec<f32> = vectors.into_iter().flatten().collect();
        let table = Tensor::from_vec(flat, (unique.len(), d), &Device::Cpu)
            .map_err(candle("embeddings"))?;
        let rows = Tensor::new(rows, &Device::Cpu).map_err(candle("embeddings"))?;
        table.index_select(&rows, 0).map_err(candle("embeddings"))
    }

    /// Writes the base model with the adapter as a `Dense` module (identity activation) after
    /// pooling and any Dense modules it has, before `Normalize`. The encoder files are copied
    /// unchanged.
    pub fn save(&self, out: &Path) -> Result<()> {
        let io = |what: String| move |e: std::io::Error| Error::backend("trainer", what, e);
        copy_tree(&self.base_dir, out, None).map_err(io(format!(
            "copying {} to {}",
            self.base_dir.display(),
            out.display()
        )))?;
        let modules_path = out.join("modules.json");
        let text = std::fs::read(&modules_path)
            .map_err(io(format!("reading {}", modules_path.display())))?;
        let mut modules: Vec<serde_json::Value> = serde_json::from_slice(&text)
            .map_err(|e| Error::invalid(format!("{}: {e}", modules_path.display())))?;
        let (modules, module_dir) = insert_dense(&mut modules, out);
        let dense_dir = out.join(&module_dir);
        std::fs::create_dir_all(&dense_dir)
            .map_err(io(format!("creating {}", dense_dir.display())))?;
        let d = self.layout.dims;
        let config = serde_json::json!({
            "in_features": d,
            "out_features": d,
            "bias": true,
            "activation_function": Activation::Identity.torch_name(),
        });
        std::fs::write(
            dense_dir.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )
        .map_err(io(format!("writing {}", dense_dir.display())))?;
        let tensors = HashMap::from([
            ("linear.weight".to_string(), self.weight()?),
            ("linear.bias".to_string(), self.bias.as_tensor().clone()),
        ]);
        let weights = dense_dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &weights)
            .map_err(candle("writing the adapter"))?;
        // modules.json last: until it names the module, the directory is the base model.
        let tmp = modules_path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&modules).unwrap_or_default(),
        )
        .map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &modules_path)
            .map_err(io(format!("writing {}", modules_path.display())))?;
        Ok(())
    }
}

/// Puts a Dense entry after the last Pooling/Dense module and renumbers `idx` (and numeric
/// names); returns the new list and the module's directory name (`<idx>_Dense`, or
/// `<idx>_Adapter` when that is taken).
fn insert_dense(modules: &mut [serde_json::Value], out: &Path) -> (Vec<serde_json::Value>, String) {
    let kind = |m: &serde_json::Value| m["type"].as_str().unwrap_or_default().to_string();
    let at = modules
        .iter()
        .rposition(|m| {
            let k = kind(m);
            k.ends_with("models.Pooling") || k.ends_with("models.Dense")
        })
        .map_or(modules.len(), |i| i + 1);
    let mut dir = format!("{at}_Dense");
    if out.join(&dir).exists() {
        dir = format!("{at}_Adapter");
    }
    let mut list: Vec<serde_json::Value> = modules.to_vec();
    list.insert(
        at,
        serde_json::json!({
            "idx": at,
            "name": at.to_string(),
            "path": dir,
            "type": "sentence_transformers.models.Dense",
        }),
    );
    for (i, m) in list.iter_mut().enumerate() {
        let numeric_name = m["name"]
            .as_str()
            .is_some_and(|n| n.parse::<usize>().is_ok());
        m["idx"] = serde_json::json!(i);
        if numeric_name {
            m["name"] = serde_json::json!(i.to_string());
        }
    }
    (list, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_goes_between_pooling_and_normalize() {
        let dir = tempfile::tempdir().unwrap();
        let mut modules: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        )
        .unwrap();
        let (list, name) = insert_dense(&mut modules, dir.path());
        assert_eq!(name, "2_Dense");
        let kinds: Vec<(u64, &str, &str)> = list
            .iter()
            .map(|m| {
                (
                    m["idx"].as_u64().unwrap(),
                    m["name"].as_str().unwrap(),
                    m["path"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0, "0", ""),
                (1, "1", "1_Pooling"),
                (2, "2", "2_Dense"),
                (3, "3", "2_Normalize")
            ]
        );
        std::fs::create_dir(dir.path().join("2_Dense")).unwrap();
        assert_eq!(insert_dense(&mut modules, dir.path()).1, "2_Adapter");
    }
}
