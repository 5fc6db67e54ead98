//! Tokens-first inputs (`[batch, n, heads, h]`, as a model's projections come) give exactly the
//! heads-first results, moved; lengths are checked against the described shape.

mod common;
use common::*;

use faer::Par;
use polysketch_attention::{
    Attention, AttentionConfig, AttentionError, AttentionKind, HeadLayout, QkNorm, Shape,
};

/// `[batch, a, b, h]` → `[batch, b, a, h]`, written out independently of the crate's.
fn swap(x: &[f64], batch: usize, a: usize, b: usize, h: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for s in 0..batch {
        for i in 0..a {
            for j in 0..b {
                for c in 0..h {
                    out[((s * b + j) * a + i) * h + c] = x[((s * a + i) * b + j) * h + c];
                }
            }
        }
    }
    out
}

#[test]
fn tokens_first_is_heads_first_moved() {
    let (batch, heads, h, n) = (2, 3, 4, 11);
    let kinds: Vec<AttentionKind> =
        ["softmax", "polynomial:p=4", "learned+local:p=4,r=4,block=4", "random:p=4,r=6,block=4"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
    for kind in kinds {
        let config =
            AttentionConfig { heads, head_dim: h, kind, qk_norm: QkNorm::LayerNorm, causal: true };
        let mut layer = Attention::<f64>::new(config).unwrap();
        perturb_parameters(&mut layer, 5);
        let [q, k, v, g] = qkvg::<f64>(batch * heads * n * h, 3);
        // the model's view: tokens first
        let to_tokens = |x: &[f64]| swap(x, batch, heads, n, h);
        let (qt, kt, vt, gt) = (to_tokens(&q), to_tokens(&k), to_tokens(&v), to_tokens(&g));
        let shape = Shape { batch, n, layout: HeadLayout::TokensFirst };
        let (out_t, mut saved_t) = layer.forward_shaped(&qt, &kt, &vt, shape, Par::Seq).unwrap();
        let (out, mut saved) = layer.forward(&q, &k, &v, batch, n, Par::Seq).unwrap();
        assert_eq!(out_t, to_tokens(&out), "{kind:?} forward");
        let grads_t = layer.backward(&mut saved_t, &gt, Par::Seq).unwrap();
        let grads = layer.backward(&mut saved, &g, Par::Seq).unwrap();
        assert_eq!(grads_t.dq, to_tokens(&grads.dq), "{kind:?} dq");
        assert_eq!(grads_t.dk, to_tokens(&grads.dk), "{kind:?} dk");
        assert_eq!(grads_t.dv, to_tokens(&grads.dv), "{kind:?} dv");
        assert_eq!(grads_t.params, grads.params, "{kind:?} parameters");
        // heads first through forward_shaped is the plain forward
        let heads_first = Shape { layout: HeadLayout::HeadsFirst, ..shape };
        let (same, _) = layer.forward_shaped(&q, &k, &v, heads_first, Par::Seq).unwrap();
        assert_eq!(same, out);
    }
}

#[test]
fn tokens_first_lengths_are_checked_against_the_shape() {
    let config = AttentionConfig {
        heads: 2,
        head_dim: 4,
        kind: AttentionKind::Softmax,
        qk_norm: QkNorm::None,
        causal: true,
    };
    let layer = Attention::<f32>::new(config).unwrap();
    let x = vec![0.5f32; 2 * 4 * 5];
    let shape = Shape { batch: 1, n: 5, layout: HeadLayout::TokensFirst };
    let err = layer.forward_shaped(&x[1..], &x, &x, shape, Par::Seq).unwrap_err();
    assert!(matches!(err, AttentionError::ShapeMismatch { input: "q", .. }), "{err}");
    assert!(err.to_string().contains("[batch 1, n 5, heads 2, h 4] (tokens first)"), "{err}");
    let zero = Shape { n: 0, ..shape };
    let err = layer.forward_shaped(&x, &x, &x, zero, Par::Seq).unwrap_err();
    assert!(matches!(err, AttentionError::InvalidArgument { argument: "n", .. }), "{err}");
    // the backward of a tokens-first forward checks d_out in that layout
    let (_, mut saved) = layer.forward_shaped(&x, &x, &x, shape, Par::Seq).unwrap();
    let err = layer.backward(&mut saved, &x[1..], Par::Seq).unwrap_err();
    assert!(err.to_string().contains("(tokens first)"), "{err}");
    // a state reused by a plain forward is heads first again
    layer.forward_into(&x, &x, &x, 1, 5, &mut [0.0; 40], &mut saved, Par::Seq).unwrap();
    assert!(layer.backward(&mut saved, &x, Par::Seq).is_ok());
}
