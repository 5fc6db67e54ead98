//! Tiled softmax attention against its definition, finite differences, threads and f32.

mod common;
use common::*;

use faer::Par;
use polysketch_attention::reference::softmax_reference;
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
        for idx in 0..batch * heads {
            let (qh, kh, vh) = (head(&q, idx, n, h), head(&k, idx, n, h), head(&v, idx, n, h));
            let e = softmax_reference(qh, kh, vh, causal);
            let got = head(&out, idx, n, h);
            for i in 0..n {
                for c in 0..h {
                    assert!(
                        (got[(i, c)] - e[(i, c)]).abs() < 1e-12,
                        "n={n} causal={causal} head {idx} ({i},{c}): {} vs {}",
                        got[(i, c)],
                        e[(i, c)]
                    );
                }
            }
        }
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
