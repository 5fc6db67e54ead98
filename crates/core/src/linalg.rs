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
/// When one is row-major and the other column-major (the layer's row buffers against the lowtri
/// engine's gradients), it goes by strips of 16 rows through a small buffer (see
/// `transposed_apply`): the columns of a tall column-major array lie a multiple of 4 KiB apart,
/// so a plain walk (faer's `zip!`, or row by row) kept evicting its own lines from one L1 set,
/// about 5 cycles an entry and 4 % of a PolySketch layer's backward.
///
/// # Panics
/// If the shapes differ.
#[inline]
pub fn axpy<T: Scalar>(dst: MatMut<'_, T>, x: MatRef<'_, T>, scale: T) {
    if let Err(dst) = transposed_apply(dst, x, |d, x| *d += scale * x) {
        zip!(dst, x).for_each(|unzip!(d, x)| *d += scale * *x);
    }
}

/// `dst = scale * x` (entrywise); as [`axpy`] for a row-major `dst` and column-major `x`.
///
/// # Panics
/// If the shapes differ.
#[inline]
pub fn scaled_copy<T: Scalar>(dst: MatMut<'_, T>, x: MatRef<'_, T>, scale: T) {
    if let Err(dst) = transposed_apply(dst, x, |d, x| *d = scale * x) {
        zip!(dst, x).for_each(|unzip!(d, x)| *d = scale * *x);
    }
}

/// `dst = src` for short slices (a row of a head, a strip of a column): by 16 entries of known
/// length, which compile to vector moves, where `copy_from_slice` of a run-time length calls
/// `memmove`. Copying the 64-entry rows of one head out of 8 (32k rows) took 10.4–10.9 ms
/// against 11.5–12.4 ms by `copy_from_slice` in a temporary probe (memory-bound both ways).
///
/// # Panics
/// If the lengths differ.
#[inline]
pub fn copy_slice<T: Copy>(dst: &mut [T], src: &[T]) {
    const W: usize = 16;
    assert_eq!(dst.len(), src.len(), "copy_slice: lengths differ");
    let (mut d, mut s) = (dst.chunks_exact_mut(W), src.chunks_exact(W));
    for (d, s) in (&mut d).zip(&mut s) {
        if let (Ok(d), Ok(s)) = (<&mut [T; W]>::try_from(d), <&[T; W]>::try_from(s)) {
            *d = *s;
        }
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// `f(&mut dst[i, j], x[i, j])` for every entry when one of `dst`, `x` is row-major and the
/// other column-major; otherwise (or under 16 rows) `Err(dst)`, untouched. With `dst`
/// row-major it goes by strips of 16 rows over plain slices: the strip of each column of `x`
/// (one cache line) is copied into a small buffer, and the strip of `dst` is then filled row
/// by row from it. The other way round is the same on the transposes.
///
/// # Panics
/// If the shapes differ.
fn transposed_apply<'a, T: Scalar>(
    dst: MatMut<'a, T>, x: MatRef<'_, T>, f: impl Fn(&mut T, T),
) -> Result<(), MatMut<'a, T>> {
    assert_eq!((dst.nrows(), dst.ncols()), (x.nrows(), x.ncols()), "shapes differ");
    let row_major = |rs: isize, cs: isize| cs == 1 && rs != 1;
    if row_major(x.row_stride(), x.col_stride()) && row_major(dst.col_stride(), dst.row_stride()) {
        // dst column-major, x row-major: the same on the transposes
        return transposed_apply(dst.transpose_mut(), x.transpose(), f)
            .map_err(|d| d.transpose_mut());
    }
    let (n, cols) = (dst.nrows(), dst.ncols());
    if n < 16 || !row_major(dst.row_stride(), dst.col_stride()) || x.row_stride() != 1 {
        return Err(dst);
    }
    let Some(xcols) = (0..cols)
        .map(|j| x.col(j).try_as_col_major().map(|c| c.as_slice()))
        .collect::<Option<Vec<&[T]>>>()
    else {
        return Err(dst);
    };
    // a strip of x, column by column (`buf[j * STRIP + t] = x[r + t, j]`): the columns lie
    // a multiple of 4 KiB apart, so their lines share one L1 set and cannot stay resident
    // together; one line from each, copied once, can (cols × 64 bytes)
    const STRIP: usize = 16;
    let mut buf = vec![T::zero(); STRIP * cols];
    let mut dst = dst;
    for r in (0..n).step_by(STRIP) {
        let len = STRIP.min(n - r);
        for (b, xc) in buf.chunks_exact_mut(STRIP).zip(&xcols) {
            copy_slice(&mut b[..len], &xc[r..r + len]);
        }
        for t in 0..len {
            let Some(row) = dst.as_mut().row_mut(r + t).try_as_row_major_mut() else {
                unreachable!("dst's column stride is 1")
            };
            for (d, b) in row.as_slice_mut().iter_mut().zip(buf.chunks_exact(STRIP)) {
                f(d, b[t]);
            }
        }
    }
    Ok(())
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
    use super::{Scalar, axpy, copy_slice, ipow, pow_assign, pow_gate, scaled_copy};

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

    /// `axpy` and `scaled_copy` give the entrywise definition bit for bit for every pair of
    /// layouts (row- and column-major both ways, and a column-major submatrix with a gap
    /// between its columns), below and above the 16-row cut-off of the transposed walk.
    #[test]
    fn axpy_and_scaled_copy_equal_the_definition_in_every_layout() {
        use faer::Mat;
        let scale = 0.3f32;
        for (n, cols) in [(5, 3), (16, 1), (37, 9), (70, 64)] {
            let val = |i: usize, j: usize, s: f64| ((i * 31 + j * 7) as f64 * s).sin() as f32;
            let x = Mat::from_fn(n, cols, |i, j| val(i, j, 0.37));
            let d0 = Mat::from_fn(n, cols, |i, j| val(i, j, 0.11));
            let add = Mat::from_fn(n, cols, |i, j| d0[(i, j)] + scale * x[(i, j)]);
            let copy = Mat::from_fn(n, cols, |i, j| scale * x[(i, j)]);
            // a row-major x is the transpose of a column-major cols×n matrix
            let xt = x.transpose().to_owned();
            let wide = Mat::from_fn(n + 3, cols, |i, j| if i < n { x[(i, j)] } else { 9.0 });
            let xs = [x.as_ref(), xt.transpose(), wide.as_ref().subrows(0, n)];
            for (k, xv) in xs.into_iter().enumerate() {
                for row_major in [false, true] {
                    // dst as stored: n×cols, or its transpose (so that dst itself is row-major)
                    let stored =
                        |m: &Mat<f32>| if row_major { m.transpose().to_owned() } else { m.clone() };
                    fn view(m: &mut Mat<f32>, row_major: bool) -> faer::MatMut<'_, f32> {
                        if row_major { m.as_mut().transpose_mut() } else { m.as_mut() }
                    }
                    let back = |m: Mat<f32>| if row_major { m.transpose().to_owned() } else { m };
                    let (mut da, mut dc) = (stored(&d0), stored(&d0));
                    axpy(view(&mut da, row_major), xv, scale);
                    scaled_copy(view(&mut dc, row_major), xv, scale);
                    let what = format!("{n}×{cols}, x layout {k}, row-major dst {row_major}");
                    assert_eq!(back(da), add, "axpy, {what}");
                    assert_eq!(back(dc), copy, "scaled_copy, {what}");
                }
            }
        }
    }

    #[test]
    fn copy_slice_copies_every_length() {
        for len in [0, 1, 15, 16, 17, 37, 64] {
            let src: Vec<u32> = (0..len).collect();
            let mut dst = vec![u32::MAX; len as usize];
            copy_slice(&mut dst, &src);
            assert_eq!(dst, src, "length {len}");
        }
    }
}
