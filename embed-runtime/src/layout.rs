//! The files of a sentence-transformers model directory:
//! `modules.json` (the module pipeline), `1_Pooling/config.json` (pooling mode),
//! `sentence_bert_config.json` (`max_seq_length`), optional `Dense` modules (a linear map and
//! activation on the pooled embedding, e.g. a trained adapter), an optional `Normalize` module,
//! and the transformer's `config.json`, `tokenizer.json` and `model.safetensors`.
//!
//! Both layouts sentence-transformers has written are read: up to v5 (module types
//! `sentence_transformers.models.Pooling`, pooling flags `pooling_mode_mean_tokens`…,
//! `max_seq_length` in `sentence_bert_config.json`) and v6 (types such as
//! `sentence_transformers.sentence_transformer.modules.pooling.Pooling`, `pooling_mode:
//! "mean"` and `embedding_dimension`, the length in the tokenizer's `model_max_length`).

use std::path::{Path, PathBuf};

use rag_core::{Error, Result};
use serde::Deserialize;

/// How token embeddings become one sentence embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over non-padding tokens.
    Mean,
    /// The `[CLS]` token.
    Cls,
    /// Element-wise maximum over non-padding tokens.
    Max,
}

/// The activation of a [`DenseLayout`] (sentence-transformers' `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `torch.nn.modules.linear.Identity`.
    Identity,
    /// `torch.nn.modules.activation.Tanh` (sentence-transformers' default).
    Tanh,
}

impl Activation {
    /// The name sentence-transformers writes into `config.json`.
    pub fn torch_name(self) -> &'static str {
        match self {
            Activation::Identity => "torch.nn.modules.linear.Identity",
            Activation::Tanh => "torch.nn.modules.activation.Tanh",
        }
    }

    fn from_torch_name(name: &str) -> Option<Self> {
        match name.rsplit('.').next()? {
            "Identity" => Some(Activation::Identity),
            "Tanh" => Some(Activation::Tanh),
            _ => None,
        }
    }
}

/// A `sentence_transformers.models.Dense` module: `activation(W·x + b)` on the pooled
/// embedding, weights in `<dir>/model.safetensors` as `linear.weight` (`out × in`) and
/// `linear.bias`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenseLayout {
    /// The module's directory.
    pub dir: PathBuf,
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
    /// Whether the module has a bias.
    pub bias: bool,
    /// Applied after the linear map.
    pub activation: Activation,
}

/// What a model directory says about how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLayout {
    /// The directory.
    pub dir: PathBuf,
    /// Pooling mode.
    pub pooling: Pooling,
    /// Whether a `Normalize` module follows pooling.
    pub normalize: bool,
    /// Longest input in tokens (longer inputs are truncated).
    pub max_seq_length: usize,
    /// Output dimension: the last Dense module's `out_features`, else `pooling_dims`.
    pub dims: usize,
    /// The pooling's `word_embedding_dimension` (the encoder's hidden size).
    pub pooling_dims: usize,
    /// Dense modules after pooling, in pipeline order.
    pub dense: Vec<DenseLayout>,
    /// Directory of the transformer module (`config.json`, `tokenizer.json`,
    /// `model.safetensors`): the model directory itself unless `modules.json` says otherwise.
    pub transformer_dir: PathBuf,
    /// The `query` prompt of `config_sentence_transformers.json` (e5/bge-style prefix), if any.
    pub query_prefix: Option<String>,
    /// The `document` (or `passage`) prompt, if any.
    pub document_prefix: Option<String>,
}

#[derive(Deserialize, Default)]
struct StConfig {
    #[serde(default)]
    prompts: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Module {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

impl Module {
    /// Whether the module's class is `class` (`…models.Pooling` or `…modules.pooling.Pooling`).
    fn is(&self, class: &str) -> bool {
        self.kind.rsplit('.').next() == Some(class)
    }
}

#[derive(Deserialize)]
struct PoolingConfig {
    /// Up to sentence-transformers 5.
    #[serde(default)]
    word_embedding_dimension: Option<usize>,
    /// From sentence-transformers 6.
    #[serde(default)]
    embedding_dimension: Option<usize>,
    /// From sentence-transformers 6: `mean`, `cls`, `max`, … (older versions set flags).
    #[serde(default)]
    pooling_mode: Option<String>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

#[derive(Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default = "tanh")]
    activation_function: String,
}

fn yes() -> bool {
    true
}

fn tanh() -> String {
    Activation::Tanh.torch_name().into()
}

#[derive(Deserialize)]
struct BertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    model_max_length: Option<f64>,
}

/// The tokenizer's `model_max_length` in `dir/tokenizer_config.json`, unless absent or the
/// huge sentinel transformers writes for "no limit".
pub(crate) fn tokenizer_max_length(dir: &Path) -> Result<Option<usize>> {
    match read_json::<TokenizerConfig>(&dir.join("tokenizer_config.json")) {
        Ok(c) => Ok(c
            .model_max_length
            .filter(|&n| n >= 1.0 && n < (1u64 << 20) as f64)
            .map(|n| n as usize)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::not_found(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

impl ModelLayout {
    /// Reads the layout of the model in `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let modules: Vec<Module> = read_json(&dir.join("modules.json"))?;
        let pooling_module = modules.iter().find(|m| m.is("Pooling")).ok_or_else(|| {
            Error::invalid(format!(
                "{}: modules.json has no Pooling module",
                dir.display()
            ))
        })?;
        let pooling: PoolingConfig =
            read_json(&dir.join(&pooling_module.path).join("config.json"))?;
        let mode = match (
            pooling.pooling_mode.as_deref(),
            pooling.pooling_mode_mean_tokens,
            pooling.pooling_mode_cls_token,
            pooling.pooling_mode_max_tokens,
        ) {
            (Some("mean"), ..) | (None, true, false, false) => Pooling::Mean,
            (Some("cls"), ..) | (None, false, true, false) => Pooling::Cls,
            (Some("max"), ..) | (None, false, false, true) => Pooling::Max,
            (Some(other), ..) => {
                return Err(Error::invalid(format!(
                    "{}: pooling mode {other:?} is not supported (mean, cls or max)",
                    dir.display()
                )));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "{}: exactly one of mean, cls or max pooling must be set",
                    dir.display()
                )));
            }
        };
        let pooling_dims = pooling
            .embedding_dimension
            .or(pooling.word_embedding_dimension)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{}: the pooling config has no embedding dimension",
                    dir.display()
                ))
            })?;
        let transformer = modules
            .iter()
            .find(|m| m.is("Transformer"))
            .map(|m| dir.join(&m.path))
            .unwrap_or_else(|| dir.to_path_buf());
        let st = match read_json::<StConfig>(&dir.join("config_sentence_transformers.json")) {
            Ok(c) => c,
            Err(Error::NotFound { .. }) => StConfig::default(),
            Err(e) => return Err(e),
        };
        let prompt = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| st.prompts.get(*n))
                .filter(|p| !p.is_empty())
                .cloned()
        };
        let stated = match read_json::<BertConfig>(&dir.join("sentence_bert_config.json")) {
            Ok(c) => c.max_seq_length,
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let max_seq_length = match stated {
            Some(n) => n,
            None => tokenizer_max_length(&transformer)?.unwrap_or(512),
        };
        let mut dense = Vec::new();
        let mut width = pooling_dims;
        for m in modules.iter().filter(|m| m.is("Dense")) {
            let module_dir = dir.join(&m.path);
            let config: DenseConfig = read_json(&module_dir.join("config.json"))?;
            let activation =
                Activation::from_torch_name(&config.activation_function).ok_or_else(|| {
                    Error::invalid(format!(
                        "{}: activation {} is not supported (Identity or Tanh)",
                        module_dir.display(),
                        config.activation_function
                    ))
                })?;
            if config.in_features != width {
                return Err(Error::invalid(format!(
                    "{}: in_features {} does not follow the previous width {width}",
                    module_dir.display(),
                    config.in_features
                )));
            }
            width = config.out_features;
            dense.push(DenseLayout {
                dir: module_dir,
                in_features: config.in_features,
                out_features: config.out_features,
                bias: config.bias,
                activation,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            pooling: mode,
            normalize: modules.iter().any(|m| m.is("Normalize")),
            max_seq_length,
            dims: width,
            pooling_dims,
            dense,
            transformer_dir: transformer,
            query_prefix: prompt(&["query"]),
            document_prefix: prompt(&["document", "passage"]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, body: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    #[test]
    fn sentence_transformers_6_pooling_modes_are_read_and_unknown_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "modules.json",
            r#"[
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"}]"#,
        );
        write(
            d,
            "1_Pooling/config.json",
            r#"{"embedding_dimension": 16, "pooling_mode": "cls"}"#,
        );
        write(d, "tokenizer_config.json", r#"{"model_max_length": 1e30}"#);
        let l = ModelLayout::read(d).unwrap();
        // No stated length and the "no limit" sentinel: the default.
        assert_eq!(
            (l.pooling, l.normalize, l.pooling_dims, l.max_seq_length),
            (Pooling::Cls, false, 16, 512)
        );
        write(
            d,
            "1_Pooling/config.json",
            r#"{"embedding_dimension": 16, "pooling_mode": "lasttoken"}"#,
        );
        let err = ModelLayout::read(d).unwrap_err().to_string();
        assert!(err.contains("lasttoken"), "{err}");
    }

    #[test]
    fn reads_a_minilm_style_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "modules.json",
            r#"[
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
        );
        write(
            d,
            "1_Pooling/config.json",
            r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false}"#,
        );
        write(
            d,
            "sentence_bert_config.json",
            r#"{"max_seq_length": 256, "do_lower_case": false}"#,
        );
        write(
            d,
            "config_sentence_transformers.json",
            r#"{"prompts": {"query": "query: ", "document": ""}}"#,
        );
        let l = ModelLayout::read(d).unwrap();
        assert_eq!(l.query_prefix.as_deref(), Some("query: "));
        assert_eq!(l.document_prefix, None);
        assert_eq!(l.transformer_dir, d);
        assert_eq!(
            (l.pooling, l.normalize, l.max_seq_length, l.dims),
            (Pooling::Mean, true, 256, 384)
        );
        assert!(l.dense.is_empty());

        // A Dense module after pooling changes the output width.
        write(
            d,
            "modules.json",
            r#"[
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#,
        );
        write(
            d,
            "2_Dense/config.json",
            r#"{"in_features": 384, "out_features": 128, "bias": true,
            "activation_function": "torch.nn.modules.activation.Tanh"}"#,
        );
        let l = ModelLayout::read(d).unwrap();
        assert_eq!((l.dims, l.pooling_dims, l.normalize), (128, 384, false));
        assert_eq!(l.dense[0].activation, Activation::Tanh);
        assert_eq!(l.dense[0].dir, d.join("2_Dense"));

        write(
            d,
            "2_Dense/config.json",
            r#"{"in_features": 384, "out_features": 128, "activation_function": "torch.nn.ReLU"}"#,
        );
        let err = ModelLayout::read(d).unwrap_err().to_string();
        assert!(err.contains("torch.nn.ReLU"), "{err}");
        write(
            d,
            "2_Dense/config.json",
            r#"{"in_features": 768, "out_features": 128}"#,
        );
        let err = ModelLayout::read(d).unwrap_err().to_string();
        assert!(err.contains("in_features 768"), "{err}");
    }

    #[test]
    fn missing_and_malformed_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ModelLayout::read(dir.path()),
            Err(Error::NotFound { .. })
        ));
        write(dir.path(), "modules.json", "{not json");
        assert!(matches!(
            ModelLayout::read(dir.path()),
            Err(Error::InvalidInput { .. })
        ));
    }
}
