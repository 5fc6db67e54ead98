//! `forward_into` / `backward_into` reuse their buffers: a state carried across calls of
//! different shapes and kinds, causal and bidirectional, gives bit-for-bit what fresh buffers give, and a used state is
//! refused.

mod common;
use common::*;

use faer::Par;
use polysketch_attention::{
    Attention, AttentionError, AttentionKind, Grads, PolySketchConfig, Saved, SketchKind,
};

fn kinds() -> Vec<AttentionKind> {
    let ps = |p, r, local, sketch| {
        AttentionKind::PolySketch(PolySketchConfig { p, r, block: 4, local, seed: 3, sketch })
    };
    let hedgehog = |features| AttentionKind::Hedgehog { features, block: 4, seed: 3 };
    vec![
        ps(2, 8, false, SketchKind::Random),
        ps(4, 8, true, SketchKind::Random),
        // learned sketches and feature maps of two sizes: the parameter gradients change shape
        ps(4, 8, true, SketchKind::Learned),
        ps(4, 4, true, SketchKind::Learned),
        AttentionKind::Polynomial { p: 4 },
        AttentionKind::Softmax,
        AttentionKind::Local { p: 4, block: 3 },
        AttentionKind::Sliding { window: 5 },
        AttentionKind::Performer { features: 6, block: 4, seed: 3 },
        hedgehog(8),
        hedgehog(12),
    ]
}

/// Output and gradients with fresh buffers.
fn fresh(layer: &Attention<f64>, batch: usize, n: usize, seed: u64) -> (Vec<f64>, Grads<f64>) {
    let len = batch * layer.config().heads * n * layer.config().head_dim;
    let [q, k, v, d] = qkvg::<f64>(len, seed);
    let (out, mut saved) = layer.forward(&q, &k, &v, batch, n, Par::Seq).unwrap();
    let grads = layer.backward(&mut saved, &d, Par::Seq).unwrap();
    (out, grads)
}

/// The same through one carried `Saved` and `Grads`.
fn reused(
    layer: &Attention<f64>, batch: usize, n: usize, seed: u64, saved: &mut Saved<f64>,
    grads: &mut Grads<f64>,
) -> Vec<f64> {
    let len = batch * layer.config().heads * n * layer.config().head_dim;
    let [q, k, v, d] = qkvg::<f64>(len, seed);
    let mut out = vec![0.0; len];
    layer.forward_into(&q, &k, &v, batch, n, &mut out, saved, Par::Seq).unwrap();
    layer.backward_into(saved, &d, grads, Par::Seq).unwrap();
    out
}

#[test]
fn reused_buffers_give_the_same_numbers_as_fresh_ones() {
    // one state carried through every kind and several shapes, in an order that grows,
    // shrinks and changes kind
    let mut saved = Saved::new();
    let mut grads = Grads::default();
    let causal_only = |k: &AttentionKind| {
        matches!(k, AttentionKind::Performer { .. } | AttentionKind::Hedgehog { .. })
    };
    let cases = kinds().into_iter().flat_map(|k| [(k, true), (k, false)]);
    for (kind, causal) in cases.filter(|(k, causal)| *causal || !causal_only(k)) {
        let config = polysketch_attention::AttentionConfig {
            causal,
            ..*layer_of::<f64>(2, 5, kind).config()
        };
        let layer = Attention::<f64>::new(config).unwrap();
        for (step, (batch, n)) in
            [(1, 13), (2, 8), (1, 13), (2, 21), (1, 9)].into_iter().enumerate()
        {
            let seed = 100 + step as u64;
            let (out, expected) = fresh(&layer, batch, n, seed);
            let got = reused(&layer, batch, n, seed, &mut saved, &mut grads);
            assert_eq!(out, got, "{kind:?} causal={causal} output, batch {batch}, n {n}");
            assert_eq!(expected, grads, "{kind:?} causal={causal} gradients, batch {batch}, n {n}");
        }
    }
}

#[test]
fn a_state_is_used_once() {
    for kind in kinds() {
        let layer = layer_of::<f64>(1, 4, kind);
        let x = random::<f64>(4 * 6, 1.0, 1);
        let (_, mut saved) = layer.forward(&x, &x, &x, 1, 6, Par::Seq).unwrap();
        layer.backward(&mut saved, &x, Par::Seq).unwrap();
        let err = layer.backward(&mut saved, &x, Par::Seq).unwrap_err();
        assert!(matches!(err, AttentionError::InvalidState { .. }), "{kind:?}: {err}");
        let err = layer.backward(&mut Saved::new(), &x, Par::Seq).unwrap_err();
        assert!(
            matches!(
                err,
                AttentionError::InvalidState { .. } | AttentionError::ShapeMismatch { .. }
            ),
            "{kind:?}: {err}"
        );
    }
}
