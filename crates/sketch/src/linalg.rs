//! Small dense helpers on faer views shared by the sketch crates.
//!
//! Everything here is a thin, explicit wrapper: no hidden parallelism (the caller passes
//! [`Par`]), no allocation except where a function returns a new matrix.

use faer::{Accum, MatMut, MatRef, Par, unzip, zip};

use crate::Scalar;

/// `dst = alpha * lhs * rhs` (or `dst += alpha * lhs * rhs` when `accumulate`).
///
/// # Panics
/// If the shapes do not chain: `lhs: [m, k]`, `rhs: [k, n]`, `dst: [m, n]`.
#[inline]
pub fn gemm<T: Scalar>(
    dst: MatMut<'_, T>,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    alpha: T,
    accumulate: bool,
    par: Par,
) {
    let beta = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    faer::linalg::matmul::matmul(dst, beta, lhs, rhs, alpha, par);
}

/// `dst = scale * (x ∘ y)` (entrywise product).
///
/// # Panics
/// If the three shapes differ.
#[inline]
pub fn hadamard<T: Scalar>(dst: MatMut<'_, T>, x: MatRef<'_, T>, y: MatRef<'_, T>, scale: T) {
    zip!(dst, x, y).for_each(|unzip!(d, x, y)| *d = scale * *x * *y);
}

/// `dst += scale * x` (entrywise).
///
/// # Panics
/// If the shapes differ.
#[inline]
pub fn axpy<T: Scalar>(dst: MatMut<'_, T>, x: MatRef<'_, T>, scale: T) {
    zip!(dst, x).for_each(|unzip!(d, x)| *d += scale * *x);
}

/// `dst = scale * x` (entrywise).
///
/// # Panics
/// If the shapes differ.
#[inline]
pub fn scaled_copy<T: Scalar>(dst: MatMut<'_, T>, x: MatRef<'_, T>, scale: T) {
    zip!(dst, x).for_each(|unzip!(d, x)| *d = scale * *x);
}
