//! The learned sketch (paper Algorithm 2, Appendix D) against its plain-loop reference, its
//! gradients against finite differences, f32 against f64, seeds, shapes and bad input.

use faer::{Mat, MatRef, Par};
use polysketch_attention::reference::learned_sketch_reference;
use polysketch_attention::{AttentionError, LearnedSaved, LearnedSketch};
use polysketch_core::seeded_rng;
use polysketch_sketch::PolySketch;
use rand_distr::{Distribution, StandardNormal};

fn random(rows: usize, cols: usize, seed: u64) -> Mat<f64> {
    let mut rng = seeded_rng(seed);
    Mat::from_fn(rows, cols, |_, _| StandardNormal.sample(&mut rng))
}

/// Moves every parameter off its initial value so biases and gains are generic.
fn perturb(s: &mut LearnedSketch<f64>, seed: u64) {
    let mut rng = seeded_rng(seed);
    for p in s.parameters_mut() {
        for x in p.data.iter_mut() {
            let z: f64 = StandardNormal.sample(&mut rng);
            *x += 0.1 * z;
        }
    }
}

fn max_abs(m: MatRef<'_, f64>) -> f64 {
    (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
        .fold(0.0, |a, (i, j)| a.max(m[(i, j)].abs()))
}

#[test]
fn forward_matches_the_reference() {
    for (h, r, degree) in [(6, 4, 2), (5, 3, 4), (3, 2, 8)] {
        let mut s = LearnedSketch::<f64>::new(h, r, degree, 7).unwrap();
        perturb(&mut s, 1);
        let x = random(13, h, 2);
        let fast = s.apply(x.as_ref(), Par::Seq).unwrap();
        let naive = learned_sketch_reference(&s, x.as_ref());
        let err = max_abs((&fast - &naive).as_ref());
        assert!(err <= 1e-12 * max_abs(naive.as_ref()), "h={h} r={r} degree={degree}: {err:e}");
    }
}

#[test]
fn counts_and_shapes_follow_appendix_d() {
    // p - 2 networks; one reading h has 2h + 8hr + 8r + 8r² + r + 2r + 8r² + 8r + 8r² + r
    // parameters, i.e. ≈ 8hr + 24r² as the paper says
    let (h, r) = (16, 4);
    for (degree, networks_on_input, networks_on_nodes) in [(2, 2, 0), (4, 4, 2), (8, 8, 6)] {
        let s = LearnedSketch::<f32>::new(h, r, degree, 0).unwrap();
        let count: usize = s.parameters().iter().map(|p| p.data.len()).sum();
        let per = |d: usize| {
            2 * d + d * 8 * r + 8 * r + 8 * r * r + r + 2 * r + r * 8 * r + 8 * r + 8 * r * r + r
        };
        assert_eq!(
            count,
            networks_on_input * per(h) + networks_on_nodes * per(r),
            "degree {degree}"
        );
        for p in s.parameters() {
            assert_eq!(p.shape.iter().product::<usize>(), p.data.len(), "{}", p.name);
        }
    }
}

#[test]
fn same_seed_same_sketch_and_f32_follows_f64() {
    let (h, r) = (8, 6);
    let a = LearnedSketch::<f64>::new(h, r, 2, 3).unwrap();
    let b = LearnedSketch::<f64>::new(h, r, 2, 3).unwrap();
    let c = LearnedSketch::<f64>::new(h, r, 2, 4).unwrap();
    assert_eq!(a.parameters(), b.parameters());
    assert_ne!(a.parameters(), c.parameters());
    let s32 = LearnedSketch::<f32>::new(h, r, 2, 3).unwrap();
    let x = random(50, h, 5);
    let x32 = Mat::from_fn(50, h, |i, j| x[(i, j)] as f32);
    let (l64, l32) =
        (a.apply(x.as_ref(), Par::Seq).unwrap(), s32.apply(x32.as_ref(), Par::Seq).unwrap());
    let err = (0..50)
        .flat_map(|i| (0..r).map(move |j| (i, j)))
        .fold(0.0f64, |m, (i, j)| m.max((l32[(i, j)] as f64 - l64[(i, j)]).abs()));
    assert!(err < 1e-4 * max_abs(l64.as_ref()), "f32 vs f64: {err:e}");
}

/// L = <G, sketch(x)>: gradients for x and every parameter against central differences.
#[test]
fn backward_matches_finite_differences() {
    for (h, r, degree) in [(4, 3, 2), (3, 2, 4)] {
        let mut s = LearnedSketch::<f64>::new(h, r, degree, 9).unwrap();
        perturb(&mut s, 3);
        let n = 5;
        let x = random(n, h, 4);
        let g = random(n, r, 6);
        let loss = |s: &LearnedSketch<f64>, x: MatRef<'_, f64>| -> f64 {
            let l = s.apply(x, Par::Seq).unwrap();
            (0..n)
                .flat_map(|i| (0..r).map(move |j| (i, j)))
                .map(|(i, j)| l[(i, j)] * g[(i, j)])
                .sum()
        };
        let mut saved = LearnedSaved::default();
        let mut out = Mat::zeros(n, r);
        s.forward(x.as_ref(), out.as_mut(), &mut saved);
        let mut dx = Mat::zeros(n, h);
        let mut grads = s.zero_grads();
        s.backward(&mut saved, g.as_ref(), dx.as_mut(), &mut grads);
        // the trait's vjp is the same input gradient
        let vjp = s.vjp(x.as_ref(), g.as_ref(), Par::Seq).unwrap();
        assert!(max_abs((&vjp - &dx).as_ref()) <= 1e-14 * max_abs(dx.as_ref()).max(1.0));
        let eps = 1e-6;
        let scale = max_abs(dx.as_ref());
        for i in 0..n {
            for c in 0..h {
                let (mut up, mut down) = (x.clone(), x.clone());
                up[(i, c)] += eps;
                down[(i, c)] -= eps;
                let fd = (loss(&s, up.as_ref()) - loss(&s, down.as_ref())) / (2.0 * eps);
                assert!(
                    (dx[(i, c)] - fd).abs() <= 1e-6 * scale + 1e-9,
                    "dx[{i},{c}]: {} vs {fd}",
                    dx[(i, c)]
                );
            }
        }
        let names: Vec<String> = s.parameters().into_iter().map(|p| p.name).collect();
        // finite differences err in absolute terms (about 1e-10 here): the tolerance is
        // relative to the largest gradient of all parameters, not of each one (deep in the
        // tree some are ~1e-7 in size)
        let scale = grads.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
        for (pi, analytic) in grads.iter().enumerate() {
            for j in 0..analytic.len() {
                let mut probe = s.clone();
                probe.parameters_mut()[pi].data[j] += eps;
                let up = loss(&probe, x.as_ref());
                probe.parameters_mut()[pi].data[j] -= 2.0 * eps;
                let down = loss(&probe, x.as_ref());
                let fd = (up - down) / (2.0 * eps);
                assert!(
                    (analytic[j] - fd).abs() <= 1e-6 * scale + 1e-9,
                    "degree {degree} d{}[{j}]: {} vs {fd}",
                    names[pi],
                    analytic[j]
                );
            }
        }
    }
}

#[test]
fn bad_input_gets_typed_errors() {
    for (h, r, degree) in [(0, 4, 2), (4, 0, 2), (4, 4, 1), (4, 4, 3), (4, 4, 0)] {
        assert!(
            matches!(
                LearnedSketch::<f32>::new(h, r, degree, 0),
                Err(AttentionError::InvalidConfig(_))
            ),
            "h={h} r={r} degree={degree}"
        );
    }
    let s = LearnedSketch::<f64>::new(4, 3, 2, 0).unwrap();
    assert!(s.apply(random(3, 5, 0).as_ref(), Par::Seq).is_err());
    assert!(s.apply(Mat::<f64>::zeros(0, 4).as_ref(), Par::Seq).is_err());
    let mut x = random(3, 4, 0);
    x[(1, 1)] = f64::NAN;
    assert!(s.apply(x.as_ref(), Par::Seq).is_err());
}

/// The networks run on chunks of `CHUNK` rows: over rows spanning several chunks (and a partial
/// one) the forward matches the reference, and the backward's input gradient and summed
/// parameter gradients match those of separate calls on pieces that cut across the chunks.
#[test]
fn rows_across_chunks_match_pieces() {
    use polysketch_attention::learned::CHUNK;
    for (h, r, degree) in [(6, 4, 2), (3, 2, 4)] {
        let mut s = LearnedSketch::<f64>::new(h, r, degree, 11).unwrap();
        perturb(&mut s, 5);
        let n = 2 * CHUNK + 37;
        let x = random(n, h, 8);
        let g = random(n, r, 9);
        let naive = learned_sketch_reference(&s, x.as_ref());
        let mut saved = LearnedSaved::default();
        let mut out = Mat::zeros(n, r);
        s.forward(x.as_ref(), out.as_mut(), &mut saved);
        let err = max_abs((&out - &naive).as_ref());
        assert!(err <= 1e-12 * max_abs(naive.as_ref()), "forward: {err:e}");
        let mut dx = Mat::zeros(n, h);
        let mut grads = s.zero_grads();
        s.backward(&mut saved, g.as_ref(), dx.as_mut(), &mut grads);
        // pieces [0, 300) and [300, n): boundaries that are not the chunks'
        let mut piece_grads = s.zero_grads();
        let mut piece_dx = Mat::<f64>::zeros(n, h);
        for (a, b) in [(0, 300), (300, n)] {
            let mut sv = LearnedSaved::default();
            let mut o = Mat::zeros(b - a, r);
            s.forward(x.as_ref().subrows(a, b - a), o.as_mut(), &mut sv);
            s.backward(
                &mut sv,
                g.as_ref().subrows(a, b - a),
                piece_dx.as_mut().subrows_mut(a, b - a),
                &mut piece_grads,
            );
        }
        let err = max_abs((&dx - &piece_dx).as_ref());
        assert!(err <= 1e-12 * max_abs(dx.as_ref()), "dx: {err:e}");
        let scale = grads.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
        for (a, b) in grads.iter().flatten().zip(piece_grads.iter().flatten()) {
            assert!((a - b).abs() <= 1e-12 * scale, "parameter gradient {a} vs {b}");
        }
    }
}

#[test]
fn saturation_is_near_zero_at_initialisation_and_one_when_the_outputs_grow() {
    // the corpus study's r = 64 (h = 32) and r = 32: fresh networks stay in tanh's linear range
    for r in [32, 64] {
        let s = LearnedSketch::<f64>::new(32, r, 2, 3).unwrap();
        let x = random(128, 32, 4);
        let fresh = s.saturation(x.as_ref(), Par::Seq).unwrap();
        assert!(fresh < 0.01, "r = {r}: {fresh}");
    }
    // output biases of 6 on both networks: z = 36/√16 = 9 in every entry, all saturated
    let mut s = LearnedSketch::<f64>::new(8, 16, 2, 3).unwrap();
    for p in s.parameters_mut().into_iter().filter(|p| p.name.ends_with(".b4")) {
        p.data.iter_mut().for_each(|b| *b = 6.0);
    }
    let x = random(40, 8, 5);
    assert_eq!(s.saturation(x.as_ref(), Par::Seq).unwrap(), 1.0);
    // half of them: the first 8 outputs biased, the others left at 0 (|z| small)
    for p in s.parameters_mut().into_iter().filter(|p| p.name.ends_with(".b4")) {
        p.data.iter_mut().skip(8).for_each(|b| *b = 0.0);
    }
    let half = s.saturation(x.as_ref(), Par::Seq).unwrap();
    assert!((0.45..=0.55).contains(&half), "{half}");
    // bad input is an error, not a panic
    assert!(s.saturation(random(3, 7, 6).as_ref(), Par::Seq).is_err());
    let mut nan = random(3, 8, 6);
    nan[(1, 1)] = f64::NAN;
    assert!(s.saturation(nan.as_ref(), Par::Seq).is_err());
}

/// Forward output, input gradient and parameter gradients of `s` on `x` for `L = <g, L(x)>`,
/// widened to f64 and flattened.
fn outputs<T: polysketch_core::Scalar>(
    s: &LearnedSketch<T>, x: &Mat<f64>, g: &Mat<f64>,
) -> [Vec<f64>; 3] {
    let (n, h, r) = (x.nrows(), x.ncols(), g.ncols());
    let (xt, gt) = (x.as_ref().map(|&v| T::of(v)), g.as_ref().map(|&v| T::of(v)));
    let mut saved = LearnedSaved::default();
    let mut out = Mat::<T>::zeros(n, r);
    s.forward(xt.as_ref(), out.as_mut(), &mut saved);
    let mut dx = Mat::<T>::zeros(n, h);
    let mut grads = s.zero_grads();
    s.backward(&mut saved, gt.as_ref(), dx.as_mut(), &mut grads);
    let flat = |m: &Mat<T>| -> Vec<f64> {
        (0..m.nrows())
            .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
            .map(|ij| m[ij].as_f64())
            .collect()
    };
    [flat(&out), flat(&dx), grads.iter().flatten().map(|v| v.as_f64()).collect()]
}

/// ‖a − b‖ / ‖b‖.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    (d / b.iter().map(|y| y * y).sum::<f64>()).sqrt()
}

/// bf16 products in the networks, at the layer's sizes (h = 64, r = 32, 300 rows: two
/// chunks): the f32 sketch with them against the f64 sketch without them (the accuracy the
/// book states), and against the f64 sketch with them (the same rounding, the portable path:
/// closer), forward, input gradient and parameter gradients. The backward treats the rounding
/// as the identity (its gradient is that of the unrounded network), so it is compared with
/// the exact gradient, not with finite differences of the rounded forward.
#[test]
fn bf16_products_follow_f64_within_the_rounding() {
    let (h, r, n) = (64, 32, 300);
    let mut s64 = LearnedSketch::<f64>::new(h, r, 2, 11).unwrap();
    perturb(&mut s64, 5);
    let mut s32 = LearnedSketch::<f32>::new(h, r, 2, 11).unwrap();
    for (d, s) in s32.parameters_mut().into_iter().zip(s64.parameters()) {
        d.data.iter_mut().zip(s.data).for_each(|(a, b)| *a = *b as f32);
    }
    let (x, g) = (random(n, h, 21), random(n, r, 22));
    let exact = outputs(&s64, &x, &g);
    let plain32 = outputs(&s32, &x, &g);
    s32.set_bf16_products(true);
    let mut b64 = s64.clone();
    b64.set_bf16_products(true);
    let (fast, portable) = (outputs(&s32, &x, &g), outputs(&b64, &x, &g));
    for (i, what) in ["output", "input gradient", "parameter gradients"].iter().enumerate() {
        let (e_fast, e_same, e_f32) =
            (rel(&fast[i], &exact[i]), rel(&fast[i], &portable[i]), rel(&plain32[i], &exact[i]));
        eprintln!(
            "{what}: bf16 f32 vs f64 {e_fast:.2e}, vs bf16 f64 {e_same:.2e} (f32 without bf16 vs f64 {e_f32:.2e})"
        );
        assert!(e_fast < 2e-2, "{what}: {e_fast:e}");
        assert!(e_fast > 10.0 * e_f32, "{what}: the rounding must show ({e_fast:e} vs {e_f32:e})");
        assert!(e_same < 0.1 * e_fast, "{what}: {e_same:e} vs {e_fast:e}");
    }
}
