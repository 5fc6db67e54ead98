//! Tiled softmax attention against its definition, finite differences, threads and f32.

mod common;
use common::*;

use faer::Par;
use polysketch_attention::performer::Favor;
use polysketch_attention::reference::{
    hedgehog_reference, performer_reference, sliding_reference, softmax_reference,
};
use polysketch_attention::{Attention, AttentionConfig, AttentionError, AttentionKind};
use polysketch_core::Scalar;

fn layer<T: Scalar>(heads: usize, h: usize, causal: bool) -> Attention<T> {
    Attention::new(AttentionConfig {
        causal,
        ..AttentionConfig::new(heads, h, AttentionKind::Softmax)
    })
    .unwrap()
}

#[test]
fn forward_matches_the_definition() {
    let (batch, heads, h) = (2, 2, 8);
    for (n, causal) in [1usize, 5, 128, 129, 300].into_iter().flat_map(|n| [(n, true), (n, false)])
    {
        let len = batch * heads * n * h;
        // large scores (scale 3) exercise the running maximum
        let (q, k, v) =
            (random::<f64>(len, 3.0, 1), random::<f64>(len, 3.0, 2), random::<f64>(len, 1.0, 3));
        let (out, _) =
            layer::<f64>(heads, h, causal).forward(&q, &k, &v, batch, n, Par::rayon(2)).unwrap();
        assert_heads_close(
            &out,
            (batch * heads, n, h),
            1e-12,
            &format!("n={n} causal={causal}"),
            |idx| {
                let (qh, kh, vh) = (head(&q, idx, n, h), head(&k, idx, n, h), head(&v, idx, n, h));
                softmax_reference(qh, kh, vh, causal)
            },
        );
        // f32, through the fast exp: within 1e-5 of the f64 result
        let narrow = |x: &[f64]| x.iter().map(|v| *v as f32).collect::<Vec<f32>>();
        let (o32, _) = layer::<f32>(heads, h, causal)
            .forward(&narrow(&q), &narrow(&k), &narrow(&v), batch, n, Par::rayon(2))
            .unwrap();
        let worst = o32.iter().zip(&out).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        assert!(worst < 1e-5, "n={n}: f32 off by {worst:e}");
    }
}

#[test]
fn backward_matches_finite_differences() {
    let (batch, heads, h) = (1, 2, 4);
    for (n, causal) in [(3usize, true), (130, true), (3, false), (130, false)] {
        let l = layer::<f64>(heads, h, causal);
        let len = batch * heads * n * h;
        let [q, k, v, g] = qkvg::<f64>(len, 4);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| weighted_loss(&l, [q, k, v], &g, batch, n);
        let (_, mut saved) = l.forward(&q, &k, &v, batch, n, Par::Seq).unwrap();
        let grads = l.backward(&mut saved, &g, Par::Seq).unwrap();
        // every entry for small n; a spread of entries (across tiles) for n = 130
        let step = if n > 10 { 37 } else { 1 };
        let (inputs, analytic) = ([&q[..], &k, &v], [&grads.dq[..], &grads.dk, &grads.dv]);
        assert_input_gradients(&loss, inputs, analytic, step, &format!("n={n} causal={causal}"));
        assert!(matches!(
            l.backward(&mut saved, &g, Par::Seq),
            Err(AttentionError::InvalidState { .. })
        ));
    }
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let (batch, heads, h, n) = (1, 3, 16, 400);
    assert_thread_invariant(&layer::<f32>(heads, h, true), batch, n);
    assert_thread_invariant(&layer::<f32>(heads, h, false), batch, n);
}

/// Sliding-window softmax (`sliding:window=w`): against its definition in f64 for windows
/// narrower than, equal to and wider than a tile (128 rows), causal and bidirectional, so that
/// rows whose first key tiles are all hidden occur; finite differences; thread counts.
#[test]
fn sliding_window_matches_its_definition() {
    let (batch, heads, h) = (1, 2, 8);
    let sliding = |window, causal| {
        Attention::<f64>::new(AttentionConfig {
            causal,
            ..AttentionConfig::new(heads, h, AttentionKind::Sliding { window })
        })
        .unwrap()
    };
    for (n, window) in [(1usize, 1usize), (9, 3), (300, 1), (300, 5), (300, 128), (300, 200)] {
        for causal in [true, false] {
            let len = batch * heads * n * h;
            let (q, k, v) = (
                random::<f64>(len, 3.0, 1),
                random::<f64>(len, 3.0, 2),
                random::<f64>(len, 1.0, 3),
            );
            let layer = sliding(window, causal);
            assert!(layer.parameters().is_empty());
            let (out, _) = layer.forward(&q, &k, &v, batch, n, Par::rayon(2)).unwrap();
            assert_heads_close(
                &out,
                (batch * heads, n, h),
                1e-12,
                &format!("n={n} w={window} causal={causal}"),
                |idx| {
                    let (qh, kh, vh) =
                        (head(&q, idx, n, h), head(&k, idx, n, h), head(&v, idx, n, h));
                    sliding_reference(qh, kh, vh, window, causal)
                },
            );
        }
    }
    // window 1 is the identity on v
    let n = 50;
    let [q, k, v, g] = qkvg::<f64>(heads * n * h, 4);
    let (out, _) = sliding(1, true).forward(&q, &k, &v, 1, n, Par::Seq).unwrap();
    assert!(out.iter().zip(&v).all(|(a, b)| (a - b).abs() < 1e-15));
    // a window covering the sequence is softmax
    let (wide, _) = sliding(n, true).forward(&q, &k, &v, 1, n, Par::Seq).unwrap();
    let (full, _) = layer::<f64>(heads, h, true).forward(&q, &k, &v, 1, n, Par::Seq).unwrap();
    assert!(wide.iter().zip(&full).all(|(a, b)| (a - b).abs() < 1e-14));
    for (n, window, causal) in [(140usize, 7usize, true), (140, 130, true), (140, 20, false)] {
        let l = sliding(window, causal);
        let len = heads * n * h;
        let [q, k, v, g2] = qkvg::<f64>(len, 5);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| weighted_loss(&l, [q, k, v], &g2, 1, n);
        let (_, mut saved) = l.forward(&q, &k, &v, 1, n, Par::Seq).unwrap();
        let grads = l.backward(&mut saved, &g2, Par::Seq).unwrap();
        let (inputs, analytic) = ([&q[..], &k, &v], [&grads.dq[..], &grads.dk, &grads.dv]);
        let what = format!("sliding n={n} w={window} causal={causal}");
        assert_input_gradients(&loss, inputs, analytic, 31, &what);
    }
    let _ = g;
    for causal in [true, false] {
        let l32 = Attention::<f32>::new(AttentionConfig {
            causal,
            ..AttentionConfig::new(3, 16, AttentionKind::Sliding { window: 100 })
        })
        .unwrap();
        assert_thread_invariant(&l32, 1, 400);
    }
}

fn performer(heads: usize, h: usize, features: usize, block: usize) -> Attention<f64> {
    let kind = AttentionKind::Performer { features, block, seed: 3 };
    Attention::new(AttentionConfig::new(heads, h, kind)).unwrap()
}

/// Performer (`performer:features=m,block=b`): against its unshifted definition in f64 (so the
/// shifts are seen to cancel) across lowtri blocks; with many features it approaches softmax
/// attention (FAVOR+ estimates e^{⟨q,k⟩/√h}); finite differences; thread counts; causal only.
#[test]
fn performer_matches_its_definition_and_approaches_softmax() {
    let (batch, heads, h) = (2, 2, 8);
    for (n, m, block) in [(1usize, 5usize, 4usize), (37, 20, 8), (130, 64, 32)] {
        let len = batch * heads * n * h;
        let (q, k, v) =
            (random::<f64>(len, 1.0, 1), random::<f64>(len, 1.0, 2), random::<f64>(len, 1.0, 3));
        let layer = performer(heads, h, m, block);
        assert!(layer.parameters().is_empty());
        let favor = Favor::<f64>::new(h, m, 3).unwrap();
        let (out, _) = layer.forward(&q, &k, &v, batch, n, Par::rayon(2)).unwrap();
        assert_heads_close(&out, (batch * heads, n, h), 1e-10, &format!("n={n} m={m}"), |idx| {
            let (qh, kh, vh) = (head(&q, idx, n, h), head(&k, idx, n, h), head(&v, idx, n, h));
            performer_reference(&favor, qh, kh, vh)
        });
    }
    // many features: close to softmax (scores of size ~0.3, where FAVOR+'s variance is small)
    let (n, h) = (40, 8);
    let [q, k, v, _] = qkvg::<f64>(n * h, 7);
    let small = |x: &[f64]| x.iter().map(|a| 0.5 * a).collect::<Vec<f64>>();
    let (q, k) = (small(&q), small(&k));
    let (exact, _) = layer::<f64>(1, h, true).forward(&q, &k, &v, 1, n, Par::Seq).unwrap();
    let err = |m: usize| {
        let (approx, _) = performer(1, h, m, 16).forward(&q, &k, &v, 1, n, Par::Seq).unwrap();
        approx.iter().zip(&exact).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt()
            / exact.iter().map(|b| b * b).sum::<f64>().sqrt()
    };
    let (few, many) = (err(16), err(8192));
    assert!(many < 0.03 && many < few, "relative error {few:.4} (16 features), {many:.4} (8192)");
    // gradients
    let (heads, n, m) = (2, 40, 12);
    let l = performer(heads, h, m, 16);
    let [q, k, v, g] = qkvg::<f64>(heads * n * h, 5);
    let loss = |q: &[f64], k: &[f64], v: &[f64]| weighted_loss(&l, [q, k, v], &g, 1, n);
    let (_, mut saved) = l.forward(&q, &k, &v, 1, n, Par::Seq).unwrap();
    let grads = l.backward(&mut saved, &g, Par::Seq).unwrap();
    let (inputs, analytic) = ([&q[..], &k, &v], [&grads.dq[..], &grads.dk, &grads.dv]);
    assert_input_gradients(&loss, inputs, analytic, 7, "performer");
    let l32 = Attention::<f32>::new(AttentionConfig::new(
        3,
        16,
        AttentionKind::Performer { features: 48, block: 64, seed: 1 },
    ))
    .unwrap();
    assert_thread_invariant(&l32, 1, 300);
    let bidirectional = AttentionConfig {
        causal: false,
        ..AttentionConfig::new(1, 8, "performer".parse().unwrap())
    };
    assert!(matches!(Attention::<f32>::new(bidirectional), Err(AttentionError::InvalidConfig(_))));
}

/// Hedgehog (`hedgehog:features=m,block=b`): against its definition in f64 with moved
/// parameters, across lowtri blocks; finite differences of inputs and of `hedgehog.w`,
/// `hedgehog.b`; thread counts; causal only.
#[test]
fn hedgehog_matches_its_definition() {
    let (batch, heads, h) = (2, 2, 6);
    let hedgehog = |features, block| {
        let kind = AttentionKind::Hedgehog { features, block, seed: 2 };
        let mut l = Attention::<f64>::new(AttentionConfig::new(heads, h, kind)).unwrap();
        perturb_parameters(&mut l, 9);
        l
    };
    for (n, m, block) in [(1usize, 2usize, 4usize), (37, 8, 8), (130, 20, 32)] {
        let len = batch * heads * n * h;
        let [q, k, v, _] = qkvg::<f64>(len, 1);
        let layer = hedgehog(m, block);
        let names: Vec<String> = layer.parameters().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["hedgehog.w", "hedgehog.b"]);
        let (out, _) = layer.forward(&q, &k, &v, batch, n, Par::rayon(2)).unwrap();
        let map = layer.hedgehog_features().unwrap();
        assert_heads_close(&out, (batch * heads, n, h), 1e-11, &format!("n={n} m={m}"), |idx| {
            let (qh, kh, vh) = (head(&q, idx, n, h), head(&k, idx, n, h), head(&v, idx, n, h));
            hedgehog_reference(map, qh, kh, vh)
        });
    }
    let (n, l) = (40, hedgehog(10, 16));
    let [q, k, v, g] = qkvg::<f64>(heads * n * h, 5);
    assert_layer_gradients(&l, [&q, &k, &v, &g], 1, n, 7, "hedgehog");
    let l32 = Attention::<f32>::new(AttentionConfig::new(
        3,
        16,
        AttentionKind::Hedgehog { features: 32, block: 64, seed: 1 },
    ))
    .unwrap();
    assert_thread_invariant(&l32, 1, 300);
}
