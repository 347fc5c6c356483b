//! A trainable BERT-family encoder (BERT, RoBERTa, XLM-RoBERTa) on candle's autograd.
//!
//! candle-transformers' BERT is built for inference (its fused layer norm has no backward and
//! dropout is a no-op), so the modules here are our own: linear layers, layer norm,
//! self-attention (from one fused QKV projection) and GELU are single candle ops with
//! hand-written backward passes (`fused.rs`, `gelu.rs`), the rest plain candle ops, and dropout
//! masks come from the trainer's seeded RNG (candle's own random tensors cannot be seeded on the
//! CPU), so a run is reproducible.
//!
//! Sequences are padded to the longest in the batch; padded keys are masked out of attention
//! with a large negative bias and out of the mean pooling.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor, Var};
use rag_core::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::fused::{Attention, Ops};
use crate::bert::BertConfig;
use crate::layout::Pooling;

pub(crate) fn candle(context: &'static str) -> impl Fn(candle_core::Error) -> Error {
    move |e| Error::backend("candle", context, e)
}

/// A linear layer with the Hugging Face layout (`weight` is `out × in`); without a bias
/// (GTE's `up_gate_proj`) it adds zeros.
struct Linear {
    weight: Var,
    bias: Option<Var>,
}

impl Linear {
    fn forward(&self, ops: Ops, x: &Tensor) -> candle_core::Result<Tensor> {
        ops.linear(x, self.weight.as_tensor(), &self.bias()?)
    }

    fn bias(&self) -> candle_core::Result<Tensor> {
        match &self.bias {
            Some(b) => Ok(b.as_tensor().clone()),
            None => Tensor::zeros(self.weight.dim(0)?, DType::F32, self.weight.device()),
        }
    }
}

struct LayerNorm {
    gamma: Var,
    beta: Var,
    eps: f64,
}

impl LayerNorm {
    /// Normalises the rows of a 2-D tensor.
    fn forward(&self, ops: Ops, x: &Tensor) -> candle_core::Result<Tensor> {
        ops.layer_norm(x, self.gamma.as_tensor(), self.beta.as_tensor(), self.eps)
    }
}

/// The attention's input projection: BERT's three, or GTE's one fused `qkv_proj`.
enum Qkv {
    Separate {
        query: Linear,
        key: Linear,
        value: Linear,
    },
    Fused(Linear),
}

impl Qkv {
    /// Queries, keys and values side by side: `rows × 3h`.
    fn forward(&self, ops: Ops, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Fused(l) => l.forward(ops, x),
            Self::Separate { query, key, value } => {
                // One projection for queries, keys and values.
                let w = Tensor::cat(
                    &[
                        query.weight.as_tensor(),
                        key.weight.as_tensor(),
                        value.weight.as_tensor(),
                    ],
                    0,
                )?;
                let bias = Tensor::cat(&[query.bias()?, key.bias()?, value.bias()?], 0)?;
                ops.linear(x, &w, &bias)
            }
        }
    }
}

struct Layer {
    qkv: Qkv,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
}

/// Token ids of a padded batch and its mask.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    /// `rows × width` token ids, padded with 0.
    pub ids: Vec<u32>,
    /// 1 for a real token, 0 for padding (same shape).
    pub mask: Vec<f32>,
    /// Token types (segments), 0 everywhere for single texts (same shape).
    pub types: Vec<u32>,
    pub rows: usize,
    pub width: usize,
}

impl Batch {
    /// Pads `seqs` (non-empty, each non-empty) to the longest.
    pub fn pad(seqs: &[&[u32]]) -> Self {
        Self::pad_typed(seqs, None)
    }

    /// Pads `seqs` and their token types (`types[i]` as long as `seqs[i]`; `None`: type 0).
    pub fn pad_typed(seqs: &[&[u32]], types: Option<&[&[u32]]>) -> Self {
        let width = seqs.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![0u32; seqs.len() * width];
        let mut mask = vec![0f32; seqs.len() * width];
        let mut kinds = vec![0u32; seqs.len() * width];
        for (r, s) in seqs.iter().enumerate() {
            ids[r * width..r * width + s.len()].copy_from_slice(s);
            mask[r * width..r * width + s.len()].fill(1.0);
            if let Some(t) = types {
                kinds[r * width..r * width + s.len()].copy_from_slice(t[r]);
            }
        }
        Self {
            ids,
            mask,
            types: kinds,
            rows: seqs.len(),
            width,
        }
    }
}

/// Dropout masks drawn from a seeded generator; `p == 0` disables it.
pub(crate) struct Dropout<'r> {
    pub p: f32,
    pub rng: &'r mut ChaCha8Rng,
}

impl Dropout<'_> {
    /// `n` multipliers: 0 with probability `p`, else `1 / (1 − p)`; `None` when `p == 0`.
    /// Drawn in parallel blocks, each from its own position of the generator's stream (one
    /// 32-bit word per draw), so the mask is the one a sequential loop would draw.
    fn mask(&mut self, n: usize) -> Option<Vec<f32>> {
        if self.p <= 0.0 {
            return None;
        }
        const BLOCK: usize = 1 << 16;
        let keep = 1.0 - self.p;
        let scale = 1.0 / keep;
        let start = self.rng.get_word_pos();
        let base = self.rng.clone();
        let mut out = vec![0f32; n];
        out.par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(k, block)| {
                let mut rng = base.clone();
                rng.set_word_pos(start + (k * BLOCK) as u128);
                for x in block {
                    *x = if rng.random::<f32>() < keep {
                        scale
                    } else {
                        0.0
                    };
                }
            });
        self.rng.set_word_pos(start + n as u128);
        Some(out)
    }

    pub(crate) fn apply(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.mask(x.elem_count()) {
            None => Ok(x.clone()),
            Some(mask) => x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?),
        }
    }
}

/// The trainable encoder: every weight is a candle [`Var`].
pub struct TrainableBert {
    config: BertConfig,
    /// Name in the weights file → variable (only the trained tensors).
    vars: Vec<(String, Var)>,
    /// Tensors of the weights file that are not trained (e.g. the pooler); saved unchanged.
    frozen: HashMap<String, Tensor>,
    word: Var,
    /// Absolute position embeddings (none for GTE, which rotates queries and keys).
    position: Option<Var>,
    /// GTE's rotary frequencies.
    rope: Option<Vec<f32>>,
    /// Token type embeddings (none when the model has no types).
    token_type: Option<Var>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    /// GTE's gated MLP (`ffn_in` gives `[up | gate]`).
    gated: bool,
    pooling: Pooling,
    /// The prefix of the encoder's names in the weights file (`bert.`, `gte.`, … or none).
    prefix: &'static str,
    /// Where the variables live.
    device: Device,
    /// The fused CPU ops, or candle's composed ones (any other device).
    ops: Ops,
}

impl std::fmt::Debug for TrainableBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainableBert")
            .field("config", &self.config)
            .field("parameters", &self.parameter_count())
            .finish_non_exhaustive()
    }
}

impl TrainableBert {
    /// Loads `dir/config.json` and `dir/model.safetensors` as trainable f32 variables.
    pub fn load(dir: &Path, pooling: Pooling) -> Result<Self> {
        Self::load_on(dir, pooling, &Device::Cpu)
    }

    /// [`load`](Self::load) with the variables on `device`.
    pub fn load_on(dir: &Path, pooling: Pooling, device: &Device) -> Result<Self> {
        let (config, map) = crate::bert::load_weights(dir)?;
        Self::from_tensors_on(config, map, pooling, device)
    }

    /// Builds the encoder from named tensors (Hugging Face BERT / RoBERTa names, with or
    /// without a `bert.` / `roberta.` prefix, which is kept when saving).
    pub fn from_tensors(
        config: BertConfig,
        map: HashMap<String, Tensor>,
        pooling: Pooling,
    ) -> Result<Self> {
        Self::from_tensors_on(config, map, pooling, &Device::Cpu)
    }

    /// [`from_tensors`](Self::from_tensors) with the variables on `device` (a CUDA GPU with
    /// the `cuda` feature): there the modules run as candle's composed ops.
    pub fn from_tensors_on(
        config: BertConfig,
        mut map: HashMap<String, Tensor>,
        pooling: Pooling,
        device: &Device,
    ) -> Result<Self> {
        if matches!(pooling, Pooling::Max) {
            return Err(Error::invalid(
                "max pooling is not supported for training (mean or CLS)",
            ));
        }
        let prefix = config.weight_prefix(|k| map.contains_key(k));
        let h = config.hidden_size;
        let ff = config.intermediate_size;
        let mut vars = Vec::new();
        let mut take = |name: &str, shape: &[usize]| -> Result<Var> {
            let full = format!("{prefix}{name}");
            let t = map
                .remove(&full)
                .ok_or_else(|| Error::invalid(format!("weights have no tensor {full}")))?;
            if t.dims() != shape {
                return Err(Error::invalid(format!(
                    "{full} has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            let t = t
                .to_dtype(DType::F32)
                .and_then(|t| t.to_device(device))
                .map_err(candle("to f32 on the device"))?;
            let var = Var::from_tensor(&t).map_err(candle("variable"))?;
            vars.push((full, var.clone()));
            Ok(var)
        };
        let eps = config.layer_norm_eps;
        let family = config.family()?;
        let gte = family == crate::bert::Family::Gte;
        let word = take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = if gte {
            None
        } else {
            Some(take(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?)
        };
        let token_type = if config.type_vocab_size == 0 {
            None
        } else {
            Some(take(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?)
        };
        let embed_norm = LayerNorm {
            gamma: take("embeddings.LayerNorm.weight", &[h])?,
            beta: take("embeddings.LayerNorm.bias", &[h])?,
            eps,
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let mut lin =
                |name: &str, inputs: usize, outputs: usize, bias: bool| -> Result<Linear> {
                    Ok(Linear {
                        weight: take(&format!("{p}.{name}.weight"), &[outputs, inputs])?,
                        bias: if bias {
                            Some(take(&format!("{p}.{name}.bias"), &[outputs])?)
                        } else {
                            None
                        },
                    })
                };
            // Names: BERT's, or the hub's GTE (`NewModel`) ones.
            let (qkv, attn_out, ffn_in, ffn_out) = if gte {
                (
                    Qkv::Fused(lin("attention.qkv_proj", h, 3 * h, true)?),
                    lin("attention.o_proj", h, h, true)?,
                    lin("mlp.up_gate_proj", h, 2 * ff, false)?,
                    lin("mlp.down_proj", ff, h, true)?,
                )
            } else {
                (
                    Qkv::Separate {
                        query: lin("attention.self.query", h, h, true)?,
                        key: lin("attention.self.key", h, h, true)?,
                        value: lin("attention.self.value", h, h, true)?,
                    },
                    lin("attention.output.dense", h, h, true)?,
                    lin("intermediate.dense", h, ff, true)?,
                    lin("output.dense", ff, h, true)?,
                )
            };
            let mut norm = |name: &str| -> Result<LayerNorm> {
                Ok(LayerNorm {
                    gamma: take(&format!("{p}.{name}.weight"), &[h])?,
                    beta: take(&format!("{p}.{name}.bias"), &[h])?,
                    eps,
                })
            };
            let (attn_norm, ffn_norm) = if gte {
                (norm("attn_ln")?, norm("mlp_ln")?)
            } else {
                (
                    norm("attention.output.LayerNorm")?,
                    norm("output.LayerNorm")?,
                )
            };
            layers.push(Layer {
                qkv,
                attn_out,
                attn_norm,
                ffn_in,
                ffn_out,
                ffn_norm,
            });
        }
        let rope = config.rope_inv_freq()?;
        Ok(Self {
            config,
            vars,
            frozen: map,
            word,
            position,
            rope,
            token_type,
            embed_norm,
            layers,
            gated: gte,
            pooling,
            prefix,
            device: device.clone(),
            ops: Ops::for_device(device),
        })
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the modules as candle's composed ops (what a GPU runs) even on the CPU: how the
    /// GPU's path is tested on machines without one.
    #[cfg(test)]
    pub(crate) fn use_portable_ops(&mut self) {
        self.ops = Ops::Portable;
    }

    /// Which implementation of the modules runs.
    pub(crate) fn ops(&self) -> Ops {
        self.ops
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The prefix of the encoder's tensor names in the weights file (none for a bare
    /// encoder, `bert.` / `roberta.` / `gte.` … inside a task model).
    pub(crate) fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// The trained variables with their names in the weights file.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Number of trained parameters.
    pub fn parameter_count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Every tensor of the weights file, trained ones with their current values.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let mut out = self.frozen.clone();
        for (name, var) in &self.vars {
            out.insert(name.clone(), var.as_tensor().detach());
        }
        out
    }

    /// [`tensors`](Self::tensors) copied to the CPU (what is saved; the variables may live on
    /// a GPU).
    pub fn host_tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.tensors()
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_device(&Device::Cpu)?)))
            .collect::<candle_core::Result<_>>()
            .map_err(candle("copying the weights to the CPU"))
    }

    /// Takes the untrained tensor `name` (e.g. the pooler) out of the frozen set, to be
    /// trained by the caller; it is no longer saved by [`tensors`](Self::tensors).
    pub(crate) fn take_frozen(&mut self, name: &str) -> Option<Tensor> {
        self.frozen.remove(name)
    }

    /// Sentence embeddings (pooled, L2-normalised) of a padded batch: `rows × hidden`.
    pub(crate) fn embed(
        &self,
        batch: &Batch,
        dropout: &mut Dropout<'_>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, h) = (batch.rows, batch.width, self.config.hidden_size);
        let states = self.hidden(batch, dropout)?.reshape((b, t, h))?;
        let pooled = match self.pooling {
            Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1)?,
            _ => {
                let mask = Tensor::from_slice(&batch.mask, (b, t), &self.device)?;
                let m = mask.reshape((b, t, 1))?;
                let summed = states.broadcast_mul(&m)?.sum(1)?;
                let counts = mask.sum_keepdim(1)?.clamp(1.0, f64::MAX)?;
                summed.broadcast_div(&counts)?
            }
        };
        l2_normalize(&pooled)
    }

    /// The last hidden states of `seqs` without dropout, copied to the CPU: a padded
    /// `seqs.len() × width × hidden` block (`width` the longest sequence), each sequence's
    /// real tokens first in its row. What the embedder runs on a device other than the CPU.
    pub(crate) fn infer(&self, seqs: &[&[u32]]) -> candle_core::Result<(Vec<f32>, usize)> {
        let batch = Batch::pad(seqs);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut off = Dropout {
            p: 0.0,
            rng: &mut rng,
        };
        let states = self.hidden(&batch, &mut off)?.detach();
        let host = states
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok((host, batch.width))
    }

    /// The `[CLS]` state of each row of a padded batch (token types applied): `rows × hidden`.
    pub(crate) fn cls(
        &self,
        batch: &Batch,
        dropout: &mut Dropout<'_>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, h) = (batch.rows, batch.width, self.config.hidden_size);
        self.hidden(batch, dropout)?
            .reshape((b, t, h))?
            .narrow(1, 0, 1)?
            .squeeze(1)
    }

    /// The last hidden states of a padded batch, `(rows · width) × hidden`.
    fn hidden(&self, batch: &Batch, dropout: &mut Dropout<'_>) -> candle_core::Result<Tensor> {
        let (dev, ops) = (&self.device, self.ops);
        let (b, t, h) = (batch.rows, batch.width, self.config.hidden_size);
        let heads = self.config.num_attention_heads;
        let hd = h / heads;
        let ids = Tensor::from_slice(&batch.ids, b * t, dev)?;
        // Each row's real tokens at the family's positions; padding slots (masked out of
        // attention and pooling) read the first position.
        let mut positions = Vec::with_capacity(b * t);
        let mut row = Vec::with_capacity(t);
        for (ids, mask) in batch.ids.chunks_exact(t).zip(batch.mask.chunks_exact(t)) {
            let len = mask.iter().take_while(|&&m| m > 0.0).count();
            self.config.position_ids(&ids[..len], &mut row);
            let first = row.first().copied().unwrap_or(0);
            positions.extend_from_slice(&row);
            positions.extend(std::iter::repeat_n(first, t - len));
        }
        // A model with one token type (RoBERTa) reads every token as type 0.
        let types = if self.config.type_vocab_size == 1 || batch.types.iter().all(|&k| k == 0) {
            // One row broadcast (the bi-encoder's case; no gradient rows for type 1).
            None
        } else {
            Some(Tensor::from_slice(&batch.types, b * t, dev)?)
        };
        let mut x = self.word.as_tensor().index_select(&ids, 0)?;
        // GTE has no absolute positions: its rotary ones turn queries and keys below.
        let rope = match (&self.position, &self.rope) {
            (Some(table), _) => {
                let at = Tensor::from_vec(positions, b * t, dev)?;
                x = x.add(&table.as_tensor().index_select(&at, 0)?)?;
                None
            }
            (None, Some(inv_freq)) => Some(rotary_tables(inv_freq, &positions, dev)?),
            (None, None) => None,
        };
        if let Some(table) = &self.token_type {
            x = match types {
                None => x.broadcast_add(&table.as_tensor().narrow(0, 0, 1)?)?,
                Some(types) => x.add(&table.as_tensor().index_select(&types, 0)?)?,
            };
        }
        x = dropout.apply(&self.embed_norm.forward(ops, &x)?)?;
        // 0 for real keys, -10⁴ for padding (what BERT uses; exp underflows to 0).
        let key_bias: Arc<Vec<f32>> =
            Arc::new(batch.mask.iter().map(|m| (m - 1.0) * 10_000.0).collect());
        for layer in &self.layers {
            let mut qkv = layer.qkv.forward(ops, &x)?;
            if let Some((cos, sin)) = &rope {
                qkv = rotate_qk(&qkv, cos, sin, h, heads)?;
            }
            let op = Attention {
                b,
                t,
                heads,
                hd,
                key_bias: key_bias.clone(),
                dropout: dropout.mask(b * heads * t * t).map(Arc::new),
            };
            let ctx = ops.attention(&qkv, op)?;
            let attn = dropout.apply(&layer.attn_out.forward(ops, &ctx)?)?;
            x = layer.attn_norm.forward(ops, &(attn + &x)?)?;
            let inner = if self.gated {
                // [up | gate] = x·W1ᵀ; GELU(gate) ⊙ up, dropped out as GTE's MLP does.
                let ff = self.config.intermediate_size;
                let up_gate = layer.ffn_in.forward(ops, &x)?;
                let gate = ops.gelu(&up_gate.narrow(1, ff, ff)?)?;
                dropout.apply(&gate.mul(&up_gate.narrow(1, 0, ff)?)?)?
            } else {
                ops.gelu(&layer.ffn_in.forward(ops, &x)?)?
            };
            let out = dropout.apply(&layer.ffn_out.forward(ops, &inner)?)?;
            x = layer.ffn_norm.forward(ops, &(out + &x)?)?;
        }
        Ok(x)
    }
}

/// `cos` and `sin` of each token's angles, `rows × 1 × half` (broadcast over the heads).
fn rotary_tables(
    inv_freq: &[f32],
    positions: &[u32],
    dev: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (cos, sin) = crate::bert::rotary_angles(inv_freq, positions.iter().copied());
    let shape = (positions.len(), 1, inv_freq.len());
    Ok((
        Tensor::from_vec(cos, shape, dev)?,
        Tensor::from_vec(sin, shape, dev)?,
    ))
}

/// Rotates the queries and keys of `qkv` (`rows × 3h`, heads of `d` side by side) to their
/// tokens' positions: pairs `(i, i + d/2)` of each head turn by the token's angle `i`
/// (transformers' `rotate_half` layout); the values pass unchanged.
fn rotate_qk(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    h: usize,
    heads: usize,
) -> candle_core::Result<Tensor> {
    let rows = qkv.dim(0)?;
    let d = h / heads;
    let half = d / 2;
    // Queries and keys as 2·heads vectors of d per row.
    let qk = qkv.narrow(1, 0, 2 * h)?.reshape((rows, 2 * heads, d))?;
    let (x1, x2) = (qk.narrow(2, 0, half)?, qk.narrow(2, half, half)?);
    let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let b = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    let qk = Tensor::cat(&[a, b], 2)?.reshape((rows, 2 * h))?;
    Tensor::cat(&[qk, qkv.narrow(1, 2 * h, h)?], 1)
}

/// Divides each row by its L2 norm.
pub(crate) fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// Multiple-negatives ranking loss (InfoNCE with in-batch negatives): row `i` of `queries`
/// must score passage `i` above every other passage of the batch; `scale` is 1/temperature
/// on cosine similarities.
pub(crate) fn mnrl_loss(
    queries: &Tensor,
    passages: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let n = queries.dim(0)?;
    let logits = (queries.matmul(&passages.t()?)? * scale)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_p = shifted.broadcast_sub(&log_z)?;
    let eye = Tensor::eye(n, DType::F32, queries.device())?;
    log_p.mul(&eye)?.sum_all()? * (-1.0 / n as f64)
}

/// [`mnrl_loss`] over `n` queries and `m ≥ n` passages (passage `i` is query `i`'s positive,
/// the rest negatives) with an additive `mask` (`n × m`, −10⁴ where a column must not count
/// as a negative of the row).
pub(crate) fn masked_mnrl_loss(
    queries: &Tensor,
    passages: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let (n, m) = mask.dims2()?;
    let logits = ((queries.matmul(&passages.t()?)? * scale)? + mask)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_p = shifted.broadcast_sub(&log_z)?;
    let mut target = vec![0f32; n * m];
    for i in 0..n {
        target[i * m + i] = 1.0;
    }
    let target = Tensor::from_vec(target, (n, m), queries.device())?;
    log_p.mul(&target)?.sum_all()? * (-1.0 / n as f64)
}

/// GPL's margin-MSE loss: for each `(row, column, margin)`, the student's margin
/// `scale · (q_row·p_row − q_row·p_column)` (passage `row` is the row's positive) against the
/// teacher's `scale · margin`, squared and averaged. The scale puts it in the units of the
/// contrastive loss's logits, so the two terms can be summed. A batch without triples gives 0
/// (still attached to the graph, so the step runs).
pub(crate) fn margin_mse_loss(
    queries: &Tensor,
    passages: &Tensor,
    triples: &[(usize, usize, f32)],
    scale: f64,
) -> candle_core::Result<Tensor> {
    let scores = queries.matmul(&passages.t()?)?;
    if triples.is_empty() {
        return scores.sum_all()? * 0.0;
    }
    let m = passages.dim(0)?;
    let dev = queries.device();
    let flat = scores.flatten_all()?;
    let at = |cells: Vec<u32>| -> candle_core::Result<Tensor> {
        let n = cells.len();
        flat.index_select(&Tensor::from_vec(cells, n, dev)?, 0)
    };
    let pos = at(triples
        .iter()
        .map(|&(r, _, _)| (r * m + r) as u32)
        .collect())?;
    let neg = at(triples
        .iter()
        .map(|&(r, c, _)| (r * m + c) as u32)
        .collect())?;
    let target: Vec<f32> = triples.iter().map(|&(_, _, t)| t).collect();
    let target = Tensor::from_vec(target, triples.len(), dev)?;
    let diff = ((pos - neg)? - target)?;
    diff.sqr()?.mean_all()? * (scale * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_masked_column_counts_as_if_it_were_not_there() {
        let dev = Device::Cpu;
        let q = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &dev).unwrap();
        let p3 = Tensor::new(&[[0.9f32, 0.1], [0.2, 0.8], [0.7, 0.7]], &dev).unwrap();
        // Column 2 masked for row 0 only, against the same loss with row 0 seeing two columns.
        let mask = Tensor::new(&[[0f32, 0.0, -1e4], [0.0, 0.0, 0.0]], &dev).unwrap();
        let masked = masked_mnrl_loss(&q, &p3, &mask, 20.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let logits = |row: [f32; 3], cols: usize| {
            let s: Vec<f32> = row[..cols].iter().map(|x| x * 20.0).collect();
            let z: f32 = s.iter().map(|x| x.exp()).sum();
            z.ln()
        };
        let row0 = logits([0.9, 0.2, 0.7], 2) - 0.9 * 20.0;
        let row1 = logits([0.1, 0.8, 0.7], 3) - 0.8 * 20.0;
        assert!((masked - (row0 + row1) / 2.0).abs() < 1e-4, "{masked}");
        // Without a mask and with m = n it is the plain loss.
        let p2 = p3.narrow(0, 0, 2).unwrap();
        let zero = Tensor::zeros((2, 2), DType::F32, &dev).unwrap();
        let a = masked_mnrl_loss(&q, &p2, &zero, 20.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let b = mnrl_loss(&q, &p2, 20.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((a - b).abs() < 1e-6);
    }

    #[test]
    fn parallel_dropout_masks_equal_a_sequential_draw() {
        let n = (1 << 16) * 3 + 123;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut d = Dropout {
            p: 0.25,
            rng: &mut rng,
        };
        let a = d.mask(n).unwrap();
        let after: u32 = d.rng.random();
        let mut seq = ChaCha8Rng::seed_from_u64(5);
        let b: Vec<f32> = (0..n)
            .map(|_| {
                if seq.random::<f32>() < 0.75 {
                    1.0 / 0.75
                } else {
                    0.0
                }
            })
            .collect();
        assert!(a == b, "the parallel mask differs from the sequential one");
        assert_eq!(
            after,
            seq.random::<u32>(),
            "the generator continues where a loop would"
        );
        let kept = a.iter().filter(|&&x| x > 0.0).count() as f64 / n as f64;
        assert!((kept - 0.75).abs() < 0.01, "{kept}");
    }

    /// The trainer's forward pass over a padded batch (rows of different lengths, so
    /// padding and its positions are in play) gives the reference library's vectors for the
    /// fixture `name` (`tests/fixtures/<name>/expected.json`).
    fn check_padded_forward(name: &str, pooling: Pooling, max_tokens: usize, portable: bool) {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let mut model = TrainableBert::load(&dir, pooling).unwrap();
        if portable {
            model.use_portable_ops();
        }
        assert_eq!(model.config().max_tokens(), max_tokens);
        let cases = expected["cases"].as_array().unwrap();
        let ids: Vec<Vec<u32>> = cases
            .iter()
            .map(|c| {
                c["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect();
        let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut off = Dropout {
            p: 0.0,
            rng: &mut rng,
        };
        let got = model.embed(&Batch::pad(&seqs), &mut off).unwrap();
        let got: Vec<Vec<f32>> = got.to_vec2().unwrap();
        for (i, c) in cases.iter().enumerate() {
            let want: Vec<f32> = c["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let d = got[i]
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d <= 1e-4, "{name} case {i}: max |Δ| {d}");
        }
    }

    #[test]
    fn the_padded_xlmr_forward_matches_sentence_transformers() {
        for portable in [false, true] {
            check_padded_forward("tiny-xlmr", Pooling::Mean, 64, portable);
        }
    }

    #[test]
    fn the_padded_gte_forward_matches_transformers() {
        // Both paths: the fused CPU ops and candle's composed ones (a GPU's).
        for portable in [false, true] {
            check_padded_forward("tiny-gte", Pooling::Cls, 64, portable);
            check_padded_forward("tiny-gte-new", Pooling::Cls, 64, portable);
        }
    }

    fn tiny_config() -> BertConfig {
        serde_json::from_value(serde_json::json!({
            "model_type": "bert", "vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 12, "max_position_embeddings": 16,
            "layer_norm_eps": 1e-12
        }))
        .unwrap()
    }

    fn tiny_weights(config: &BertConfig, seed: u64) -> HashMap<String, Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut map = HashMap::new();
        let mut put = |name: String, shape: Vec<usize>, base: f32, spread: f32| {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| base + spread * (rng.random::<f32>() * 2.0 - 1.0))
                .collect();
            map.insert(name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap());
        };
        let (h, ff) = (config.hidden_size, config.intermediate_size);
        put(
            "embeddings.word_embeddings.weight".into(),
            vec![config.vocab_size, h],
            0.0,
            1.0,
        );
        put(
            "embeddings.position_embeddings.weight".into(),
            vec![16, h],
            0.0,
            0.3,
        );
        put(
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, h],
            0.0,
            0.3,
        );
        put("embeddings.LayerNorm.weight".into(), vec![h], 1.0, 0.2);
        put("embeddings.LayerNorm.bias".into(), vec![h], 0.0, 0.2);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            for (name, o, inp) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", ff, h),
                ("output.dense", h, ff),
            ] {
                put(format!("{p}.{name}.weight"), vec![o, inp], 0.0, 0.5);
                put(format!("{p}.{name}.bias"), vec![o], 0.0, 0.1);
            }
            for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
                put(format!("{p}.{name}.weight"), vec![h], 1.0, 0.2);
                put(format!("{p}.{name}.bias"), vec![h], 0.0, 0.2);
            }
        }
        map
    }

    fn loss_of(model: &TrainableBert) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut off = Dropout {
            p: 0.0,
            rng: &mut rng,
        };
        let q = Batch::pad(&[&[1, 2, 3], &[4, 5], &[6, 7, 8, 9]]);
        let p = Batch::pad(&[&[1, 10, 11, 12, 2], &[13, 4], &[14, 15, 16]]);
        let qe = model.embed(&q, &mut off).unwrap();
        let pe = model.embed(&p, &mut off).unwrap();
        mnrl_loss(&qe, &pe, 5.0).unwrap()
    }

    /// What a GPU runs (candle's composed ops, moments as tensors) computes what the CPU's
    /// fused ops do: the same loss, gradients and, after training steps with dropout, weights.
    #[test]
    fn the_portable_ops_train_like_the_fused_ones() {
        let config = tiny_config();
        let fused =
            TrainableBert::from_tensors(config.clone(), tiny_weights(&config, 3), Pooling::Mean)
                .unwrap();
        let mut portable =
            TrainableBert::from_tensors(config.clone(), tiny_weights(&config, 3), Pooling::Mean)
                .unwrap();
        portable.use_portable_ops();
        let loss = |model: &TrainableBert, seed: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut dropout = Dropout {
                p: 0.1,
                rng: &mut rng,
            };
            let q = Batch::pad(&[&[1, 2, 3], &[4, 5], &[6, 7, 8, 9]]);
            let p = Batch::pad(&[&[1, 10, 11, 12, 2], &[13, 4], &[14, 15, 16]]);
            let qe = model.embed(&q, &mut dropout).unwrap();
            let pe = model.embed(&p, &mut dropout).unwrap();
            mnrl_loss(&qe, &pe, 5.0).unwrap()
        };
        let close = |a: &Tensor, b: &Tensor| {
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap();
            d.to_scalar::<f32>().unwrap()
        };
        let (a, b) = (loss(&fused, 1), loss(&portable, 1));
        assert!(close(&a, &b) < 1e-5, "loss {a} vs {b}");
        let (ga, gb) = (a.backward().unwrap(), b.backward().unwrap());
        for ((name, va), (_, vb)) in fused.vars().iter().zip(portable.vars()) {
            let d = close(
                ga.get(va.as_tensor()).unwrap(),
                gb.get(vb.as_tensor()).unwrap(),
            );
            assert!(d < 1e-4, "gradient of {name} differs by {d}");
        }
        let mut opt_a = super::super::optim::AdamW::new(fused.vars(), 0.01, false).unwrap();
        let mut opt_b = super::super::optim::AdamW::new(portable.vars(), 0.01, true).unwrap();
        for step in 0..3 {
            let (a, b) = (loss(&fused, 10 + step), loss(&portable, 10 + step));
            opt_a.step(&a.backward().unwrap(), 1e-3, 1.0).unwrap();
            opt_b.step(&b.backward().unwrap(), 1e-3, 1.0).unwrap();
        }
        for ((name, va), (_, vb)) in fused.vars().iter().zip(portable.vars()) {
            let d = close(va.as_tensor(), vb.as_tensor());
            assert!(d < 1e-4, "{name} differs by {d} after three steps");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let config = tiny_config();
        let model =
            TrainableBert::from_tensors(config, tiny_weights(&tiny_config(), 3), Pooling::Mean)
                .unwrap();
        let grads = loss_of(&model).backward().unwrap();
        let eps = 1e-2f32;
        let mut checked = 0;
        for (name, var) in model.vars() {
            let Some(g) = grads.get(var.as_tensor()) else {
                // Only unused rows (e.g. token type 1) may lack a gradient entry.
                assert!(name.contains("token_type"), "{name} has no gradient");
                continue;
            };
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            // The element with the largest gradient, where f32 differences are meaningful.
            let (i, &gi) = g
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap();
            if gi.abs() < 1e-3 {
                continue;
            }
            let at = |delta: f32| {
                let mut w = base.clone();
                w[i] += delta;
                var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let l = loss_of(&model).to_scalar::<f32>().unwrap();
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                l
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (numeric - gi).abs() <= 0.05 * gi.abs() + 2e-3,
                "{name}[{i}]: autograd {gi} vs finite difference {numeric}"
            );
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} tensors checked");
    }

    #[test]
    fn padding_changes_nothing() {
        let model = TrainableBert::from_tensors(
            tiny_config(),
            tiny_weights(&tiny_config(), 5),
            Pooling::Mean,
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut off = Dropout {
            p: 0.0,
            rng: &mut rng,
        };
        let alone = model.embed(&Batch::pad(&[&[3, 4, 5]]), &mut off).unwrap();
        let padded = model
            .embed(&Batch::pad(&[&[3, 4, 5], &[1, 2, 3, 4, 5, 6, 7]]), &mut off)
            .unwrap();
        let a = alone.to_vec2::<f32>().unwrap();
        let b = padded.to_vec2::<f32>().unwrap();
        for (x, y) in a[0].iter().zip(&b[0]) {
            assert!((x - y).abs() < 1e-5, "{:?} vs {:?}", a[0], b[0]);
        }
    }

    #[test]
    fn dropout_is_seeded_and_scales_what_it_keeps() {
        let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu).unwrap();
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut d = Dropout {
                p: 0.25,
                rng: &mut rng,
            };
            d.apply(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let a = draw(1);
        assert_eq!(a, draw(1));
        assert_ne!(a, draw(2));
        let zeros = a.iter().filter(|v| **v == 0.0).count();
        assert!((2_000..3_000).contains(&zeros), "{zeros}");
        assert!(
            a.iter()
                .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6)
        );
    }

    #[test]
    fn the_trainable_forward_matches_the_inference_encoder() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2");
        if !dir.join("model.safetensors").exists() {
            panic!("{} has no model: run scripts/fetch-model.sh", dir.display());
        }
        let embedder = crate::SentenceEmbedder::load(&dir).unwrap();
        let model = TrainableBert::load(&dir, Pooling::Mean).unwrap();
        let texts = [
            "duplicate a file descriptor",
            "",
            "mount a filesystem at a directory",
        ];
        let want = embedder.embed_raw(&texts).unwrap();
        let mut tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        tok.with_padding(None);
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| tok.encode(*t, true).unwrap().get_ids().to_vec())
            .collect();
        let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut off = Dropout {
            p: 0.0,
            rng: &mut rng,
        };
        let got = model
            .embed(&Batch::pad(&seqs), &mut off)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (g, w) in got.iter().zip(&want) {
            let cos = rag_core::embedding::cosine(g, w);
            assert!(cos > 0.9999, "cosine {cos}");
        }
    }
}
