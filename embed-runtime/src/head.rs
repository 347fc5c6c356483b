//! The sentence-transformers `Dense` modules that follow pooling: `activation(W·x + b)` per
//! embedding (e.g. the linear adapter that `train::adapter` fits on a frozen encoder).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rag_core::{Error, Result};

use crate::layout::{Activation, DenseLayout};

/// One loaded Dense module.
#[derive(Debug, Clone)]
pub(crate) struct DenseHead {
    /// `out × in`, row-major (torch's `nn.Linear.weight`).
    weight: Vec<f32>,
    bias: Vec<f32>,
    in_features: usize,
    out_features: usize,
    activation: Activation,
}

/// File of a Dense module's weights.
pub(crate) fn weights_path(dir: &Path) -> std::path::PathBuf {
    dir.join("model.safetensors")
}

impl DenseHead {
    /// Reads `model.safetensors` of the module described by `layout`.
    pub fn load(layout: &DenseLayout) -> Result<Self> {
        let path = weights_path(&layout.dir);
        if !path.exists() {
            let legacy = layout.dir.join("pytorch_model.bin");
            return Err(Error::not_found(if legacy.exists() {
                format!(
                    "{}: only pytorch_model.bin is there; re-save the model with safetensors",
                    path.display()
                )
            } else {
                format!("{}", path.display())
            }));
        }
        let map = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        Self::from_tensors(layout, &map)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
    }

    /// Builds the module from `linear.weight` / `linear.bias`.
    pub fn from_tensors(layout: &DenseLayout, map: &HashMap<String, Tensor>) -> Result<Self> {
        let read = |key: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = map
                .get(key)
                .ok_or_else(|| Error::invalid(format!("no tensor {key}")))?;
            if t.dims() != shape {
                return Err(Error::invalid(format!(
                    "tensor {key} has shape {:?}, config says {shape:?}",
                    t.dims()
                )));
            }
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| Error::backend("candle", "tensor conversion", e))
        };
        let (i, o) = (layout.in_features, layout.out_features);
        Ok(Self {
            weight: read("linear.weight", &[o, i])?,
            bias: if layout.bias {
                read("linear.bias", &[o])?
            } else {
                vec![0.0; o]
            },
            in_features: i,
            out_features: o,
            activation: layout.activation,
        })
    }

    /// `activation(W·x + b)`.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        debug_assert_eq!(x.len(), self.in_features);
        let mut out = self.bias.clone();
        for (o, row) in out
            .iter_mut()
            .zip(self.weight.chunks_exact(self.in_features))
        {
            *o += row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>();
        }
        if self.activation == Activation::Tanh {
            out.iter_mut().for_each(|v| *v = v.tanh());
        }
        debug_assert_eq!(out.len(), self.out_features);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_weight_bias_and_activation() {
        let layout = DenseLayout {
            dir: "unused".into(),
            in_features: 3,
            out_features: 2,
            bias: true,
            activation: Activation::Identity,
        };
        let map = HashMap::from([
            (
                "linear.weight".to_string(),
                Tensor::new(&[[1f32, 0., 2.], [0., -1., 0.5]], &Device::Cpu).unwrap(),
            ),
            (
                "linear.bias".to_string(),
                Tensor::new(&[0.5f32, 1.0], &Device::Cpu).unwrap(),
            ),
        ]);
        let head = DenseHead::from_tensors(&layout, &map).unwrap();
        assert_eq!(head.apply(&[1.0, 2.0, 3.0]), vec![7.5, 0.5]);
        let tanh = DenseHead {
            activation: Activation::Tanh,
            ..head
        };
        let y = tanh.apply(&[1.0, 2.0, 3.0]);
        assert!((y[0] - 7.5f32.tanh()).abs() < 1e-6 && (y[1] - 0.5f32.tanh()).abs() < 1e-6);

        let wrong = DenseLayout {
            in_features: 4,
            ..layout
        };
        let err = DenseHead::from_tensors(&wrong, &map)
            .unwrap_err()
            .to_string();
        assert!(err.contains("linear.weight"), "{err}");
    }
}
