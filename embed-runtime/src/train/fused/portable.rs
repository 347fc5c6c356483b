//! The same modules composed from candle's ops, which every candle device runs (CUDA included):
//! the path of a model that is not on the CPU. Slower on a CPU than the fused ops (it
//! allocates per op and keeps the `b × heads × t × t` probabilities for the backward pass), but
//! the same function: the fused ops are tested against these, values and gradients.

use candle_core::{D, Tensor};

use super::Attention;

/// `x·Wᵀ + b`.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.matmul(&w.t()?)?.broadcast_add(b)
}

/// Layer norm of the rows of `x`.
pub(crate) fn layer_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let c = x.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(D::Minus1)?;
    c.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(gamma)?
        .broadcast_add(beta)
}

/// Row-wise softmax over the last dimension (the row max is a constant for the gradient).
pub(crate) fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Multi-head self-attention of the fused projection `qkv` (`b·t × 3h`) → `b·t × h`: batched
/// scores, key bias, softmax, dropout and context on `qkv`'s device.
pub(crate) fn attention(qkv: &Tensor, op: &Attention) -> candle_core::Result<Tensor> {
    let (b, t, heads, hd) = (op.b, op.t, op.heads, op.hd);
    let h = heads * hd;
    let dev = qkv.device();
    let split = |i: usize| {
        qkv.narrow(1, i * h, h)?
            .reshape((b, t, heads, hd))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (split(0)?, split(1)?, split(2)?);
    let bias = Tensor::from_slice(op.key_bias.as_slice(), (b, 1, 1, t), dev)?;
    let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?.broadcast_add(&bias)?;
    let mut probs = softmax_last(&scores)?;
    if let Some(mask) = &op.dropout {
        probs = (probs * Tensor::from_slice(mask.as_slice(), (b, heads, t, t), dev)?)?;
    }
    probs
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * t, h))
}

/// GELU (erf form), candle's.
pub(crate) fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.gelu_erf()
}
