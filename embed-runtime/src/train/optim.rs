//! AdamW (decoupled weight decay, as `torch.optim.AdamW`), the warmup-then-linear-decay
//! learning-rate schedule of sentence-transformers' `WarmupLinear`, and global-norm gradient
//! clipping.

use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;

/// Elements per parallel task (fixed, so sums do not depend on the thread count).
const CHUNK: usize = 1 << 15;

/// AdamW over a set of variables; variables named `*.bias` or `*LayerNorm*` get no weight
/// decay (the Hugging Face / sentence-transformers convention). On the CPU the moments live
/// in plain vectors and each variable is updated in place in one pass; on another device
/// (a GPU) they are tensors there and the update is composed from candle's ops.
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
    moments: Moments,
}

/// A variable's first and second moments.
enum Moments {
    /// Plain vectors; the variable is updated in place in one pass (the CPU's path).
    Host {
        m: Mutex<Vec<f32>>,
        v: Mutex<Vec<f32>>,
    },
    /// Tensors on the variable's device, updated by candle's ops (any device's path).
    Device { m: Tensor, v: Tensor },
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((a, b))) => Ok(&d[a..b]),
        _ => Err(candle_core::Error::Msg(
            "adamw: contiguous f32 tensors only".into(),
        )),
    }
}

/// One AdamW update of a variable from its gradient.
struct Update<'a> {
    m: &'a Mutex<Vec<f32>>,
    v: &'a Mutex<Vec<f32>>,
    b1: f32,
    b2: f32,
    /// Bias corrections `1 − βᵗ`.
    c1: f32,
    c2: f32,
    eps: f32,
    lr: f32,
    /// `1 − lr · weight decay` (1 without decay).
    keep: f32,
    grad_scale: f32,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "ragloop-adamw"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let g = f32_slice(g, gl)?;
        let CpuStorage::F32(data) = dst else {
            return Err(candle_core::Error::Msg("adamw: f32 variables only".into()));
        };
        let Some((a, b)) = dst_l.contiguous_offsets() else {
            return Err(candle_core::Error::Msg(
                "adamw: contiguous variables only".into(),
            ));
        };
        let theta = &mut data[a..b];
        let poisoned = |_| candle_core::Error::Msg("adamw: a previous update panicked".into());
        let mut m = self.m.lock().map_err(poisoned)?;
        let mut v = self.v.lock().map_err(poisoned)?;
        if g.len() != theta.len() || m.len() != theta.len() {
            return Err(candle_core::Error::Msg("adamw: gradient shape".into()));
        }
        theta
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((theta, g), (m, v))| {
                for (((t, g), m), v) in theta.iter_mut().zip(g).zip(m).zip(v) {
                    let g = g * self.grad_scale;
                    *m = self.b1 * *m + (1.0 - self.b1) * g;
                    *v = self.b2 * *v + (1.0 - self.b2) * g * g;
                    let update = (*m / self.c1) / ((*v / self.c2).sqrt() + self.eps);
                    *t = *t * self.keep - self.lr * update;
                }
            });
        Ok(())
    }
}

impl AdamW {
    /// AdamW over `vars`; `portable` keeps the moments as tensors on the variables' device
    /// (what a GPU needs; on the CPU the same numbers, slower).
    pub fn new(
        vars: &[(String, Var)],
        weight_decay: f64,
        portable: bool,
    ) -> candle_core::Result<Self> {
        let params = vars
            .iter()
            .map(|(name, var)| {
                let moments = if portable || !var.device().is_cpu() {
                    Moments::Device {
                        m: var.zeros_like()?,
                        v: var.zeros_like()?,
                    }
                } else {
                    Moments::Host {
                        m: Mutex::new(vec![0.0; var.elem_count()]),
                        v: Mutex::new(vec![0.0; var.elem_count()]),
                    }
                };
                Ok(Param {
                    var: var.clone(),
                    decay: !(name.ends_with(".bias") || name.contains("LayerNorm")),
                    moments,
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
                if !g.device().is_cpu() {
                    sum += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                    continue;
                }
                let g = g.contiguous()?;
                let (storage, layout) = g.storage_and_layout();
                let candle_core::Storage::Cpu(cpu) = &*storage else {
                    return Err(candle_core::Error::Msg("adamw: CPU tensors only".into()));
                };
                let partials: Vec<f64> = f32_slice(cpu, layout)?
                    .par_chunks(CHUNK)
                    .map(|c| c.iter().map(|x| x * x).sum::<f32>() as f64)
                    .collect();
                sum += partials.iter().sum::<f64>();
            }
        }
        Ok(sum.sqrt())
    }

    /// One update with learning rate `lr`, gradients multiplied by `grad_scale` first (the
    /// clipping factor).
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> candle_core::Result<()> {
        self.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let (c1, c2) = (1.0 - b1.powi(self.step), 1.0 - b2.powi(self.step));
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let decay = if p.decay { self.weight_decay } else { 0.0 };
            let keep = 1.0 - lr * decay;
            match &mut p.moments {
                Moments::Host { m, v } => {
                    let update = Update {
                        m,
                        v,
                        b1: b1 as f32,
                        b2: b2 as f32,
                        c1: c1 as f32,
                        c2: c2 as f32,
                        eps: self.eps as f32,
                        lr: lr as f32,
                        keep: keep as f32,
                        grad_scale: grad_scale as f32,
                    };
                    p.var.as_tensor().inplace_op2(&g.contiguous()?, &update)?;
                }
                Moments::Device { m, v } => {
                    // The same arithmetic as `Update`, one candle op at a time.
                    let g = (g * grad_scale)?;
                    *m = ((&*m * b1)? + (&g * (1.0 - b1))?)?;
                    *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let update = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + self.eps)?)?;
                    let theta = ((p.var.as_tensor() * keep)? - (update * lr)?)?;
                    p.var.set(&theta.detach())?;
                }
            }
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
    use candle_core::{DType, Device, Tensor};

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
        for portable in [false, true] {
            adamw_first_step_and_quadratic(portable);
        }
    }

    fn adamw_first_step_and_quadratic(portable: bool) {
        // First AdamW step moves every weight by lr · sign(g) (m̂/√v̂ = g/|g|), plus decay.
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &dev).unwrap()).unwrap();
        let vars = vec![("w.weight".to_string(), w.clone())];
        let mut opt = AdamW::new(&vars, 0.1, portable).unwrap();
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

    /// The GPU's path (moments as tensors, candle's ops) and the CPU's (in place, one pass)
    /// take the same steps: several updates of random weights with decay and clipping.
    #[test]
    fn the_composed_update_equals_the_in_place_one() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let data: Vec<f32> = (0..3000).map(|_| rng.random::<f32>() - 0.5).collect();
        let target = Tensor::from_vec(data.clone(), 3000, &Device::Cpu)
            .unwrap()
            .sin()
            .unwrap();
        let run = |portable: bool| {
            let w = Var::from_tensor(&Tensor::from_vec(data.clone(), 3000, &Device::Cpu).unwrap())
                .unwrap();
            let b = Var::from_tensor(&Tensor::new(&[0.3f32, -0.1], &Device::Cpu).unwrap()).unwrap();
            let vars = vec![
                ("l.weight".to_string(), w.clone()),
                ("l.bias".to_string(), b.clone()),
            ];
            let mut opt = AdamW::new(&vars, 0.01, portable).unwrap();
            for step in 0..5 {
                let loss = ((w.as_tensor() - &target)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    + b.as_tensor().sqr().unwrap().sum_all().unwrap())
                .unwrap();
                let grads = loss.backward().unwrap();
                let norm = opt.grad_norm(&grads).unwrap();
                opt.step(&grads, 1e-2 / (step + 1) as f64, (1.0 / norm).min(1.0))
                    .unwrap();
            }
            (
                w.as_tensor().to_vec1::<f32>().unwrap(),
                b.as_tensor().to_vec1::<f32>().unwrap(),
            )
        };
        let (host, device) = (run(false), run(true));
        let diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        assert!(
            diff(&host.0, &device.0) < 1e-6,
            "{}",
            diff(&host.0, &device.0)
        );
        assert!(diff(&host.1, &device.1) < 1e-6);
        assert!(diff(&host.0, &data) > 1e-3, "the weights moved");
    }
}
