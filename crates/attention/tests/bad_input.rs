//! Inputs that used to bring the layer down: size products that wrap, and saved states from
//! another layer. Each must come back as a typed error, never a panic.

mod common;
use common::*;

use faer::Par;
use polysketch_attention::{Attention, AttentionConfig, AttentionError, AttentionKind, Saved};

fn kinds() -> [AttentionKind; 3] {
    [AttentionKind::Softmax, AttentionKind::Polynomial { p: 4 }, config(1, 4, 4, 4, 4, true).kind]
}

#[test]
fn size_products_that_overflow_are_refused_before_any_index() {
    for kind in kinds() {
        let layer = Attention::<f32>::new(AttentionConfig { heads: 2, head_dim: 4, kind }).unwrap();
        let x = vec![0.5f32; 64];
        for (batch, n) in [(1usize << 63, 1), (1 << 62, 4), (1, usize::MAX)] {
            let err = layer.forward(&x, &x, &x, batch, n, Par::Seq).unwrap_err();
            assert!(matches!(err, AttentionError::TooLarge { .. }), "{kind:?} {batch} {n}: {err}");
        }
    }
}

#[test]
fn a_state_from_a_layer_of_other_sizes_is_refused() {
    for kind in kinds() {
        let config = |heads, head_dim| AttentionConfig { heads, head_dim, kind };
        let two_by_four = Attention::<f64>::new(config(2, 4)).unwrap();
        let x = random::<f64>(2 * 4 * 6, 1.0, 1);
        // the same number of values per token (8), another layout: 1 head of 8, 4 heads of 2
        for (heads, h) in [(1, 8), (4, 2)] {
            let other = Attention::<f64>::new(config(heads, h)).unwrap();
            let (_, mut saved) = two_by_four.forward(&x, &x, &x, 1, 6, Par::Seq).unwrap();
            let err = other.backward(&mut saved, &x, Par::Seq).unwrap_err();
            assert!(
                matches!(&err, AttentionError::InvalidState { reason, .. } if reason.contains("other") || reason.contains("heads")),
                "{kind:?} {heads}x{h}: {err}"
            );
        }
    }
}

#[test]
fn an_empty_state_says_so() {
    for kind in kinds() {
        let layer = Attention::<f64>::new(AttentionConfig { heads: 1, head_dim: 4, kind }).unwrap();
        let x = random::<f64>(4 * 6, 1.0, 1);
        let err = layer.backward(&mut Saved::new(), &x, Par::Seq).unwrap_err();
        assert!(err.to_string().contains("the saved state is empty"), "{kind:?}: {err}");
    }
}

#[test]
fn huge_sizes_are_refused_before_anything_is_allocated() {
    use polysketch_attention::LearnedSketch;
    use polysketch_sketch::SketchError;
    let too_large =
        |e: &AttentionError| matches!(e, AttentionError::Sketch(SketchError::TooLarge { .. }));
    for kind in kinds() {
        let err = Attention::<f32>::new(AttentionConfig { heads: 1, head_dim: 1 << 40, kind })
            .unwrap_err();
        assert!(too_large(&err), "{kind:?}: {err}");
    }
    for (h, r) in [(8, 1usize << 40), (1 << 40, 8), (8, usize::MAX / 2)] {
        let err = LearnedSketch::<f32>::new(h, r, 2, 0).unwrap_err();
        assert!(too_large(&err), "h {h}, r {r}: {err}");
    }
}
