//! Finite-difference checks of every sketch's vector-Jacobian product, in f64.
//!
//! `L(a) = <g, apply(a)>` is a polynomial of degree p in `a`; central differences with step
//! 1e-5 have truncation error O(eps²·|third derivative|) ≈ 1e-9 relative here, so 1e-6 of the
//! largest gradient entry is a safe and still sharp tolerance.

mod common;

use common::{assert_close, fd_gradient, gaussian};
use faer::Par;
use polysketch_core::CHUNK_ROWS;
use polysketch_sketch::{CountSketch, GaussianJl, PolySketch, TensorSketch, TreeSketch};

fn check<S: PolySketch<f64>>(s: &S, n: usize, seed: u64) {
    let a = gaussian::<f64>(n, s.input_dim(), seed);
    let g = gaussian::<f64>(n, s.sketch_dim(), seed + 1);
    let got = s.vjp(a.as_ref(), g.as_ref(), Par::Seq).unwrap();
    let fd = fd_gradient(s, a.as_ref(), g.as_ref(), 1e-5);
    assert_close(got.as_ref(), fd.as_ref(), 1e-6, s.name());
}

#[test]
fn gaussian_jl_vjp() {
    check(&GaussianJl::<f64>::new(5, 7, 1).unwrap(), 4, 10);
}

#[test]
fn countsketch_vjp() {
    check(&CountSketch::<f64>::new(9, 4, 2).unwrap(), 4, 20);
}

#[test]
fn tensorsketch_vjp() {
    for p in 1..=4 {
        for r in [1, 6, 16] {
            check(&TensorSketch::<f64>::new(5, r, p, 3 + p as u64).unwrap(), 3, 30);
        }
    }
}

#[test]
fn gaussian_tree_vjp() {
    for p in [2, 4, 8] {
        check(&TreeSketch::<f64>::gaussian(4, 6, p, 4).unwrap(), 3, 40);
    }
}

#[test]
fn srht_tree_vjp() {
    for p in [2, 4, 8] {
        check(&TreeSketch::<f64>::srht(5, 6, p, 5).unwrap(), 3, 50);
    }
}

/// The parallel, chunked VJP equals the sequential one row for row.
#[test]
fn vjp_over_many_chunks_matches_sequential() {
    let n = 2 * CHUNK_ROWS + 3;
    let s = TreeSketch::<f64>::gaussian(6, 8, 4, 6).unwrap();
    let a = gaussian::<f64>(n, 6, 60);
    let g = gaussian::<f64>(n, 8, 61);
    let par = s.vjp(a.as_ref(), g.as_ref(), Par::rayon(2)).unwrap();
    let seq = s.vjp(a.as_ref(), g.as_ref(), Par::Seq).unwrap();
    assert_eq!(par, seq);
    // and each row only depends on its own row: check the last one by finite differences
    let last = a.subrows(n - 1, 1).to_owned();
    let fd = fd_gradient(&s, last.as_ref(), g.subrows(n - 1, 1), 1e-5);
    assert_close(par.subrows(n - 1, 1), fd.as_ref(), 1e-6, "last row");
}
