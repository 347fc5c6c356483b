//! Layer norm: one pass per row forward, one backward.

use super::*;

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
