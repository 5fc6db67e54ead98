//! The self-tensored sketch: layouts, the Gram identity, nonnegativity, VJPs, and its bias.

use faer::{Mat, MatRef, Par};
use polysketch_core::{seeded_rng, split_seed};
use polysketch_sketch::{GaussianJl, PolySketch, TensorSketch, TreeSketch, jl};
use polysketch_tensoring::{Layout, SelfTensored, feature_dim, gram_block, tensor_square};
use proptest::prelude::*;
use rand_distr::{Distribution, StandardNormal};

fn gaussian(n: usize, h: usize, seed: u64) -> Mat<f64> {
    let mut rng = seeded_rng(seed);
    let mut m = Mat::zeros(n, h);
    for j in 0..h {
        for i in 0..n {
            m[(i, j)] = StandardNormal.sample(&mut rng);
        }
    }
    m
}

fn max_abs(m: MatRef<'_, f64>) -> f64 {
    (0..m.ncols())
        .flat_map(|j| m.col(j).iter().copied().collect::<Vec<_>>())
        .fold(0.0, |a: f64, x| a.max(x.abs()))
}

/// |a − e| ≤ rtol · max|e| entrywise.
fn assert_close(a: MatRef<'_, f64>, e: MatRef<'_, f64>, rtol: f64, what: &str) {
    let tol = rtol * max_abs(e).max(f64::MIN_POSITIVE);
    let diff = max_abs((a.to_owned() - e.to_owned()).as_ref());
    assert!(diff <= tol, "{what}: max difference {diff} > {tol}");
}

/// l ⊗ l by the definition: feature a·r + b is l_a l_b.
fn full_reference(l: MatRef<'_, f64>) -> Mat<f64> {
    let r = l.ncols();
    Mat::from_fn(l.nrows(), r * r, |i, f| l[(i, f / r)] * l[(i, f % r)])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The full layout is l ⊗ l; the symmetric one has r(r+1)/2 features with the same Gram.
    #[test]
    fn layouts_agree(n in 1usize..12, r in 1usize..40, seed in any::<u64>()) {
        let l = gaussian(n, r, seed);
        let mut full = Mat::zeros(n, r * r);
        tensor_square(l.as_ref(), Layout::Full, full.as_mut());
        assert_close(full.as_ref(), full_reference(l.as_ref()).as_ref(), 0.0, "full layout");
        let mut sym = Mat::zeros(n, feature_dim(r, Layout::Symmetric));
        prop_assert_eq!(sym.ncols(), r * (r + 1) / 2);
        tensor_square(l.as_ref(), Layout::Symmetric, sym.as_mut());
        assert_close((&sym * sym.transpose()).as_ref(), (&full * full.transpose()).as_ref(), 1e-13, "symmetric Gram");
        // row-major input and output views take the strided path and give the same features
        let l_rows = l.transpose().to_owned();
        let mut sym_t = Mat::zeros(sym.ncols(), n);
        tensor_square(l_rows.transpose(), Layout::Symmetric, sym_t.as_mut().transpose_mut());
        assert_close(sym_t.transpose(), sym.as_ref(), 0.0, "strided views");
    }

    /// ⟨φ'(x), φ'(y)⟩ ≥ 0 for every pair, through features and through the Gram identity.
    #[test]
    fn inner_products_are_nonnegative(v in prop::collection::vec(-3.0f64..3.0, 16), seed in any::<u64>(), full in any::<bool>()) {
        let layout = if full { Layout::Full } else { Layout::Symmetric };
        let phi = SelfTensored::new(TreeSketch::<f64>::gaussian(4, 6, 2, seed).unwrap(), layout);
        let a = Mat::from_fn(4, 4, |i, j| v[i * 4 + j]);
        let f = phi.apply(a.as_ref(), Par::Seq).unwrap();
        let g = &f * f.transpose();
        let scale = max_abs(g.as_ref());
        for i in 0..4 { for j in 0..4 {
            // the features' inner product is a sum of products: allow rounding below zero
            prop_assert!(g[(i, j)] >= -1e-12 * scale, "feature Gram ({}, {}) = {}", i, j, g[(i, j)]);
        }}
        let exact = phi.gram(a.as_ref(), a.as_ref(), Par::Seq).unwrap();
        for i in 0..4 { for j in 0..4 { prop_assert!(exact[(i, j)] >= 0.0); } }
    }
}

/// gram_block (O(b²r)) equals the explicit product of r²-wide features.
#[test]
fn gram_identity_matches_explicit_features() {
    for layout in [Layout::Full, Layout::Symmetric] {
        let phi = SelfTensored::new(TreeSketch::<f64>::gaussian(8, 16, 2, 3).unwrap(), layout);
        let (q, k) = (gaussian(30, 8, 1), gaussian(20, 8, 2));
        let explicit = phi.apply(q.as_ref(), Par::Seq).unwrap()
            * phi.apply(k.as_ref(), Par::Seq).unwrap().transpose();
        let (l, r) = (
            phi.base().apply(q.as_ref(), Par::Seq).unwrap(),
            phi.base().apply(k.as_ref(), Par::Seq).unwrap(),
        );
        let mut g = Mat::zeros(30, 20);
        gram_block(l.as_ref(), r.as_ref(), g.as_mut(), Par::Seq);
        assert_close(g.as_ref(), explicit.as_ref(), 1e-13, "gram_block");
        assert_close(
            phi.gram(q.as_ref(), k.as_ref(), Par::rayon(2)).unwrap().as_ref(),
            explicit.as_ref(),
            1e-13,
            "gram",
        );
    }
}

/// Finite differences of L(a) = <g, φ'(a)> in both layouts and over several bases.
#[test]
fn vjp_matches_finite_differences() {
    let bases: Vec<Box<dyn PolySketch<f64>>> = vec![
        Box::new(GaussianJl::new(5, 6, 1).unwrap()),
        Box::new(TreeSketch::gaussian(5, 6, 2, 2).unwrap()),
        Box::new(TreeSketch::srht(5, 7, 4, 3).unwrap()),
        Box::new(TensorSketch::new(5, 6, 3, 4).unwrap()),
    ];
    for base in bases {
        let name = base.name();
        for layout in [Layout::Full, Layout::Symmetric] {
            let phi = SelfTensored::new(&base, layout);
            let a = gaussian(3, 5, 10);
            let g = gaussian(3, phi.sketch_dim(), 11);
            let got = phi.vjp(a.as_ref(), g.as_ref(), Par::Seq).unwrap();
            let loss = |a: &Mat<f64>| -> f64 {
                let y = phi.apply(a.as_ref(), Par::Seq).unwrap();
                (0..y.nrows())
                    .map(|i| (0..y.ncols()).map(|j| y[(i, j)] * g[(i, j)]).sum::<f64>())
                    .sum()
            };
            let eps = 1e-5;
            let mut work = a.clone();
            let fd = Mat::from_fn(3, 5, |i, j| {
                let x = work[(i, j)];
                work[(i, j)] = x + eps;
                let up = loss(&work);
                work[(i, j)] = x - eps;
                let down = loss(&work);
                work[(i, j)] = x;
                (up - down) / (2.0 * eps)
            });
            assert_close(got.as_ref(), fd.as_ref(), 1e-6, &format!("{name} {layout:?}"));
        }
    }
}

/// Samples of <φ'(x), φ'(y)> − <x, y>^p over independent draws.
fn bias_samples(p: usize, r: usize, draws: usize, x: &Mat<f64>) -> Vec<f64> {
    let dot: f64 = (0..x.ncols()).map(|j| x[(0, j)] * x[(1, j)]).sum();
    (0..draws)
        .map(|d| {
            let phi = SelfTensored::<Box<dyn PolySketch<f64>>>::random(
                x.ncols(),
                r,
                p,
                Layout::Symmetric,
                split_seed(77, d as u64),
            )
            .unwrap();
            phi.gram(x.as_ref(), x.as_ref(), Par::Seq).unwrap()[(0, 1)] - dot.powi(p as i32)
        })
        .collect()
}

/// p = 2 over Gaussian JL: the bias is exactly Var<Sᵀx, Sᵀy> = (‖x‖²‖y‖² + <x,y>²)/r.
#[test]
fn bias_is_the_base_variance_for_p2() {
    let x = gaussian(2, 6, 5);
    let (xx, yy, xy) = (
        (0..6).map(|j| x[(0, j)].powi(2)).sum::<f64>(),
        (0..6).map(|j| x[(1, j)].powi(2)).sum::<f64>(),
        (0..6).map(|j| x[(0, j)] * x[(1, j)]).sum::<f64>(),
    );
    for r in [4usize, 16] {
        let ci = jl::mean_interval(&bias_samples(2, r, 20000, &x), 0.999).unwrap();
        let expected = (xx * yy + xy * xy) / r as f64;
        assert!(
            ci.contains(expected),
            "r={r}: bias interval [{}, {}], expected {expected}",
            ci.lower,
            ci.upper
        );
        assert!(ci.lower > 0.0, "r={r}: bias must be visibly positive");
    }
}

/// p = 4 over the Gaussian tree: bias ≥ 0 and ∝ 1/r (quadrupling r divides it by about 4).
#[test]
fn bias_is_nonnegative_and_falls_as_one_over_r() {
    let x = gaussian(2, 6, 6);
    let small = jl::mean_interval(&bias_samples(4, 8, 20000, &x), 0.999).unwrap();
    let large = jl::mean_interval(&bias_samples(4, 32, 20000, &x), 0.999).unwrap();
    assert!(small.lower > 0.0 && large.lower > 0.0, "bias must be positive: {small:?} {large:?}");
    // ratio of means within the intervals' reach of 4 (the O(1/r²) term makes it a bit above 4
    // at r = 8)
    let (lo, hi) = (small.lower / large.upper, small.upper / large.lower);
    assert!(lo < 4.6 && hi > 3.4, "bias ratio r=8 / r=32 in [{lo}, {hi}], expected ≈ 4");
}

#[test]
fn odd_or_unsupported_degrees_are_refused() {
    for p in [0usize, 3, 5, 6, 12] {
        assert!(
            SelfTensored::<Box<dyn PolySketch<f32>>>::random(4, 4, p, Layout::Full, 0).is_err(),
            "p = {p}"
        );
    }
    let phi = SelfTensored::<Box<dyn PolySketch<f32>>>::random(4, 4, 8, Layout::Full, 0).unwrap();
    assert_eq!((phi.degree(), phi.sketch_dim()), (8, 16));
    let bad = Mat::<f32>::from_fn(2, 4, |i, _| if i == 1 { f32::NAN } else { 1.0 });
    assert!(phi.apply(bad.as_ref(), Par::Seq).is_err());
    assert!(phi.gram(bad.as_ref(), bad.as_ref(), Par::Seq).is_err());
}
