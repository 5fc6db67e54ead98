//! The block engine against the f64 references, finite differences, thread counts and f32.
//!
//! Tolerances: f64 block vs f64 reference sum the same terms in different orders, so they agree
//! to ~1e-12 of the largest entry; the f32 bound (1e-5 relative Frobenius) is the crate's
//! accuracy promise.

use faer::{Mat, MatRef, Par};
use polysketch_core::{Scalar, seeded_rng};
use polysketch_lowtri::{
    Features, Grads, LowTri, Problem, Saved, SketchError, baseline, reference,
};
use proptest::prelude::*;
use rand_distr::{Distribution, StandardNormal};

fn gaussian<T: Scalar>(n: usize, w: usize, scale: f64, seed: u64) -> Mat<T> {
    let mut rng = seeded_rng(seed);
    Mat::from_fn(n, w, |_, _| {
        let z: f64 = StandardNormal.sample(&mut rng);
        T::of(scale * z)
    })
}

fn max_abs(m: MatRef<'_, f64>) -> f64 {
    let mut x = 0.0f64;
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            x = x.max(m[(i, j)].abs());
        }
    }
    x
}

fn assert_close(got: MatRef<'_, f64>, expected: MatRef<'_, f64>, rtol: f64, what: &str) {
    assert_eq!((got.nrows(), got.ncols()), (expected.nrows(), expected.ncols()), "{what}: shape");
    let diff = max_abs((got.to_owned() - expected.to_owned()).as_ref());
    let scale = max_abs(expected).max(1e-300);
    assert!(diff <= rtol * scale, "{what}: max difference {diff:e} > {rtol:e} x {scale:e}");
}

fn rel_frobenius(got: MatRef<'_, f64>, expected: MatRef<'_, f64>) -> f64 {
    (got.to_owned() - expected.to_owned()).norm_l2() / expected.norm_l2()
}

fn widen<T: Scalar>(m: MatRef<'_, T>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)].as_f64())
}

fn compare_grads(got: &Grads<f64>, exp: &Grads<f64>, rtol: f64, what: &str) {
    assert_close(got.d_a.as_ref(), exp.d_a.as_ref(), rtol, &format!("{what} d_a"));
    assert_close(got.d_b.as_ref(), exp.d_b.as_ref(), rtol, &format!("{what} d_b"));
    assert_close(got.d_c.as_ref(), exp.d_c.as_ref(), rtol, &format!("{what} d_c"));
    assert_eq!(got.d_q.is_some(), exp.d_q.is_some(), "{what}: d_q presence");
    if let (Some(g), Some(e)) = (&got.d_q, &exp.d_q) {
        assert_close(g.as_ref(), e.as_ref(), rtol, &format!("{what} d_q"));
    }
    if let (Some(g), Some(e)) = (&got.d_k, &exp.d_k) {
        assert_close(g.as_ref(), e.as_ref(), rtol, &format!("{what} d_k"));
    }
}

/// The four forms on one set of inputs: general, self-tensored, local exact over explicit
/// features, local exact over self-tensored features.
struct Inputs {
    a: Mat<f64>,
    b: Mat<f64>,
    l: Mat<f64>,
    r: Mat<f64>,
    q: Mat<f64>,
    k: Mat<f64>,
    c: Mat<f64>,
    p: usize,
}

impl Inputs {
    fn new(n: usize, m: usize, r: usize, h: usize, k: usize, p: usize, seed: u64) -> Self {
        Self {
            a: gaussian(n, m, 0.5, seed),
            b: gaussian(n, m, 0.5, seed + 1),
            l: gaussian(n, r, 0.5, seed + 2),
            r: gaussian(n, r, 0.5, seed + 3),
            q: gaussian(n, h, 0.6, seed + 4),
            k: gaussian(n, h, 0.6, seed + 5),
            c: gaussian(n, k, 1.0, seed + 6),
            p,
        }
    }

    fn problems(&self) -> Vec<(&'static str, Problem<'_, f64>)> {
        let explicit = Features::Explicit { a: self.a.as_ref(), b: self.b.as_ref() };
        let tensored = Features::SelfTensored { l: self.l.as_ref(), r: self.r.as_ref() };
        let local = |features| {
            Problem::local_exact(
                features,
                self.q.as_ref(),
                self.k.as_ref(),
                self.p,
                self.c.as_ref(),
            )
        };
        vec![
            ("general", Problem::general(self.a.as_ref(), self.b.as_ref(), self.c.as_ref())),
            (
                "self_tensored",
                Problem::self_tensored(self.l.as_ref(), self.r.as_ref(), self.c.as_ref()),
            ),
            ("local_explicit", local(explicit)),
            ("local_tensored", local(tensored)),
        ]
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Every form, forward and backward, against the f64 references; ragged last blocks and
    /// n < b included.
    #[test]
    fn every_form_matches_the_reference(
        n in 1usize..160, b in 1usize..48, m in 1usize..9, r in 1usize..6, h in 1usize..5,
        k in 1usize..5, p in 1usize..5, seed in any::<u64>(),
    ) {
        let inputs = Inputs::new(n, m, r, h, k, p, seed);
        let engine = LowTri::new(b).unwrap();
        let g = gaussian::<f64>(n, k, 1.0, seed ^ 99);
        for (name, problem) in inputs.problems() {
            let (out, mut saved) = engine.forward(&problem, Par::Seq).unwrap();
            assert_close(out.as_ref(), reference::forward_reference(&problem, b).as_ref(), 1e-11, name);
            let grads = engine.backward(&problem, &mut saved, g.as_ref(), Par::rayon(2)).unwrap();
            compare_grads(&grads, &reference::backward_reference(&problem, b, g.as_ref()), 1e-11, name);
        }
    }
}

fn with_first<'a>(f: Features<'a, f64>, x: MatRef<'a, f64>) -> Features<'a, f64> {
    match f {
        Features::Explicit { b, .. } => Features::Explicit { a: x, b },
        Features::SelfTensored { r, .. } => Features::SelfTensored { l: x, r },
    }
}

fn with_second<'a>(f: Features<'a, f64>, y: MatRef<'a, f64>) -> Features<'a, f64> {
    match f {
        Features::Explicit { a, .. } => Features::Explicit { a, b: y },
        Features::SelfTensored { l, .. } => Features::SelfTensored { l, r: y },
    }
}

/// The reference gradients themselves against central finite differences of <G, out>.
#[test]
fn reference_gradients_match_finite_differences() {
    let (n, b) = (7, 3);
    let inputs = Inputs::new(n, 3, 2, 2, 2, 3, 5);
    let g = gaussian::<f64>(n, 2, 1.0, 6);
    let loss = |p: &Problem<'_, f64>| -> f64 {
        let out = reference::forward_reference(p, b);
        (0..n).map(|i| (0..2).map(|c| out[(i, c)] * g[(i, c)]).sum::<f64>()).sum()
    };
    let eps = 1e-6;
    for (name, problem) in inputs.problems() {
        let grads = reference::backward_reference(&problem, b, g.as_ref());
        // perturb each input matrix through a copy
        let check = |which: &str,
                     base: MatRef<'_, f64>,
                     expected: MatRef<'_, f64>,
                     rebuild: &dyn Fn(MatRef<'_, f64>) -> f64| {
            let mut work = base.to_owned();
            for i in 0..base.nrows() {
                for j in 0..base.ncols() {
                    // the loss with entry (i, j) moved by `delta`
                    let mut moved = |delta: f64| {
                        let x = work[(i, j)];
                        work[(i, j)] = x + delta;
                        let value = rebuild(work.as_ref());
                        work[(i, j)] = x;
                        value
                    };
                    let fd = (moved(eps) - moved(-eps)) / (2.0 * eps);
                    assert!(
                        (fd - expected[(i, j)]).abs() <= 1e-6 * (1.0 + fd.abs()),
                        "{name} {which}[{i},{j}]: fd {fd} vs {}",
                        expected[(i, j)]
                    );
                }
            }
        };
        check("c", inputs.c.as_ref(), grads.d_c.as_ref(), &|c| loss(&Problem { c, ..problem }));
        let (fa, fb) = match problem.features {
            Features::Explicit { a, b } => (a, b),
            Features::SelfTensored { l, r } => (l, r),
        };
        check("a", fa, grads.d_a.as_ref(), &|x| {
            loss(&Problem { features: with_first(problem.features, x), ..problem })
        });
        check("b", fb, grads.d_b.as_ref(), &|y| {
            loss(&Problem { features: with_second(problem.features, y), ..problem })
        });
        if let polysketch_lowtri::Diagonal::ExactPower { q, k, p } = problem.diagonal {
            check("q", q, grads.d_q.as_ref().unwrap().as_ref(), &|x| {
                loss(&Problem {
                    diagonal: polysketch_lowtri::Diagonal::ExactPower { q: x, k, p },
                    ..problem
                })
            });
            check("k", k, grads.d_k.as_ref().unwrap().as_ref(), &|y| {
                loss(&Problem {
                    diagonal: polysketch_lowtri::Diagonal::ExactPower { q, k: y, p },
                    ..problem
                })
            });
        }
    }
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// Bitwise the same outputs and gradients whatever the number of threads.
#[test]
fn results_do_not_depend_on_thread_count() {
    let (n, b) = (3000, 128);
    let [l, r] = [1, 2].map(|seed| gaussian::<f32>(n, 8, 0.5, seed));
    let [c, g] = [3, 4].map(|seed| gaussian::<f32>(n, 16, 1.0, seed));
    let problem = Problem::self_tensored(l.as_ref(), r.as_ref(), c.as_ref());
    let engine = LowTri::new(b).unwrap();
    let (out, mut saved) = engine.forward(&problem, Par::Seq).unwrap();
    let grads = engine.backward(&problem, &mut saved, g.as_ref(), Par::Seq).unwrap();
    for threads in [1, 2, 3] {
        let (o, gr) = in_pool(threads, || {
            let (o, mut s) = engine.forward(&problem, Par::rayon(0)).unwrap();
            (o, engine.backward(&problem, &mut s, g.as_ref(), Par::rayon(0)).unwrap())
        });
        assert_eq!(o, out, "forward with {threads} threads");
        assert_eq!(gr, grads, "backward with {threads} threads");
    }
}

/// A batch of problems gives bitwise the same outputs and prefixes whether the forward goes by
/// problem (8 problems on 1, 2, 4 or 8 threads) or by block (3 and 5 threads), and the same
/// as each problem alone on one thread; with f32 and with bf16 feature products.
#[test]
fn forward_by_problem_and_by_block_agree_bitwise() {
    let (n, b) = (700, 64);
    let inputs: Vec<[Mat<f32>; 5]> = (0..8)
        .map(|i| {
            let s = 10 * i as u64;
            let [l, r] = [s + 1, s + 2].map(|seed| gaussian::<f32>(n, 6, 0.5, seed));
            let [q, k] = [s + 3, s + 4].map(|seed| gaussian::<f32>(n, 5, 0.5, seed));
            [l, r, q, k, gaussian::<f32>(n, 7, 1.0, s + 5)]
        })
        .collect();
    let problems: Vec<Problem<'_, f32>> = inputs
        .iter()
        .map(|[l, r, q, k, c]| {
            let f = Features::SelfTensored { l: l.as_ref(), r: r.as_ref() };
            Problem::local_exact(f, q.as_ref(), k.as_ref(), 4, c.as_ref())
        })
        .collect();
    // f32 products, and bf16 ones (which must differ from them, and agree across orders too)
    let plain = LowTri::new(b).unwrap();
    let f32_out = plain.forward(&problems[0], Par::Seq).unwrap().0;
    for engine in [plain, plain.with_bf16_products(true)] {
        let alone: Vec<(Mat<f32>, Saved<f32>)> =
            problems.iter().map(|p| engine.forward(p, Par::Seq).unwrap()).collect();
        assert_eq!(alone[0].0 == f32_out, !engine.bf16_products());
        for threads in [1, 2, 3, 4, 5, 8] {
            let (outs, saved) = in_pool(threads, || {
                let mut outs: Vec<Mat<f32>> = problems.iter().map(|_| Mat::zeros(n, 7)).collect();
                let views = outs.iter_mut().map(|o| o.as_mut()).collect();
                let saved = engine.forward_batch(&problems, views, Par::rayon(0)).unwrap();
                (outs, saved)
            });
            for (i, (out, s)) in outs.iter().zip(&saved).enumerate() {
                let what = format!("{i} with {threads} threads, {engine:?}");
                assert_eq!(out, &alone[i].0, "output {what}");
                assert_eq!(s.prefixes(), alone[i].1.prefixes(), "prefixes {what}");
            }
        }
    }
}

/// Features of width 0 (a fuzz case: m = 0) give S = 0 and a zero output, whichever order the
/// forward takes, and a backward of zeros.
#[test]
fn zero_width_features_give_a_zero_output() {
    let (a, c) = (Mat::<f32>::zeros(5, 0), gaussian::<f32>(5, 2, 1.0, 9));
    let problem = Problem::general(a.as_ref(), a.as_ref(), c.as_ref());
    let engine = LowTri::new(2).unwrap();
    for par in [Par::Seq, Par::rayon(0)] {
        let (out, mut saved) = engine.forward(&problem, par).unwrap();
        assert_eq!(out, Mat::<f32>::zeros(5, 2));
        let grads = engine.backward(&problem, &mut saved, c.as_ref(), par).unwrap();
        assert_eq!(grads.d_c, Mat::<f32>::zeros(5, 2));
    }
}

/// f32 against f64 at n = 2^16 on well-scaled inputs (rows of norm about 1): relative
/// Frobenius error at most 1e-5, forward and backward.
#[test]
fn f32_is_accurate_at_long_lengths() {
    let (n, b) = (1 << 16, 256);
    let l64 = gaussian::<f64>(n, 16, 0.25, 10);
    let r64 = gaussian::<f64>(n, 16, 0.25, 11);
    let c64 = gaussian::<f64>(n, 32, 1.0, 12);
    let g64 = gaussian::<f64>(n, 32, 1.0, 13);
    let narrow = |m: &Mat<f64>| Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)] as f32);
    let (l32, r32, c32, g32) = (narrow(&l64), narrow(&r64), narrow(&c64), narrow(&g64));
    let engine = LowTri::new(b).unwrap();
    let p64 = Problem::self_tensored(l64.as_ref(), r64.as_ref(), c64.as_ref());
    let p32 = Problem::self_tensored(l32.as_ref(), r32.as_ref(), c32.as_ref());
    let (o64, mut s64) = engine.forward(&p64, Par::rayon(0)).unwrap();
    let (o32, mut s32) = engine.forward(&p32, Par::rayon(0)).unwrap();
    let err = rel_frobenius(widen(o32.as_ref()).as_ref(), o64.as_ref());
    assert!(err <= 1e-5, "forward relative error {err:e}");
    let g64r = engine.backward(&p64, &mut s64, g64.as_ref(), Par::rayon(0)).unwrap();
    let g32r = engine.backward(&p32, &mut s32, g32.as_ref(), Par::rayon(0)).unwrap();
    for (name, a, e) in [
        ("d_l", &g32r.d_a, &g64r.d_a),
        ("d_r", &g32r.d_b, &g64r.d_b),
        ("d_c", &g32r.d_c, &g64r.d_c),
    ] {
        let err = rel_frobenius(widen(a.as_ref()).as_ref(), e.as_ref());
        assert!(err <= 1e-5, "{name} relative error {err:e}");
    }
}

/// The f64 block form against the naive O(n²) product at a few thousand rows.
#[test]
fn block_form_matches_naive_at_a_few_thousand_rows() {
    let (n, b) = (3000, 256);
    let a = gaussian::<f64>(n, 40, 0.3, 20);
    let bb = gaussian::<f64>(n, 40, 0.3, 21);
    let c = gaussian::<f64>(n, 8, 1.0, 22);
    let problem = Problem::general(a.as_ref(), bb.as_ref(), c.as_ref());
    let (out, _) = LowTri::new(b).unwrap().forward(&problem, Par::rayon(0)).unwrap();
    let naive =
        baseline::naive_forward(a.as_ref(), bb.as_ref(), c.as_ref(), Par::rayon(0)).unwrap();
    assert!(rel_frobenius(out.as_ref(), naive.as_ref()) < 1e-13);
    let cumsum =
        baseline::cumsum_forward(a.as_ref(), bb.as_ref(), c.as_ref(), Par::rayon(0)).unwrap();
    assert!(rel_frobenius(cumsum.as_ref(), naive.as_ref()) < 1e-13);
}

/// The baselines against the reference on small shapes, f32 and f64.
#[test]
fn baselines_match_the_reference() {
    for (n, m, k) in [(1, 1, 1), (17, 3, 9), (100, 7, 20)] {
        let a = gaussian::<f64>(n, m, 0.5, 30);
        let b = gaussian::<f64>(n, m, 0.5, 31);
        let c = gaussian::<f64>(n, k, 1.0, 32);
        let expected =
            reference::forward_reference(&Problem::general(a.as_ref(), b.as_ref(), c.as_ref()), 1);
        let naive = baseline::naive_forward(a.as_ref(), b.as_ref(), c.as_ref(), Par::Seq).unwrap();
        assert_close(naive.as_ref(), expected.as_ref(), 1e-12, "naive");
        let cumsum =
            baseline::cumsum_forward(a.as_ref(), b.as_ref(), c.as_ref(), Par::rayon(2)).unwrap();
        assert_close(cumsum.as_ref(), expected.as_ref(), 1e-12, "cumsum");
        // and their backward passes against the reference gradients
        let g = gaussian::<f64>(n, k, 1.0, 33);
        let problem = Problem::general(a.as_ref(), b.as_ref(), c.as_ref());
        let expected = reference::backward_reference(&problem, 1, g.as_ref());
        let naive =
            baseline::naive_backward(a.as_ref(), b.as_ref(), c.as_ref(), g.as_ref(), Par::Seq)
                .unwrap();
        compare_grads(&naive, &expected, 1e-12, "naive backward");
        let cumsum = baseline::cumsum_backward(
            a.as_ref(),
            b.as_ref(),
            c.as_ref(),
            g.as_ref(),
            Par::rayon(2),
        )
        .unwrap();
        compare_grads(&cumsum, &expected, 1e-12, "cumsum backward");
    }
}

/// A batch gives the same results as each problem alone, written into views of one buffer.
#[test]
fn batches_match_single_problems() {
    let inputs: Vec<Inputs> =
        (0..3).map(|s| Inputs::new(50 + 13 * s as usize, 4, 3, 2, 3, 2, 40 + s)).collect();
    let problems: Vec<Problem<'_, f64>> =
        inputs.iter().flat_map(|i| i.problems().into_iter().map(|(_, p)| p)).collect();
    let engine = LowTri::new(16).unwrap();
    let rows: usize = problems.iter().map(|p| p.n()).sum();
    let mut buffer = Mat::<f64>::zeros(rows, 3);
    let mut views = Vec::new();
    let mut rest = buffer.as_mut();
    for p in &problems {
        let (head, tail) = rest.split_at_row_mut(p.n());
        views.push(head);
        rest = tail;
    }
    let mut saved = engine.forward_batch(&problems, views, Par::rayon(2)).unwrap();
    let d_outs: Vec<Mat<f64>> =
        problems.iter().map(|p| gaussian(p.n(), 3, 1.0, p.n() as u64)).collect();
    let d_refs: Vec<MatRef<'_, f64>> = d_outs.iter().map(|d| d.as_ref()).collect();
    let grads = engine.backward_batch(&problems, &mut saved, &d_refs, Par::rayon(2)).unwrap();
    let mut start = 0;
    for (i, p) in problems.iter().enumerate() {
        let (single, mut s) = engine.forward(p, Par::Seq).unwrap();
        assert_eq!(buffer.as_ref().subrows(start, p.n()).to_owned(), single);
        assert_eq!(grads[i], engine.backward(p, &mut s, d_refs[i], Par::Seq).unwrap());
        start += p.n();
    }
}

#[test]
fn bad_input_gets_typed_errors() {
    assert!(matches!(LowTri::new(0), Err(SketchError::ZeroDimension { .. })));
    let engine = LowTri::new(4).unwrap();
    let a = Mat::<f64>::zeros(10, 3);
    let short = Mat::<f64>::zeros(9, 3);
    let c = Mat::<f64>::zeros(10, 2);
    assert!(matches!(
        engine.forward(&Problem::general(a.as_ref(), short.as_ref(), c.as_ref()), Par::Seq),
        Err(SketchError::ShapeMismatch { input: "b", expected: (10, 3), got: (9, 3), .. })
    ));
    let narrow = Mat::<f64>::zeros(10, 2);
    assert!(matches!(
        engine.forward(&Problem::general(a.as_ref(), narrow.as_ref(), c.as_ref()), Par::Seq),
        Err(SketchError::ShapeMismatch { input: "b", .. })
    ));
    let mut nan = a.clone();
    nan[(4, 1)] = f64::NAN;
    assert!(matches!(
        engine.forward(&Problem::general(nan.as_ref(), a.as_ref(), c.as_ref()), Par::Seq),
        Err(SketchError::NonFinite { input: "a", row: 4, col: 1, .. })
    ));
    let empty = Mat::<f64>::zeros(0, 3);
    let empty_c = Mat::<f64>::zeros(0, 2);
    assert!(matches!(
        engine
            .forward(&Problem::general(empty.as_ref(), empty.as_ref(), empty_c.as_ref()), Par::Seq),
        Err(SketchError::EmptyInput { .. })
    ));
    let tensored = Features::SelfTensored { l: a.as_ref(), r: a.as_ref() };
    assert!(matches!(
        engine.forward(
            &Problem::local_exact(tensored, a.as_ref(), a.as_ref(), 0, c.as_ref()),
            Par::Seq
        ),
        Err(SketchError::InvalidDegree { .. })
    ));
    // backward: wrong d_out, non-finite d_out, saved from another block size
    let problem = Problem::general(a.as_ref(), a.as_ref(), c.as_ref());
    let (_, mut saved) = engine.forward(&problem, Par::Seq).unwrap();
    assert!(matches!(
        engine.backward(&problem, &mut saved, Mat::<f64>::zeros(10, 3).as_ref(), Par::Seq),
        Err(SketchError::ShapeMismatch { input: "d_out", .. })
    ));
    let mut bad = Mat::<f64>::zeros(10, 2);
    bad[(0, 0)] = f64::INFINITY;
    assert!(matches!(
        engine.backward(&problem, &mut saved, bad.as_ref(), Par::Seq),
        Err(SketchError::NonFinite { input: "d_out", .. })
    ));
    let other = LowTri::new(3).unwrap();
    assert!(
        other.backward(&problem, &mut saved, Mat::<f64>::zeros(10, 2).as_ref(), Par::Seq).is_err()
    );
    // a saved state serves one backward; a second is refused until a forward refills it
    let zero = Mat::<f64>::zeros(10, 2);
    assert!(engine.backward(&problem, &mut saved, zero.as_ref(), Par::Seq).is_ok());
    assert!(matches!(
        engine.backward(&problem, &mut saved, zero.as_ref(), Par::Seq),
        Err(SketchError::InvalidArgument { .. })
    ));
}

/// Reusing the saved state and the gradient buffers across steps gives the same numbers as
/// fresh ones, also when the shapes change in between.
#[test]
fn reused_workspaces_give_the_same_results() {
    let engine = LowTri::new(32).unwrap();
    let mut saved = vec![Saved::new()];
    let mut grads = vec![Grads::new()];
    for (step, n) in [200usize, 200, 77, 200].into_iter().enumerate() {
        let inputs = Inputs::new(n, 5, 4, 3, 3, 2, 70 + step as u64);
        for (name, problem) in inputs.problems() {
            let g = gaussian::<f64>(n, 3, 1.0, 80 + step as u64);
            let mut out = Mat::<f64>::zeros(n, 3);
            engine
                .forward_batch_into(
                    std::slice::from_ref(&problem),
                    vec![out.as_mut()],
                    &mut saved,
                    Par::rayon(2),
                )
                .unwrap();
            engine
                .backward_batch_into(
                    std::slice::from_ref(&problem),
                    &mut saved,
                    &[g.as_ref()],
                    &mut grads,
                    Par::rayon(2),
                )
                .unwrap();
            let (fresh_out, mut fresh_saved) = engine.forward(&problem, Par::Seq).unwrap();
            assert_eq!(out, fresh_out, "{name} step {step}");
            let fresh = engine.backward(&problem, &mut fresh_saved, g.as_ref(), Par::Seq).unwrap();
            assert_eq!(grads[0], fresh, "{name} step {step}");
        }
    }
}

/// Finite inputs of 1e20 whose products leave f32's range: the forward and the backward return
/// a typed error naming the inputs, not a result of infinities.
#[test]
fn products_past_the_number_format_are_a_typed_error() {
    let engine = LowTri::new(4).unwrap();
    let big = Mat::<f32>::from_fn(10, 3, |i, j| 1e20 * (1.0 + (i * 3 + j) as f32 / 30.0));
    let c = Mat::<f32>::from_fn(10, 2, |i, _| 1.0 + i as f32);
    for problem in [
        Problem::general(big.as_ref(), big.as_ref(), c.as_ref()),
        Problem::self_tensored(big.as_ref(), big.as_ref(), c.as_ref()),
    ] {
        let err = engine.forward(&problem, Par::Seq).unwrap_err();
        assert!(matches!(err, SketchError::Overflow { output: "out", .. }), "{err}");
    }
    // a backward whose gradients overflow: moderate inputs, a huge d_out
    let small = Mat::<f32>::from_fn(10, 3, |i, j| 1.0 + (i + j) as f32);
    let problem = Problem::general(small.as_ref(), small.as_ref(), c.as_ref());
    let (_, mut saved) = engine.forward(&problem, Par::Seq).unwrap();
    let d_out = Mat::<f32>::from_fn(10, 2, |_, _| 3e37);
    let err = engine.backward(&problem, &mut saved, d_out.as_ref(), Par::Seq).unwrap_err();
    assert!(matches!(err, SketchError::Overflow { input: "a, b and c", .. }), "{err}");
}

/// The engine without value scans (what the attention layer runs) computes the same numbers
/// as the checked one on finite inputs, bit for bit, forward and backward; given NaN, an
/// infinity or inputs past the number format's range it returns non-finite values for its
/// caller's checks to find, where the checked engine returns typed errors (and neither panics).
#[test]
fn the_engine_without_value_scans_agrees_and_leaves_non_finite_values_to_its_caller() {
    let (checked, trusting) =
        (LowTri::new(4).unwrap(), LowTri::new(4).unwrap().without_value_scans());
    assert_ne!(checked, trusting);
    let x = |seed: usize, cols: usize| {
        Mat::<f64>::from_fn(10, cols, move |i, j| ((i * cols + j + seed) as f64 * 0.77).sin())
    };
    let (l, r, q, k, c, d_out) = (x(0, 3), x(1, 3), x(2, 5), x(3, 5), x(4, 2), x(5, 2));
    let local = Problem::local_exact(
        Features::SelfTensored { l: l.as_ref(), r: r.as_ref() },
        q.as_ref(),
        k.as_ref(),
        4,
        c.as_ref(),
    );
    for problem in [Problem::general(l.as_ref(), r.as_ref(), c.as_ref()), local] {
        let (out, mut saved) = checked.forward(&problem, Par::Seq).unwrap();
        let (out2, mut saved2) = trusting.forward(&problem, Par::Seq).unwrap();
        assert_eq!(out, out2);
        let g = checked.backward(&problem, &mut saved, d_out.as_ref(), Par::Seq).unwrap();
        let g2 = trusting.backward(&problem, &mut saved2, d_out.as_ref(), Par::Seq).unwrap();
        assert_eq!(g, g2);
    }
    let mut bad = l.clone();
    bad[(6, 1)] = f64::NAN;
    let big = Mat::<f64>::from_fn(10, 3, |i, j| 1e200 * (1.0 + (i * 3 + j) as f64 / 30.0));
    for a in [&bad, &big] {
        let problem = Problem::general(a.as_ref(), a.as_ref(), c.as_ref());
        assert!(checked.forward(&problem, Par::Seq).is_err());
        let (out, mut saved) = trusting.forward(&problem, Par::Seq).unwrap();
        assert!(out.col(0).iter().any(|v| !v.is_finite()));
        let g = trusting.backward(&problem, &mut saved, d_out.as_ref(), Par::Seq).unwrap();
        let finite = |m: &Mat<f64>| polysketch_core::check_finite("test", "g", m.as_ref()).is_ok();
        assert!(!(finite(&g.d_a) && finite(&g.d_b) && finite(&g.d_c)));
    }
}
