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

/// \\(x^e\\) by repeated squaring, inlined: `powi` on `f32` calls a library routine per element,
/// which dominated the diagonal blocks of the lowtri crate.
#[inline(always)]
pub fn ipow<T: Scalar>(x: T, e: u32) -> T {
    match e {
        0 => T::one(),
        1 => x,
        2 => x * x,
        3 => x * x * x,
        4 => {
            let y = x * x;
            y * y
        }
        _ => {
            let (mut base, mut e, mut acc) = (x, e, T::one());
            while e > 0 {
                if e & 1 == 1 {
                    acc *= base;
                }
                base *= base;
                e >>= 1;
            }
            acc
        }
    }
}

/// \\(\langle x, y\rangle\\) over slices with 16 independent partial sums, so the compiler can
/// vectorise it (a single running sum is one long dependency chain). The summation order is
/// fixed, so the result is deterministic.
///
/// # Panics
/// If the lengths differ.
#[inline]
pub fn dot<T: Scalar>(x: &[T], y: &[T]) -> T {
    assert_eq!(x.len(), y.len(), "dot: lengths differ");
    const LANES: usize = 16;
    let mut acc = [T::zero(); LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail: T = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .fold(T::zero(), |s, (&a, &b)| s + a * b);
    for (xs, ys) in xc.zip(yc) {
        for ((a, &u), &v) in acc.iter_mut().zip(xs).zip(ys) {
            *a += u * v;
        }
    }
    acc.iter().fold(T::zero(), |s, &a| s + a) + tail
}

/// Defines a public slice kernel compiled three times (AVX-512F, AVX2+FMA, baseline) with a
/// runtime choice of the widest the CPU has, so its loop vectorises to full width without
/// building the whole crate for one CPU. Every version rounds identically (Rust never contracts
/// `a * b + c` into a fused multiply-add), so results do not depend on the CPU.
macro_rules! multiversion {
    ($(#[$doc:meta])* pub fn $name:ident<T: Scalar>($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        #[inline]
        pub fn $name<T: Scalar>($($arg: $ty),*) {
            #[inline(always)]
            fn body<T: Scalar>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512<T: Scalar>($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2<T: Scalar>($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

multiversion! {
    /// `o[i] = w · x[i] · y[i]`.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn scaled_product<T: Scalar>(o: &mut [T], x: &[T], y: &[T], w: T) {
        assert!(o.len() == x.len() && x.len() == y.len(), "scaled_product: lengths differ");
        for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
            *o = w * x * y;
        }
    }
}

multiversion! {
    /// `o[i] += w · x[i] · y[i]`.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn scaled_product_add<T: Scalar>(o: &mut [T], x: &[T], y: &[T], w: T) {
        assert!(o.len() == x.len() && x.len() == y.len(), "scaled_product_add: lengths differ");
        for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
            *o += w * x * y;
        }
    }
}

multiversion! {
    /// One step of an exclusive running sum kept in `f64`: `v[i] ← acc[i]` (rounded to `T`),
    /// then `acc[i] += v[i]` (the old value). Walking the blocks of a prefix in order with it
    /// gives exclusive prefix sums whose rounding does not grow with the number of blocks.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn exclusive_scan_step<T: Scalar>(v: &mut [T], acc: &mut [f64]) {
        assert_eq!(v.len(), acc.len(), "exclusive_scan_step: lengths differ");
        for (v, a) in v.iter_mut().zip(acc.iter_mut()) {
            let x = *v;
            *v = T::of(*a);
            *a += x.as_f64();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ipow;

    #[test]
    fn dot_matches_the_plain_sum() {
        let x: Vec<f64> = (0..37).map(|i| (i as f64 * 0.3).sin()).collect();
        let y: Vec<f64> = (0..37).map(|i| (i as f64 * 0.7).cos()).collect();
        let plain: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert!((super::dot(&x, &y) - plain).abs() < 1e-13);
    }

    #[test]
    fn ipow_matches_powi() {
        for e in 0..12u32 {
            for x in [-1.7f64, -0.3, 0.0, 0.9, 2.5] {
                let (a, b) = (ipow(x, e), x.powi(e as i32));
                assert!(
                    (a - b).abs() <= 1e-14 * b.abs().max(1.0),
                    "{x}^{e}: {a} vs {b}"
                );
            }
        }
    }
}
