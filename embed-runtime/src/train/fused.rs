//! The trainer's heavy modules as single candle ops with hand-written backward passes, over
//! the same `gemm` kernels and row loops as the inference path:
//!
//! - [`linear`]: `x·Wᵀ + b` in one multiply (the bias is written first and the product
//!   accumulated onto it); backward `dx = g·W`, `dW = gᵀ·x`, `db = Σ g` in one op.
//! - [`layer_norm`]: forward and backward one pass over each row each (composed from candle
//!   ops it took ten tensor passes forward and twenty backward, each allocating).
//! - [`attention`]: multi-head self-attention of a fused QKV projection, per sequence and head
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

struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "ragloop-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            slice(s1, l1, self.name())?,
            slice(s2, l2, self.name())?,
            slice(s3, l3, self.name())?,
        );
        let ((n, i), (o, wi)) = (dims2(l1, self.name())?, dims2(l2, self.name())?);
        if wi != i || b.len() != o {
            return Err(msg(self.name(), "shapes of x, W and b disagree"));
        }
        let mut out = vec![0f32; n * o];
        kernels::fill_rows(&mut out, b);
        // Wᵀ read in place: element (r, c) of Wᵀ is w[c·i + r].
        let wt = MatRef {
            data: w,
            offset: 0,
            rows: i,
            cols: o,
            rs: 1,
            cs: i,
        };
        kernels::matmul(
            MatMut::rows(&mut out, n, o),
            MatRef::rows(x, n, i),
            wt,
            true,
            threads(),
        );
        Ok((CpuStorage::F32(out), Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, i) = x.dims2()?;
        let o = w.dim(0)?;
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LinearGrad)?;
        let dx = packed.narrow(0, 0, n * i)?.reshape((n, i))?;
        let dw = packed.narrow(0, n * i, o * i)?.reshape((o, i))?;
        let db = packed.narrow(0, n * i + o * i, o)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `[dx (n·i), dW (o·i), db (o)]` of a linear layer, packed in one vector.
struct LinearGrad;

impl CustomOp3 for LinearGrad {
    fn name(&self) -> &'static str {
        "ragloop-linear-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, g) = (
            slice(s1, l1, self.name())?,
            slice(s2, l2, self.name())?,
            slice(s3, l3, self.name())?,
        );
        let ((n, i), (o, _)) = (dims2(l1, self.name())?, dims2(l2, self.name())?);
        if g.len() != n * o {
            return Err(msg(self.name(), "gradient shape"));
        }
        let mut out = vec![0f32; n * i + o * i + o];
        let (dx, rest) = out.split_at_mut(n * i);
        let (dw, db) = rest.split_at_mut(o * i);
        kernels::matmul(
            MatMut::rows(dx, n, i),
            MatRef::rows(g, n, o),
            MatRef::rows(w, o, i),
            false,
            threads(),
        );
        // gᵀ read in place: element (r, c) of gᵀ is g[c·o + r].
        let gt = MatRef {
            data: g,
            offset: 0,
            rows: o,
            cols: n,
            rs: 1,
            cs: o,
        };
        kernels::matmul(
            MatMut::rows(dw, o, i),
            gt,
            MatRef::rows(x, n, i),
            false,
            threads(),
        );
        column_sums(g, o, db);
        Ok((CpuStorage::F32(out), Shape::from(n * i + o * i + o)))
    }
}

/// `out[c] = Σ_r rows[r·width + c]`, in fixed row blocks summed in order.
fn column_sums(rows: &[f32], width: usize, out: &mut [f32]) {
    let partials: Vec<Vec<f32>> = rows
        .par_chunks(ROWS_PER_TASK * width)
        .map(|block| {
            let mut acc = vec![0f32; width];
            for row in block.chunks_exact(width) {
                acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
            }
            acc
        })
        .collect();
    out.fill(0.0);
    for p in partials {
        out.iter_mut().zip(&p).for_each(|(o, v)| *o += v);
    }
}

/// `x·Wᵀ + b` for `x` (`n × in`), `W` (`out × in`), `b` (`out`); differentiable in all three.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear)
}

// ---------------------------------------------------------------------------------------------
// Layer norm

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "ragloop-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (
            slice(s1, l1, self.name())?,
            slice(s2, l2, self.name())?,
            slice(s3, l3, self.name())?,
        );
        let (_, h) = dims2(l1, self.name())?;
        if gamma.len() != h || beta.len() != h {
            return Err(msg(self.name(), "gamma/beta width"));
        }
        let mut out = x.to_vec();
        let arch = pulp::Arch::new();
        out.par_chunks_mut(ROWS_PER_TASK * h)
            .for_each(|rows| kernels::layer_norm_rows(arch, rows, gamma, beta, self.eps));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, h) = x.dims2()?;
        let packed =
            x.apply_op3_no_bwd(gamma, &grad.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        let dx = packed.narrow(0, 0, n)?;
        let dgamma = packed.narrow(0, n, 1)?.reshape(h)?;
        let dbeta = packed.narrow(0, n + 1, 1)?.reshape(h)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// `[dx (n rows); dγ; dβ]` of a layer norm as an `(n + 2) × h` matrix. With `x̂ = (x − μ)·r`
/// (`r = 1/σ`) and `gγ = g ⊙ γ`: `dx = r·(gγ − mean(gγ) − x̂·mean(gγ ⊙ x̂))`, `dγ = Σ g ⊙ x̂`,
/// `dβ = Σ g`.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "ragloop-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, gamma, g) = (
            slice(s1, l1, self.name())?,
            slice(s2, l2, self.name())?,
            slice(s3, l3, self.name())?,
        );
        let (n, h) = dims2(l1, self.name())?;
        if g.len() != x.len() || gamma.len() != h {
            return Err(msg(self.name(), "shapes"));
        }
        let mut out = vec![0f32; (n + 2) * h];
        let (dx, sums) = out.split_at_mut(n * h);
        let eps = self.eps;
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(ROWS_PER_TASK * h)
            .zip(x.par_chunks(ROWS_PER_TASK * h))
            .zip(g.par_chunks(ROWS_PER_TASK * h))
            .map(|((dx, x), g)| {
                // dγ then dβ partial sums of this block.
                let mut acc = vec![0f32; 2 * h];
                let (dgamma, dbeta) = acc.split_at_mut(h);
                let mut xhat = vec![0f32; h];
                for ((dx, x), g) in dx
                    .chunks_exact_mut(h)
                    .zip(x.chunks_exact(h))
                    .zip(g.chunks_exact(h))
                {
                    let mean = kernels::sum(x) / h as f32;
                    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
                    let r = 1.0 / (var + eps).sqrt();
                    let (mut m1, mut m2) = (0f32, 0f32);
                    for j in 0..h {
                        xhat[j] = (x[j] - mean) * r;
                        let gg = g[j] * gamma[j];
                        m1 += gg;
                        m2 += gg * xhat[j];
                        dgamma[j] += g[j] * xhat[j];
                        dbeta[j] += g[j];
                    }
                    let (m1, m2) = (m1 / h as f32, m2 / h as f32);
                    for j in 0..h {
                        dx[j] = r * (g[j] * gamma[j] - m1 - xhat[j] * m2);
                    }
                }
                acc
            })
            .collect();
        for p in partials {
            sums.iter_mut().zip(&p).for_each(|(s, v)| *s += v);
        }
        Ok((CpuStorage::F32(out), Shape::from((n + 2, h))))
    }
}

/// Layer norm of the rows of `x` (`n × h`) with `gamma`, `beta` (`h`); differentiable in all
/// three.
pub(crate) fn layer_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        LayerNorm { eps: eps as f32 },
    )
}

// ---------------------------------------------------------------------------------------------
// Attention

/// Multi-head self-attention over a padded batch, from the fused projection `qkv`
/// (`b·t × 3h`: queries, keys, values side by side) to the context (`b·t × h`).
#[derive(Clone)]
pub(crate) struct Attention {
    /// Sequences.
    pub b: usize,
    /// Padded length.
    pub t: usize,
    /// Heads.
    pub heads: usize,
    /// Width of a head.
    pub hd: usize,
    /// Added to each key's score: 0 for real tokens, −10⁴ for padding (`b × t`).
    pub key_bias: Arc<Vec<f32>>,
    /// Dropout multipliers of the probabilities (`b × heads × t × t`: 0 or 1/keep), if any.
    pub dropout: Option<Arc<Vec<f32>>>,
}

impl Attention {
    fn h(&self) -> usize {
        self.heads * self.hd
    }

    fn check(&self, qkv: &[f32], op: &str) -> candle_core::Result<()> {
        if qkv.len() != self.b * self.t * 3 * self.h() || self.key_bias.len() != self.b * self.t {
            return Err(msg(op, "qkv or mask shape"));
        }
        if let Some(d) = &self.dropout
            && d.len() != self.b * self.heads * self.t * self.t
        {
            return Err(msg(op, "dropout mask shape"));
        }
        Ok(())
    }

    /// A head's view of one third of a sequence's `qkv` rows (`part` 0 = q, 1 = k, 2 = v).
    fn head<'a>(&self, rows: &'a [f32], part: usize, head: usize) -> MatRef<'a> {
        MatRef {
            data: rows,
            offset: part * self.h() + head * self.hd,
            rows: self.t,
            cols: self.hd,
            rs: 3 * self.h(),
            cs: 1,
        }
    }

    /// The probabilities of one head of sequence `s` into `p` (`t × t`): softmax of
    /// `scale·q·kᵀ + key bias`.
    fn probabilities(&self, arch: pulp::Arch, s: usize, rows: &[f32], head: usize, p: &mut [f32]) {
        let t = self.t;
        let q = self.head(rows, 0, head);
        let k = self.head(rows, 1, head);
        let kt = MatRef {
            rows: k.cols,
            cols: k.rows,
            rs: k.cs,
            cs: k.rs,
            ..k
        };
        kernels::matmul(MatMut::rows(p, t, t), q, kt, false, Par::Single);
        let scale = 1.0 / (self.hd as f32).sqrt();
        let bias = &self.key_bias[s * t..(s + 1) * t];
        for row in p.chunks_exact_mut(t) {
            for (x, b) in row.iter_mut().zip(bias) {
                *x = *x * scale + b;
            }
        }
        kernels::softmax_rows(arch, p, t, 1.0);
    }

    fn drop_mask(&self, s: usize, head: usize) -> Option<&[f32]> {
        let tt = self.t * self.t;
        let at = (s * self.heads + head) * tt;
        self.dropout.as_ref().map(|d| &d[at..at + tt])
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "ragloop-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = slice(s, l, self.name())?;
        self.check(qkv, self.name())?;
        let (t, h) = (self.t, self.h());
        let mut out = vec![0f32; self.b * t * h];
        let arch = pulp::Arch::new();
        out.par_chunks_mut(t * h)
            .zip(qkv.par_chunks(t * 3 * h))
            .enumerate()
            .for_each(|(s, (ctx, rows))| {
                let mut p = vec![0f32; t * t];
                for head in 0..self.heads {
                    self.probabilities(arch, s, rows, head, &mut p);
                    if let Some(m) = self.drop_mask(s, head) {
                        p.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
                    }
                    let dst = MatMut {
                        data: &mut *ctx,
                        offset: head * self.hd,
                        rows: t,
                        cols: self.hd,
                        rs: h,
                        cs: 1,
                    };
                    kernels::matmul(
                        dst,
                        MatRef::rows(&p, t, t),
                        self.head(rows, 2, head),
                        false,
                        Par::Single,
                    );
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((self.b * t, h))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(qkv.apply_op2_no_bwd(
            &grad.contiguous()?,
            &AttentionGrad(self.clone()),
        )?))
    }
}

/// The gradient of [`Attention`] with respect to `qkv`, given the context's gradient.
struct AttentionGrad(Attention);

impl CustomOp2 for AttentionGrad {
    fn name(&self) -> &'static str {
        "ragloop-attention-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = &self.0;
        let qkv = slice(s1, l1, self.name())?;
        let g = slice(s2, l2, self.name())?;
        a.check(qkv, self.name())?;
        let (t, h, hd) = (a.t, a.h(), a.hd);
        if g.len() != a.b * t * h {
            return Err(msg(self.name(), "gradient shape"));
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; qkv.len()];
        let arch = pulp::Arch::new();
        out.par_chunks_mut(t * 3 * h)
            .zip(qkv.par_chunks(t * 3 * h))
            .zip(g.par_chunks(t * h))
            .enumerate()
            .for_each(|(s, ((d, rows), g))| {
                let mut p = vec![0f32; t * t];
                let mut pd = vec![0f32; t * t];
                let mut dp = vec![0f32; t * t];
                for head in 0..a.heads {
                    a.probabilities(arch, s, rows, head, &mut p);
                    let mask = a.drop_mask(s, head);
                    // The probabilities after dropout, as the forward multiplied them with V.
                    let used: &[f32] = match mask {
                        Some(m) => {
                            pd.iter_mut()
                                .zip(&p)
                                .zip(m)
                                .for_each(|((o, p), m)| *o = p * m);
                            &pd
                        }
                        None => &p,
                    };
                    let go = MatRef {
                        data: g,
                        offset: head * hd,
                        rows: t,
                        cols: hd,
                        rs: h,
                        cs: 1,
                    };
                    let view = |part: usize| (part * h + head * hd, 3 * h);
                    // dV = Pᵀ·dO.
                    let (off, rs) = view(2);
                    let used_t = MatRef {
                        data: used,
                        offset: 0,
                        rows: t,
                        cols: t,
                        rs: 1,
                        cs: t,
                    };
                    kernels::matmul(
                        MatMut {
                            data: &mut *d,
                            offset: off,
                            rows: t,
                            cols: hd,
                            rs,
                            cs: 1,
                        },
                        used_t,
                        go,
                        false,
                        Par::Single,
                    );
                    // dP = dO·Vᵀ (then through the dropout mask).
                    let v = a.head(rows, 2, head);
                    let vt = MatRef {
                        rows: v.cols,
                        cols: v.rows,
                        rs: v.cs,
                        cs: v.rs,
                        ..v
                    };
                    kernels::matmul(MatMut::rows(&mut dp, t, t), go, vt, false, Par::Single);
                    if let Some(m) = mask {
                        dp.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
                    }
                    // dS = P ⊙ (dP − Σ dP ⊙ P), times the score scale.
                    for (dp, p) in dp.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                        let dot: f32 = dp.iter().zip(p).map(|(a, b)| a * b).sum();
                        for (x, p) in dp.iter_mut().zip(p) {
                            *x = p * (*x - dot) * scale;
                        }
                    }
                    // dQ = dS·K, dK = dSᵀ·Q.
                    let (off, rs) = view(0);
                    kernels::matmul(
                        MatMut {
                            data: &mut *d,
                            offset: off,
                            rows: t,
                            cols: hd,
                            rs,
                            cs: 1,
                        },
                        MatRef::rows(&dp, t, t),
                        a.head(rows, 1, head),
                        false,
                        Par::Single,
                    );
                    let dst = MatRef {
                        data: &dp,
                        offset: 0,
                        rows: t,
                        cols: t,
                        rs: 1,
                        cs: t,
                    };
                    let (off, rs) = view(1);
                    kernels::matmul(
                        MatMut {
                            data: &mut *d,
                            offset: off,
                            rows: t,
                            cols: hd,
                            rs,
                            cs: 1,
                        },
                        dst,
                        a.head(rows, 0, head),
                        false,
                        Par::Single,
                    );
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Self-attention of the fused projection `qkv` (`b·t × 3h`); differentiable.
pub(crate) fn attention(qkv: &Tensor, op: Attention) -> candle_core::Result<Tensor> {
    qkv.contiguous()?.apply_op1(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Var {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Forward values and the gradients of `Σ out ⊙ w` for every var agree within `tol`.
    fn same(vars: &[&Var], ours: impl Fn() -> Tensor, reference: impl Fn() -> Tensor, tol: f32) {
        let (a, b) = (ours(), reference());
        assert!(
            max_diff(&a, &b) < tol,
            "forward differs: {}",
            max_diff(&a, &b)
        );
        let w = rand(a.dims(), 99);
        let ga = (a * w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (b * w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (i, v) in vars.iter().enumerate() {
            let d = max_diff(
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            assert!(d < tol, "gradient of input {i} differs by {d}");
        }
    }

    #[test]
    fn linear_matches_composed_candle_ops() {
        let (x, w, b) = (rand(&[150, 24], 1), rand(&[40, 24], 2), rand(&[40], 3));
        same(
            &[&x, &w, &b],
            || linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap(),
            || {
                x.as_tensor()
                    .matmul(&w.as_tensor().t().unwrap())
                    .unwrap()
                    .broadcast_add(b.as_tensor())
                    .unwrap()
            },
            1e-4,
        );
    }

    #[test]
    fn layer_norm_matches_composed_candle_ops() {
        let (x, g, b) = (rand(&[130, 48], 4), rand(&[48], 5), rand(&[48], 6));
        same(
            &[&x, &g, &b],
            || layer_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-12).unwrap(),
            || {
                let x = x.as_tensor();
                let mean = x.mean_keepdim(D::Minus1).unwrap();
                let c = x.broadcast_sub(&mean).unwrap();
                let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
                c.broadcast_div(&(var + 1e-12).unwrap().sqrt().unwrap())
                    .unwrap()
                    .broadcast_mul(g.as_tensor())
                    .unwrap()
                    .broadcast_add(b.as_tensor())
                    .unwrap()
            },
            1e-4,
        );
    }

    #[test]
    fn attention_matches_composed_candle_ops_with_padding_and_dropout() {
        let (b, t, heads, hd) = (3, 7, 2, 4);
        let h = heads * hd;
        let qkv = rand(&[b * t, 3 * h], 7);
        // Sequence lengths 7, 4 and 1.
        let lens = [7, 4, 1];
        let key_bias: Vec<f32> = (0..b * t)
            .map(|i| if i % t < lens[i / t] { 0.0 } else { -10_000.0 })
            .collect();
        let drop: Vec<f32> = (0..b * heads * t * t)
            .map(|i| if i % 5 == 0 { 0.0 } else { 1.25 })
            .collect();
        let op = Attention {
            b,
            t,
            heads,
            hd,
            key_bias: Arc::new(key_bias.clone()),
            dropout: Some(Arc::new(drop.clone())),
        };
        let dev = Device::Cpu;
        same(
            &[&qkv],
            || attention(qkv.as_tensor(), op.clone()).unwrap(),
            || {
                let split = |i: usize| {
                    qkv.as_tensor()
                        .narrow(1, i * h, h)
                        .unwrap()
                        .reshape((b, t, heads, hd))
                        .unwrap()
                        .transpose(1, 2)
                        .unwrap()
                        .contiguous()
                        .unwrap()
                };
                let (q, k, v) = (split(0), split(1), split(2));
                let bias = Tensor::from_vec(key_bias.clone(), (b, 1, 1, t), &dev).unwrap();
                let scores = (q.matmul(&k.t().unwrap()).unwrap() / (hd as f64).sqrt())
                    .unwrap()
                    .broadcast_add(&bias)
                    .unwrap();
                let probs = super::super::model::softmax_last(&scores).unwrap();
                let mask = Tensor::from_vec(drop.clone(), (b, heads, t, t), &dev).unwrap();
                (probs * mask)
                    .unwrap()
                    .matmul(&v)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
                    .reshape((b * t, h))
                    .unwrap()
            },
            1e-4,
        );
    }
}
