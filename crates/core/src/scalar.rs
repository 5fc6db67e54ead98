//! The floating-point types the sketches work in.

use core::fmt::Debug;

/// A real floating-point type the sketches can work in: `f32` (for speed) or `f64` (for
/// references).
///
/// Random parameters are always drawn in `f64` and rounded to `Self`, so an `f32` sketch and an
/// `f64` sketch built from the same seed are the same sketch up to rounding.
pub trait Scalar:
    faer::traits::RealField
    + num_traits::Float
    + rustfft::FftNum
    + Default
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Rounds an `f64` to this type (`T::of(0.5)`).
    fn of(x: f64) -> Self;
    /// Widens this value to `f64`.
    fn as_f64(self) -> f64;

    /// `v[i] = exp(v[i])` for every element: the library `exp` by default, a vectorised
    /// polynomial for `f32` ([`crate::math::fast_exp_f32`], below 2 ulp).
    fn exp_in_place(v: &mut [Self]) {
        for x in v.iter_mut() {
            *x = x.exp();
        }
    }

    /// `tanh(x)`: the library's by default; for `f32` a rational approximation that vectorises
    /// inside loops ([`crate::math::fast_tanh_f32`], absolute error below `1e-6`).
    #[inline(always)]
    fn fast_tanh(self) -> Self {
        self.tanh()
    }

    /// `dst = bf16(lhs) bf16(rhs)` (`+=` when `accumulate`): the product with its inputs
    /// rounded to bfloat16, sequential. [`crate::bf16::gemm_portable`] by default (rounded
    /// copies, then the product in `Self`: the reference); for `f32` [`crate::bf16::gemm_f32`]
    /// (the AVX-512 BF16 kernel where the CPU has one, sums in `f32`).
    ///
    /// # Panics
    /// If the shapes do not chain: `lhs: [m, k]`, `rhs: [k, n]`, `dst: [m, n]`.
    fn gemm_bf16(
        dst: faer::MatMut<'_, Self>, lhs: faer::MatRef<'_, Self>, rhs: faer::MatRef<'_, Self>,
        accumulate: bool,
    ) {
        crate::bf16::gemm_portable(dst, lhs, rhs, accumulate);
    }

    /// [`crate::bf16::gemm_f32_products`] for `f32`: `dst (+)= bf16(lhs) bf16(rhs)` with an
    /// operand that may be products of columns, computed while packed; `false` (nothing done:
    /// the caller materialises the operand and calls [`gemm_bf16`](Self::gemm_bf16)) where
    /// that kernel does not run, and for every other type.
    ///
    /// # Panics
    /// If the shapes do not chain (`f32`).
    fn gemm_bf16_products(
        dst: faer::MatMut<'_, Self>, lhs: crate::bf16::Operand<'_, Self>,
        rhs: crate::bf16::Operand<'_, Self>, accumulate: bool,
    ) -> bool {
        let _ = (dst, lhs, rhs, accumulate);
        false
    }

    /// `v[i] = tanh(v[i])` for every element, with [`fast_tanh`](Self::fast_tanh) (vectorised
    /// for `f32`: [`crate::math::tanh_f32`]).
    fn tanh_in_place(v: &mut [Self]) {
        for x in v.iter_mut() {
            *x = x.fast_tanh();
        }
    }
}

impl Scalar for f32 {
    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    fn exp_in_place(v: &mut [Self]) {
        crate::math::exp_shifted_f32(v, 0.0);
    }
    fn tanh_in_place(v: &mut [Self]) {
        crate::math::tanh_f32(v);
    }
    fn gemm_bf16(
        dst: faer::MatMut<'_, Self>, lhs: faer::MatRef<'_, Self>, rhs: faer::MatRef<'_, Self>,
        accumulate: bool,
    ) {
        crate::bf16::gemm_f32(dst, lhs, rhs, accumulate);
    }
    fn gemm_bf16_products(
        dst: faer::MatMut<'_, Self>, lhs: crate::bf16::Operand<'_, Self>,
        rhs: crate::bf16::Operand<'_, Self>, accumulate: bool,
    ) -> bool {
        crate::bf16::gemm_f32_products(dst, lhs, rhs, accumulate)
    }
    #[inline(always)]
    fn fast_tanh(self) -> Self {
        crate::math::fast_tanh_f32(self)
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Scalar for f64 {
    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
}
