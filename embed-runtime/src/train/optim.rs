//! AdamW (decoupled weight decay, as `torch.optim.AdamW`), the warmup-then-linear-decay
//! learning-rate schedule of sentence-transformers' `WarmupLinear`, and global-norm gradient
//! clipping.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// AdamW over a set of variables; variables named `*.bias` or `*LayerNorm*` get no weight
/// decay (the Hugging Face / sentence-transformers convention).
pub(crate) struct AdamW {
    params: Vec<Param>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    step: i32,
}

struct Param {
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

impl AdamW {
    pub fn new(vars: &[(String, Var)], weight_decay: f64) -> candle_core::Result<Self> {
        let params = vars
            .iter()
            .map(|(name, var)| {
                Ok(Param {
                    var: var.clone(),
                    decay: !(name.ends_with(".bias") || name.contains("LayerNorm")),
                    m: var.as_tensor().zeros_like()?,
                    v: var.as_tensor().zeros_like()?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            params,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay,
            step: 0,
        })
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> candle_core::Result<f64> {
        let mut sum = 0f64;
        for p in &self.params {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                sum += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(sum.sqrt())
    }

    /// One update with learning rate `lr`, gradients multiplied by `grad_scale` first (the
    /// clipping factor).
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> candle_core::Result<()> {
        self.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.step);
        let c2 = 1.0 - b2.powi(self.step);
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let g = if grad_scale == 1.0 {
                g.clone()
            } else {
                (g * grad_scale)?
            };
            p.m = ((&p.m * b1)? + (&g * (1.0 - b1))?)?;
            p.v = ((&p.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&p.m / c1)?;
            let v_hat = (&p.v / c2)?;
            let update = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            let theta = p.var.as_tensor();
            let theta = if p.decay && self.weight_decay > 0.0 {
                (theta * (1.0 - lr * self.weight_decay))?
            } else {
                theta.clone()
            };
            p.var.set(&(theta - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Learning rate at `step` (0-based) of `total`: linear warmup over `warmup` steps from 0 to
/// `peak`, then linear decay to 0 at `total`.
pub(crate) fn warmup_linear(step: usize, warmup: usize, total: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let left = total.saturating_sub(step) as f64;
    let span = total.saturating_sub(warmup).max(1) as f64;
    peak * (left / span).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let lrs: Vec<f64> = (0..10).map(|s| warmup_linear(s, 2, 10, 1.0)).collect();
        assert_eq!(lrs[0], 0.5);
        assert_eq!(lrs[1], 1.0);
        assert!((lrs[2] - 1.0).abs() < 1e-12);
        assert!(lrs.windows(2).skip(1).all(|w| w[1] <= w[0]));
        assert!(lrs[9] > 0.0 && lrs[9] < 0.2, "{lrs:?}");
        assert_eq!(warmup_linear(10, 2, 10, 1.0), 0.0);
    }

    #[test]
    fn adamw_matches_a_hand_computed_first_step_and_minimises_a_quadratic() {
        // First AdamW step moves every weight by lr · sign(g) (m̂/√v̂ = g/|g|), plus decay.
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &dev).unwrap()).unwrap();
        let vars = vec![("w.weight".to_string(), w.clone())];
        let mut opt = AdamW::new(&vars, 0.1).unwrap();
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads, 0.01, 1.0).unwrap();
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        for _ in 0..500 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let norm = opt.grad_norm(&grads).unwrap();
            assert!(norm.is_finite());
            opt.step(&grads, 0.05, 1.0).unwrap();
        }
        let end = w
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(end.iter().all(|x| x.abs() < 0.05), "{end:?}");
    }
}
