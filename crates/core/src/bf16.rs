//! Matrix products with bf16 inputs and f32 accumulation.
//!
//! \\(C \mathrel{(+)}= \mathrm{bf16}(A)\\,\mathrm{bf16}(B)\\): every entry of `lhs: [m, k]` and
//! `rhs: [k, n]` is rounded to bfloat16 (8 bits of mantissa, the exponent range of `f32`;
//! round to nearest even, subnormals flushed to zero, NaN kept NaN), and the products are
//! summed in `f32`. On CPUs with AVX-512 BF16 (`vdpbf16ps`: Zen 4 and later, Sapphire Rapids)
//! [`gemm_f32`] runs a hand-written kernel that does twice the multiply-adds per instruction of
//! an `f32` product; elsewhere it rounds the inputs and calls faer's `f32` product, which is
//! also the reference the kernel is tested against ([`gemm_portable`]).
//!
//! # Accuracy
//! Rounding an input to bf16 (8 significant bits) changes it by at most \\(2^{-8}\\) of its
//! magnitude, so each entry of the result is within \\(2 \cdot 2^{-8} \sum_l |a_{il}|\\,|b_{lj}|\\)
//! (plus `f32` summation error) of the exact product of the unrounded inputs: 0.8 % of the sum
//! of magnitudes at worst. The rounding errors of independent inputs mostly cancel: on
//! Gaussian inputs with \\(k = 256\\) the relative Frobenius error of the product is about
//! \\(2 \cdot 10^{-3}\\) (the tests check below \\(4 \cdot 10^{-3}\\)), and the worst entry is
//! within a quarter of the bound. Which path runs depends
//! on the CPU, and the two sum in different orders, so their results differ within `f32`
//! rounding; neither depends on the number of threads (both are sequential).
//!
//! ```
//! use polysketch_core::{bf16, faer::Mat};
//!
//! let a = Mat::<f32>::from_fn(3, 5, |i, j| (i + 2 * j) as f32 / 7.0);
//! let b = Mat::<f32>::from_fn(5, 4, |i, j| 1.0 - (i * j) as f32 / 9.0);
//! let mut c = Mat::<f32>::zeros(3, 4);
//! bf16::gemm_f32(c.as_mut(), a.as_ref(), b.as_ref(), false);
//! // within bf16's relative step of the f64 product
//! for i in 0..3 {
//!     for j in 0..4 {
//!         let exact: f64 = (0..5).map(|l| a[(i, l)] as f64 * b[(l, j)] as f64).sum();
//!         let bound: f64 = (0..5).map(|l| (a[(i, l)] as f64 * b[(l, j)] as f64).abs()).sum();
//!         assert!((c[(i, j)] as f64 - exact).abs() <= 2.0 * bound / 256.0 + 1e-6);
//!     }
//! }
//! ```

use core::cell::RefCell;

use faer::{Mat, MatMut, MatRef, Par};

use crate::Scalar;

/// The bfloat16 bits of `x` in the low half of a `u32`: round to nearest, ties to even;
/// subnormals to a zero of the same sign (as `vcvtne2ps2bf16` does); infinities kept; NaN to a
/// quiet NaN of the same sign.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    let abs = b & 0x7fff_ffff;
    if abs > 0x7f80_0000 {
        (b >> 16) | 0x40
    } else if abs < 0x0080_0000 {
        (b >> 16) & 0x8000
    } else {
        // cannot overflow: b ≤ 0xff7f_ffff here
        (b + 0x7fff + ((b >> 16) & 1)) >> 16
    }
}

/// `x` rounded to bfloat16 ([`bf16_bits`]), as an `f32` (exactly representable).
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits(bf16_bits(x) << 16)
}

/// Whether [`gemm_f32`] runs the AVX-512 BF16 kernel on this CPU (otherwise it runs
/// [`gemm_portable`]).
pub fn has_fast_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst = lhs rhs`, or `dst += …` when `accumulate`, sequential: faer's product in `T`, or
/// with `bf16` the product of the inputs rounded to bfloat16 ([`Scalar::gemm_bf16`]: sums in
/// `f32` for `f32`). The one switch between the two that the layers' products go through.
///
/// # Panics
/// If the shapes do not chain: `lhs: [m, k]`, `rhs: [k, n]`, `dst: [m, n]`.
pub fn gemm_seq<T: Scalar>(
    dst: MatMut<'_, T>, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>, accumulate: bool, bf16: bool,
) {
    if bf16 {
        T::gemm_bf16(dst, lhs, rhs, accumulate);
    } else {
        crate::linalg::gemm(dst, lhs, rhs, T::one(), accumulate, Par::Seq);
    }
}

/// `dst = bf16(lhs) bf16(rhs)`, or `dst += …` when `accumulate`, by rounding copies of the
/// inputs (through `f32`: `T::of(round_bf16(x as f32))`) and faer's product in `T`, sequential.
/// The reference of [`gemm_f32`]'s kernel, and the bf16 product of every type without one.
///
/// # Panics
/// If the shapes do not chain: `lhs: [m, k]`, `rhs: [k, n]`, `dst: [m, n]`.
pub fn gemm_portable<T: Scalar>(
    dst: MatMut<'_, T>, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>, accumulate: bool,
) {
    let round = |x: T| T::of(round_bf16(x.as_f64() as f32) as f64);
    let a = Mat::<T>::from_fn(lhs.nrows(), lhs.ncols(), |i, j| round(lhs[(i, j)]));
    let b = Mat::<T>::from_fn(rhs.nrows(), rhs.ncols(), |i, j| round(rhs[(i, j)]));
    crate::linalg::gemm(dst, a.as_ref(), b.as_ref(), T::one(), accumulate, Par::Seq);
}

/// `dst = bf16(lhs) bf16(rhs)`, or `dst += …` when `accumulate`, summed in `f32`, sequential:
/// the AVX-512 BF16 kernel where the CPU has it and `dst` has a unit stride (rows or columns),
/// [`gemm_portable`] otherwise. See the [module documentation](self) for the accuracy.
///
/// # Panics
/// If the shapes do not chain: `lhs: [m, k]`, `rhs: [k, n]`, `dst: [m, n]`.
pub fn gemm_f32(
    dst: MatMut<'_, f32>, lhs: MatRef<'_, f32>, rhs: MatRef<'_, f32>, accumulate: bool,
) {
    assert!(
        lhs.nrows() == dst.nrows() && rhs.ncols() == dst.ncols() && lhs.ncols() == rhs.nrows(),
        "gemm_f32: shapes [{}, {}] x [{}, {}] -> [{}, {}] do not chain",
        lhs.nrows(),
        lhs.ncols(),
        rhs.nrows(),
        rhs.ncols(),
        dst.nrows(),
        dst.ncols()
    );
    #[cfg(target_arch = "x86_64")]
    if has_fast_bf16() {
        if dst.col_stride() == 1 && dst.row_stride() >= 0 {
            // SAFETY: the CPU has AVX-512F/BW/BF16 (checked above); shapes chain (asserted).
            unsafe { fast::gemm(dst, Operand::Dense(lhs), Operand::Dense(rhs), accumulate) };
            return;
        }
        if dst.row_stride() == 1 && dst.col_stride() >= 0 {
            // Cᵀ = Bᵀ Aᵀ: a column-major `dst` is a row-major `dstᵀ`.
            // SAFETY: as above.
            unsafe {
                let (lhs, rhs) = (Operand::Dense(rhs.transpose()), Operand::Dense(lhs.transpose()));
                fast::gemm(dst.transpose_mut(), lhs, rhs, accumulate)
            };
            return;
        }
    }
    gemm_portable(dst, lhs, rhs, accumulate);
}

/// A matrix given by products of pairs of columns of `l` (`[len, r]`): column `f` is
/// \\(w_f\\, l_{:,a_f} \circ l_{:,b_f}\\) for `(a_f, b_f, w_f) = pairs[f]`, so `[len,
/// pairs.len()]`; e.g. the self-tensored features \\(\phi'(l_i)\\) of a sketch's rows. Entry
/// `(i, f)` is computed as `w * l[(i, a)] * l[(i, b)]`, left to right (what a materialised
/// copy by `scaled_product` holds, bit for bit).
#[derive(Debug, Clone, Copy)]
pub struct Products<'a, T> {
    /// The factors, `[len, r]` (column-major reads as slices).
    pub l: MatRef<'a, T>,
    /// `(a, b, w)` per column: indices into the columns of `l` and the weight.
    pub pairs: &'a [(usize, usize, T)],
}

impl<T: Scalar> Products<'_, T> {
    /// Rows of the product matrix.
    pub fn nrows(&self) -> usize {
        self.l.nrows()
    }

    /// Columns of the product matrix.
    pub fn ncols(&self) -> usize {
        self.pairs.len()
    }

    /// `out[i] =` entry `(i0 + i, f)` for `i < out.len()`.
    ///
    /// # Panics
    /// If `f` or the rows are out of range.
    #[inline(always)]
    fn column_into(&self, f: usize, i0: usize, out: &mut [T]) {
        let (a, b, w) = self.pairs[f];
        let (x, y) = (self.l.col(a).subrows(i0, out.len()), self.l.col(b).subrows(i0, out.len()));
        match (x.try_as_col_major(), y.try_as_col_major()) {
            (Some(x), Some(y)) => {
                for ((o, &x), &y) in out.iter_mut().zip(x.as_slice()).zip(y.as_slice()) {
                    *o = w * x * y;
                }
            }
            _ => out.iter_mut().enumerate().for_each(|(i, o)| *o = w * x[i] * y[i]),
        }
    }
}

/// One operand of [`gemm_f32_products`]: a matrix, or columns given as [`Products`].
#[derive(Debug, Clone, Copy)]
pub enum Operand<'a, T> {
    /// A stored matrix.
    Dense(MatRef<'a, T>),
    /// Columns computed while they are packed.
    Products(Products<'a, T>),
}

impl<T: Scalar> Operand<'_, T> {
    fn shape(&self) -> (usize, usize) {
        match self {
            Operand::Dense(m) => (m.nrows(), m.ncols()),
            Operand::Products(p) => (p.nrows(), p.ncols()),
        }
    }
}

/// `dst = bf16(lhs) bf16(rhs)`, or `dst += …` when `accumulate`, summed in `f32`, with an
/// operand that may be [`Products`]: computed in `f32` a few columns at a time while the kernel
/// packs them, never stored whole (a self-tensored block of 256 × 528 features is 528 KiB,
/// past L2 once the rest of a block's work is there). Equal bit for bit to [`gemm_f32`] on the
/// materialised operands. Returns `false`, doing nothing, where that kernel does not run
/// (no AVX-512 BF16, or `dst` without unit column stride): the caller then materialises the
/// products and calls [`gemm_f32`].
///
/// # Panics
/// If the shapes do not chain: `lhs: [m, k]`, `rhs: [k, n]`, `dst: [m, n]`.
pub fn gemm_f32_products(
    dst: MatMut<'_, f32>, lhs: Operand<'_, f32>, rhs: Operand<'_, f32>, accumulate: bool,
) -> bool {
    let ((m, k), (k2, n)) = (lhs.shape(), rhs.shape());
    assert!(
        m == dst.nrows() && n == dst.ncols() && k == k2,
        "gemm_f32_products: shapes [{m}, {k}] x [{k2}, {n}] -> [{}, {}] do not chain",
        dst.nrows(),
        dst.ncols()
    );
    #[cfg(target_arch = "x86_64")]
    if has_fast_bf16() && dst.col_stride() == 1 && dst.row_stride() >= 0 {
        // SAFETY: the CPU has AVX-512F/BW/BF16 (checked above); shapes chain (asserted); `dst`
        // has unit column stride.
        unsafe { fast::gemm(dst, lhs, rhs, accumulate) };
        return true;
    }
    false
}

thread_local! {
    /// Packed bf16 pairs of the current blocks of `lhs` and `rhs`, and `f32` columns of a
    /// [`Products`] operand on their way to being packed, kept per thread.
    static PACK: RefCell<(Vec<u32>, Vec<u32>, Vec<f32>)> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

#[cfg(target_arch = "x86_64")]
mod fast {
    //! The AVX-512 BF16 product: GotoBLAS blocking, operands packed as pairs of bf16 along
    //! the inner dimension (one `u32` per pair, the even index in the low half), a 12 × 32
    //! register tile of `f32` accumulators fed by `vdpbf16ps` (12 × 16 for a last panel of at
    //! most 16 columns: the attention engine's \\(k = h + 1 = 65\\) columns cost 80, not 96).

    use core::arch::x86_64::*;

    use faer::MatMut;

    use super::{Operand, PACK, Products, bf16_bits};

    /// Rows of the register tile.
    const MR: usize = 12;
    /// Columns of the register tile (two vectors of 16 `f32`).
    const NR: usize = 32;
    /// Inner dimension of a block (even).
    const KC: usize = 256;
    /// Rows of a packed block of `lhs` (a multiple of MR).
    const MC: usize = 96;
    /// Columns of a packed block of `rhs` (a multiple of NR).
    const NC: usize = 512;

    /// The same 512 bits as 32 bf16.
    #[inline(always)]
    fn bh(x: __m512i) -> __m512bh {
        // SAFETY: both are plain 512-bit vectors; every bit pattern is a valid value of each.
        unsafe { core::mem::transmute::<__m512i, __m512bh>(x) }
    }

    /// `dst[l] = (bf16(src[2l]), bf16(src[2l + 1]))` (the second 0 past the end of an odd
    /// `src`): contiguous pairs, 32 values per `vcvtne2ps2bf16`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn pairs_contiguous(src: &[f32], dst: &mut [u32]) {
        let (full, dst_full) = (src.len() / 32, src.len() / 32 * 16);
        for (s, d) in src.chunks_exact(32).zip(dst[..dst_full].chunks_exact_mut(16)) {
            // SAFETY: `s` holds 32 values and `d` 16 (chunks_exact).
            unsafe {
                let lo = _mm512_loadu_ps(s.as_ptr());
                let hi = _mm512_loadu_ps(s.as_ptr().add(16));
                let v: __m512i = core::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(d.as_mut_ptr().cast(), v);
            }
        }
        let rest = &src[full * 32..];
        for (l, d) in dst[dst_full..].iter_mut().enumerate().take(rest.len().div_ceil(2)) {
            let h = rest.get(2 * l + 1).copied().unwrap_or(0.0);
            *d = bf16_bits(rest[2 * l]) | bf16_bits(h) << 16;
        }
    }

    /// The permutation of `vcvtne2ps2bf16(hi, lo)`'s 32 bf16 that pairs them up: lane 2l takes
    /// bf16 l (from `lo`), lane 2l + 1 bf16 16 + l (from `hi`).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn interleave_index() -> __m512i {
        _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        )
    }

    /// `dst[l] = (bf16(lo[l]), bf16(hi[l]))` (`hi` all 0 when `None`): two rows interleaved,
    /// 16 pairs per `vcvtne2ps2bf16` and a permutation.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn pairs_interleaved(lo: &[f32], hi: Option<&[f32]>, dst: &mut [u32]) {
        let len = lo.len();
        let full = len / 16 * 16;
        let idx = interleave_index();
        for l in (0..full).step_by(16) {
            // SAFETY: `l + 16 <= len` for `lo`, `hi` (same length) and `dst`.
            unsafe {
                let a = _mm512_loadu_ps(lo.as_ptr().add(l));
                let b = match hi {
                    Some(h) => _mm512_loadu_ps(h.as_ptr().add(l)),
                    None => _mm512_setzero_ps(),
                };
                let v: __m512i = core::mem::transmute(_mm512_cvtne2ps_pbh(b, a));
                _mm512_storeu_si512(
                    dst.as_mut_ptr().add(l).cast(),
                    _mm512_permutexvar_epi16(idx, v),
                );
            }
        }
        for l in full..len {
            let h = hi.map_or(0.0, |h| h[l]);
            dst[l] = bf16_bits(lo[l]) | bf16_bits(h) << 16;
        }
    }

    /// `len` values from `p` with unit stride.
    ///
    /// SAFETY (caller): `p..p + len` is inside one matrix that outlives `'a`.
    unsafe fn run<'a>(p: *const f32, len: usize) -> &'a [f32] {
        // SAFETY: caller.
        unsafe { core::slice::from_raw_parts(p, len) }
    }

    /// Packs rows `i0..i0 + mc` and columns `k0..k0 + kc` of `a` as bf16 pairs, zero-padded
    /// to whole tiles: a row-major block `[mc_pad][kp]` (`ars = kp`, `aks = 1`) when `a` has
    /// unit column stride, `[kp][mc_pad]` (`ars = 1`, `aks = mc_pad`) when it has unit row
    /// stride or is [`Products`] ([`pack_a_products`]), row-major element by element otherwise.
    /// Returns the strides.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn pack_a(
        a: Operand<'_, f32>, i0: usize, mc: usize, k0: usize, kc: usize, buf: &mut Vec<u32>,
        cols: &mut Vec<f32>,
    ) -> (usize, usize) {
        let a = match a {
            Operand::Dense(a) => a,
            Operand::Products(p) => return pack_a_products(p, i0, mc, k0, kc, buf, cols),
        };
        let (kp, mc_pad) = (kc.div_ceil(2), mc.div_ceil(MR) * MR);
        // every entry is written below: only the padding rows are zeroed, not the whole buffer
        buf.resize(kp * mc_pad, 0);
        let (p, rs, cs) = (a.as_ptr(), a.row_stride(), a.col_stride());
        if rs == 1 && cs != 1 {
            buf.chunks_exact_mut(mc_pad).for_each(|row| row[mc..].fill(0));
        } else {
            buf[mc * kp..].fill(0);
        }
        // SAFETY (both closures): `(i, k)` inside `a` whenever called below.
        let ptr = |i: usize, k: usize| unsafe { p.offset(i as isize * rs + k as isize * cs) };
        if cs == 1 {
            for i in 0..mc {
                // SAFETY: row `i0 + i`, columns `k0..k0 + kc` of `a`.
                let row = unsafe { run(ptr(i0 + i, k0), kc) };
                pairs_contiguous(row, &mut buf[i * kp..(i + 1) * kp]);
            }
            (kp, 1)
        } else if rs == 1 {
            for kk in 0..kp {
                let k = k0 + 2 * kk;
                // SAFETY: columns `k` and (when inside the block) `k + 1`, rows `i0..i0 + mc`.
                let lo = unsafe { run(ptr(i0, k), mc) };
                let hi = (2 * kk + 1 < kc).then(|| unsafe { run(ptr(i0, k + 1), mc) });
                pairs_interleaved(lo, hi, &mut buf[kk * mc_pad..kk * mc_pad + mc]);
            }
            (1, mc_pad)
        } else {
            for i in 0..mc {
                for kk in 0..kp {
                    let k = k0 + 2 * kk;
                    // SAFETY: `(i0 + i, k)` and, when inside the block, `(i0 + i, k + 1)`.
                    let (l, h) = unsafe {
                        (*ptr(i0 + i, k), if 2 * kk + 1 < kc { *ptr(i0 + i, k + 1) } else { 0.0 })
                    };
                    buf[i * kp + kk] = bf16_bits(l) | bf16_bits(h) << 16;
                }
            }
            (kp, 1)
        }
    }

    /// [`pack_a`] of a [`Products`] operand, `[kp][mc_pad]`: columns `k0 + 2kk` and
    /// `k0 + 2kk + 1` of rows `i0..i0 + mc`, 16 rows at a time computed in registers
    /// (`w * x * y`), converted and interleaved as [`pairs_interleaved`] does; through `cols`
    /// when the factors' columns are not contiguous, and for the last rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn pack_a_products(
        p: Products<'_, f32>, i0: usize, mc: usize, k0: usize, kc: usize, buf: &mut Vec<u32>,
        cols: &mut Vec<f32>,
    ) -> (usize, usize) {
        let (kp, mc_pad) = (kc.div_ceil(2), mc.div_ceil(MR) * MR);
        buf.resize(kp * mc_pad, 0);
        let l = p.l.subrows(i0, mc);
        let contiguous = l.row_stride() == 1;
        // rows done in registers: whole groups of 16 when the columns are contiguous
        let fast = if contiguous { mc / 16 * 16 } else { 0 };
        if cols.len() < 2 * mc {
            cols.resize(2 * mc, 0.0);
        }
        let (lo, hi) = cols[..2 * mc].split_at_mut(mc);
        let idx = interleave_index();
        let zero = (0, 0, 0.0);
        for (kk, row) in buf.chunks_exact_mut(mc_pad).enumerate() {
            let odd = 2 * kk + 1 < kc;
            let (f, g) = (p.pairs[k0 + 2 * kk], if odd { p.pairs[k0 + 2 * kk + 1] } else { zero });
            let (pf, pg) = (
                (l.col(f.0).as_ptr(), l.col(f.1).as_ptr()),
                (l.col(g.0).as_ptr(), l.col(g.1).as_ptr()),
            );
            let (wf, wg) = (_mm512_set1_ps(f.2), _mm512_set1_ps(g.2));
            for i in (0..fast).step_by(16) {
                // SAFETY: rows `i..i + 16 <= mc` of contiguous columns of `l`; `row` holds
                // `mc_pad >= mc` pairs.
                unsafe {
                    let load = |c: *const f32| _mm512_loadu_ps(c.add(i));
                    let x = _mm512_mul_ps(_mm512_mul_ps(wf, load(pf.0)), load(pf.1));
                    let y = if odd {
                        _mm512_mul_ps(_mm512_mul_ps(wg, load(pg.0)), load(pg.1))
                    } else {
                        _mm512_setzero_ps()
                    };
                    let v: __m512i = core::mem::transmute(_mm512_cvtne2ps_pbh(y, x));
                    _mm512_storeu_si512(
                        row.as_mut_ptr().add(i).cast(),
                        _mm512_permutexvar_epi16(idx, v),
                    );
                }
            }
            if fast < mc {
                let rest = mc - fast;
                p.column_into(k0 + 2 * kk, i0 + fast, &mut lo[..rest]);
                if odd {
                    p.column_into(k0 + 2 * kk + 1, i0 + fast, &mut hi[..rest]);
                }
                pairs_interleaved(&lo[..rest], odd.then_some(&hi[..rest]), &mut row[fast..mc]);
            }
            row[mc..].fill(0);
        }
        (1, mc_pad)
    }

    /// Packs rows `k0..k0 + kc` and columns `j0..j0 + nc` of `b` as panels of NR columns,
    /// `[panel][kp][NR]` bf16 pairs, zero-padded: two rows interleaved at a time when `b` has
    /// unit column stride, by [`panel_from_columns`] when it has unit row stride or is
    /// [`Products`] (computed into `cols` a panel at a time, `NR × kc` values), element by
    /// element otherwise.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn pack_b(
        b: Operand<'_, f32>, k0: usize, kc: usize, j0: usize, nc: usize, buf: &mut Vec<u32>,
        cols: &mut Vec<f32>,
    ) {
        let (kp, panels) = (kc.div_ceil(2), nc.div_ceil(NR));
        // every entry is written below but the padding columns of a last, narrower panel
        buf.resize(panels * kp * NR, 0);
        let last = nc - (panels - 1) * NR;
        if let Some(panel) = buf.chunks_exact_mut(kp * NR).last() {
            panel.chunks_exact_mut(NR).for_each(|row| row[last..].fill(0));
        }
        // one column's pairs for `panel_from_columns` (`kp <= KC / 2`): on the stack, not
        // allocated per call
        let mut column = [0u32; KC / 2];
        let b = match b {
            Operand::Dense(b) => b,
            Operand::Products(p) => {
                if cols.len() < NR * kc {
                    cols.resize(NR * kc, 0.0);
                }
                for (q, panel) in buf.chunks_exact_mut(kp * NR).enumerate() {
                    let (jb, width) = (j0 + q * NR, NR.min(nc - q * NR));
                    for (j, col) in cols.chunks_exact_mut(kc).take(width).enumerate() {
                        p.column_into(jb + j, k0, col);
                    }
                    // SAFETY: `cols` holds `width` columns of `kc` values, `kc` apart.
                    unsafe {
                        panel_from_columns(
                            cols.as_ptr(),
                            kc as isize,
                            kc,
                            width,
                            panel,
                            &mut column,
                        )
                    };
                }
                return;
            }
        };
        let (p, rs, cs) = (b.as_ptr(), b.row_stride(), b.col_stride());
        // SAFETY: `(k, j)` inside `b` whenever called below.
        let ptr = |k: usize, j: usize| unsafe { p.offset(k as isize * rs + j as isize * cs) };
        for (q, panel) in buf.chunks_exact_mut(kp * NR).enumerate() {
            let (jb, width) = (j0 + q * NR, NR.min(nc - q * NR));
            if rs == 1 && cs != 1 {
                // SAFETY: columns `jb..jb + width`, rows `k0..k0 + kc` of `b`, `cs` apart.
                unsafe { panel_from_columns(ptr(k0, jb), cs, kc, width, panel, &mut column) };
                continue;
            }
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                let (k, odd) = (k0 + 2 * kk, 2 * kk + 1 < kc);
                if cs == 1 {
                    // SAFETY: rows `k` and (when `odd`) `k + 1`, columns `jb..jb + width`.
                    let lo = unsafe { run(ptr(k, jb), width) };
                    let hi = odd.then(|| unsafe { run(ptr(k + 1, jb), width) });
                    pairs_interleaved(lo, hi, &mut row[..width]);
                    continue;
                }
                for (j, v) in row[..width].iter_mut().enumerate() {
                    // SAFETY: `(k, jb + j)` and, when `odd`, `(k + 1, jb + j)`.
                    let (l, h) =
                        unsafe { (*ptr(k, jb + j), if odd { *ptr(k + 1, jb + j) } else { 0.0 }) };
                    *v = bf16_bits(l) | bf16_bits(h) << 16;
                }
            }
        }
    }

    /// One panel of `width <= NR` columns of `kc` contiguous values each (`src`, columns `cs`
    /// apart) as `[kp][NR]` bf16 pairs: whole squares of 16 columns × 16 pairs (32 rows)
    /// through [`transposed_pairs`], what is left a column's pairs at a time (`column`, at
    /// least `kp` long), scattered.
    ///
    /// SAFETY (caller): the CPU has AVX-512F/BF16; `src + j cs + i` for `j < width`, `i < kc`
    /// is inside one allocation; `panel` holds `kp × NR` pairs.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn panel_from_columns(
        src: *const f32, cs: isize, kc: usize, width: usize, panel: &mut [u32], column: &mut [u32],
    ) {
        let kp = kc.div_ceil(2);
        let (square_pairs, square_cols) = (kc / 32 * 16, width / 16 * 16);
        // SAFETY (both): inside the columns (caller).
        let col = |j: usize, i: usize| unsafe { src.offset(j as isize * cs + i as isize) };
        for j in (0..square_cols).step_by(16) {
            for kk in (0..square_pairs).step_by(16) {
                // SAFETY: columns `j..j + 16`, rows `2kk..2kk + 32 <= kc`; pairs `kk..kk + 16`,
                // columns `j..j + 16` of the panel.
                unsafe {
                    transposed_pairs(col(j, 2 * kk), cs, panel.as_mut_ptr().add(kk * NR + j), NR)
                };
            }
        }
        for j in 0..width {
            let from = if j < square_cols { square_pairs } else { 0 };
            let (rows, pairs) = (kc - 2 * from, kp - from);
            if pairs == 0 {
                continue;
            }
            // SAFETY: column `j`, rows `2 from..kc`.
            pairs_contiguous(unsafe { run(col(j, 2 * from), rows) }, &mut column[..pairs]);
            for (kk, &v) in column[..pairs].iter().enumerate() {
                panel[(from + kk) * NR + j] = v;
            }
        }
    }

    /// Sixteen columns of 32 rows (`src`, columns `cs` apart) as bf16 pairs, transposed:
    /// `dst[l ld + c] = (bf16(src[c cs + 2l]), bf16(src[c cs + 2l + 1]))` for `l, c < 16` —
    /// a column-major operand packed without scattered stores (`vpscatterqd` took 60 % of the
    /// packing's time). Converted one column per `vcvtne2ps2bf16`, then the 16 × 16 block of
    /// pairs transposed in registers: 32-bit and 64-bit interleaves within 128-bit lanes, then
    /// two shuffles of whole lanes.
    ///
    /// SAFETY (caller): the CPU has AVX-512F/BF16; `src + c cs + i` for `c < 16`, `i < 32` is
    /// inside one matrix; `dst + l ld + c` for `l, c < 16` inside one buffer.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn transposed_pairs(src: *const f32, cs: isize, dst: *mut u32, ld: usize) {
        let zero = _mm512_setzero_si512();
        // v[c] lane l: pair l of column c
        let mut v = [zero; 16];
        for (c, v) in v.iter_mut().enumerate() {
            // SAFETY: 32 values of column `c` (caller).
            unsafe {
                let p = src.offset(c as isize * cs);
                let (lo, hi) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
                *v = core::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
            }
        }
        // t[2p], t[2p + 1]: columns 2p, 2p + 1 interleaved (low, high pairs of each lane)
        let mut t = [zero; 16];
        for (i, t) in t.iter_mut().enumerate() {
            let (a, b) = (v[i & !1], v[i | 1]);
            *t = if i % 2 == 0 { _mm512_unpacklo_epi32(a, b) } else { _mm512_unpackhi_epi32(a, b) };
        }
        // s[4a + b], lane g: rows 4a..4a + 4 of pair 4g + b
        let mut s = [zero; 16];
        for (i, s) in s.iter_mut().enumerate() {
            let (a, b) = (i / 4 * 4, i % 4);
            let (x, y) = (t[a + b / 2], t[a + b / 2 + 2]);
            *s = if b % 2 == 0 { _mm512_unpacklo_epi64(x, y) } else { _mm512_unpackhi_epi64(x, y) };
        }
        // (lanes 0, 2 of x then of y; lanes 1, 3 of x then of y), twice
        let lanes = |x, y| (_mm512_shuffle_i32x4::<0x88>(x, y), _mm512_shuffle_i32x4::<0xdd>(x, y));
        let mut u = [zero; 16];
        for b in 0..4 {
            (u[b], u[4 + b]) = lanes(s[b], s[4 + b]);
            (u[8 + b], u[12 + b]) = lanes(s[8 + b], s[12 + b]);
        }
        let mut out = [zero; 16];
        for b in 0..4 {
            (out[b], out[8 + b]) = lanes(u[b], u[8 + b]);
            (out[4 + b], out[12 + b]) = lanes(u[4 + b], u[12 + b]);
        }
        for (l, row) in out.iter().enumerate() {
            // SAFETY: row `l` of the 16 × 16 block of `dst` (caller).
            unsafe { _mm512_storeu_si512(dst.add(l * ld).cast(), *row) };
        }
    }

    /// The register tile: `c[i, 0..16 V] (+)= Σ_kk a[i, kk] · b[kk, 0..16 V]` for `i < MR`,
    /// with `a[i, kk]` at `a + i ars + kk aks` and `b` one packed panel `[kp][NR]`; `c`
    /// row-major with row stride `ldc`, loaded first when `load`. `V = 2` is the whole panel;
    /// `V = 1` its first 16 columns, for a last panel at most 16 wide (e.g. the 65th column of
    /// `[V, 1]`), which then costs half a tile, not a whole one.
    ///
    /// SAFETY (caller): the CPU has AVX-512F/BF16; `a`, `b` hold the panel, `c` a whole
    /// `MR × 16 V` tile; `V` is 1 or 2.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile<const V: usize>(
        kp: usize, a: *const u32, ars: usize, aks: usize, b: *const u32, c: *mut f32, ldc: usize,
        load: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        for kk in 0..kp {
            // SAFETY: inside the packed panel (caller).
            let bv: [__m512bh; V] = core::array::from_fn(|v| unsafe {
                bh(_mm512_loadu_si512(b.add(kk * NR + 16 * v).cast()))
            });
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: inside the packed block (caller).
                let pair = unsafe { *a.add(i * ars + kk * aks) };
                let av = bh(_mm512_set1_epi32(pair as i32));
                for (acc, &bv) in acc.iter_mut().zip(&bv) {
                    *acc = _mm512_dpbf16_ps(*acc, av, bv);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (v, &acc) in acc.iter().enumerate() {
                // SAFETY: a whole tile of `c` (caller).
                unsafe {
                    let at = c.add(i * ldc + 16 * v);
                    let sum = if load { _mm512_add_ps(_mm512_loadu_ps(at), acc) } else { acc };
                    _mm512_storeu_ps(at, sum);
                }
            }
        }
    }

    /// `dst (+)= bf16(lhs) bf16(rhs)` for a `dst` with unit column stride.
    ///
    /// SAFETY (caller): the CPU has AVX-512F/BW/BF16; the shapes chain; `dst.col_stride() == 1`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn gemm(
        mut dst: MatMut<'_, f32>, lhs: Operand<'_, f32>, rhs: Operand<'_, f32>, accumulate: bool,
    ) {
        let (m, n, k) = (dst.nrows(), dst.ncols(), lhs.shape().1);
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if !accumulate {
                dst.fill(0.0);
            }
            return;
        }
        let ldc = dst.row_stride() as usize;
        let c = dst.as_ptr_mut();
        PACK.with_borrow_mut(|(abuf, bbuf, cols)| {
            let mut edge = [0.0f32; MR * NR];
            for j0 in (0..n).step_by(NC) {
                let nc = NC.min(n - j0);
                for k0 in (0..k).step_by(KC) {
                    let (kc, load) = (KC.min(k - k0), accumulate || k0 > 0);
                    let kp = kc.div_ceil(2);
                    pack_b(rhs, k0, kc, j0, nc, bbuf, cols);
                    for i0 in (0..m).step_by(MC) {
                        let mc = MC.min(m - i0);
                        let (ars, aks) = pack_a(lhs, i0, mc, k0, kc, abuf, cols);
                        for q in 0..nc.div_ceil(NR) {
                            let (jq, w) = (j0 + q * NR, NR.min(nc - q * NR));
                            let bp = bbuf[q * kp * NR..].as_ptr();
                            for it in (0..mc).step_by(MR) {
                                let h = MR.min(mc - it);
                                let ap = abuf[it * ars..].as_ptr();
                                // SAFETY: the pointers address the packed blocks and, for a
                                // whole tile, rows `i0 + it..+MR` and columns `jq..+NR` of dst.
                                unsafe {
                                    let cp = c.add((i0 + it) * ldc + jq);
                                    if h == MR && w == NR {
                                        tile::<2>(kp, ap, ars, aks, bp, cp, ldc, load);
                                        continue;
                                    }
                                    let e = edge.as_mut_ptr();
                                    if w <= NR / 2 {
                                        tile::<1>(kp, ap, ars, aks, bp, e, NR, false);
                                    } else {
                                        tile::<2>(kp, ap, ars, aks, bp, e, NR, false);
                                    }
                                    for i in 0..h {
                                        for j in 0..w {
                                            let d = cp.add(i * ldc + j);
                                            let v = edge[i * NR + j];
                                            *d = if load { *d + v } else { v };
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{normal, seeded_rng};

    fn random(m: usize, n: usize, seed: u64) -> Mat<f32> {
        let mut rng = seeded_rng(seed);
        Mat::from_fn(m, n, |_, _| normal(&mut rng) as f32)
    }

    #[test]
    fn rounding_is_to_nearest_even_with_the_edge_cases() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0)
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(round_bf16(1.0 + 1.1 / 256.0), 1.0 + 1.0 / 128.0);
        assert_eq!(round_bf16(-3.0), -3.0);
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(1e-40).to_bits(), 0);
        assert_eq!(round_bf16(-1e-40).to_bits(), (-0.0f32).to_bits());
        // relative error at most 2^-8 (half a unit in the 8th bit) over a range of magnitudes
        for i in 0..10_000 {
            let x = (1.0 + i as f32 * 1.2345e-4) * 2f32.powi(i % 60 - 30);
            assert!(((round_bf16(x) - x) / x).abs() <= 1.0 / 256.0, "{x}");
        }
    }

    /// The kernel against the portable path (the same rounded inputs, summed in another
    /// order) and against the f64 product of the rounded inputs, for every layout of the
    /// operands and `dst`, edge sizes, odd `k`, several blocks in every dimension, with and
    /// without accumulation.
    #[test]
    fn the_kernel_matches_the_portable_product_in_every_layout() {
        if !has_fast_bf16() {
            eprintln!("no AVX-512 BF16 on this CPU: gemm_f32 is the portable path");
        }
        let sizes = [
            (1, 1, 1),
            (12, 32, 2),
            (13, 33, 3),
            (97, 70, 257),
            (200, 530, 64),
            (5, 600, 513),
            (256, 65, 528),
        ];
        for (case, &(m, n, k)) in sizes.iter().enumerate() {
            for layout in 0..8 {
                let seed = (case * 8 + layout) as u64;
                let a0 = random(m, k, seed);
                let b0 = random(k, n, seed + 100);
                let (at, bt) = (a0.transpose().to_owned(), b0.transpose().to_owned());
                let a = if layout & 1 == 0 { a0.as_ref() } else { at.transpose() };
                let b = if layout & 2 == 0 { b0.as_ref() } else { bt.transpose() };
                let init = random(m, n, seed + 200);
                let init_t = init.transpose().to_owned();
                for accumulate in [false, true] {
                    let mut fast = init.clone();
                    let mut fast_t = init_t.clone();
                    {
                        let dst = if layout & 4 == 0 {
                            fast.as_mut()
                        } else {
                            fast_t.as_mut().transpose_mut()
                        };
                        gemm_f32(dst, a, b, accumulate);
                    }
                    if layout & 4 != 0 {
                        fast = fast_t.transpose().to_owned();
                    }
                    let mut slow = init.clone();
                    gemm_portable(slow.as_mut(), a, b, accumulate);
                    for i in 0..m {
                        for j in 0..n {
                            let mut exact: f64 = (0..k)
                                .map(|l| {
                                    round_bf16(a[(i, l)]) as f64 * round_bf16(b[(l, j)]) as f64
                                })
                                .sum();
                            let scale: f64 = (0..k)
                                .map(|l| (a[(i, l)] as f64 * b[(l, j)] as f64).abs())
                                .sum::<f64>()
                                + init[(i, j)].abs() as f64;
                            if accumulate {
                                exact += init[(i, j)] as f64;
                            }
                            // f32 summation of k terms: a few k·ε of the magnitudes
                            let tol = 4.0 * (k as f64 + 2.0) * f32::EPSILON as f64 * scale;
                            let (f, s) = (fast[(i, j)] as f64, slow[(i, j)] as f64);
                            assert!(
                                (f - exact).abs() <= tol,
                                "{m}x{n}x{k} layout {layout}: {f} vs {exact}"
                            );
                            assert!(
                                (f - s).abs() <= 2.0 * tol,
                                "{m}x{n}x{k} layout {layout}: {f} vs {s}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Against the f64 product of the unrounded inputs: within the bound of the module
    /// documentation, and on random inputs far inside it.
    #[test]
    fn the_error_against_f64_is_within_the_bf16_bound() {
        let (m, n, k) = (64, 96, 256);
        let (a, b) = (random(m, k, 7), random(k, n, 8));
        let mut c = Mat::<f32>::zeros(m, n);
        gemm_f32(c.as_mut(), a.as_ref(), b.as_ref(), false);
        let (mut worst_rel, mut sum_sq, mut sum_sq_err) = (0.0f64, 0.0, 0.0);
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = (0..k).map(|l| a[(i, l)] as f64 * b[(l, j)] as f64).sum();
                let bound: f64 = (0..k).map(|l| (a[(i, l)] as f64 * b[(l, j)] as f64).abs()).sum();
                let err = (c[(i, j)] as f64 - exact).abs();
                assert!(err <= 2.0 * bound / 256.0 + 1e-5 * bound, "{err} > bound {bound}");
                worst_rel = worst_rel.max(err / bound);
                sum_sq += exact * exact;
                sum_sq_err += err * err;
            }
        }
        // the rounding errors are independent: far below the worst-case bound
        assert!(worst_rel < 0.25 * 2.0 / 256.0, "{worst_rel}");
        let rel = (sum_sq_err / sum_sq).sqrt();
        eprintln!(
            "bf16 product, k = {k}: worst entry {worst_rel:.2e} of the bound's sum, Frobenius {rel:.2e}"
        );
        assert!(rel < 4e-3, "relative Frobenius error {rel}");
    }

    /// Multiplying by the identity picks single entries (sums of one term and zeros: exact, up
    /// to the sign of a zero), so
    /// the packed conversion must equal [`round_bf16`] bit for bit, in every layout, for ties,
    /// subnormals and values near the largest bf16 (infinities cannot be picked: 0 · ∞ is NaN).
    #[test]
    fn packing_rounds_exactly_like_round_bf16() {
        let special: [f32; 10] = [
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            -1.0 - 1.0 / 256.0,
            1e-40,
            -1e-40,
            3.3e38,
            -2.9e-39,
            0.1,
            -7.3e20,
            3.0e-38,
        ];
        let (m, k) = (37, 70);
        let a0 = Mat::<f32>::from_fn(m, k, |i, j| {
            let v = special[(i * k + j) % special.len()];
            if (i + j) % 3 == 0 || v.abs() > 1e30 {
                v
            } else {
                v * (1.0 + (i * 31 + j) as f32 * 1e-3)
            }
        });
        let at = a0.transpose().to_owned();
        let eye = Mat::<f32>::identity(k, k);
        let eye_t = Mat::<f32>::identity(k, k);
        for (a, b) in [
            (a0.as_ref(), eye.as_ref()),
            (at.transpose(), eye.as_ref()),
            (a0.as_ref(), eye_t.transpose()),
        ] {
            let mut c = Mat::<f32>::zeros(m, k);
            gemm_f32(c.as_mut(), a, b, false);
            // and on the right: I · Aᵀ picks the entries of the rhs
            let mut d = Mat::<f32>::zeros(k, m);
            gemm_f32(d.as_mut(), eye.as_ref(), a.transpose(), false);
            for i in 0..m {
                for j in 0..k {
                    let want = round_bf16(a[(i, j)]);
                    assert_eq!(c[(i, j)], want, "lhs ({i}, {j}): {}", a[(i, j)]);
                    assert_eq!(d[(j, i)], want, "rhs ({j}, {i}): {}", a[(i, j)]);
                }
            }
        }
    }

    /// `gemm_f32_products` with a [`Products`] operand on either side equals, bit for bit,
    /// `gemm_f32` on the materialised products (`w * x * y` per entry), for column-major and
    /// row-major factors, sizes across the blocking (`MC`, `KC`, `NC`, 16-wide squares, odd
    /// inner dimensions), with and without accumulation; it declines only without the kernel.
    #[test]
    fn products_operands_equal_the_materialised_product_bit_for_bit() {
        for (case, &(len, r, other)) in
            [(1, 1, 1), (13, 3, 5), (97, 8, 65), (256, 32, 65), (300, 33, 40), (70, 36, 600)]
                .iter()
                .enumerate()
        {
            let mut pairs = Vec::new();
            for a in 0..r {
                for b in a..r {
                    let w = if a == b { 1.0 } else { core::f32::consts::SQRT_2 };
                    pairs.push((b, a, w));
                }
            }
            let f = pairs.len();
            let l = random(len, r, case as u64);
            let lt = l.transpose().to_owned();
            let phi = Mat::<f32>::from_fn(len, f, |i, c| {
                let (a, b, w) = pairs[c];
                w * l[(i, a)] * l[(i, b)]
            });
            for (side, factors) in [l.as_ref(), lt.transpose()].into_iter().enumerate() {
                let prod = Operand::Products(Products { l: factors, pairs: &pairs });
                for accumulate in [false, true] {
                    // rhs: [other, len] x [len, f]; lhs: [len, f] x [f, other]
                    let lhs = random(other, len, 10 + case as u64);
                    let rhs = random(f, other, 20 + case as u64);
                    // row-major destinations (stored transposed): what the kernel takes
                    let init_r = random(f, other, 30 + case as u64);
                    let init_l = random(other, len, 40 + case as u64);
                    let (mut got_r, mut want_r) = (init_r.clone(), init_r.clone());
                    let (mut got_l, mut want_l) = (init_l.clone(), init_l.clone());
                    let (dl, dr) = (Operand::Dense(lhs.as_ref()), Operand::Dense(rhs.as_ref()));
                    fn row_major(m: &mut Mat<f32>) -> MatMut<'_, f32> {
                        m.as_mut().transpose_mut()
                    }
                    let ran_r = gemm_f32_products(row_major(&mut got_r), dl, prod, accumulate);
                    let ran_l = gemm_f32_products(row_major(&mut got_l), prod, dr, accumulate);
                    assert_eq!((ran_r, ran_l), (has_fast_bf16(), has_fast_bf16()));
                    // a column-major destination (more than one column) is declined
                    let mut col_major = Mat::<f32>::zeros(other, f);
                    let declined = gemm_f32_products(col_major.as_mut(), dl, prod, accumulate);
                    assert!(!declined || f == 1);
                    if !has_fast_bf16() {
                        continue;
                    }
                    gemm_f32(row_major(&mut want_r), lhs.as_ref(), phi.as_ref(), accumulate);
                    gemm_f32(row_major(&mut want_l), phi.as_ref(), rhs.as_ref(), accumulate);
                    let bits = |m: &Mat<f32>| {
                        m.col_iter().flat_map(|c| c.iter().map(|x| x.to_bits())).collect::<Vec<_>>()
                    };
                    let what = format!("len {len}, r {r}, other {other}, factors {side}");
                    assert!(bits(&got_r) == bits(&want_r), "rhs products, {what}");
                    assert!(bits(&got_l) == bits(&want_l), "lhs products, {what}");
                }
            }
        }
    }

    #[test]
    fn empty_and_k_zero_products() {
        // k = 0: accumulating leaves c as it was, overwriting zeroes it
        let mut c = Mat::<f32>::from_fn(3, 2, |_, _| 5.0);
        for (accumulate, want) in [(true, 5.0), (false, 0.0)] {
            let (a, b) = (Mat::<f32>::zeros(3, 0), Mat::<f32>::zeros(0, 2));
            gemm_f32(c.as_mut(), a.as_ref(), b.as_ref(), accumulate);
            assert!(c.col_iter().all(|c| c.iter().all(|&x| x == want)), "accumulate {accumulate}");
        }
        let mut e = Mat::<f32>::zeros(0, 4);
        gemm_f32(
            e.as_mut(),
            Mat::<f32>::zeros(0, 3).as_ref(),
            Mat::<f32>::zeros(3, 4).as_ref(),
            false,
        );
    }
}
