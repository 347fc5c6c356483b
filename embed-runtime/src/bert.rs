//! A BERT-family encoder for inference (BERT, and RoBERTa / XLM-RoBERTa, which differ only in
//! their position ids and names): weights loaded with candle from `model.safetensors`,
//! forward pass over *packed* sequences (no padding: every token row belongs to a real
//! sequence, attention runs per sequence), with the bias, residual, GELU and layer norm fused
//! around the matrix multiplies and every buffer reused across batches ([`Workspace`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rag_core::{Error, Result};
use rayon::prelude::*;
use serde::Deserialize;

use crate::int8::{Epilogue, Int8Dense, Int8Workspace, Kernel, Quantization};
use crate::kernels::{self, MatMut, MatRef, Par};

/// The transformer's `config.json` (the fields a BERT encoder needs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// `bert`, or `roberta` / `xlm-roberta` / `camembert` ([`Family::Roberta`]); other model
    /// types are refused with a clear error.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// The padding token; RoBERTa models count positions from it (default 0, RoBERTa's 1).
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of every token state.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`hidden_size` must be a multiple).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest sequence the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Activation of the feed-forward layer; `gelu` (erf form).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Dropout probability used in training (inference ignores it).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// GTE: the rotary base of the hub's configs (`NewConfig`).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// GTE: transformers' form, `{"rope_type": "default", "rope_theta": …}`.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// GTE: `{"type": "ntk", "factor": f}` (fixed NTK scaling) or none.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// GTE's `position_embedding_type` (`rope`; `absolute` is not supported).
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// GTE's `layer_norm_type` (`layer_norm`; `rms_norm` is not supported).
    #[serde(default)]
    pub layer_norm_type: Option<String>,
    /// GTE's `logn_attention_scale` (only `false` is supported).
    #[serde(default)]
    pub logn_attention_scale: Option<bool>,
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}
fn default_act() -> String {
    "gelu".into()
}

/// The two layouts of a BERT-shaped encoder this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT: positions count from 0; token types (segments) are used.
    Bert,
    /// RoBERTa and XLM-RoBERTa (multilingual-e5, bge-m3's encoder, bge-reranker): positions
    /// count from `pad_token_id + 1`, as Hugging Face's `create_position_ids_from_input_ids`
    /// does, so `max_position_embeddings − pad − 1` tokens fit; one token type only (the
    /// tokenizers give a pair no segment ids).
    Roberta,
    /// Alibaba's GTE (`model_type` `new` on the hub, `gte` in transformers;
    /// gte-multilingual-base, gte-*-en-v1.5): no position embeddings but rotary ones on the
    /// queries and keys, a gated MLP (`down(gelu(gate·x) ⊙ up·x)`, no bias on `up_gate_proj`),
    /// post-norm layers as BERT's; tensors named as the hub's `NewModel` (`attention.qkv_proj`,
    /// `attention.o_proj`, `attn_ln`, `mlp.up_gate_proj`, `mlp.down_proj`, `mlp_ln`).
    Gte,
}

impl Family {
    /// A sequence classifier's head under the encoder prefix `prefix`: the dense layer (then
    /// tanh) on the first token's state and the output layer (names without `.weight` /
    /// `.bias`). BERT and GTE: the encoder's pooler, then `classifier`; RoBERTa: its
    /// classification head, the same two steps.
    pub(crate) fn classifier_head(self, prefix: &str) -> [String; 2] {
        match self {
            Self::Bert | Self::Gte => [format!("{prefix}pooler.dense"), "classifier".into()],
            Self::Roberta => ["classifier.dense".into(), "classifier.out_proj".into()],
        }
    }
}

impl BertConfig {
    /// The prefix of the encoder's tensors in a sequence classifier of this model type, as
    /// transformers saves one.
    pub(crate) fn classifier_prefix(&self) -> &'static str {
        match self.model_type.as_str() {
            "roberta" | "xlm-roberta" | "camembert" => "roberta.",
            "new" => "new.",
            "gte" => "gte.",
            _ => "bert.",
        }
    }

    /// transformers' sequence-classification class for this model type.
    pub(crate) fn classifier_architecture(&self) -> &'static str {
        match self.model_type.as_str() {
            "xlm-roberta" => "XLMRobertaForSequenceClassification",
            "roberta" => "RobertaForSequenceClassification",
            "camembert" => "CamembertForSequenceClassification",
            "new" => "NewForSequenceClassification",
            "gte" => "GteForSequenceClassification",
            _ => "BertForSequenceClassification",
        }
    }

    /// The layout `model_type` names.
    pub fn family(&self) -> Result<Family> {
        match self.model_type.as_str() {
            "bert" => Ok(Family::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Ok(Family::Roberta),
            "new" | "gte" => Ok(Family::Gte),
            other => Err(Error::invalid(format!(
                "model_type {other:?} is not supported (BERT, RoBERTa, XLM-RoBERTa and GTE \
                 encoders)"
            ))),
        }
    }

    /// The padding token id (`pad_token_id`, else 0 for BERT and 1 for RoBERTa).
    pub fn pad_id(&self) -> u32 {
        match (self.pad_token_id, self.family()) {
            (Some(id), _) => id,
            (None, Ok(Family::Roberta)) => 1,
            (None, _) => 0,
        }
    }

    /// The longest sequence, in tokens, the position embeddings cover.
    pub fn max_tokens(&self) -> usize {
        match self.family() {
            Ok(Family::Roberta) => self
                .max_position_embeddings
                .saturating_sub(self.pad_id() as usize + 1),
            _ => self.max_position_embeddings,
        }
    }

    /// The position id of every token of `seq` into `out` (cleared first): BERT's `0..len`;
    /// RoBERTa's `pad + 1 + (real tokens before it)` for a real token and `pad` for a
    /// padding token.
    pub fn position_ids(&self, seq: &[u32], out: &mut Vec<u32>) {
        out.clear();
        match self.family() {
            Ok(Family::Roberta) => {
                let pad = self.pad_id();
                let mut seen = 0;
                out.extend(seq.iter().map(|&id| {
                    if id == pad {
                        pad
                    } else {
                        seen += 1;
                        pad + seen
                    }
                }));
            }
            _ => out.extend(0..seq.len() as u32),
        }
    }

    /// The rotary frequencies of a GTE model (`head_dim / 2` of them), computed in f32 as
    /// torch computes them: `1 / θ^(2i/d)`; with fixed NTK scaling (the hub's
    /// `NTKScalingRotaryEmbedding` without `mixed_b`) `θ` is multiplied by the factor and
    /// every frequency divided by `factor^(2/d)`. `None` for other families.
    pub fn rope_inv_freq(&self) -> Result<Option<Vec<f32>>> {
        if self.family()? != Family::Gte {
            return Ok(None);
        }
        let bad = |what: String| Error::invalid(format!("GTE config: {what}"));
        let mut theta = self.rope_theta;
        if let Some(p) = &self.rope_parameters {
            match p["rope_type"].as_str() {
                None | Some("default") => {}
                Some(other) => return Err(bad(format!("rope_type {other:?} is not supported"))),
            }
            theta = theta.or(p["rope_theta"].as_f64());
        }
        // GteConfig's default_theta.
        let mut theta = theta.unwrap_or(160_000.0) as f32;
        let d = self.hidden_size / self.num_attention_heads;
        let mut divide = 1.0f32;
        if let Some(scaling) = self.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            let kind = scaling["type"].as_str().or(scaling["rope_type"].as_str());
            let factor = scaling["factor"].as_f64();
            match (kind, factor) {
                (Some("ntk"), Some(f)) if scaling["mixed_b"].is_null() && f > 0.0 => {
                    theta *= f as f32;
                    divide = (f as f32).powf(2.0 / d as f32);
                }
                _ => {
                    return Err(bad(format!(
                        "rope_scaling {scaling} is not supported (fixed ntk)"
                    )));
                }
            }
        }
        Ok(Some(
            (0..d / 2)
                .map(|i| 1.0 / theta.powf((2 * i) as f32 / d as f32) / divide)
                .collect(),
        ))
    }

    /// The prefix of the encoder's tensor names in `names` (`bert.`, `roberta.`, `new.` or none).
    pub(crate) fn weight_prefix(&self, mut has: impl FnMut(&str) -> bool) -> &'static str {
        ["bert.", "roberta.", "xlm_roberta.", "new.", "gte."]
            .into_iter()
            .find(|p| has(&format!("{p}embeddings.word_embeddings.weight")))
            .unwrap_or("")
    }

    /// Reads and validates `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let config: Self = crate::layout::read_json(&dir.join("config.json"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let family = self.family()?;
        if family == Family::Roberta && self.max_tokens() < 2 {
            return Err(Error::invalid(format!(
                "max_position_embeddings {} leaves no room after padding id {}",
                self.max_position_embeddings,
                self.pad_id()
            )));
        }
        if self.hidden_act != "gelu" {
            return Err(Error::invalid(format!(
                "hidden_act {:?} is not supported (gelu only)",
                self.hidden_act
            )));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if family == Family::Gte {
            let unsupported = |what: &str, value: &str| {
                Err(Error::invalid(format!(
                    "GTE config: {what} {value:?} is not supported"
                )))
            };
            match self.position_embedding_type.as_deref() {
                None | Some("rope") => {}
                Some(other) => return unsupported("position_embedding_type", other),
            }
            match self.layer_norm_type.as_deref() {
                None | Some("layer_norm") => {}
                Some(other) => return unsupported("layer_norm_type", other),
            }
            if self.logn_attention_scale == Some(true) {
                return unsupported("logn_attention_scale", "true");
            }
            let head = self.hidden_size / self.num_attention_heads;
            if !head.is_multiple_of(2) {
                return unsupported("odd head size", &head.to_string());
            }
            self.rope_inv_freq()?;
        }
        Ok(())
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// A linear layer stored as `Wᵀ` (`in × out`, row-major) so `x · Wᵀ` reads both operands
/// row-wise, or, once quantised, as int8 (`w_t` is then emptied).
struct Dense {
    w_t: Vec<f32>,
    int8: Option<Int8Dense>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Dense {
    fn quantize(&mut self, kernel: Kernel) -> Result<()> {
        if self.int8.is_none() {
            self.int8 = Some(Int8Dense::new(
                &self.w_t,
                &self.bias,
                self.inputs,
                self.outputs,
                kernel,
            )?);
            self.w_t = Vec::new();
        }
        Ok(())
    }
}

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    ffn_in: Dense,
    ffn_out: Dense,
    ffn_norm: Norm,
}

/// A loaded BERT encoder (see the module docs).
pub struct BertEncoder {
    config: BertConfig,
    word: Vec<f32>,
    /// Absolute position embeddings (empty for GTE).
    position: Vec<f32>,
    /// Token type embeddings (empty when the model has none).
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    /// GTE's rotary embedding.
    rope: Option<Rope>,
    /// GTE's gated MLP: `ffn_in` gives `[up | gate]`, `2 × intermediate_size` wide.
    gated: bool,
    quantization: Quantization,
}

/// `cos` and `sin` of `p · inv_freq[i]` for each position `p` (rows of `inv_freq.len()`), in
/// f32 as transformers computes them: the inference tables and the trainer's per-batch ones.
pub(crate) fn rotary_angles(
    inv_freq: &[f32],
    positions: impl Iterator<Item = u32>,
) -> (Vec<f32>, Vec<f32>) {
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in positions {
        for &f in inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Rotary position embedding tables: `cos`/`sin` of `position × frequency`, `max_tokens ×
/// head_dim/2`, computed in f32 as transformers computes them.
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rope {
    fn new(inv_freq: &[f32], positions: usize) -> Self {
        let (cos, sin) = rotary_angles(inv_freq, 0..positions as u32);
        Self {
            cos,
            sin,
            half: inv_freq.len(),
        }
    }

    /// Rotates one head's vector `x` (`2 × half` wide) to position `p`: pairs `(i, i + half)`
    /// turn by `p · inv_freq[i]` (transformers' `rotate_half` layout).
    fn rotate(&self, x: &mut [f32], p: usize) {
        let (cos, sin) = (
            &self.cos[p * self.half..][..self.half],
            &self.sin[p * self.half..][..self.half],
        );
        let (a, b) = x.split_at_mut(self.half);
        for i in 0..self.half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x2 * cos[i] + x1 * sin[i];
        }
    }
}

impl std::fmt::Debug for BertEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEncoder")
            .field("config", &self.config)
            .field("quantization", &self.quantization)
            .finish_non_exhaustive()
    }
}

/// Buffers of one forward pass, reused by the next (they only grow).
#[derive(Default)]
pub struct Workspace {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    ffn: Vec<f32>,
    /// A gated MLP's `[up | gate]` rows (GTE).
    up_gate: Vec<f32>,
    /// Each token's position in its sequence (GTE's rotary embedding).
    positions: Vec<u32>,
    int8: Int8Workspace,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Workspace({} floats, {} int8 bytes)",
            self.x.capacity()
                + self.qkv.capacity()
                + self.ctx.capacity()
                + self.ffn.capacity()
                + self.up_gate.capacity(),
            self.int8.capacity_bytes()
        )
    }
}

fn resize(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Token rows per parallel task of the row-wise kernels.
const ROWS_PER_TASK: usize = 32;

struct Tensors {
    map: HashMap<String, Tensor>,
    prefix: &'static str,
}

impl Tensors {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        tensor_f32(&self.map, &format!("{}{name}", self.prefix), shape)
    }

    /// A linear layer without bias (a zero bias, so every kernel path stays the same).
    fn dense_without_bias(&self, name: &str, inputs: usize, outputs: usize) -> Result<Dense> {
        let w = self.get(&format!("{name}.weight"), &[outputs, inputs])?;
        let mut w_t = vec![0.0; inputs * outputs];
        for o in 0..outputs {
            for i in 0..inputs {
                w_t[i * outputs + o] = w[o * inputs + i];
            }
        }
        Ok(Dense {
            w_t,
            int8: None,
            bias: vec![0.0; outputs],
            inputs,
            outputs,
        })
    }

    fn norm(&self, name: &str, h: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: self.get(&format!("{name}.weight"), &[h])?,
            beta: self.get(&format!("{name}.bias"), &[h])?,
        })
    }

    /// Loads one or more `out × in` linear layers and stacks them into one `in × Σout` dense.
    fn dense(&self, names: &[&str], inputs: usize, outputs: usize) -> Result<Dense> {
        let total = outputs * names.len();
        let mut w_t = vec![0.0; inputs * total];
        let mut bias = Vec::with_capacity(total);
        for (n, name) in names.iter().enumerate() {
            let w = self.get(&format!("{name}.weight"), &[outputs, inputs])?;
            for o in 0..outputs {
                for i in 0..inputs {
                    w_t[i * total + n * outputs + o] = w[o * inputs + i];
                }
            }
            bias.extend(self.get(&format!("{name}.bias"), &[outputs])?);
        }
        Ok(Dense {
            w_t,
            int8: None,
            bias,
            inputs,
            outputs: total,
        })
    }
}

/// The tensor `key` of `map` as f32 values (row-major), checked to have `shape`.
pub(crate) fn tensor_f32(
    map: &HashMap<String, Tensor>,
    key: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let t = map
        .get(key)
        .ok_or_else(|| Error::invalid(format!("model.safetensors has no tensor {key}")))?;
    if t.dims() != shape {
        return Err(Error::invalid(format!(
            "tensor {key} has shape {:?}, config says {shape:?}",
            t.dims()
        )));
    }
    let t = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .map_err(candle_err)?;
    t.to_vec1::<f32>().map_err(candle_err)
}

fn candle_err(e: candle_core::Error) -> Error {
    Error::backend("candle", "tensor conversion", e)
}

/// Reads `dir/config.json` (validated) and every tensor of `dir/model.safetensors`.
pub(crate) fn load_weights(dir: &Path) -> Result<(BertConfig, HashMap<String, Tensor>)> {
    let config = BertConfig::read(dir)?;
    let path = dir.join("model.safetensors");
    if !path.exists() {
        return Err(Error::not_found(format!("{}", path.display())));
    }
    let map = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    Ok((config, map))
}

impl BertEncoder {
    /// Loads `dir/config.json` and `dir/model.safetensors` (any float dtype; converted to f32).
    pub fn load(dir: &Path) -> Result<Self> {
        let (config, map) = load_weights(dir)?;
        Self::from_tensors(config, map)
    }

    /// Builds the encoder from named tensors (Hugging Face BERT / RoBERTa names, with or
    /// without a `bert.` / `roberta.` prefix), e.g. the weights a trainer holds in memory.
    pub fn from_tensors(config: BertConfig, map: HashMap<String, Tensor>) -> Result<Self> {
        config.validate()?;
        let family = config.family()?;
        let prefix = config.weight_prefix(|k| map.contains_key(k));
        let t = Tensors { map, prefix };
        let h = config.hidden_size;
        let ff = config.intermediate_size;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(match family {
                Family::Gte => Layer {
                    qkv: t.dense(&[&format!("{p}.attention.qkv_proj")], h, 3 * h)?,
                    attn_out: t.dense(&[&format!("{p}.attention.o_proj")], h, h)?,
                    attn_norm: t.norm(&format!("{p}.attn_ln"), h)?,
                    ffn_in: t.dense_without_bias(&format!("{p}.mlp.up_gate_proj"), h, 2 * ff)?,
                    ffn_out: t.dense(&[&format!("{p}.mlp.down_proj")], ff, h)?,
                    ffn_norm: t.norm(&format!("{p}.mlp_ln"), h)?,
                },
                Family::Bert | Family::Roberta => Layer {
                    qkv: t.dense(
                        &[
                            &format!("{p}.attention.self.query"),
                            &format!("{p}.attention.self.key"),
                            &format!("{p}.attention.self.value"),
                        ],
                        h,
                        h,
                    )?,
                    attn_out: t.dense(&[&format!("{p}.attention.output.dense")], h, h)?,
                    attn_norm: t.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                    ffn_in: t.dense(&[&format!("{p}.intermediate.dense")], h, ff)?,
                    ffn_out: t.dense(&[&format!("{p}.output.dense")], ff, h)?,
                    ffn_norm: t.norm(&format!("{p}.output.LayerNorm"), h)?,
                },
            });
        }
        let position = match family {
            Family::Gte => Vec::new(),
            Family::Bert | Family::Roberta => t.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
        };
        let token_type = if config.type_vocab_size == 0 {
            Vec::new()
        } else {
            t.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?
        };
        let rope = config
            .rope_inv_freq()?
            .map(|f| Rope::new(&f, config.max_tokens()));
        Ok(Self {
            word: t.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position,
            token_type,
            embed_norm: t.norm("embeddings.LayerNorm", h)?,
            layers,
            rope,
            gated: family == Family::Gte,
            config,
            quantization: Quantization::None,
        })
    }

    /// Quantises every encoder layer's linear layers to int8 with `kernel` (see
    /// [`crate::int8`]); embeddings, attention scores and layer norms stay f32. Quantising
    /// twice changes nothing; there is no way back (the f32 weights are dropped).
    pub fn quantize_int8(&mut self, kernel: Kernel) -> Result<()> {
        for layer in &mut self.layers {
            for dense in [
                &mut layer.qkv,
                &mut layer.attn_out,
                &mut layer.ffn_in,
                &mut layer.ffn_out,
            ] {
                dense.quantize(kernel)?;
            }
        }
        self.quantization = Quantization::Int8;
        Ok(())
    }

    /// How the linear layers compute.
    pub fn quantization(&self) -> Quantization {
        self.quantization
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Runs the encoder over `seqs` (token ids, each at most [`BertConfig::max_tokens`] long)
    /// and returns the last hidden states, the rows of all sequences one after another
    /// (`Σ len × hidden_size`). Uses up to `threads` threads of the current rayon pool.
    pub fn forward<'w>(
        &self,
        seqs: &[&[u32]],
        ws: &'w mut Workspace,
        threads: usize,
    ) -> Result<&'w [f32]> {
        self.forward_typed(seqs, None, ws, threads)
    }

    /// [`forward`](Self::forward) with token type (segment) ids, one per token of each
    /// sequence: a cross-encoder's pair is `[CLS] query [SEP]` of type 0 and `passage [SEP]`
    /// of type 1. `None` is type 0 everywhere; a model with one token type (RoBERTa) reads
    /// every token as type 0, as its tokenizer gives a pair no segments.
    pub fn forward_typed<'w>(
        &self,
        seqs: &[&[u32]],
        types: Option<&[&[u32]]>,
        ws: &'w mut Workspace,
        threads: usize,
    ) -> Result<&'w [f32]> {
        let h = self.config.hidden_size;
        let tokens: usize = seqs.iter().map(|s| s.len()).sum();
        let types = types.filter(|_| self.config.type_vocab_size > 1);
        if let Some(types) = types {
            let fits = types.len() == seqs.len()
                && types.iter().zip(seqs).all(|(t, s)| t.len() == s.len());
            if !fits {
                return Err(Error::invalid("token type ids do not match the sequences"));
            }
            if let Some(bad) = types
                .iter()
                .flat_map(|t| t.iter())
                .find(|&&t| t as usize >= self.config.type_vocab_size)
            {
                return Err(Error::invalid(format!(
                    "token type {bad} outside the model's {} types",
                    self.config.type_vocab_size
                )));
            }
        }
        for s in seqs {
            if s.len() > self.config.max_tokens() {
                return Err(Error::invalid(format!(
                    "sequence of {} tokens exceeds the model's {} positions",
                    s.len(),
                    self.config.max_tokens()
                )));
            }
            if let Some(bad) = s.iter().find(|&&id| id as usize >= self.config.vocab_size) {
                return Err(Error::invalid(format!(
                    "token id {bad} outside the vocabulary of {}",
                    self.config.vocab_size
                )));
            }
        }
        resize(&mut ws.x, tokens * h);
        resize(&mut ws.qkv, tokens * 3 * h);
        resize(&mut ws.ctx, tokens * h);
        let ff = self.config.intermediate_size;
        resize(&mut ws.ffn, tokens * ff);
        if self.gated {
            resize(&mut ws.up_gate, tokens * 2 * ff);
        }
        let Workspace {
            x,
            qkv,
            ctx,
            ffn,
            up_gate,
            positions,
            int8,
        } = ws;
        let x = &mut x[..tokens * h];
        let qkv = &mut qkv[..tokens * 3 * h];
        let ctx = &mut ctx[..tokens * h];
        let ffn = &mut ffn[..tokens * ff];
        let simd = pulp::Arch::new();
        positions.clear();
        for s in seqs {
            positions.extend(0..s.len() as u32);
        }

        self.embed(seqs, types, x);
        for layer in &self.layers {
            // qkv = x·Wqkvᵀ + b
            self.dense(&layer.qkv, x, qkv, Epilogue::PLAIN, tokens, threads, int8);
            if let Some(rope) = &self.rope {
                self.rotate(rope, qkv, positions);
            }
            self.attention(seqs, qkv, ctx, threads, simd);
            // x = LN(x + ctx·Woᵀ + b)
            self.dense(
                &layer.attn_out,
                ctx,
                x,
                Epilogue::RESIDUAL,
                tokens,
                threads,
                int8,
            );
            self.norm_rows(x, &layer.attn_norm, simd);
            if self.gated {
                // [up | gate] = x·W1ᵀ; ffn = GELU(gate) ⊙ up
                let up_gate = &mut up_gate[..tokens * 2 * ff];
                self.dense(
                    &layer.ffn_in,
                    x,
                    up_gate,
                    Epilogue::PLAIN,
                    tokens,
                    threads,
                    int8,
                );
                ffn.par_chunks_mut(ROWS_PER_TASK * ff)
                    .zip(up_gate.par_chunks(ROWS_PER_TASK * 2 * ff))
                    .for_each(|(out, rows)| {
                        for (o, r) in out.chunks_exact_mut(ff).zip(rows.chunks_exact(2 * ff)) {
                            let (up, gate) = r.split_at(ff);
                            o.copy_from_slice(gate);
                            kernels::gelu_simd(simd, o);
                            for (o, u) in o.iter_mut().zip(up) {
                                *o *= u;
                            }
                        }
                    });
            } else {
                // ffn = GELU(x·W1ᵀ + b1)
                self.dense(&layer.ffn_in, x, ffn, Epilogue::GELU, tokens, threads, int8);
            }
            // x = LN(x + ffn·W2ᵀ + b2)
            self.dense(
                &layer.ffn_out,
                ffn,
                x,
                Epilogue::RESIDUAL,
                tokens,
                threads,
                int8,
            );
            self.norm_rows(x, &layer.ffn_norm, simd);
        }
        Ok(&ws.x[..tokens * h])
    }

    /// Turns every head's query and key of each token to the token's position (GTE).
    fn rotate(&self, rope: &Rope, qkv: &mut [f32], positions: &[u32]) {
        let h = self.config.hidden_size;
        let d = h / self.config.num_attention_heads;
        qkv.par_chunks_mut(3 * h)
            .zip(positions.par_iter())
            .for_each(|(row, &p)| {
                // Queries then keys: the first 2h values, one head of d after another.
                for head in row[..2 * h].chunks_exact_mut(d) {
                    rope.rotate(head, p as usize);
                }
            });
    }

    fn embed(&self, seqs: &[&[u32]], types: Option<&[&[u32]]>, x: &mut [f32]) {
        let h = self.config.hidden_size;
        let mut positions = Vec::new();
        let mut rows: Vec<(u32, usize, u32)> = Vec::with_capacity(x.len() / h);
        for (i, s) in seqs.iter().enumerate() {
            self.config.position_ids(s, &mut positions);
            rows.extend(
                s.iter()
                    .zip(&positions)
                    .enumerate()
                    .map(|(j, (&id, &pos))| (id, pos as usize, types.map_or(0, |t| t[i][j]))),
            );
        }
        x.par_chunks_mut(h)
            .zip(rows.par_iter())
            .for_each(|(row, &(id, pos, kind))| {
                row.copy_from_slice(&self.word[id as usize * h..][..h]);
                // GTE has no absolute positions; a model may have no token types.
                for (table, i) in [(&self.position, pos), (&self.token_type, kind as usize)] {
                    if !table.is_empty() {
                        for (o, v) in row.iter_mut().zip(&table[i * h..][..h]) {
                            *o += v;
                        }
                    }
                }
                kernels::layer_norm(
                    row,
                    &self.embed_norm.gamma,
                    &self.embed_norm.beta,
                    self.config.layer_norm_eps as f32,
                );
            });
    }

    /// `out = input·Wᵀ + b`, or `out += input·Wᵀ + b` for a residual, then GELU if asked.
    #[allow(clippy::too_many_arguments)]
    fn dense(
        &self,
        d: &Dense,
        input: &[f32],
        out: &mut [f32],
        epilogue: Epilogue,
        tokens: usize,
        threads: usize,
        int8: &mut Int8Workspace,
    ) {
        if let Some(q) = &d.int8 {
            // Bias, residual and GELU happen inside the int8 multiply's epilogue.
            q.matmul_add(input, out, tokens, threads, int8, epilogue);
            return;
        }
        let chunk = ROWS_PER_TASK * d.outputs;
        if epilogue.residual {
            out.par_chunks_mut(chunk)
                .for_each(|rows| kernels::add_rows(rows, &d.bias));
        } else {
            out.par_chunks_mut(chunk)
                .for_each(|rows| kernels::fill_rows(rows, &d.bias));
        }
        kernels::matmul(
            MatMut::rows(out, tokens, d.outputs),
            MatRef::rows(input, tokens, d.inputs),
            MatRef::rows(&d.w_t, d.inputs, d.outputs),
            true,
            Par::Threads(threads),
        );
        if epilogue.gelu {
            let simd = pulp::Arch::new();
            out[..tokens * d.outputs]
                .par_chunks_mut(chunk)
                .for_each(|rows| kernels::gelu_simd(simd, rows));
        }
    }

    fn norm_rows(&self, x: &mut [f32], norm: &Norm, simd: pulp::Arch) {
        let h = self.config.hidden_size;
        let eps = self.config.layer_norm_eps as f32;
        x.par_chunks_mut(ROWS_PER_TASK * h)
            .for_each(|rows| kernels::layer_norm_rows(simd, rows, &norm.gamma, &norm.beta, eps));
    }

    /// Scaled dot-product attention of every head of every sequence; `ctx` gets the heads'
    /// outputs side by side (`tokens × hidden`).
    fn attention(
        &self,
        seqs: &[&[u32]],
        qkv: &[f32],
        ctx: &mut [f32],
        threads: usize,
        simd: pulp::Arch,
    ) {
        let h = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        // One task per sequence; a lone sequence lets each multiply use every thread.
        let inner = if seqs.len() >= threads {
            Par::Single
        } else {
            Par::Threads(threads)
        };
        let mut parts = Vec::with_capacity(seqs.len());
        let mut rest = ctx;
        let mut offset = 0;
        for s in seqs {
            let (part, tail) = rest.split_at_mut(s.len() * h);
            parts.push((part, offset, s.len()));
            offset += s.len();
            rest = tail;
        }
        parts.into_par_iter().for_each(|(out, start, len)| {
            SCORES.with_borrow_mut(|scores| {
                resize(scores, len * len);
                let scores = &mut scores[..len * len];
                for head in 0..heads {
                    let base = start * 3 * h + head * d;
                    let q = MatRef {
                        data: qkv,
                        offset: base,
                        rows: len,
                        cols: d,
                        rs: 3 * h,
                        cs: 1,
                    };
                    let k_t = MatRef {
                        data: qkv,
                        offset: base + h,
                        rows: d,
                        cols: len,
                        rs: 1,
                        cs: 3 * h,
                    };
                    let v = MatRef {
                        data: qkv,
                        offset: base + 2 * h,
                        rows: len,
                        cols: d,
                        rs: 3 * h,
                        cs: 1,
                    };
                    kernels::matmul(MatMut::rows(scores, len, len), q, k_t, false, inner);
                    kernels::softmax_rows(simd, scores, len, scale);
                    let o = MatMut {
                        data: &mut *out,
                        offset: head * d,
                        rows: len,
                        cols: d,
                        rs: h,
                        cs: 1,
                    };
                    kernels::matmul(o, MatRef::rows(scores, len, len), v, false, inner);
                }
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(model_type: &str, pad: Option<u32>) -> BertConfig {
        let mut v = serde_json::json!({
            "model_type": model_type, "vocab_size": 10, "hidden_size": 4,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
            "max_position_embeddings": 8
        });
        if let Some(pad) = pad {
            v["pad_token_id"] = pad.into();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn positions_follow_the_family() {
        let mut out = Vec::new();
        let bert = config("bert", None);
        bert.position_ids(&[2, 5, 0, 3], &mut out);
        assert_eq!(out, [0, 1, 2, 3]);
        assert_eq!(bert.max_tokens(), 8);
        // transformers' create_position_ids_from_input_ids: real tokens count from pad + 1,
        // a padding token sits at pad.
        let xlmr = config("xlm-roberta", None);
        assert_eq!((xlmr.pad_id(), xlmr.max_tokens()), (1, 6));
        xlmr.position_ids(&[0, 5, 1, 7, 2], &mut out);
        assert_eq!(out, [2, 3, 1, 4, 5]);
        let other_pad = config("roberta", Some(3));
        other_pad.position_ids(&[0, 3, 5], &mut out);
        assert_eq!(out, [4, 3, 5]);
        assert_eq!(other_pad.max_tokens(), 4);
    }

    #[test]
    fn unknown_families_and_too_few_positions_are_refused() {
        let err = config("gpt2", None).validate().unwrap_err();
        assert!(err.to_string().contains("gpt2"), "{err}");
        assert!(config("xlm-roberta", Some(7)).validate().is_err());
        assert!(config("xlm-roberta", None).validate().is_ok());
    }
}
