//! GELU (erf form) as one candle op with its own backward: candle's `gelu_erf` runs a scalar
//! libm `erf` and builds its gradient from eight tensor ops; here the forward is the inference
//! path's vectorised kernel and the backward one fused pass, both split across threads.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused::slice;
use crate::kernels;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "ragloop-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut out = slice(storage, layout, self.name())?.to_vec();
        let arch = pulp::Arch::new();
        out.par_chunks_mut(CHUNK)
            .for_each(|c| kernels::gelu_simd(arch, c));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)?))
    }
}

/// `grad · gelu'(x)` with `gelu'(x) = Φ(x) + x·φ(x)`.
struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "ragloop-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, self.name())?;
        let g = slice(s2, l2, self.name())?;
        if x.len() != g.len() {
            return Err(candle_core::Error::Msg(
                "ragloop-gelu-grad: shape mismatch".into(),
            ));
        }
        const FRAC_1_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
        // 1/√(2π)
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(o, (x, g))| {
                for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                    let cdf = 0.5 * (1.0 + kernels::erf(x * FRAC_1_SQRT2));
                    let pdf = INV_SQRT_2PI * kernels::exp(-0.5 * x * x);
                    *o = g * (cdf + x * pdf);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// GELU of `x` (f32), differentiable.
pub(crate) fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn matches_candle_gelu_erf_and_its_gradient() {
        let data: Vec<f32> = (0..20_000)
            .map(|i| (i as f32 - 10_000.0) / 1_500.0)
            .collect();
        let x =
            Var::from_tensor(&Tensor::from_vec(data, (200, 100), &Device::Cpu).unwrap()).unwrap();
        let w = Tensor::rand(0f32, 1.0, (200, 100), &Device::Cpu).unwrap();
        let ours = gelu(x.as_tensor()).unwrap();
        let theirs = x.as_tensor().gelu_erf().unwrap();
        let diff = max_abs_diff(&ours, &theirs);
        assert!(diff < 1e-5, "forward differs by {diff}");
        let g1 = ours.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = theirs
            .mul(&w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (
            g1.get(x.as_tensor()).unwrap(),
            g2.get(x.as_tensor()).unwrap(),
        );
        let diff = max_abs_diff(a, b);
        assert!(diff < 1e-5, "gradient differs by {diff}");
    }
}
