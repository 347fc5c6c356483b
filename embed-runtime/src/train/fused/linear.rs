//! `x·Wᵀ + b` and its backward pass in one op each.

use super::*;

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
