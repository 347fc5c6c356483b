//! The numeric kernels of the encoder: one bounds-checked matrix multiply over the `gemm`
//! crate (runtime-dispatched AVX2/AVX-512/NEON micro-kernels, the ones candle uses), and the
//! row-wise operations fused around it (bias, residual, GELU, softmax, layer norm).
//!
//! The element-wise functions are written as plain loops over slices without branches so the
//! compiler vectorises them; `exp` and `erf` are polynomial approximations accurate to a few
//! ULP, far below what changes an embedding (the fixture test checks cosine ≥ 0.9999 against
//! sentence-transformers).

/// A read-only strided view of a row-major or transposed matrix inside a slice.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    /// Distance between rows, in elements.
    pub rs: usize,
    /// Distance between columns, in elements.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            offset: 0,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The largest index this view touches, checked against the slice.
    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = self.offset + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// A mutable strided view (see [`MatRef`]).
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatMut<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            offset: 0,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
}

/// How many threads one multiply may use.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Par {
    /// The calling thread only (the caller parallelises around it).
    Single,
    /// Up to this many threads of the current rayon pool.
    Threads(usize),
}

/// `dst = lhs × rhs`, or `dst += lhs × rhs` when `accumulate`.
///
/// # Panics
/// When the shapes disagree or a view reaches outside its slice.
#[allow(unsafe_code)]
pub(crate) fn matmul(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
    par: Par,
) {
    assert_eq!(dst.rows, lhs.rows, "matmul: dst rows vs lhs rows");
    assert_eq!(dst.cols, rhs.cols, "matmul: dst cols vs rhs cols");
    assert_eq!(lhs.cols, rhs.rows, "matmul: inner dimensions");
    lhs.check();
    rhs.check();
    if dst.rows > 0 && dst.cols > 0 {
        let last = dst.offset + (dst.rows - 1) * dst.rs + (dst.cols - 1) * dst.cs;
        assert!(last < dst.data.len(), "matmul: dst view out of bounds");
    } else {
        return;
    }
    if lhs.cols == 0 {
        if !accumulate {
            for r in 0..dst.rows {
                for c in 0..dst.cols {
                    dst.data[dst.offset + r * dst.rs + c * dst.cs] = 0.0;
                }
            }
        }
        return;
    }
    let parallelism = match par {
        Par::Single => gemm::Parallelism::None,
        Par::Threads(n) if n <= 1 => gemm::Parallelism::None,
        Par::Threads(n) => gemm::Parallelism::Rayon(n),
    };
    // SAFETY: every element the three views address lies inside its slice (checked above, all
    // strides are non-negative), `dst` is borrowed mutably so it cannot alias `lhs` or `rhs`,
    // and `gemm` reads/writes only the addressed elements.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr().add(dst.offset),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `e^x` for `x` in `[-86, 88]` (clamped outside), relative error below 2e-7.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-86.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Cephes' expf polynomial on [-ln2/2, ln2/2].
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // The low bits of `shifted` hold n as an integer: scale y by 2^n through its exponent.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    f32::from_bits(y.to_bits().wrapping_add(n_bits << 23))
}

/// The error function, absolute error below 1.5e-7 (Abramowitz & Stegun 7.1.26).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// GELU (the exact, erf-based form BERT uses), in place.
#[inline(always)]
pub(crate) fn gelu(xs: &mut [f32]) {
    const FRAC_1_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf(*x * FRAC_1_SQRT2));
    }
}

/// Sum of `xs` in 16 independent lanes, so the compiler vectorises it (a single running
/// sum is a dependency chain it must keep in order).
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Softmax of one row scaled by `scale` (`softmax(scale · row)`), in place.
#[inline(always)]
pub(crate) fn softmax(row: &mut [f32], scale: f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in row.iter_mut() {
        *x = exp((*x - max) * scale);
    }
    let inv = 1.0 / sum(row);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// Layer norm of one row, in place: `(x - mean) / sqrt(var + eps) * gamma + beta`.
#[inline(always)]
pub(crate) fn layer_norm(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    for x in row.iter_mut() {
        *x -= mean;
    }
    let mut acc = [0.0f32; 16];
    let chunks = row.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().map(|x| x * x).sum();
    for chunk in chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a += x * x;
        }
    }
    let var = (acc.iter().sum::<f32>() + rest) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *x = *x * inv * g + b;
    }
}

/// Runs `op` compiled for the best instruction set the CPU has (AVX-512, AVX2+FMA or the
/// baseline), so the loops above vectorise as widely as the machine allows. The op is a type
/// implementing `WithSimd` (not a closure) so that it is inlined into the dispatched function.
macro_rules! simd_op {
    ($name:ident { $($field:ident: $ty:ty),* } => |$this:ident| $body:block) => {
        struct $name<'a> { $($field: $ty,)* _p: std::marker::PhantomData<&'a ()> }
        impl pulp::WithSimd for $name<'_> {
            type Output = ();
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, _simd: S) {
                let $this = self;
                $body
            }
        }
    };
}

simd_op!(GeluOp { xs: &'a mut [f32] } => |op| { gelu(op.xs) });
simd_op!(SoftmaxOp { rows: &'a mut [f32], len: usize, scale: f32 } => |op| {
    for row in op.rows.chunks_exact_mut(op.len) {
        softmax(row, op.scale);
    }
});
simd_op!(NormOp { rows: &'a mut [f32], gamma: &'a [f32], beta: &'a [f32], eps: f32 } => |op| {
    for row in op.rows.chunks_exact_mut(op.gamma.len()) {
        layer_norm(row, op.gamma, op.beta, op.eps);
    }
});

/// [`gelu`] over `xs`, vectorised for this CPU.
pub(crate) fn gelu_simd(arch: pulp::Arch, xs: &mut [f32]) {
    arch.dispatch(GeluOp {
        xs,
        _p: std::marker::PhantomData,
    });
}

/// [`softmax`] of every `len`-long row of `rows`, vectorised for this CPU.
pub(crate) fn softmax_rows(arch: pulp::Arch, rows: &mut [f32], len: usize, scale: f32) {
    arch.dispatch(SoftmaxOp {
        rows,
        len,
        scale,
        _p: std::marker::PhantomData,
    });
}

/// [`layer_norm`] of every row of `rows` (rows as long as `gamma`), vectorised for this CPU.
pub(crate) fn layer_norm_rows(
    arch: pulp::Arch,
    rows: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    arch.dispatch(NormOp {
        rows,
        gamma,
        beta,
        eps,
        _p: std::marker::PhantomData,
    });
}

/// Writes `bias` into every row of `rows` (`rows.len()` a multiple of `bias.len()`).
pub(crate) fn fill_rows(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}

/// Adds `bias` to every row of `rows`.
pub(crate) fn add_rows(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f32;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert!((0.0..1e-37).contains(&exp(-1000.0)));
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn erf_matches_reference_values() {
        // erf values from the standard tables.
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.5, -0.966_105_1),
            (6.0, 1.0),
        ] {
            assert!(
                (erf(x) - want).abs() < 3e-7,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let mut row = vec![1.0, 2.0, 3.0, -50.0];
        softmax(&mut row, 1.0);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[2] > row[1] && row[1] > row[0] && row[3] < 1e-20);
    }

    #[test]
    fn layer_norm_zero_mean_unit_var() {
        let mut row = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm(&mut row, &[1.0; 4], &[0.0; 4], 1e-12);
        let mean = row.iter().sum::<f32>() / 4.0;
        let var = row.iter().map(|x| x * x).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
    }

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matmul_plain_transposed_and_accumulating() {
        let (m, k, n) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![1.0; m * n];
        matmul(
            MatMut::rows(&mut c, m, n),
            MatRef::rows(&a, m, k),
            MatRef::rows(&b, k, n),
            false,
            Par::Single,
        );
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // rhs given as its transpose (n × k row-major) read with swapped strides.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let rhs = MatRef {
            data: &bt,
            offset: 0,
            rows: k,
            cols: n,
            rs: 1,
            cs: k,
        };
        let mut c2 = vec![1.0; m * n];
        matmul(
            MatMut::rows(&mut c2, m, n),
            MatRef::rows(&a, m, k),
            rhs,
            true,
            Par::Threads(2),
        );
        for (x, y) in c2.iter().zip(&want) {
            assert!((x - (y + 1.0)).abs() < 1e-5);
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn matmul_rejects_views_outside_the_slice() {
        let a = vec![0.0; 6];
        let mut c = vec![0.0; 4];
        let lhs = MatRef {
            data: &a,
            offset: 1,
            rows: 2,
            cols: 3,
            rs: 3,
            cs: 1,
        };
        matmul(
            MatMut::rows(&mut c, 2, 2),
            lhs,
            MatRef::rows(&a, 3, 2),
            false,
            Par::Single,
        );
    }
}
