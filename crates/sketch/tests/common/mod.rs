//! Helpers shared by the integration tests.
#![allow(dead_code)]

use faer::{Mat, MatRef, Par};
use polysketch_core::{Scalar, seeded_rng};
use polysketch_sketch::PolySketch;
use rand_distr::{Distribution, StandardNormal};

/// An `n x h` matrix of standard Gaussians from `seed`.
pub fn gaussian<T: Scalar>(n: usize, h: usize, seed: u64) -> Mat<T> {
    let mut rng = seeded_rng(seed);
    let mut m = Mat::zeros(n, h);
    for j in 0..h {
        for i in 0..n {
            let z: f64 = StandardNormal.sample(&mut rng);
            m[(i, j)] = T::of(z);
        }
    }
    m
}

/// All entries of a matrix, column by column.
pub fn values<T: Scalar>(m: MatRef<'_, T>) -> Vec<f64> {
    (0..m.ncols()).flat_map(|j| m.col(j).iter().map(|x| x.as_f64()).collect::<Vec<_>>()).collect()
}

/// Widens any matrix to f64.
pub fn to_f64<T: Scalar>(m: MatRef<'_, T>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)].as_f64())
}

/// Asserts `|a − e| ≤ atol + rtol·|e|` entrywise, with `atol = rtol · max|e|` so that
/// entries that cancel to near zero are judged on the scale of the whole matrix.
pub fn assert_close(actual: MatRef<'_, f64>, expected: MatRef<'_, f64>, rtol: f64, what: &str) {
    assert_eq!(
        (actual.nrows(), actual.ncols()),
        (expected.nrows(), expected.ncols()),
        "{what}: shape"
    );
    let scale = values(expected).iter().fold(0.0f64, |m, x| m.max(x.abs())).max(f64::MIN_POSITIVE);
    for j in 0..expected.ncols() {
        for i in 0..expected.nrows() {
            let (a, e) = (actual[(i, j)], expected[(i, j)]);
            assert!(
                (a - e).abs() <= rtol * scale + rtol * e.abs(),
                "{what}: entry ({i}, {j}) = {a}, expected {e} (rtol {rtol}, scale {scale})"
            );
        }
    }
}

/// Asserts `|a − e| ≤ rtol · bound` entrywise, `bound` the magnitude of the terms behind each
/// entry (e.g. [`polysketch_sketch::reference::tree_term_bound`]): entries that cancel to near
/// zero are judged on the size of what cancelled, as rounding in any summation order allows.
pub fn assert_close_to_terms(
    actual: MatRef<'_, f64>, expected: MatRef<'_, f64>, bound: MatRef<'_, f64>, rtol: f64,
    what: &str,
) {
    assert_eq!(
        (actual.nrows(), actual.ncols()),
        (expected.nrows(), expected.ncols()),
        "{what}: shape"
    );
    for j in 0..expected.ncols() {
        for i in 0..expected.nrows() {
            let (a, e, b) = (actual[(i, j)], expected[(i, j)], bound[(i, j)]);
            assert!(
                (a - e).abs() <= rtol * b,
                "{what}: entry ({i}, {j}) = {a}, expected {e} (rtol {rtol}, terms of size {b})"
            );
        }
    }
}

/// Central finite-difference gradient of `L(a) = <g, sketch.apply(a)>` in f64.
pub fn fd_gradient<S: PolySketch<f64>>(
    s: &S, a: MatRef<'_, f64>, g: MatRef<'_, f64>, eps: f64,
) -> Mat<f64> {
    let loss = |a: MatRef<'_, f64>| -> f64 {
        let y = s.apply(a, Par::Seq).expect("apply");
        values(y.as_ref()).iter().zip(values(g)).map(|(y, g)| y * g).sum()
    };
    let mut work = a.to_owned();
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| {
        let x = work[(i, j)];
        work[(i, j)] = x + eps;
        let up = loss(work.as_ref());
        work[(i, j)] = x - eps;
        let down = loss(work.as_ref());
        work[(i, j)] = x;
        (up - down) / (2.0 * eps)
    })
}

/// Inner products `<S^T x^{⊗p}, S^T y^{⊗p}>` of rows 0 and 1 of `sa`.
pub fn row_dot<T: Scalar>(sa: MatRef<'_, T>, i: usize, j: usize) -> f64 {
    (0..sa.ncols()).map(|c| sa[(i, c)].as_f64() * sa[(j, c)].as_f64()).sum()
}
