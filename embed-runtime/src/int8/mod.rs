//! The int8 path of the encoder's linear layers: per-output-channel symmetric `s8` weights
//! (`w ≈ sw·qw`), per-row (per-token) asymmetric `u8` activations quantised on the fly
//! (`x ≈ sa·(qa − zp)`, the row's range mapped onto 0..=255 with zero exact), exact `i32`
//! accumulation, and one epilogue: `out = [out +] b + sa·sw·(Σ qa·qw − zp·Σ qw)`, GELU after
//! it when asked.
//!
//! Why asymmetric activations: a token's range is rarely symmetric (GELU's output is never
//! below −0.17; a layer norm's outlier channels lean one way), and spending the 256 levels on
//! `[min, max]` instead of `[−max|x|, max|x|]` halved the product's error on the
//! feed-forward's second layer and cut it by 15–25 % on the others (all-MiniLM-L6-v2).
//!
//! Kernels, chosen once per model at load ([`Kernel::detect`]):
//! - [`Kernel::Vnni512`] (AVX-512 VNNI, `vpdpbusd`: `u8 × s8` quads into `i32`), weights in
//!   quads of `k`, 16 columns per vector.
//! - [`Kernel::Avx2`] (AVX2 without VNNI, `vpmaddwd`): both operands widened to `i16` pairs.
//!   `vpmaddubsw` would do twice the products per instruction but saturates its `i16` pair
//!   sums for `u8 × s8` (255·127·2 > 32767), the trap ONNX Runtime's `reduce_range` works
//!   around by dropping a bit of weight precision; `vpmaddwd` is exact.
//! - [`Kernel::Scalar`]: plain loops, for other CPUs and as the tests' reference. It is slower
//!   than the f32 path (which has `gemm`'s NEON kernels on ARM): on a CPU without AVX2, keep
//!   f32.
//!
//! Every kernel computes the same integer dot products, and the epilogue is the same
//! expression in the same order, so all three give bit-identical outputs (tested).
//! `RAGLOOP_INT8_KERNEL=vnni512|avx2|scalar` forces one (refused when the CPU lacks it).

use rag_core::{Error, Result};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod x86;

/// How an encoder's linear layers compute (`"none"` or `"int8"` in config files).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// f32 weights and activations (the model as trained).
    #[default]
    None,
    /// int8 weights (per output channel) and activations (per token), i32 accumulation.
    Int8,
}

impl Quantization {
    /// The name used in config files and on the command line (`none`, `int8`).
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::None => "none",
            Quantization::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Quantization {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" | "f32" => Ok(Quantization::None),
            "int8" | "i8" => Ok(Quantization::Int8),
            other => Err(Error::invalid(format!(
                "quantize {other:?}: expected \"none\" or \"int8\""
            ))),
        }
    }
}

/// The int8 kernel a model runs (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 VNNI (`vpdpbusd`), 16 columns per vector.
    Vnni512,
    /// AVX2 (`vpmaddwd` on `i16` pairs), 8 columns per vector.
    Avx2,
    /// Portable loops.
    Scalar,
}

impl Kernel {
    /// The fastest kernel this CPU runs, or the one `RAGLOOP_INT8_KERNEL` names.
    pub fn detect() -> Result<Self> {
        match std::env::var("RAGLOOP_INT8_KERNEL") {
            Ok(name) if !name.trim().is_empty() => {
                let kernel = match name.trim() {
                    "vnni512" => Kernel::Vnni512,
                    "avx2" => Kernel::Avx2,
                    "scalar" => Kernel::Scalar,
                    other => {
                        return Err(Error::invalid(format!(
                            "RAGLOOP_INT8_KERNEL={other:?}: expected vnni512, avx2 or scalar"
                        )));
                    }
                };
                if kernel.supported() {
                    Ok(kernel)
                } else {
                    Err(Error::invalid(format!(
                        "RAGLOOP_INT8_KERNEL={name}: this CPU lacks the instructions"
                    )))
                }
            }
            _ => Ok(Self::best()),
        }
    }

    /// The fastest kernel this CPU runs.
    pub fn best() -> Self {
        [Kernel::Vnni512, Kernel::Avx2]
            .into_iter()
            .find(|k| k.supported())
            .unwrap_or(Kernel::Scalar)
    }

    /// Whether this CPU has the kernel's instructions.
    pub fn supported(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni512 => x86::has_vnni512(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::has_avx2(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Columns per packed block.
    fn block(self) -> usize {
        match self {
            Kernel::Vnni512 | Kernel::Scalar => 16,
            Kernel::Avx2 => 8,
        }
    }

    /// `k` elements per packed group (quads for VNNI and scalar, pairs for AVX2).
    fn group(self) -> usize {
        match self {
            Kernel::Vnni512 | Kernel::Scalar => 4,
            Kernel::Avx2 => 2,
        }
    }
}

/// Packed int8 weights: `blocks` column blocks of `block` columns, each `kp × block`
/// elements, groups of `group` consecutive `k` per column side by side.
enum Packed {
    /// `s8`, for [`Kernel::Vnni512`] and [`Kernel::Scalar`].
    Quads(Vec<i8>),
    /// `i16`, for [`Kernel::Avx2`].
    Pairs(Vec<i16>),
}

/// What the epilogue does with each output besides adding the product.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue {
    /// `out = out + b + x·Wᵀ` (a residual connection) instead of `out = b + x·Wᵀ`.
    pub residual: bool,
    /// GELU over each panel's rows once computed (while they are in cache).
    pub gelu: bool,
}

impl Epilogue {
    /// `out = b + x·Wᵀ`.
    pub const PLAIN: Self = Self {
        residual: false,
        gelu: false,
    };
    /// `out = out + b + x·Wᵀ`.
    pub const RESIDUAL: Self = Self {
        residual: true,
        gelu: false,
    };
    /// `out = GELU(b + x·Wᵀ)`.
    pub const GELU: Self = Self {
        residual: false,
        gelu: true,
    };
}

/// A linear layer in int8: `out = b + x·Wᵀ` (or `out + b + x·Wᵀ`) with `W` quantised per
/// output channel.
pub(crate) struct Int8Dense {
    kernel: Kernel,
    packed: Packed,
    /// The bias, padded with zeros to whole blocks.
    bias: Vec<f32>,
    /// Per output column: `max|w| / 127`, padded with zeros to whole blocks.
    col_scale: Vec<f32>,
    /// Per output column: `Σ_k qw` (the zero points' correction), padded with zeros.
    col_sum: Vec<i32>,
    inputs: usize,
    /// `inputs` rounded up to a whole group.
    kp: usize,
    outputs: usize,
}

impl std::fmt::Debug for Int8Dense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Int8Dense")
            .field("kernel", &self.kernel)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

/// Activation buffers reused across calls (they only grow).
#[derive(Default)]
pub(crate) struct Int8Workspace {
    u8s: Vec<u8>,
    i16s: Vec<i16>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

impl Int8Workspace {
    /// Bytes held.
    pub fn capacity_bytes(&self) -> usize {
        self.u8s.capacity()
            + 2 * self.i16s.capacity()
            + 4 * (self.scales.capacity() + self.zero_points.capacity())
    }
}

/// Rows of one parallel task (a multiple of every micro-kernel's row count).
const PANEL_ROWS: usize = 96;

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// A weight: `round(w · inv)` clamped to ±127, ties to even (what `cvtps2dq` does).
#[inline(always)]
fn quantize_weight(w: f32, inv: f32) -> i32 {
    ((w * inv).round_ties_even() as i32).clamp(-127, 127)
}

/// An activation: `round(x · inv) + zp` clamped to `0..=255`.
#[inline(always)]
fn quantize_activation(x: f32, inv: f32, zp: i32) -> i32 {
    ((x * inv).round_ties_even() as i32)
        .saturating_add(zp)
        .clamp(0, 255)
}

/// A weight column's symmetric scale: `(max|w| / 127, 127 / max|w|)`, both 0 when the values
/// are all 0 (or not finite, so a broken input gives zeros, never undefined casts).
fn weight_scales(max_abs: f32) -> (f32, f32) {
    if max_abs > 0.0 && max_abs.is_finite() {
        (max_abs / 127.0, 127.0 / max_abs)
    } else {
        (0.0, 0.0)
    }
}

/// A row's asymmetric parameters from its minimum and maximum: `(scale, 1 / scale, zp)` over
/// `[min(lo, 0), max(hi, 0)]` (zero is exact), all 0 for a row of zeros or a broken one.
#[inline(always)]
fn row_params(lo: f32, hi: f32) -> (f32, f32, i32) {
    let range = hi.max(0.0) - lo.min(0.0);
    if range > 0.0 && range.is_finite() {
        let inv = 255.0 / range;
        let zp = ((-lo.min(0.0) * inv).round_ties_even() as i32).clamp(0, 255);
        (range / 255.0, inv, zp)
    } else {
        (0.0, 0.0, 0)
    }
}

impl Int8Dense {
    /// Quantises `w_t` (`inputs × outputs`, row-major: the transposed weight) for `kernel`;
    /// `bias` has `outputs` values.
    pub fn new(
        w_t: &[f32],
        bias: &[f32],
        inputs: usize,
        outputs: usize,
        kernel: Kernel,
    ) -> Result<Self> {
        if w_t.len() != inputs * outputs || inputs == 0 || outputs == 0 || bias.len() != outputs {
            return Err(Error::invalid(format!(
                "int8 weight of {} values and bias of {} is not {inputs} × {outputs}",
                w_t.len(),
                bias.len()
            )));
        }
        if !kernel.supported() {
            return Err(Error::invalid(format!(
                "int8 kernel {kernel:?} is not supported on this CPU"
            )));
        }
        let (block, group) = (kernel.block(), kernel.group());
        let kp = round_up(inputs, group);
        let np = round_up(outputs, block);
        let mut col_scale = vec![0.0f32; np];
        let mut col_sum = vec![0i32; np];
        let mut q = vec![0i8; kp * np];
        for o in 0..outputs {
            let max = (0..inputs)
                .map(|i| w_t[i * outputs + o].abs())
                .fold(0.0, f32::max);
            let (scale, inv) = weight_scales(max);
            col_scale[o] = scale;
            let mut sum = 0i32;
            for i in 0..inputs {
                let v = quantize_weight(w_t[i * outputs + o], inv);
                sum += v;
                // Block-major: block b = o / block holds kp/group groups of `block` columns.
                let (b, c) = (o / block, o % block);
                let (g, t) = (i / group, i % group);
                q[b * kp * block + g * block * group + c * group + t] = v as i8;
            }
            col_sum[o] = sum;
        }
        let packed = match kernel {
            Kernel::Avx2 => Packed::Pairs(q.iter().map(|&v| i16::from(v)).collect()),
            Kernel::Vnni512 | Kernel::Scalar => Packed::Quads(q),
        };
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(np, 0.0);
        Ok(Self {
            kernel,
            packed,
            bias: padded_bias,
            col_scale,
            col_sum,
            inputs,
            kp,
            outputs,
        })
    }

    /// `out = b + input·Wᵀ` (or `out + b + …`, then GELU, as `epilogue` says) for `tokens`
    /// rows (`input`: `tokens × inputs`, `out`: `tokens × outputs`, both row-major), with up
    /// to `threads` threads of the current rayon pool.
    ///
    /// # Panics
    /// When the slices are shorter than the shapes say.
    pub fn matmul_add(
        &self,
        input: &[f32],
        out: &mut [f32],
        tokens: usize,
        threads: usize,
        ws: &mut Int8Workspace,
        epilogue: Epilogue,
    ) {
        let (k, n, kp) = (self.inputs, self.outputs, self.kp);
        let arch = pulp::Arch::new();
        assert!(input.len() >= tokens * k, "int8 matmul: input too short");
        assert!(out.len() >= tokens * n, "int8 matmul: output too short");
        if tokens == 0 {
            return;
        }
        let input = &input[..tokens * k];
        let out = &mut out[..tokens * n];
        ws.scales.resize(tokens, 0.0);
        ws.zero_points.resize(tokens, 0);
        let scales = &mut ws.scales[..tokens];
        let zero_points = &mut ws.zero_points[..tokens];
        let parallel = threads > 1 && tokens > PANEL_ROWS;
        // Quantise the rows, then multiply panel by panel: each panel's rows are quantised
        // and consumed by the same task.
        macro_rules! run {
            ($buf:expr, $zero:expr, $quant:expr, $panel:expr) => {{
                $buf.resize(tokens * kp, $zero);
                let a = &mut $buf[..tokens * kp];
                type Task<'t, A> = (
                    ((&'t mut [A], &'t mut [f32]), &'t mut [i32]),
                    (&'t [f32], &'t mut [f32]),
                );
                let work = |(((a, s), z), (x, o)): Task<'_, _>| {
                    let rows = a.chunks_exact_mut(kp).zip(s.iter_mut()).zip(z.iter_mut());
                    for (((a, s), z), x) in rows.zip(x.chunks_exact(k)) {
                        (*s, *z) = $quant(x, a);
                    }
                    $panel(
                        &*a,
                        Rows {
                            scale: &*s,
                            zero_point: &*z,
                        },
                        &mut *o,
                    );
                    if epilogue.gelu {
                        crate::kernels::gelu_simd(arch, o);
                    }
                };
                if parallel {
                    a.par_chunks_mut(PANEL_ROWS * kp)
                        .zip(scales.par_chunks_mut(PANEL_ROWS))
                        .zip(zero_points.par_chunks_mut(PANEL_ROWS))
                        .zip(
                            input
                                .par_chunks(PANEL_ROWS * k)
                                .zip(out.par_chunks_mut(PANEL_ROWS * n)),
                        )
                        .for_each(work);
                } else {
                    a.chunks_mut(PANEL_ROWS * kp)
                        .zip(scales.chunks_mut(PANEL_ROWS))
                        .zip(zero_points.chunks_mut(PANEL_ROWS))
                        .zip(
                            input
                                .chunks(PANEL_ROWS * k)
                                .zip(out.chunks_mut(PANEL_ROWS * n)),
                        )
                        .for_each(work);
                }
            }};
        }
        match (&self.packed, self.kernel) {
            (Packed::Quads(w), Kernel::Scalar) => run!(
                ws.u8s,
                0u8,
                |x: &[f32], a: &mut [u8]| quantize_row(x, a),
                |a: &[u8], r: Rows<'_>, o: &mut [f32]| self.panel_scalar(
                    w,
                    a,
                    r,
                    o,
                    epilogue.residual
                )
            ),
            #[cfg(target_arch = "x86_64")]
            (Packed::Quads(w), Kernel::Vnni512) => run!(
                ws.u8s,
                0u8,
                |x: &[f32], a: &mut [u8]| x86::quantize_row_u8(x, a),
                |a: &[u8], r: Rows<'_>, o: &mut [f32]| x86::panel_vnni512(
                    w,
                    self.columns(epilogue),
                    a,
                    r,
                    o,
                    kp,
                    n
                )
            ),
            #[cfg(target_arch = "x86_64")]
            (Packed::Pairs(w), Kernel::Avx2) => run!(
                ws.i16s,
                0i16,
                |x: &[f32], a: &mut [i16]| x86::quantize_row_i16(x, a),
                |a: &[i16], r: Rows<'_>, o: &mut [f32]| x86::panel_avx2(
                    w,
                    self.columns(epilogue),
                    a,
                    r,
                    o,
                    kp,
                    n
                )
            ),
            _ => unreachable!("int8 weights packed for another kernel"),
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn columns(&self, epilogue: Epilogue) -> x86::Columns<'_> {
        x86::Columns {
            scale: &self.col_scale,
            sum: &self.col_sum,
            bias: &self.bias,
            residual: epilogue.residual,
        }
    }

    /// The reference kernel over quads (the epilogue of the module docs).
    fn panel_scalar(&self, w: &[i8], a: &[u8], rows: Rows<'_>, out: &mut [f32], residual: bool) {
        let (kp, n) = (self.kp, self.outputs);
        let block = Kernel::Scalar.block();
        let params = rows.scale.iter().zip(rows.zero_point);
        for ((a, (&sa, &zp)), o) in a.chunks_exact(kp).zip(params).zip(out.chunks_exact_mut(n)) {
            for (c, o) in o.iter_mut().enumerate() {
                let (b, cc) = (c / block, c % block);
                let base = b * kp * block;
                let mut dot = 0i32;
                for (g, quad) in a.chunks_exact(4).enumerate() {
                    let wq = &w[base + g * block * 4 + cc * 4..][..4];
                    for (x, y) in quad.iter().zip(wq) {
                        dot += i32::from(*x) * i32::from(*y);
                    }
                }
                let base = if residual {
                    *o + self.bias[c]
                } else {
                    self.bias[c]
                };
                *o = base + dequantize(dot, zp, self.col_sum[c], sa, self.col_scale[c]);
            }
        }
    }
}

/// The quantised rows' parameters.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    /// Each row's scale.
    pub scale: &'a [f32],
    /// Each row's zero point.
    pub zero_point: &'a [i32],
}

/// The one epilogue expression every kernel computes (same operations, same order).
#[inline(always)]
fn dequantize(dot: i32, zp: i32, col_sum: i32, row_scale: f32, col_scale: f32) -> f32 {
    ((dot - zp * col_sum) as f32 * row_scale) * col_scale
}

/// Quantises one row into `q` (`q.len()` ≥ `x.len()`, the rest zero); returns its scale and
/// zero point.
fn quantize_row(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let (lo, hi) = x
        .iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let (scale, inv, zp) = row_params(lo, hi);
    for (q, &v) in q.iter_mut().zip(x) {
        *q = quantize_activation(v, inv, zp) as u8;
    }
    q[x.len()..].fill(0);
    (scale, zp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n).map(|_| lcg(&mut s)).collect()
    }

    fn f32_matmul(x: &[f32], w_t: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for r in 0..m {
            for i in 0..k {
                for c in 0..n {
                    out[r * n + c] += x[r * k + i] * w_t[i * n + c];
                }
            }
        }
        out
    }

    fn kernels() -> Vec<Kernel> {
        [Kernel::Scalar, Kernel::Avx2, Kernel::Vnni512]
            .into_iter()
            .filter(|k| k.supported())
            .collect()
    }

    #[test]
    fn every_kernel_gives_the_same_bits_and_stays_near_f32() {
        // Shapes that are not multiples of any block, group or panel, and one that is.
        for &(m, k, n) in &[(1, 3, 5), (7, 33, 17), (131, 70, 50), (200, 384, 96)] {
            let x = random(m * k, 1 + m as u64);
            let w = random(k * n, 2 + n as u64);
            let reference = f32_matmul(&x, &w, m, k, n);
            let mut first: Option<Vec<f32>> = None;
            for kernel in kernels() {
                for threads in [1, 2] {
                    let bias = vec![0.25f32; n];
                    let dense = Int8Dense::new(&w, &bias, k, n, kernel).unwrap();
                    let mut out = vec![0.25f32; m * n];
                    let mut ws = Int8Workspace::default();
                    dense.matmul_add(&x, &mut out, m, threads, &mut ws, Epilogue::RESIDUAL);
                    // Run twice on the same workspace: reuse must not leak state.
                    let mut again = vec![0.25f32; m * n];
                    dense.matmul_add(&x, &mut again, m, threads, &mut ws, Epilogue::RESIDUAL);
                    assert_eq!(out, again, "{kernel:?} reused workspace");
                    // Without the residual the output's old values do not count.
                    let mut fresh = vec![f32::NAN; m * n];
                    dense.matmul_add(&x, &mut fresh, m, threads, &mut ws, Epilogue::PLAIN);
                    for (f, o) in fresh.iter().zip(&out) {
                        assert!((f + 0.25 - o).abs() < 1e-5, "{f} vs {o}");
                    }
                    match &first {
                        None => first = Some(out.clone()),
                        Some(f) => {
                            assert_eq!(f, &out, "{kernel:?}, {threads} threads, {m}×{k}×{n}")
                        }
                    }
                    // int8 error: relative to the output's scale.
                    let scale = reference.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                    for (o, r) in out.iter().zip(&reference) {
                        assert!((o - 0.5 - r).abs() <= 0.03 * scale + 1e-4, "{o} vs {r}");
                    }
                    // GELU fused after the panel equals GELU applied afterwards.
                    let mut fused = vec![0.25f32; m * n];
                    let gelu = Epilogue {
                        residual: true,
                        gelu: true,
                    };
                    dense.matmul_add(&x, &mut fused, m, threads, &mut ws, gelu);
                    let mut after = out.clone();
                    crate::kernels::gelu(&mut after);
                    for (f, a) in fused.iter().zip(&after) {
                        assert!((f - a).abs() < 1e-6, "{f} vs {a}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_of_zeros_and_a_column_of_zeros_give_zeros() {
        let (m, k, n) = (3, 8, 4);
        let mut x = random(m * k, 9);
        x[k..2 * k].fill(0.0);
        let mut w = random(k * n, 10);
        for i in 0..k {
            w[i * n + 2] = 0.0;
        }
        for kernel in kernels() {
            let dense = Int8Dense::new(&w, &vec![0.0; n], k, n, kernel).unwrap();
            let mut out = vec![0.0f32; m * n];
            dense.matmul_add(
                &x,
                &mut out,
                m,
                1,
                &mut Int8Workspace::default(),
                Epilogue::PLAIN,
            );
            assert!(out[n..2 * n].iter().all(|&v| v == 0.0), "{kernel:?}");
            assert!((0..m).all(|r| out[r * n + 2] == 0.0), "{kernel:?}");
        }
    }

    #[test]
    fn bad_shapes_and_names_are_refused() {
        assert!(Int8Dense::new(&[0.0; 5], &[0.0; 3], 2, 3, Kernel::Scalar).is_err());
        assert!(Int8Dense::new(&[0.0; 6], &[0.0; 2], 2, 3, Kernel::Scalar).is_err());
        assert!("fp4".parse::<Quantization>().is_err());
        assert_eq!("INT8".parse::<Quantization>().unwrap(), Quantization::Int8);
        assert_eq!("none".parse::<Quantization>().unwrap(), Quantization::None);
    }
}
