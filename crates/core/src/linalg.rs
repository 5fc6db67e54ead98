//! Small dense helpers on faer views shared by every crate.
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
    dst: MatMut<'_, T>, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>, alpha: T, accumulate: bool,
    par: Par,
) {
    let beta = if accumulate { Accum::Add } else { Accum::Replace };
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
/// When one is row-major and the other column-major, it goes by tiles of 32 rows, so that both
/// stay in cache (a plain transposed walk strides through memory and ran several times slower).
///
/// # Panics
/// If the shapes differ.
#[inline]
pub fn axpy<T: Scalar>(mut dst: MatMut<'_, T>, x: MatRef<'_, T>, scale: T) {
    const TILE: usize = 32;
    let transposed = |a: isize, b: isize| a == 1 && b != 1 || a != 1 && b == 1;
    if !transposed(dst.row_stride(), x.row_stride()) || dst.nrows() <= TILE {
        zip!(dst, x).for_each(|unzip!(d, x)| *d += scale * *x);
        return;
    }
    let n = dst.nrows();
    for r in (0..n).step_by(TILE) {
        let len = TILE.min(n - r);
        zip!(dst.as_mut().subrows_mut(r, len), x.subrows(r, len))
            .for_each(|unzip!(d, x)| *d += scale * *x);
    }
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

crate::multiversion! {
    /// `v[i] = v[i]^e` ([`ipow`]) for every entry, the branch on `e` taken once per slice so
    /// that the loop vectorises (a run-time `e` inside the loop made it a jump per element:
    /// 3 % of a PolySketch layer with local blocks). The same values as `ipow`, bit for bit.
    pub fn pow_assign<T: Scalar>(v: &mut [T], e: u32) {
        match e {
            2 => v.iter_mut().for_each(|x| *x = ipow(*x, 2)),
            3 => v.iter_mut().for_each(|x| *x = ipow(*x, 3)),
            4 => v.iter_mut().for_each(|x| *x = ipow(*x, 4)),
            _ => v.iter_mut().for_each(|x| *x = ipow(*x, e)),
        }
    }
}

crate::multiversion! {
    /// `d[i] = c · g[i]^e · d[i]`, the chain rule of \\(s = g^{e+1}\\) (with \\(c = e +
    /// 1\\)) through a slice of scores, the branch on `e` taken once per slice (see
    /// [`pow_assign`]).
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn pow_gate<T: Scalar>(d: &mut [T], g: &[T], e: u32, c: T) {
        assert_eq!(d.len(), g.len(), "pow_gate: lengths differ");
        let pairs = d.iter_mut().zip(g);
        match e {
            1 => pairs.for_each(|(d, g)| *d = c * ipow(*g, 1) * *d),
            2 => pairs.for_each(|(d, g)| *d = c * ipow(*g, 2) * *d),
            3 => pairs.for_each(|(d, g)| *d = c * ipow(*g, 3) * *d),
            _ => pairs.for_each(|(d, g)| *d = c * ipow(*g, e) * *d),
        }
    }
}

/// \\(\langle x, y\rangle\\) over slices with 16 independent partial sums, so the compiler can
/// vectorise it (a single running sum is one long dependency chain). The summation order is
/// fixed, so the result is deterministic.
///
/// # Panics
/// If the lengths differ.
#[inline(always)]
pub fn dot<T: Scalar>(x: &[T], y: &[T]) -> T {
    assert_eq!(x.len(), y.len(), "dot: lengths differ");
    const LANES: usize = 16;
    let mut acc = [T::zero(); LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail: T =
        xc.remainder().iter().zip(yc.remainder()).fold(T::zero(), |s, (&a, &b)| s + a * b);
    for (xs, ys) in xc.zip(yc) {
        for ((a, &u), &v) in acc.iter_mut().zip(xs).zip(ys) {
            *a += u * v;
        }
    }
    acc.iter().fold(T::zero(), |s, &a| s + a) + tail
}

/// \(\sum_i x_i\) with 16 independent partial sums, like [`dot`] (vectorised, deterministic).
#[inline(always)]
pub fn sum<T: Scalar>(x: &[T]) -> T {
    const LANES: usize = 16;
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: T = chunks.remainder().iter().fold(T::zero(), |s, &a| s + a);
    for xs in chunks {
        acc.iter_mut().zip(xs).for_each(|(a, &u)| *a += u);
    }
    acc.iter().fold(T::zero(), |s, &a| s + a) + tail
}

/// Cuts `m` into consecutive row blocks of `size` rows (the last may be shorter): disjoint
/// mutable views that can be handed to different threads.
///
/// # Panics
/// If `size` is 0.
pub fn row_blocks<T>(m: MatMut<'_, T>, size: usize) -> Vec<MatMut<'_, T>> {
    assert!(size > 0, "row_blocks: size must be positive");
    let mut out = Vec::with_capacity(m.nrows().div_ceil(size));
    let mut rest = m;
    while rest.nrows() > 0 {
        let len = size.min(rest.nrows());
        let (head, tail) = rest.split_at_row_mut(len);
        out.push(head);
        rest = tail;
    }
    out
}

/// Defines a slice kernel (generic over [`Scalar`](crate::Scalar) as `fn name<T: Scalar>`, or
/// not generic), compiled three times
/// (AVX-512F, AVX2+FMA, baseline) with a runtime choice of the widest the CPU has, so its loop
/// vectorises to full width without building the whole crate for one CPU. Every version rounds
/// identically (Rust never contracts `a * b + c` into a fused multiply-add), so results do not
/// depend on the CPU.
///
/// ```
/// polysketch_core::multiversion! {
///     /// `y[i] += a · x[i]`.
///     pub fn axpy_slice<T: Scalar>(y: &mut [T], x: &[T], a: T) {
///         y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
///     }
/// }
/// let mut y = vec![1.0f32; 3];
/// axpy_slice(&mut y, &[1.0, 2.0, 3.0], 2.0);
/// assert_eq!(y, vec![3.0, 5.0, 7.0]);
/// ```
#[macro_export]
macro_rules! multiversion {
    ($(#[$doc:meta])* $vis:vis fn $name:ident $(<$t:ident: Scalar>)? ($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        #[inline]
        $vis fn $name $(<$t: $crate::Scalar>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body $(<$t: $crate::Scalar>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512 $(<$t: $crate::Scalar>)? ($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2 $(<$t: $crate::Scalar>)? ($($arg: $ty),*) $(-> $ret)? {
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

#[cfg(test)]
mod tests {
    use super::{Scalar, ipow, pow_assign, pow_gate};

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
                assert!((a - b).abs() <= 1e-14 * b.abs().max(1.0), "{x}^{e}: {a} vs {b}");
            }
        }
    }

    /// The slice kernels give `ipow`'s values bit for bit, for every exponent they branch on
    /// and beyond, in f32 and f64, over values of both signs and a tail shorter than a vector.
    #[test]
    fn pow_assign_and_pow_gate_equal_ipow_entry_by_entry() {
        fn check<T: Scalar>() {
            let g: Vec<T> = (0..37).map(|i| T::of(((i as f64) * 0.71).sin() * 1.7)).collect();
            let d: Vec<T> = (0..37).map(|i| T::of(((i as f64) * 0.37).cos())).collect();
            let c = T::of(3.0);
            for e in 0..10u32 {
                let mut v = g.clone();
                pow_assign(&mut v, e);
                let mut w = d.clone();
                pow_gate(&mut w, &g, e, c);
                for i in 0..g.len() {
                    assert_eq!(v[i], ipow(g[i], e), "pow_assign, e = {e}, entry {i}");
                    assert_eq!(w[i], c * ipow(g[i], e) * d[i], "pow_gate, e = {e}, entry {i}");
                }
            }
        }
        check::<f32>();
        check::<f64>();
    }
}
