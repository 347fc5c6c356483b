//! The x86-64 int8 kernels: AVX-512 VNNI and AVX2 micro-kernels over register tiles of
//! `MR` rows × `NB` column blocks, each computing the whole `k` sum in `i32` registers, and
//! the row quantisers. Every function here is `unsafe` only for its target features (checked
//! by the callers through [`super::Kernel::supported`]) and its raw loads, whose bounds are
//! asserted before any pointer is formed.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::{Rows, quantize_activation, row_params};

/// AVX-512 F + BW + VNNI.
pub(super) fn has_vnni512() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// AVX2.
pub(super) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}

/// Rows × column blocks of the VNNI tile: 8 × 3 × 16 columns = 24 accumulators of 32.
const VNNI_MR: usize = 8;
const VNNI_NB: usize = 3;
/// The AVX2 tile: 6 × 2 × 8 columns = 12 accumulators of 16 registers.
const AVX2_MR: usize = 6;
const AVX2_NB: usize = 2;

/// Quantises one row to `u8` (see the module docs), padding `q` with 0; returns the row's
/// scale and zero point.
pub(super) fn quantize_row_u8(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    assert!(q.len() >= x.len());
    // SAFETY: the caller chose this kernel because the CPU has AVX-512 (Kernel::supported).
    unsafe { quantize_row_u8_avx512(x, q) }
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row_u8_avx512(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let chunks = x.len() / 16;
    let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for c in 0..chunks {
        // SAFETY: c·16 + 16 ≤ x.len().
        let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(c * 16)) };
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    let tail = &x[chunks * 16..];
    let (tlo, thi) = tail
        .iter()
        .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
    let (scale, inv, zp) = row_params(
        _mm512_reduce_min_ps(lo).min(tlo),
        _mm512_reduce_max_ps(hi).max(thi),
    );
    let vinv = _mm512_set1_ps(inv);
    let (zero, top, vzp) = (
        _mm512_setzero_si512(),
        _mm512_set1_epi32(255),
        _mm512_set1_epi32(zp),
    );
    for c in 0..chunks {
        // SAFETY: as above; q is at least as long as x (asserted by the caller).
        unsafe {
            let v = _mm512_loadu_ps(x.as_ptr().add(c * 16));
            let i = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, vinv)), vzp);
            let i = _mm512_min_epi32(_mm512_max_epi32(i, zero), top);
            _mm_storeu_si128(q.as_mut_ptr().add(c * 16).cast(), _mm512_cvtepi32_epi8(i));
        }
    }
    for (q, &v) in q[chunks * 16..].iter_mut().zip(tail) {
        *q = quantize_activation(v, inv, zp) as u8;
    }
    q[x.len()..].fill(0);
    (scale, zp)
}

/// Quantises one row to `i16` values in `0..=255` (the AVX2 operand), padding `q` with 0.
pub(super) fn quantize_row_i16(x: &[f32], q: &mut [i16]) -> (f32, i32) {
    assert!(q.len() >= x.len());
    // SAFETY: the caller chose this kernel because the CPU has AVX2.
    unsafe { quantize_row_i16_avx2(x, q) }
}

#[target_feature(enable = "avx2")]
unsafe fn quantize_row_i16_avx2(x: &[f32], q: &mut [i16]) -> (f32, i32) {
    let chunks = x.len() / 8;
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for c in 0..chunks {
        // SAFETY: c·8 + 8 ≤ x.len().
        let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(c * 8)) };
        lo = _mm256_min_ps(lo, v);
        hi = _mm256_max_ps(hi, v);
    }
    let (mut lanes_lo, mut lanes_hi) = ([0.0f32; 8], [0.0f32; 8]);
    // SAFETY: each array holds 8 floats.
    unsafe {
        _mm256_storeu_ps(lanes_lo.as_mut_ptr(), lo);
        _mm256_storeu_ps(lanes_hi.as_mut_ptr(), hi);
    }
    let tail = &x[chunks * 8..];
    let (l, h) = tail
        .iter()
        .chain(&lanes_lo)
        .chain(&lanes_hi)
        .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
    let (scale, inv, zp) = row_params(l, h);
    let vinv = _mm256_set1_ps(inv);
    let (zero, top, vzp) = (
        _mm256_setzero_si256(),
        _mm256_set1_epi32(255),
        _mm256_set1_epi32(zp),
    );
    for c in 0..chunks {
        // SAFETY: as above; q is at least as long as x.
        unsafe {
            let v = _mm256_loadu_ps(x.as_ptr().add(c * 8));
            let i = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v, vinv)), vzp);
            let i = _mm256_min_epi32(_mm256_max_epi32(i, zero), top);
            // packs works per 128-bit lane: quads 0 and 2 hold the 8 values in order.
            let p = _mm256_permute4x64_epi64(_mm256_packs_epi32(i, i), 0b00_00_10_00);
            _mm_storeu_si128(q.as_mut_ptr().add(c * 8).cast(), _mm256_castsi256_si128(p));
        }
    }
    for (q, &v) in q[chunks * 8..].iter_mut().zip(tail) {
        *q = quantize_activation(v, inv, zp) as i16;
    }
    q[x.len()..].fill(0);
    (scale, zp)
}

/// Per-column operands of the epilogue, padded to whole blocks.
pub(super) struct Columns<'a> {
    /// The weights' scales.
    pub scale: &'a [f32],
    /// The weights' sums over `k` (the zero points' correction).
    pub sum: &'a [i32],
    /// The bias.
    pub bias: &'a [f32],
    /// Add to the output's values (a residual) instead of overwriting them.
    pub residual: bool,
}

/// The tiling both panel kernels share: checks every length the tiles rely on, then cuts the
/// panel into tiles of up to `max_rows` rows × `max_blocks` column blocks of `block` columns
/// and hands each to `tile(tile, out from the tile's first element, rows, blocks)`.
#[allow(clippy::too_many_arguments)]
fn for_each_tile<W, A>(
    w: &[W],
    cols: &Columns<'_>,
    a: &[A],
    rows: Rows<'_>,
    out: &mut [f32],
    (kp, n): (usize, usize),
    (block, group): (usize, usize),
    (max_rows, max_blocks): (usize, usize),
    mut tile: impl FnMut(&Tile<'_, W, A>, &mut [f32], usize, usize),
) {
    let (s, z) = (rows.scale, rows.zero_point);
    let rows = s.len().min(z.len());
    let blocks = n.div_ceil(block);
    let padded = cols.scale.len().min(cols.sum.len()).min(cols.bias.len());
    assert!(kp.is_multiple_of(group), "int8 panel: kp not whole groups");
    assert!(
        w.len() >= blocks * kp * block,
        "int8 panel: packed weights too short"
    );
    assert!(
        padded >= blocks * block,
        "int8 panel: column vectors too short"
    );
    assert!(a.len() >= rows * kp, "int8 panel: activations too short");
    assert!(out.len() >= rows * n, "int8 panel: output too short");
    let mut b = 0;
    while b < blocks {
        let nb = (blocks - b).min(max_blocks);
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(max_rows);
            let t = Tile {
                w: &w[b * kp * block..],
                a: &a[r * kp..],
                s: &s[r..],
                z: &z[r..],
                col_scale: &cols.scale[b * block..],
                col_sum: &cols.sum[b * block..],
                bias: &cols.bias[b * block..],
                residual: cols.residual,
                kp,
                cols: n - b * block,
            };
            tile(&t, &mut out[r * n + b * block..], mr, nb);
            r += mr;
        }
        b += nb;
    }
}

/// `out[r][c] = [out +] b[c] + sa·sw·(acc − zp·Σw)` over every row of the panel (`a`:
/// rows × kp `u8`, `out`: rows × n) with the VNNI tile.
pub(super) fn panel_vnni512(
    w: &[i8],
    cols: Columns<'_>,
    a: &[u8],
    rows: Rows<'_>,
    out: &mut [f32],
    kp: usize,
    n: usize,
) {
    let shape = ((kp, n), (16, 4), (VNNI_MR, VNNI_NB));
    for_each_tile(
        w,
        &cols,
        a,
        rows,
        out,
        shape.0,
        shape.1,
        shape.2,
        |t, out, mr, nb| {
            // SAFETY: the CPU has AVX-512 VNNI (the caller's kernel), and the tile's slices cover
            // mr rows × nb blocks (checked by for_each_tile; each tile asserts its own).
            unsafe {
                macro_rules! go {
                ($($m:literal)*) => {
                    match (mr, nb) {
                        $(($m, 1) => tile_vnni::<$m, 1>(t, out, n),
                          ($m, 2) => tile_vnni::<$m, 2>(t, out, n),
                          ($m, 3) => tile_vnni::<$m, 3>(t, out, n),)*
                        _ => unreachable!(),
                    }
                };
            }
                go!(1 2 3 4 5 6 7 8);
            }
        },
    );
}

/// One tile's operands, offset to its first row and block.
struct Tile<'a, W, A> {
    w: &'a [W],
    a: &'a [A],
    s: &'a [f32],
    z: &'a [i32],
    col_scale: &'a [f32],
    col_sum: &'a [i32],
    bias: &'a [f32],
    residual: bool,
    kp: usize,
    /// Output columns from the tile's first block to the row's end.
    cols: usize,
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni<const MR: usize, const NB: usize>(
    t: &Tile<'_, i8, u8>,
    out: &mut [f32],
    n: usize,
) {
    let kp = t.kp;
    assert!(t.w.len() >= NB * kp * 16 && t.a.len() >= MR * kp);
    assert!(t.s.len() >= MR && t.z.len() >= MR);
    assert!(t.col_scale.len() >= NB * 16 && t.col_sum.len() >= NB * 16);
    assert!(t.bias.len() >= NB * 16);
    assert!(out.len() >= (MR - 1) * n + t.cols.min(NB * 16));
    let mut acc = [[_mm512_setzero_si512(); NB]; MR];
    let (wp, ap) = (t.w.as_ptr(), t.a.as_ptr());
    for g in 0..kp / 4 {
        let mut b = [_mm512_setzero_si512(); NB];
        for (j, b) in b.iter_mut().enumerate() {
            // SAFETY: j·kp·16 + g·64 + 64 ≤ NB·kp·16 (asserted).
            *b = unsafe { _mm512_loadu_si512(wp.add(j * kp * 16 + g * 64).cast()) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r·kp + g·4 + 4 ≤ MR·kp (asserted).
            let quad = unsafe { std::ptr::read_unaligned(ap.add(r * kp + g * 4).cast::<i32>()) };
            let av = _mm512_set1_epi32(quad);
            for (acc, b) in acc.iter_mut().zip(&b) {
                *acc = _mm512_dpbusd_epi32(*acc, av, *b);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let (sa, zp) = (_mm512_set1_ps(t.s[r]), _mm512_set1_epi32(t.z[r]));
        for (j, acc) in acc.iter().enumerate() {
            let c0 = j * 16;
            // SAFETY: c0 + 16 ≤ NB·16 ≤ the padded column vectors (asserted).
            let (sum, sw, bias) = unsafe {
                (
                    _mm512_loadu_si512(t.col_sum.as_ptr().add(c0).cast()),
                    _mm512_loadu_ps(t.col_scale.as_ptr().add(c0)),
                    _mm512_loadu_ps(t.bias.as_ptr().add(c0)),
                )
            };
            let dot = _mm512_sub_epi32(*acc, _mm512_mullo_epi32(zp, sum));
            let v = _mm512_cvtepi32_ps(dot);
            let v = _mm512_mul_ps(_mm512_mul_ps(v, sa), sw);
            let valid = t.cols.saturating_sub(c0).min(16);
            let mask: __mmask16 = if valid == 16 {
                u16::MAX
            } else {
                (1u16 << valid) - 1
            };
            // SAFETY: the masked lanes are the row's remaining columns, inside `out`.
            unsafe {
                let p = out.as_mut_ptr().add(r * n + c0);
                let base = if t.residual {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mask, p), bias)
                } else {
                    bias
                };
                _mm512_mask_storeu_ps(p, mask, _mm512_add_ps(base, v));
            }
        }
    }
}

/// The AVX2 counterpart of [`panel_vnni512`] (`a`: rows × kp `i16`, weights `i16` pairs).
pub(super) fn panel_avx2(
    w: &[i16],
    cols: Columns<'_>,
    a: &[i16],
    rows: Rows<'_>,
    out: &mut [f32],
    kp: usize,
    n: usize,
) {
    let shape = ((kp, n), (8, 2), (AVX2_MR, AVX2_NB));
    for_each_tile(
        w,
        &cols,
        a,
        rows,
        out,
        shape.0,
        shape.1,
        shape.2,
        |t, out, mr, nb| {
            // SAFETY: the CPU has AVX2 (the caller's kernel); shapes checked as above.
            unsafe {
                macro_rules! go {
                ($($m:literal)*) => {
                    match (mr, nb) {
                        $(($m, 1) => tile_avx2::<$m, 1>(t, out, n),
                          ($m, 2) => tile_avx2::<$m, 2>(t, out, n),)*
                        _ => unreachable!(),
                    }
                };
            }
                go!(1 2 3 4 5 6);
            }
        },
    );
}

#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const MR: usize, const NB: usize>(
    t: &Tile<'_, i16, i16>,
    out: &mut [f32],
    n: usize,
) {
    let kp = t.kp;
    assert!(t.w.len() >= NB * kp * 8 && t.a.len() >= MR * kp);
    assert!(t.s.len() >= MR && t.z.len() >= MR);
    assert!(t.col_scale.len() >= NB * 8 && t.col_sum.len() >= NB * 8 && t.bias.len() >= NB * 8);
    assert!(out.len() >= (MR - 1) * n + t.cols.min(NB * 8));
    let mut acc = [[_mm256_setzero_si256(); NB]; MR];
    let (wp, ap) = (t.w.as_ptr(), t.a.as_ptr());
    for g in 0..kp / 2 {
        let mut b = [_mm256_setzero_si256(); NB];
        for (j, b) in b.iter_mut().enumerate() {
            // SAFETY: j·kp·8 + g·16 + 16 ≤ NB·kp·8 (asserted).
            *b = unsafe { _mm256_loadu_si256(wp.add(j * kp * 8 + g * 16).cast()) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r·kp + g·2 + 2 ≤ MR·kp (asserted).
            let pair = unsafe { std::ptr::read_unaligned(ap.add(r * kp + g * 2).cast::<i32>()) };
            let av = _mm256_set1_epi32(pair);
            for (acc, b) in acc.iter_mut().zip(&b) {
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(av, *b));
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let (sa, zp) = (_mm256_set1_ps(t.s[r]), _mm256_set1_epi32(t.z[r]));
        for (j, acc) in acc.iter().enumerate() {
            let c0 = j * 8;
            // SAFETY: c0 + 8 ≤ NB·8 ≤ the padded column vectors (asserted).
            let (sum, sw, bias) = unsafe {
                (
                    _mm256_loadu_si256(t.col_sum.as_ptr().add(c0).cast()),
                    _mm256_loadu_ps(t.col_scale.as_ptr().add(c0)),
                    _mm256_loadu_ps(t.bias.as_ptr().add(c0)),
                )
            };
            let dot = _mm256_sub_epi32(*acc, _mm256_mullo_epi32(zp, sum));
            let v = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), sa), sw);
            let valid = t.cols.saturating_sub(c0).min(8);
            let row = &mut out[r * n + c0..][..valid];
            if valid == 8 {
                // SAFETY: `row` holds 8 floats.
                unsafe {
                    let base = if t.residual {
                        _mm256_add_ps(_mm256_loadu_ps(row.as_ptr()), bias)
                    } else {
                        bias
                    };
                    _mm256_storeu_ps(row.as_mut_ptr(), _mm256_add_ps(base, v));
                }
            } else {
                let mut lanes = [0.0f32; 8];
                // SAFETY: `lanes` holds 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
                for ((o, l), b) in row.iter_mut().zip(lanes).zip(&t.bias[c0..]) {
                    let base = if t.residual { *o + b } else { *b };
                    *o = base + l;
                }
            }
        }
    }
}
