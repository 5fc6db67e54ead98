//! Input validation shared by every public entry point of the crates.

use faer::MatRef;

use crate::{Error, Result, Scalar};

/// Upper bound on the memory a sketch's random parameters may take (4 GiB).
///
/// Constructors estimate the size of what they would draw before allocating and return
/// [`Error::TooLarge`] beyond this, instead of aborting on allocation failure.
pub const MAX_PARAMETER_BYTES: u128 = 4 << 30;

/// Checks that `m`, the argument named `input`, has exactly `expected` = `(rows, cols)`.
///
/// # Errors
/// [`Error::ShapeMismatch`] naming `op` and `input` otherwise.
pub fn check_shape<T>(
    op: &'static str, input: &'static str, m: MatRef<'_, T>, expected: (usize, usize),
) -> Result<()> {
    let got = (m.nrows(), m.ncols());
    if got != expected {
        return Err(Error::ShapeMismatch { op, input, expected, got });
    }
    Ok(())
}

/// Checks that `m`, the argument named `input`, has `cols` columns (any number of rows).
///
/// # Errors
/// [`Error::ShapeMismatch`] naming `op` and `input` otherwise.
pub fn check_cols<T>(
    op: &'static str, input: &'static str, m: MatRef<'_, T>, cols: usize,
) -> Result<()> {
    check_shape(op, input, m, (m.nrows(), cols))
}

/// Checks that `m` has at least one row.
///
/// # Errors
/// [`Error::EmptyInput`] naming `op` and `input` otherwise.
pub fn check_nonempty<T>(op: &'static str, input: &'static str, m: MatRef<'_, T>) -> Result<()> {
    if m.nrows() == 0 {
        return Err(Error::EmptyInput { op, input });
    }
    Ok(())
}

/// Checks that every entry of `m` is finite.
///
/// # Errors
/// [`Error::NonFinite`] with the position of the first NaN or infinity (in column-major
/// order).
pub fn check_finite<T: Scalar>(
    op: &'static str, input: &'static str, m: MatRef<'_, T>,
) -> Result<()> {
    // fast path over contiguous columns or rows, whichever are contiguous
    let fine = if m.col_stride() == 1 {
        rows_finite(m)
    } else if m.row_stride() == 1 || m.nrows() <= 1 {
        rows_finite(m.transpose())
    } else {
        (0..m.ncols()).all(|j| m.col(j).iter().all(|x| x.is_finite()))
    };
    if fine {
        return Ok(());
    }
    // the first bad value in column-major order
    for col in 0..m.ncols() {
        for (row, &x) in m.col(col).iter().enumerate() {
            if !x.is_finite() {
                return Err(Error::NonFinite { op, input, row, col });
            }
        }
    }
    Ok(())
}

/// Checks that `output`, computed by `op` from finite inputs, is finite: the one pass that
/// turns an overflow of the number format into a typed error instead of a result full of
/// infinities and NaNs.
///
/// # Errors
/// [`Error::Overflow`] naming `op`, the `input` whose magnitude is at fault and the `output`,
/// with the position of the first non-finite entry.
pub fn check_overflow<T: Scalar>(
    op: &'static str, input: &'static str, output_name: &'static str, output: MatRef<'_, T>,
) -> Result<()> {
    match check_finite(op, output_name, output) {
        Err(Error::NonFinite { row, col, .. }) => {
            Err(Error::Overflow { op, input, output: output_name, row, col })
        }
        other => other,
    }
}

/// Lanes of [`all_finite`] and [`rows_finite`]: four AVX-512 registers of f32, so the adds do
/// not form one dependency chain.
const LANES: usize = 64;

/// Adds `x · 0` of every value of `xs` into the lanes: 0 for a finite `x`, NaN for NaN or
/// infinity (inlined into each compiled version of its callers).
#[inline(always)]
fn add_to_lanes<T: Scalar>(acc: &mut [T; LANES], xs: &[T]) {
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += x * T::zero();
        }
    }
    for (a, &x) in acc.iter_mut().zip(tail) {
        *a += x * T::zero();
    }
}

/// Whether no NaN reached the lanes (one fold).
#[inline(always)]
fn lanes_finite<T: Scalar>(acc: &[T; LANES]) -> bool {
    acc.iter().fold(T::zero(), |s, &a| s + a).is_finite()
}

crate::multiversion! {
    /// Whether every entry of `m` is finite, for rows stored contiguously (`col_stride` 1;
    /// other rows are read one value at a time): every row goes into the same lanes, folded
    /// once, so that short rows (a head's 64 values) do not each pay for a fold (one call of
    /// [`all_finite`] per row cost 7 % of a PolySketch layer).
    fn rows_finite<T: Scalar>(m: MatRef<'_, T>) -> bool {
        let mut acc = [T::zero(); LANES];
        for i in 0..m.nrows() {
            match m.row(i).try_as_row_major() {
                Some(row) => add_to_lanes(&mut acc, row.as_slice()),
                None => {
                    if !m.row(i).iter().all(|x| x.is_finite()) {
                        return false;
                    }
                }
            }
        }
        lanes_finite(&acc)
    }
}

crate::multiversion! {
    /// Whether every value is finite, vectorised: `x * 0` is 0 for finite `x` and NaN for NaN or
    /// infinity, summed in 64 independent lanes so the adds do not form one dependency chain.
    pub fn all_finite<T: Scalar>(xs: &[T]) -> bool {
        let mut acc = [T::zero(); LANES];
        add_to_lanes(&mut acc, xs);
        lanes_finite(&acc)
    }
}

/// Values per work item of [`all_finite_par`]: 256 KiB of `f32`, long enough that a task's
/// overhead does not show, short enough that both threads get work on a head's rows.
const FINITE_CHUNK: usize = 1 << 16;

/// [`all_finite`] over chunks of [`FINITE_CHUNK`] values, in parallel under `Par::Rayon`: the
/// layers' checks of their inputs and outputs read every value once (tens of MiB at long
/// contexts, 2–4 % of a PolySketch forward on one thread). The answer does not depend on the
/// number of threads.
pub fn all_finite_par<T: Scalar>(xs: &[T], par: faer::Par) -> bool {
    use rayon::prelude::*;
    match par {
        faer::Par::Rayon(_) if xs.len() > FINITE_CHUNK => {
            xs.par_chunks(FINITE_CHUNK).all(|c| all_finite(c))
        }
        _ => all_finite(xs),
    }
}

/// The product of `sizes` in `u128`, saturating at `u128::MAX`: a size estimate that no
/// combination of `usize` arguments can wrap (then compared against a limit).
pub fn saturating_product(sizes: &[usize]) -> u128 {
    sizes.iter().fold(1u128, |acc, &x| acc.saturating_mul(x as u128))
}

/// Checks that `count` parameters of `elem_bytes` bytes each stay under
/// [`MAX_PARAMETER_BYTES`].
///
/// # Errors
/// [`Error::TooLarge`] otherwise.
pub fn check_param_bytes(sketch: &'static str, count: u128, elem_bytes: usize) -> Result<()> {
    let bytes = count.saturating_mul(elem_bytes as u128);
    if bytes > MAX_PARAMETER_BYTES {
        return Err(Error::TooLarge { sketch, bytes, limit: MAX_PARAMETER_BYTES });
    }
    Ok(())
}

/// Checks a dimension is nonzero.
///
/// # Errors
/// [`Error::ZeroDimension`] naming `sketch` and `what` otherwise.
pub fn check_nonzero(sketch: &'static str, what: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::ZeroDimension { sketch, what });
    }
    Ok(())
}

/// Checks a sketch's sizes: its degree `p` (`degree_ok` says whether the sketch supports it),
/// its input dimension `h` and its sketch size `r`.
///
/// # Errors
/// [`Error::InvalidDegree`] with `requirement` when `degree_ok` is false,
/// [`Error::ZeroDimension`] when `h` or `r` is 0.
pub fn check_sketch_sizes(
    sketch: &'static str, (p, degree_ok, requirement): (usize, bool, &'static str), h: usize,
    r: usize,
) -> Result<()> {
    if !degree_ok {
        return Err(Error::InvalidDegree { sketch, degree: p, requirement });
    }
    check_nonzero(sketch, "input dimension h", h)?;
    check_nonzero(sketch, "sketch size r", r)
}

#[cfg(test)]
mod tests {
    use faer::Mat;

    use super::*;

    /// Every contiguous layout a caller can pass (column-major, row-major as a transpose, and
    /// both as inner parts of bigger matrices, so that columns or rows are not adjacent in
    /// memory; single rows and columns; rows longer than the 64 lanes) and every position of a
    /// NaN or an infinity: the first bad entry in column-major order is the one reported, and
    /// the finite matrix passes.
    #[test]
    fn check_finite_finds_the_first_bad_entry_in_every_layout() {
        for (rows, cols) in [(1, 1), (1, 7), (7, 1), (3, 5), (5, 3), (2, 130), (130, 2), (9, 70)] {
            let value = |i: usize, j: usize| (i * cols + j) as f32 * 0.25 - 3.0;
            // `big` holds the values at rows 1.., columns 1.., NaN around them (which the
            // views must skip); `bigt` is its transpose
            let big = Mat::<f32>::from_fn(rows + 2, cols + 2, |i, j| match (i, j) {
                (1.., 1..) if i <= rows && j <= cols => value(i - 1, j - 1),
                _ => f32::NAN,
            });
            let bigt = Mat::<f32>::from_fn(cols + 2, rows + 2, |j, i| big[(i, j)]);
            let base = Mat::<f32>::from_fn(rows, cols, value);
            let t = Mat::<f32>::from_fn(cols, rows, |j, i| value(i, j));
            let cases = |bad: Option<(usize, usize, f32)>| {
                let (mut m, mut tm, mut bm, mut btm) =
                    (base.clone(), t.clone(), big.clone(), bigt.clone());
                if let Some((i, j, x)) = bad {
                    (m[(i, j)], tm[(j, i)], bm[(i + 1, j + 1)], btm[(j + 1, i + 1)]) = (x, x, x, x);
                }
                [
                    check_finite("op", "x", m.as_ref()),
                    check_finite("op", "x", tm.as_ref().transpose()),
                    check_finite("op", "x", bm.as_ref().submatrix(1, 1, rows, cols)),
                    check_finite("op", "x", btm.as_ref().transpose().submatrix(1, 1, rows, cols)),
                ]
            };
            for result in cases(None) {
                assert!(result.is_ok(), "{rows}x{cols}: {result:?}");
            }
            for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for (i, j) in (0..rows).flat_map(|i| (0..cols).map(move |j| (i, j))) {
                    for (layout, result) in cases(Some((i, j, x))).into_iter().enumerate() {
                        match result {
                            Err(Error::NonFinite { row, col, .. }) => {
                                assert_eq!((row, col), (i, j), "{rows}x{cols}, layout {layout}")
                            }
                            other => {
                                panic!("{rows}x{cols}, layout {layout}, ({i}, {j}): {other:?}")
                            }
                        }
                    }
                }
            }
        }
    }

    /// The parallel check agrees with the sequential one (and with the definition) for every
    /// position of a bad value near the chunk boundaries, on one thread and on the pool.
    #[test]
    fn all_finite_par_agrees_with_the_definition() {
        let len = 2 * FINITE_CHUNK + 37;
        let base: Vec<f32> = (0..len).map(|i| (i % 17) as f32 - 8.0).collect();
        let spots =
            [0, 1, FINITE_CHUNK - 1, FINITE_CHUNK, FINITE_CHUNK + 1, 2 * FINITE_CHUNK, len - 1];
        for par in [faer::Par::Seq, faer::Par::rayon(0), faer::Par::rayon(2)] {
            assert!(all_finite_par(&base, par));
            assert!(all_finite_par::<f32>(&[], par));
            for &at in &spots {
                for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut v = base.clone();
                    v[at] = x;
                    assert!(!all_finite_par(&v, par), "{par:?}: {x} at {at}");
                    assert!(!all_finite_par(&v[..at + 1], par), "{par:?}: {x} last");
                }
            }
        }
    }
}
