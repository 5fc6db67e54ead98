//! Every fast path against its plain f64 reference, on shapes and values drawn by proptest.
//!
//! Tolerances: in f64 the fast and the reference paths sum the same terms in different orders,
//! so they agree to a few ulps of the largest entry (1e-12 leaves room for sums of up to ~1e3
//! terms); f32 results are compared with the f64 reference at 1e-4 of the largest entry (f32
//! rounding through FFTs and two levels of products).

mod common;

use common::{assert_close, assert_close_to_terms, to_f64};
use faer::{Mat, Par};
use polysketch_core::CHUNK_ROWS;
use polysketch_sketch::{
    CountSketch, GaussianJl, PolySketch, TensorSketch, TreeSketch, reference::*,
};
use proptest::prelude::*;

fn matrix(n: usize, h: usize, values: &[f64]) -> Mat<f64> {
    Mat::from_fn(n, h, |i, j| values[(i * h + j) % values.len()])
}

fn shapes() -> impl Strategy<Value = (usize, usize, usize, u64, Vec<f64>)> {
    (1usize..24, 1usize..7, 1usize..40, any::<u64>(), prop::collection::vec(-2.0f64..2.0, 1..64))
}

/// The f32 sketch against the f64 reference within 1e-4: of the largest entry, or of the
/// terms' sizes when `terms` is given.
fn check_f32<S32: PolySketch<f32>>(
    s: &S32, a: &Mat<f64>, expected: &Mat<f64>, terms: Option<&Mat<f64>>, what: &str,
) {
    let a32 = Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)] as f32);
    let got = to_f64(s.apply(a32.as_ref(), Par::Seq).unwrap().as_ref());
    match terms {
        Some(t) => assert_close_to_terms(got.as_ref(), expected.as_ref(), t.as_ref(), 1e-4, what),
        None => assert_close(got.as_ref(), expected.as_ref(), 1e-4, what),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn gaussian_jl_matches_reference((n, h, r, seed, v) in shapes()) {
        let a = matrix(n, h, &v);
        let s = GaussianJl::<f64>::new(h, r, seed).unwrap();
        let e = gaussian_jl_reference(&s, a.as_ref());
        assert_close(s.apply(a.as_ref(), Par::Seq).unwrap().as_ref(), e.as_ref(), 1e-12, "GaussianJl f64");
        check_f32(&GaussianJl::<f32>::new(h, r, seed).unwrap(), &a, &e, None, "GaussianJl f32");
    }

    #[test]
    fn countsketch_matches_reference((n, h, r, seed, v) in shapes()) {
        let a = matrix(n, h, &v);
        let s = CountSketch::<f64>::new(h, r, seed).unwrap();
        let e = countsketch_reference(&s, a.as_ref());
        assert_close(s.apply(a.as_ref(), Par::Seq).unwrap().as_ref(), e.as_ref(), 1e-12, "CountSketch f64");
        check_f32(&CountSketch::<f32>::new(h, r, seed).unwrap(), &a, &e, None, "CountSketch f32");
    }

    #[test]
    fn tensorsketch_matches_reference((n, h, r, seed, v) in shapes(), p in 1usize..5) {
        let a = matrix(n, h, &v);
        let s = TensorSketch::<f64>::new(h, r, p, seed).unwrap();
        let e = tensorsketch_reference(&s, a.as_ref());
        // the FFTs mix every bucket of a row: each entry is judged on the row's whole mass
        // ‖a_i‖₁^p, the sum of the terms' sizes (a row whose tensor power cancels to zero
        // leaves rounding noise of that size)
        let mass = Mat::from_fn(n, r, |i, _| (0..h).map(|j| a[(i, j)].abs()).sum::<f64>().powi(p as i32));
        let got = s.apply(a.as_ref(), Par::Seq).unwrap();
        assert_close_to_terms(got.as_ref(), e.as_ref(), mass.as_ref(), 1e-12, "TensorSketch f64");
        check_f32(&TensorSketch::<f32>::new(h, r, p, seed).unwrap(), &a, &e, Some(&mass), "TensorSketch f32");
    }

    #[test]
    fn gaussian_tree_matches_reference((n, h, r, seed, v) in shapes(), log_p in 1u32..4) {
        let (a, p) = (matrix(n, h, &v), 1usize << log_p);
        let s = TreeSketch::<f64>::gaussian(h, r, p, seed).unwrap();
        let e = tree_reference(&s, a.as_ref());
        assert_close(s.apply(a.as_ref(), Par::Seq).unwrap().as_ref(), e.as_ref(), 1e-12, "Tree f64");
        check_f32(&TreeSketch::<f32>::gaussian(h, r, p, seed).unwrap(), &a, &e, None, "Tree f32");
    }

    #[test]
    fn srht_tree_matches_reference((n, h, r, seed, v) in shapes(), log_p in 1u32..4) {
        let (a, p) = (matrix(n, h, &v), 1usize << log_p);
        let s = TreeSketch::<f64>::srht(h, r, p, seed).unwrap();
        let (e, terms) = (tree_reference(&s, a.as_ref()), tree_term_bound(&s, a.as_ref()));
        // the Walsh–Hadamard transform sums in another order than the dense reference: entries
        // that cancel (a constant row, say) are judged on the size of their terms
        let got = s.apply(a.as_ref(), Par::Seq).unwrap();
        assert_close_to_terms(got.as_ref(), e.as_ref(), terms.as_ref(), 1e-12, "SRHT tree f64");
    }
}

/// The SRHT projections are sampled rows of the ±1 Walsh–Hadamard matrix (Sylvester's
/// construction, \(H_{kj} = (-1)^{\mathrm{popcount}(k \wedge j)}\)) times per-input signs:
/// \(\pi_{jc} = \sigma_j H_{\iota_c j}\). Since \(H_{aj}H_{bj} = H_{(a \oplus b) j}\), the
/// entrywise product of any column with column 0 must be a Hadamard row, whatever the signs.
#[test]
fn srht_projection_is_a_signed_sampled_hadamard() {
    let (h, r) = (8, 12);
    let sylvester = |k: usize, j: usize| {
        if (k & j).count_ones().is_multiple_of(2) { 1.0 } else { -1.0 }
    };
    let s = TreeSketch::<f64>::srht(h, r, 4, 5).unwrap();
    for l in 0..2 {
        let d = if l == 0 { h } else { r };
        for pi in s.dense_projections(l).unwrap() {
            assert!(common::values(pi.as_ref()).iter().all(|x| x.abs() == 1.0), "entries are ±1");
            for c in 0..r {
                let prod: Vec<f64> = (0..d).map(|j| pi[(j, c)] * pi[(j, 0)]).collect();
                let rows = d.next_power_of_two();
                assert!(
                    (0..rows).any(|k| (0..d).all(|j| prod[j] == sylvester(k, j))),
                    "level {l}, column {c}"
                );
            }
        }
    }
}

/// More rows than one chunk, in parallel: the driver must cover every row exactly once.
#[test]
fn many_rows_in_parallel_match_reference() {
    let n = 3 * CHUNK_ROWS + 17;
    let a = common::gaussian::<f64>(n, 5, 9);
    let s = TreeSketch::<f64>::gaussian(5, 8, 4, 1).unwrap();
    let e = tree_reference(&s, a.as_ref());
    assert_close(
        s.apply(a.as_ref(), Par::rayon(2)).unwrap().as_ref(),
        e.as_ref(),
        1e-12,
        "tree, parallel",
    );
    let t = TensorSketch::<f64>::new(5, 16, 2, 1).unwrap();
    let e = tensorsketch_reference(&t, a.as_ref());
    assert_close(
        t.apply(a.as_ref(), Par::rayon(2)).unwrap().as_ref(),
        e.as_ref(),
        1e-12,
        "tensorsketch, parallel",
    );
}

/// Row-major input views and output views with other strides give the same result.
#[test]
fn strided_views_are_handled() {
    let a = common::gaussian::<f64>(40, 6, 3);
    let row_major: Vec<f64> =
        (0..40).flat_map(|i| (0..6).map(move |j| (i, j))).map(|(i, j)| a[(i, j)]).collect();
    let view = faer::MatRef::from_row_major_slice(&row_major, 40, 6);
    for s in [
        Box::new(TreeSketch::<f64>::gaussian(6, 10, 2, 4).unwrap()) as Box<dyn PolySketch<f64>>,
        Box::new(TreeSketch::<f64>::srht(6, 10, 4, 4).unwrap()),
        Box::new(TensorSketch::<f64>::new(6, 10, 3, 4).unwrap()),
        Box::new(CountSketch::<f64>::new(6, 10, 4).unwrap()),
    ] {
        let e = s.apply(a.as_ref(), Par::Seq).unwrap();
        let got = s.apply(view, Par::Seq).unwrap();
        assert_eq!(got, e, "{}", s.name());
        let mut out = Mat::<f64>::zeros(10, 40);
        s.apply_into(view, out.as_mut().transpose_mut(), Par::Seq).unwrap();
        assert_eq!(out.transpose().to_owned(), e, "{} transposed output", s.name());
    }
}

/// The dense levels (what a GPU runs as matrix products) give the sketch: \(AS\) for the JL
/// projection, and for trees each level's side-by-side projections combined pairwise as
/// \(\sqrt{1/r}\,(MG_1) \circ (MG_2)\); TensorSketch has none.
#[test]
fn dense_levels_reproduce_the_sketch() {
    let (n, h, r) = (7, 6, 5);
    let a = common::gaussian::<f64>(n, h, 3);
    let jl = GaussianJl::<f64>::new(h, r, 1).unwrap();
    let levels = jl.dense_levels().unwrap();
    assert_eq!(levels.len(), 1);
    assert_close(
        (&a * &levels[0]).as_ref(),
        jl.apply(a.as_ref(), Par::Seq).unwrap().as_ref(),
        1e-12,
        "JL dense level",
    );
    for q in [2, 4, 8] {
        let s = TreeSketch::<f64>::gaussian(h, r, q, 2).unwrap();
        let levels = s.dense_levels().unwrap();
        assert_eq!(levels.len(), q.trailing_zeros() as usize);
        let mut cur = a.clone();
        for (l, w) in levels.iter().enumerate() {
            let nodes = q >> (l + 1);
            assert_eq!(w.ncols(), 2 * nodes * r);
            // level 0 reads the rows for every projection; above, projection k reads child k
            let p = if l == 0 {
                &cur * w
            } else {
                Mat::from_fn(n, w.ncols(), |i, c| {
                    let k = c / r;
                    (0..r).map(|t| cur[(i, k * r + t)] * w[(t, c)]).sum()
                })
            };
            cur = Mat::from_fn(n, nodes * r, |i, c| {
                let (j, t) = (c / r, c % r);
                p[(i, 2 * j * r + t)] * p[(i, (2 * j + 1) * r + t)] / (r as f64).sqrt()
            });
        }
        assert_close(
            cur.as_ref(),
            s.apply(a.as_ref(), Par::Seq).unwrap().as_ref(),
            1e-12,
            &format!("tree degree {q} dense levels"),
        );
    }
    let ts = TensorSketch::<f64>::new(h, r, 2, 0).unwrap();
    assert!(ts.dense_levels().is_none());
}
