//! The kernel methods against the exact ones on small data, and their errors.

use faer::{Mat, MatRef, Par};
use polysketch_kernel::data::{Standardizer, Table, select_rows, split_indices};
use polysketch_kernel::{
    FeatureKind, KernelError, KernelRidge, Nystrom, PolyKernel, Ridge, SketchFeatures,
    center_columns, center_gram, kernel_pca_exact, kernel_pca_features, principal_angles, r2, rmse,
    symmetric_base_size, top_eigenpairs,
};
use polysketch_sketch::SketchError;

fn data(n: usize, d: usize, seed: u64) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| {
        ((i * 7919 + j * 104_729 + seed as usize * 31) as f64 * 0.000_37).sin() * 1.3
    })
}

fn max_abs_diff(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    let mut m = 0.0f64;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            m = m.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    m
}

/// Explicit degree-2 features of the lifted rows: x̃ ⊗ x̃ (exact, for small d).
fn exact_degree2_features(kernel: &PolyKernel, x: MatRef<'_, f64>) -> Mat<f64> {
    let t = kernel.homogenize(x).unwrap();
    let h = t.ncols();
    Mat::from_fn(x.nrows(), h * h, |i, f| t[(i, f / h)] * t[(i, f % h)])
}

#[test]
fn kernel_matrix_matches_its_definition_and_the_lifted_inputs() {
    let kernel = PolyKernel::new(3, 0.4, 0.7).unwrap();
    let (a, b) = (data(9, 4, 1), data(6, 4, 2));
    let k = kernel.gram(a.as_ref(), b.as_ref(), Par::Seq).unwrap();
    let (ta, tb) = (kernel.homogenize(a.as_ref()).unwrap(), kernel.homogenize(b.as_ref()).unwrap());
    for i in 0..9 {
        for j in 0..6 {
            let dot: f64 = (0..4).map(|c| a[(i, c)] * b[(j, c)]).sum();
            let expected = (0.4 * dot + 0.7).powi(3);
            let lifted: f64 = (0..5).map(|c| ta[(i, c)] * tb[(j, c)]).sum::<f64>().powi(3);
            assert!((k[(i, j)] - expected).abs() <= 1e-12 * expected.abs().max(1.0));
            assert!((lifted - expected).abs() <= 1e-12 * expected.abs().max(1.0));
        }
    }
}

/// ⟨φ(x), φ(y)⟩ approaches k(x, y) as D grows, for every feature kind.
#[test]
fn sketched_features_approximate_the_kernel() {
    let x = data(60, 5, 3);
    let kernel = PolyKernel::standard(5).unwrap();
    let k = kernel.gram(x.as_ref(), x.as_ref(), Par::Seq).unwrap();
    let scale = k.norm_l2();
    for kind in FeatureKind::ALL {
        let err = |d: usize| -> f64 {
            (0..5u64)
                .map(|seed| {
                    let f = SketchFeatures::new(kernel, 5, kind, d, seed).unwrap();
                    let phi = f.transform(x.as_ref(), Par::Seq).unwrap();
                    (&phi * phi.transpose() - &k).norm_l2() / scale
                })
                .sum::<f64>()
                / 5.0
        };
        let (small, large) = (err(64), err(4096));
        // The self-tensored map spends its D = 4096 features on the tensor square of a base of
        // only s = 90 columns: its error is that of a size-90 sketch (and it is biased upward by
        // the base variance), so it is much less accurate per feature on these nearly parallel
        // lifted rows. Tree and TensorSketch use all D columns.
        let bound = if kind == FeatureKind::SelfTensored { 1.0 } else { 0.1 };
        assert!(
            large < small / 3.0 && large < bound,
            "{}: relative error {small} at D = 64, {large} at D = 4096",
            kind.name()
        );
    }
}

/// With exact features (ΦΦᵀ = K), ridge in feature space is kernel ridge regression.
#[test]
fn feature_ridge_equals_kernel_ridge_on_exact_features() {
    let kernel = PolyKernel::new(2, 0.5, 1.0).unwrap();
    let x = data(80, 3, 4);
    let y: Vec<f64> = (0..80)
        .map(|i| x[(i, 0)] * x[(i, 1)] + 0.3 * x[(i, 2)] + 0.01 * (i as f64).cos())
        .collect();
    let phi = exact_degree2_features(&kernel, x.as_ref());
    let k = kernel.gram(x.as_ref(), x.as_ref(), Par::Seq).unwrap();
    assert!(max_abs_diff((&phi * phi.transpose()).as_ref(), k.as_ref()) < 1e-12);
    for lambda in [1e-3, 1e-1, 10.0] {
        let ridge = &Ridge::fit_path(phi.as_ref(), &y, &[lambda], Par::Seq).unwrap()[0];
        let krr = KernelRidge::fit(k.as_ref(), &y, lambda, Par::Seq).unwrap();
        let xt = data(20, 3, 5);
        let p1 =
            ridge.predict(exact_degree2_features(&kernel, xt.as_ref()).as_ref(), Par::Seq).unwrap();
        let p2 = krr
            .predict(kernel.gram(xt.as_ref(), x.as_ref(), Par::Seq).unwrap().as_ref(), Par::Seq)
            .unwrap();
        for (a, b) in p1.iter().zip(&p2) {
            assert!((a - b).abs() < 1e-8 * (1.0 + b.abs()), "lambda {lambda}: {a} vs {b}");
        }
    }
}

/// Kernel PCA on exact features equals kernel PCA on the kernel matrix.
#[test]
fn feature_pca_equals_kernel_pca_on_exact_features() {
    let kernel = PolyKernel::new(2, 0.5, 1.0).unwrap();
    let x = data(70, 3, 6);
    let phi = exact_degree2_features(&kernel, x.as_ref());
    let k = kernel.gram(x.as_ref(), x.as_ref(), Par::Seq).unwrap();
    let exact = kernel_pca_exact(k.as_ref(), 4, Par::Seq).unwrap();
    let feat = kernel_pca_features(phi.as_ref(), 4, Par::Seq).unwrap();
    for (a, b) in exact.values.iter().zip(&feat.values) {
        assert!((a - b).abs() < 1e-9 * a.abs().max(1e-12), "{a} vs {b}");
    }
    let angles = principal_angles(exact.scores.as_ref(), feat.scores.as_ref()).unwrap();
    assert!(angles.iter().all(|a| *a < 1e-6), "{angles:?}");
    assert!(exact.explained.iter().sum::<f64>() <= 1.0 + 1e-12);
}

#[test]
fn centring_the_gram_matrix_centres_the_features() {
    let f = data(12, 4, 7);
    let (fc, means) = center_columns(f.as_ref());
    assert!(means.len() == 4 && (0..4).all(|j| fc.col(j).iter().sum::<f64>().abs() < 1e-12));
    let k = &f * f.transpose();
    assert!(
        max_abs_diff(center_gram(k.as_ref()).unwrap().as_ref(), (&fc * fc.transpose()).as_ref())
            < 1e-12
    );
}

#[test]
fn principal_angles_of_known_subspaces() {
    // span{e1, e2} against span{e1, cos t e2 + sin t e3}: angles 0 and t
    let t = 0.3f64;
    let a = Mat::from_fn(3, 2, |i, j| if i == j { 1.0 } else { 0.0 });
    let b = Mat::from_fn(3, 2, |i, j| match (i, j) {
        (0, 0) => 2.0,
        (1, 1) => t.cos(),
        (2, 1) => t.sin(),
        _ => 0.0,
    });
    let angles = principal_angles(a.as_ref(), b.as_ref()).unwrap();
    assert!(angles[0].abs() < 1e-7 && (angles[1] - t).abs() < 1e-12, "{angles:?}");
    let c = Mat::from_fn(3, 1, |i, _| if i == 2 { 1.0 } else { 0.0 });
    let right = principal_angles(a.as_ref(), c.as_ref()).unwrap();
    assert!((right[0] - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
}

#[test]
fn top_eigenpairs_of_a_known_matrix() {
    let d = [3.0, -1.0, 7.0, 0.5];
    let m = Mat::from_fn(4, 4, |i, j| if i == j { d[i] } else { 0.0 });
    let (values, vectors) = top_eigenpairs(m.as_ref(), 2, Par::Seq).unwrap();
    assert_eq!(values, vec![7.0, 3.0]);
    assert!(
        (vectors[(2, 0)].abs() - 1.0).abs() < 1e-12 && (vectors[(0, 1)].abs() - 1.0).abs() < 1e-12
    );
}

/// With every training point as a landmark, Nyström features reproduce the kernel on them.
#[test]
fn nystrom_with_all_points_is_exact_on_them() {
    let kernel = PolyKernel::new(2, 0.5, 1.0).unwrap();
    let x = data(10, 2, 8); // rank of K is at most 6 = dim of x̃ ⊗ x̃ up to symmetry
    let ny = Nystrom::fit(kernel, x.as_ref(), 10, 1, Par::Seq).unwrap();
    assert!(ny.dim() <= 6, "null directions dropped: {}", ny.dim());
    let phi = ny.transform(x.as_ref(), Par::Seq).unwrap();
    let k = kernel.gram(x.as_ref(), x.as_ref(), Par::Seq).unwrap();
    assert!(max_abs_diff((&phi * phi.transpose()).as_ref(), k.as_ref()) < 1e-6 * k.norm_max());
}

#[test]
fn symmetric_base_sizes() {
    assert_eq!(symmetric_base_size(256), 22);
    assert_eq!(symmetric_base_size(1024), 44);
    assert_eq!(symmetric_base_size(4096), 90);
    assert_eq!(symmetric_base_size(1), 1);
    for d in 1..500 {
        let s = symmetric_base_size(d);
        assert!(s * (s + 1) / 2 <= d.max(1) && (s + 1) * (s + 2) / 2 > d);
    }
}

#[test]
fn metrics() {
    assert_eq!(rmse(&[1.0, 3.0], &[1.0, 1.0]).unwrap(), 2f64.sqrt());
    assert!((r2(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap() - 1.0).abs() < 1e-15);
    assert!(matches!(r2(&[1.0], &[1.0, 2.0]), Err(KernelError::Mismatch { .. })));
    assert!(matches!(r2(&[1.0, 1.0], &[2.0, 2.0]), Err(KernelError::InvalidParameter { .. })));
}

#[test]
fn csv_tables_load_and_refuse_corrupt_files() {
    let dir = std::env::temp_dir().join(format!("polysketch-kernel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let t = Table::from_csv(&write("good.csv", "a,b,y\n1,2,3\n4,5,6\n")).unwrap();
    assert_eq!(t.names, ["a", "b", "y"]);
    let (x, y) = t.split_target("y").unwrap();
    assert_eq!((x.nrows(), x.ncols(), y), (2, 2, vec![3.0, 6.0]));
    assert!(matches!(t.split_target("z"), Err(KernelError::InvalidParameter { .. })));
    for (name, text, line) in [
        ("text.csv", "a,b\n1,x\n", 2),
        ("short.csv", "a,b\n1,2\n3\n", 3),
        ("nan.csv", "a\nNaN\n", 2),
        ("empty.csv", "a,b\n", 2),
    ] {
        match Table::from_csv(&write(name, text)) {
            Err(KernelError::Parse { line: l, .. }) => assert_eq!(l, line, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(matches!(Table::from_csv(&dir.join("missing.csv")), Err(KernelError::Io { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn splits_and_standardisation() {
    let parts = split_indices(10, &[6, 3], 5).unwrap();
    assert_eq!(parts, split_indices(10, &[6, 3], 5).unwrap(), "deterministic");
    let mut all: Vec<usize> = parts.concat();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 9, "disjoint");
    assert!(matches!(split_indices(5, &[4, 2], 0), Err(KernelError::TooFewRows { .. })));
    let x = data(50, 3, 9);
    let s = Standardizer::fit(x.as_ref()).unwrap();
    let z = s.transform(x.as_ref()).unwrap();
    for j in 0..3 {
        let mean = z.col(j).iter().sum::<f64>() / 50.0;
        let var = z.col(j).iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 49.0;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-12);
    }
    assert_eq!(select_rows(x.as_ref(), &[3, 1]).nrows(), 2);
}

#[test]
fn bad_input_gets_typed_errors() {
    let kernel = PolyKernel::standard(3).unwrap();
    assert!(matches!(PolyKernel::new(0, 1.0, 1.0), Err(KernelError::InvalidParameter { .. })));
    assert!(matches!(PolyKernel::new(2, -1.0, 1.0), Err(KernelError::InvalidParameter { .. })));
    let mut x = data(20, 3, 10);
    x[(4, 2)] = f64::NAN;
    assert!(matches!(
        kernel.gram(x.as_ref(), x.as_ref(), Par::Seq),
        Err(KernelError::NonFinite { row: 4, col: 2, .. })
    ));
    assert!(matches!(Standardizer::fit(x.as_ref()), Err(KernelError::NonFinite { .. })));
    // finite rows of 1e200: (⟨x, y⟩ + 1)^3 leaves f64's range, a typed error names it
    let huge = Mat::<f64>::from_fn(4, 3, |i, j| 1e200 * (1.0 + (i + j) as f64));
    let err = kernel.gram(huge.as_ref(), huge.as_ref(), Par::Seq).unwrap_err();
    assert!(
        matches!(err, KernelError::Sketch(SketchError::Overflow { input: "a and b", .. })),
        "{err}"
    );
    let x = data(20, 3, 10);
    let f = SketchFeatures::new(kernel, 3, FeatureKind::Tree, 16, 0).unwrap();
    assert!(matches!(
        f.transform(data(5, 4, 0).as_ref(), Par::Seq),
        Err(KernelError::Mismatch { .. })
    ));
    let k = kernel.gram(x.as_ref(), x.as_ref(), Par::Seq).unwrap();
    assert!(matches!(
        KernelRidge::fit(k.as_ref(), &[1.0; 19], 1.0, Par::Seq),
        Err(KernelError::Mismatch { .. })
    ));
    assert!(matches!(
        KernelRidge::fit(k.as_ref(), &[1.0; 20], 0.0, Par::Seq),
        Err(KernelError::InvalidParameter { .. })
    ));
    assert!(matches!(
        kernel_pca_exact(k.as_ref(), 20, Par::Seq),
        Err(KernelError::TooFewRows { .. })
    ));
    assert!(matches!(
        kernel_pca_features(data(3, 8, 0).as_ref(), 5, Par::Seq),
        Err(KernelError::TooFewRows { .. })
    ));
    assert!(matches!(
        Nystrom::fit(kernel, x.as_ref(), 21, 0, Par::Seq),
        Err(KernelError::TooFewRows { .. })
    ));
    assert!(matches!(
        SketchFeatures::new(
            PolyKernel::new(3, 1.0, 1.0).unwrap(),
            3,
            FeatureKind::SelfTensored,
            16,
            0
        ),
        Err(KernelError::Sketch(_))
    ));
    assert!(matches!(
        SketchFeatures::new(PolyKernel::new(3, 1.0, 1.0).unwrap(), 3, FeatureKind::Tree, 16, 0),
        Err(KernelError::Sketch(_))
    ));
}

/// Inputs that used to give NaN results or fail late now fail at once, naming the input.
#[test]
fn non_finite_and_asymmetric_inputs_are_refused_at_the_entry_point() {
    let x = Mat::from_fn(20, 3, |i, j| ((i * 3 + j) as f64 * 0.37).sin());
    let kernel = PolyKernel::new(2, 1.0, 1.0).unwrap();
    let k = kernel.gram(x.as_ref(), x.as_ref(), Par::Seq).unwrap();
    let mut y: Vec<f64> = (0..20).map(|i| i as f64).collect();
    y[7] = f64::NAN;
    let non_finite = |e: KernelError, input: &str| matches!(e, KernelError::NonFinite { input: i, .. } if i == input);
    assert!(non_finite(KernelRidge::fit(k.as_ref(), &y, 1e-3, Par::Seq).unwrap_err(), "y"));
    let clean: Vec<f64> = (0..20).map(|i| i as f64).collect();
    assert!(non_finite(polysketch_kernel::rmse(&y, &clean).unwrap_err(), "pred"));
    assert!(non_finite(polysketch_kernel::r2(&clean, &y).unwrap_err(), "y"));
    let mut bad_x = x.clone();
    bad_x[(4, 1)] = f64::NAN;
    assert!(non_finite(Nystrom::fit(kernel, bad_x.as_ref(), 5, 0, Par::Seq).unwrap_err(), "x"));
    let mut asymmetric = k.clone();
    asymmetric[(2, 5)] += 1.0;
    let err = kernel_pca_exact(asymmetric.as_ref(), 2, Par::Seq).unwrap_err();
    assert!(err.to_string().contains("not symmetric"), "{err}");
    assert!(kernel_pca_exact(k.as_ref(), 2, Par::Seq).is_ok());
}

/// The normal equations by chunks (as ranks of a distributed fit add them) against the fit of
/// all rows at once, and their bad input.
#[test]
fn normal_equations_by_chunks_match_the_whole_fit() {
    use polysketch_core::collective::SingleProcess;
    use polysketch_kernel::NormalEquations;
    let (n, d) = (300, 7);
    let x = faer::Mat::from_fn(n, d, |i, j| ((i * 13 + j * 7) % 17) as f64 / 17.0 - 0.4);
    let y: Vec<f64> =
        (0..n).map(|i| (0..d).map(|j| x[(i, j)] * j as f64).sum::<f64>() + 3.0).collect();
    let lambdas = [1e-3, 1.0];
    let whole = Ridge::fit_path(x.as_ref(), &y, &lambdas, Par::Seq).unwrap();
    let mut eq = NormalEquations::new(d).unwrap();
    for (a, b) in [(0, 0), (0, 128), (128, 129), (129, n)] {
        eq.add_rows(x.as_ref().subrows(a, b - a), &y[a..b], Par::Seq).unwrap();
    }
    assert_eq!(eq.rows(), n);
    let parts = eq.reduce(&SingleProcess).unwrap().solve(&lambdas, Par::Seq).unwrap();
    let direct =
        Ridge::fit_path_distributed(x.as_ref(), &y, &lambdas, &SingleProcess, Par::Seq).unwrap();
    for ((a, b), c) in whole.iter().zip(&parts).zip(&direct) {
        let scale = a.weights.iter().fold(0.0f64, |m, w| m.max(w.abs()));
        for ((wa, wb), wc) in a.weights.iter().zip(&b.weights).zip(&c.weights) {
            assert!((wa - wb).abs() <= 1e-9 * scale && (wa - wc).abs() <= 1e-9 * scale);
        }
        assert!((a.intercept - b.intercept).abs() <= 1e-12 * a.intercept.abs());
    }
    assert!(NormalEquations::new(0).is_err());
    assert!(NormalEquations::new(usize::MAX).is_err());
    let mut eq = NormalEquations::new(d).unwrap();
    assert!(eq.add_rows(x.as_ref().subcols(0, 3), &y, Par::Seq).is_err());
    assert!(eq.add_rows(x.as_ref(), &y[..5], Par::Seq).is_err());
    assert!(eq.solve(&lambdas, Par::Seq).is_err(), "no rows");
}
