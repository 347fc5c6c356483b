//! Multi-head self-attention per sequence and head; the backward recomputes the
//! probabilities per head instead of keeping them.

use super::*;

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
