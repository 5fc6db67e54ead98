//! Bad input gets a typed error, never a panic or a NaN.

use faer::{Mat, Par};
use polysketch_sketch::{
    CountSketch, GaussianJl, PolySketch, SketchError, TensorSketch, TreeSketch, jl,
};

#[test]
fn bad_degrees_are_refused() {
    for p in [0, 1, 3, 6, 128] {
        assert!(
            matches!(TreeSketch::<f32>::gaussian(4, 4, p, 0), Err(SketchError::InvalidDegree { degree, .. }) if degree == p),
            "tree p={p}"
        );
    }
    for p in [0, 65] {
        assert!(
            matches!(TensorSketch::<f32>::new(4, 4, p, 0), Err(SketchError::InvalidDegree { .. })),
            "tensorsketch p={p}"
        );
    }
}

#[test]
fn zero_dimensions_are_refused() {
    assert!(matches!(GaussianJl::<f32>::new(0, 4, 0), Err(SketchError::ZeroDimension { .. })));
    assert!(matches!(GaussianJl::<f32>::new(4, 0, 0), Err(SketchError::ZeroDimension { .. })));
    assert!(matches!(CountSketch::<f32>::new(4, 0, 0), Err(SketchError::ZeroDimension { .. })));
    assert!(matches!(TensorSketch::<f32>::new(0, 4, 2, 0), Err(SketchError::ZeroDimension { .. })));
    assert!(matches!(TreeSketch::<f32>::srht(4, 0, 2, 0), Err(SketchError::ZeroDimension { .. })));
}

#[test]
fn oversized_parameters_are_refused_before_allocating() {
    // r x r Gaussian nodes for r = 2^20 would take 8 TiB.
    let err = TreeSketch::<f32>::gaussian(4, 1 << 20, 4, 0).unwrap_err();
    assert!(matches!(err, SketchError::TooLarge { .. }), "{err}");
    assert!(matches!(
        GaussianJl::<f64>::new(1 << 20, 1 << 20, 0),
        Err(SketchError::TooLarge { .. })
    ));
}

#[test]
fn shape_mismatches_are_refused() {
    let s = TreeSketch::<f64>::gaussian(4, 8, 2, 0).unwrap();
    let a = Mat::<f64>::zeros(3, 5);
    let err = s.apply(a.as_ref(), Par::Seq).unwrap_err();
    assert_eq!(
        err,
        SketchError::ShapeMismatch {
            op: "PolySketch::apply",
            input: "a",
            expected: (3, 4),
            got: (3, 5)
        }
    );
    let a = Mat::<f64>::zeros(3, 4);
    let mut out = Mat::<f64>::zeros(3, 7);
    assert!(matches!(
        s.apply_into(a.as_ref(), out.as_mut(), Par::Seq),
        Err(SketchError::ShapeMismatch { .. })
    ));
    let g = Mat::<f64>::zeros(2, 8);
    assert!(matches!(
        s.vjp(a.as_ref(), g.as_ref(), Par::Seq),
        Err(SketchError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        s.gram(a.as_ref(), Mat::<f64>::zeros(2, 3).as_ref(), Par::Seq),
        Err(SketchError::ShapeMismatch { .. })
    ));
}

#[test]
fn empty_input_is_refused() {
    let s = CountSketch::<f32>::new(4, 8, 0).unwrap();
    assert!(matches!(
        s.apply(Mat::<f32>::zeros(0, 4).as_ref(), Par::Seq),
        Err(SketchError::EmptyInput { .. })
    ));
}

#[test]
fn non_finite_input_is_refused_with_its_position() {
    let s = TensorSketch::<f32>::new(4, 8, 2, 0).unwrap();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut a = Mat::<f32>::zeros(5, 4);
        a[(3, 2)] = bad;
        assert_eq!(
            s.apply(a.as_ref(), Par::Seq).unwrap_err(),
            SketchError::NonFinite { op: "PolySketch::apply", input: "a", row: 3, col: 2 }
        );
        let good = Mat::<f32>::zeros(5, 4);
        let mut g = Mat::<f32>::zeros(5, 8);
        g[(1, 1)] = bad;
        assert!(matches!(
            s.vjp(good.as_ref(), g.as_ref(), Par::Seq),
            Err(SketchError::NonFinite { input: "grad", .. })
        ));
    }
}

#[test]
fn statistics_utilities_refuse_bad_arguments() {
    assert!(matches!(jl::mean_interval(&[1.0], 0.95), Err(SketchError::InvalidArgument { .. })));
    assert!(matches!(
        jl::mean_interval(&[1.0, 2.0], 1.5),
        Err(SketchError::InvalidArgument { .. })
    ));
    assert!(matches!(
        jl::mean_interval(&[1.0, f64::NAN], 0.9),
        Err(SketchError::InvalidArgument { .. })
    ));
    assert!(matches!(jl::lt_norm(&[1.0, 2.0], 0.5, 0.9), Err(SketchError::InvalidArgument { .. })));
    assert!(matches!(jl::log_log_slope(&[1.0], &[1.0]), Err(SketchError::InvalidArgument { .. })));
    let zero = Mat::<f64>::zeros(2, 3);
    let s = GaussianJl::<f64>::new(3, 4, 0).unwrap();
    assert!(matches!(
        jl::amm_error(&s, zero.as_ref(), zero.as_ref(), Par::Seq),
        Err(SketchError::InvalidArgument { .. })
    ));
    assert!(matches!(
        jl::jl_deviations(|seed| GaussianJl::<f64>::new(3, 4, seed), zero.as_ref(), 3, 0, Par::Seq),
        Err(SketchError::InvalidArgument { .. })
    ));
    assert!(matches!(
        jl::jl_deviations(
            |seed| GaussianJl::<f64>::new(3, 4, seed),
            Mat::<f64>::ones(2, 3).as_ref(),
            0,
            0,
            Par::Seq
        ),
        Err(SketchError::InvalidArgument { .. })
    ));
}

#[test]
fn errors_say_what_went_wrong() {
    let msg = TreeSketch::<f32>::gaussian(4, 4, 3, 0).unwrap_err().to_string();
    assert!(
        msg.contains("TreeSketch") && msg.contains("p = 3") && msg.contains("power of two"),
        "{msg}"
    );
}

/// Sizes whose tables, plans or outputs could not be allocated are refused before trying.
#[test]
fn huge_sizes_are_refused_before_anything_is_allocated() {
    use faer::{Mat, Par};
    let too_large = |e: &SketchError| matches!(e, SketchError::TooLarge { .. });
    let err = TensorSketch::<f32>::new(8, 1 << 31, 2, 0).unwrap_err();
    assert!(too_large(&err), "{err}");
    // a legal sketch whose output for one row would take 16 GiB
    let wide = CountSketch::<f32>::new(8, u32::MAX as usize, 0).unwrap();
    let err = wide.apply(Mat::<f32>::ones(1, 8).as_ref(), Par::Seq).unwrap_err();
    assert!(too_large(&err), "{err}");
}

/// Finite rows whose tensor power leaves f32's range (|a|^p with |a| = 1e20, p = 2) give a typed
/// error naming the input, not a sketch full of infinities; the same rows in f64 are fine.
#[test]
fn results_past_the_number_format_are_a_typed_error() {
    fn sketches<T: polysketch_core::Scalar>() -> Vec<Box<dyn PolySketch<T>>> {
        vec![
            Box::new(TensorSketch::new(8, 16, 2, 1).unwrap()),
            Box::new(TreeSketch::gaussian(8, 16, 2, 1).unwrap()),
        ]
    }
    let value = |i: usize, j: usize| if (i + j).is_multiple_of(2) { 1e20 } else { -3e19 };
    let a32 = Mat::<f32>::from_fn(3, 8, |i, j| value(i, j) as f32);
    let a64 = Mat::<f64>::from_fn(3, 8, value);
    for (s32, s64) in sketches::<f32>().iter().zip(sketches::<f64>()) {
        let err = s32.apply(a32.as_ref(), Par::Seq).unwrap_err();
        assert!(
            matches!(err, SketchError::Overflow { input: "a", output: "out", .. }),
            "{}: {err}",
            s32.name()
        );
        let out = s64.apply(a64.as_ref(), Par::Seq).unwrap();
        assert!(out.col_iter().all(|c| c.iter().all(|v| v.is_finite())), "{}", s64.name());
    }
}
