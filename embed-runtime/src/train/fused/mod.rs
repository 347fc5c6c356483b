//! The trainer's heavy modules as single candle ops with hand-written backward passes, over
//! the same `gemm` kernels and row loops as the inference path:
//!
//! - [`linear`] (`linear.rs`): `x·Wᵀ + b` in one multiply (the bias is written first and the product
//!   accumulated onto it); backward `dx = g·W`, `dW = gᵀ·x`, `db = Σ g` in one op.
//! - [`layer_norm`] (`layer_norm.rs`): forward and backward one pass over each row each (composed from candle
//!   ops it took ten tensor passes forward and twenty backward, each allocating).
//! - [`attention`] (`attention.rs`): multi-head self-attention of a fused QKV projection, per sequence and head
//!   (scores, mask, softmax, dropout, context), never materialising the `b × heads × t × t`
//!   probabilities for the backward pass: the backward recomputes them per head, as flash
//!   attention does.
//!
//! Every op splits its work into fixed chunks (sequences, or row blocks) whose results are
//! combined in a fixed order, so the numbers do not depend on the thread count or timing: a
//! seed still reproduces a training run bit for bit.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::{self, MatMut, MatRef, Par};

mod attention;
mod layer_norm;
mod linear;
pub(crate) mod portable;
#[cfg(test)]
mod tests;

pub(crate) use attention::{Attention, attention};
pub(crate) use layer_norm::layer_norm;
pub(crate) use linear::linear;

/// Which implementation of the modules a model runs: the fused CPU ops of this module, or the
/// same functions composed from candle's ops ([`portable`]), which run on any device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ops {
    /// The fused CPU ops (tensors on the CPU only).
    Fused,
    /// candle's composed ops: a GPU's path.
    Portable,
}

impl Ops {
    /// The fused ops on the CPU, the portable ones anywhere else.
    pub(crate) fn for_device(device: &candle_core::Device) -> Self {
        if device.is_cpu() {
            Self::Fused
        } else {
            Self::Portable
        }
    }

    /// `x·Wᵀ + b`.
    pub(crate) fn linear(self, x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Fused => linear(x, w, b),
            Self::Portable => portable::linear(x, w, b),
        }
    }

    /// Layer norm of the rows of `x`.
    pub(crate) fn layer_norm(
        self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
    ) -> candle_core::Result<Tensor> {
        match self {
            Self::Fused => layer_norm(x, gamma, beta, eps),
            Self::Portable => portable::layer_norm(x, gamma, beta, eps),
        }
    }

    /// Self-attention of the fused projection `qkv`.
    pub(crate) fn attention(self, qkv: &Tensor, op: Attention) -> candle_core::Result<Tensor> {
        match self {
            Self::Fused => attention(qkv, op),
            Self::Portable => portable::attention(qkv, &op),
        }
    }

    /// GELU (erf form).
    pub(crate) fn gelu(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Fused => super::gelu::gelu(x),
            Self::Portable => portable::gelu(x),
        }
    }
}

/// Rows per parallel task of the row-wise ops.
const ROWS_PER_TASK: usize = 64;

fn msg(op: &str, what: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: {what}"))
}

/// The f32 data of a contiguous tensor's storage.
pub(crate) fn slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        return Err(msg(op, "f32 only"));
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(msg(op, "inputs must be contiguous")),
    }
}

fn dims2(layout: &Layout, op: &str) -> candle_core::Result<(usize, usize)> {
    match layout.dims() {
        [r, c] => Ok((*r, *c)),
        d => Err(msg(op, format!("expected a matrix, got shape {d:?}"))),
    }
}

fn threads() -> Par {
    Par::Threads(rayon::current_num_threads())
}

// ---------------------------------------------------------------------------------------------
// Linear
