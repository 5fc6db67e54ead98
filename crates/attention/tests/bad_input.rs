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
        let layer = layer_of::<f32>(2, 4, kind);
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
        let config = |heads, head_dim| AttentionConfig::new(heads, head_dim, kind);
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
        let layer = layer_of::<f64>(1, 4, kind);
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
        let err = Attention::<f32>::new(AttentionConfig::new(1, 1 << 40, kind)).unwrap_err();
        assert!(too_large(&err), "{kind:?}: {err}");
    }
    for (h, r) in [(8, 1usize << 40), (1 << 40, 8), (8, usize::MAX / 2)] {
        let err = LearnedSketch::<f32>::new(h, r, 2, 0).unwrap_err();
        assert!(too_large(&err), "h {h}, r {r}: {err}");
    }
}

/// Every kind with parameters: polynomial p = 8, PolySketch random and learned, with local
/// blocks.
fn kinds_with_parameters() -> Vec<AttentionKind> {
    ["polynomial:p=8", "random+local:p=4,r=8,block=4", "learned+local:p=4,r=8,block=4"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn a_non_finite_parameter_is_named() {
    for kind in kinds_with_parameters() {
        let mut layer = layer_of::<f32>(2, 4, kind);
        let names: Vec<String> = layer.parameters().iter().map(|p| p.name.clone()).collect();
        let x = random::<f32>(2 * 4 * 6, 1.0, 1);
        let (_, mut saved) = layer.forward(&x, &x, &x, 1, 6, Par::Seq).unwrap();
        // the last parameter is a network's for the learned sketch, ln.bias otherwise
        for (which, value) in [(0, f32::NAN), (names.len() - 1, f32::INFINITY)] {
            let keep = layer.parameters_mut()[which].data[1];
            layer.parameters_mut()[which].data[1] = value;
            for err in [
                layer.forward(&x, &x, &x, 1, 6, Par::Seq).unwrap_err(),
                layer.backward(&mut saved, &x, Par::Seq).unwrap_err(),
            ] {
                assert!(
                    matches!(&err, AttentionError::NonFiniteParameter { name, index: 1, .. } if *name == names[which]),
                    "{kind:?}: {err}"
                );
            }
            layer.parameters_mut()[which].data[1] = keep;
        }
    }
}

/// A layer-norm gain of 1e6 makes ⟨q̃, k̃⟩ ≈ 1e12·√h: its p-th power leaves f32's range, not
/// f64's. f32 gets a typed error naming the overflow; f64 computes a finite result.
#[test]
fn scores_past_the_number_format_are_a_typed_error() {
    fn with_gain<T: polysketch_core::Scalar>(kind: AttentionKind, gain: f64) -> Attention<T> {
        let mut layer = layer_of::<T>(2, 8, kind);
        layer.parameters_mut()[0].data.iter_mut().for_each(|g| *g = T::of(gain));
        layer
    }
    for kind in kinds_with_parameters() {
        let x32 = random::<f32>(2 * 8 * 12, 1.0, 3);
        let layer = with_gain::<f32>(kind, 1e6);
        let err = layer.forward(&x32, &x32, &x32, 1, 12, Par::Seq).unwrap_err();
        assert!(
            matches!(&err, AttentionError::Overflow { precision: "f32", .. }),
            "{kind:?}: {err}"
        );
        assert!(err.to_string().contains("max |ln.gain| = 1.000e6"), "{err}");
        let x64 = random::<f64>(2 * 8 * 12, 1.0, 3);
        let layer = with_gain::<f64>(kind, 1e6);
        let (out, mut saved) = layer.forward(&x64, &x64, &x64, 1, 12, Par::Seq).unwrap();
        assert!(out.iter().all(|v| v.is_finite()), "{kind:?}");
        // the backward of f64 overflows in turn or gives finite gradients: never NaN silently
        match layer.backward(&mut saved, &x64, Par::Seq) {
            Ok(g) => assert!(g.dq.iter().chain(&g.dk).all(|v| v.is_finite())),
            Err(e) => assert!(matches!(e, AttentionError::Overflow { .. }), "{kind:?}: {e}"),
        }
    }
    // softmax has no gain: q·k of 1e20-sized rows overflows f32 before the maximum is taken
    let layer = layer_of::<f32>(1, 4, AttentionKind::Softmax);
    let big = vec![1e20f32; 4 * 3];
    let err = layer.forward(&big, &big, &big, 1, 3, Par::Seq).unwrap_err();
    assert!(matches!(&err, AttentionError::Overflow { output: "out", .. }), "{err}");
}

/// Scores that stay finite one by one while their sum passes the number format's range:
/// with values of 1e-30 the weighted sums stay small while the denominators overflow, and a
/// layer that divided by them would return zeros. Over a sweep of gains, every f32 forward
/// either agrees with the f64 forward of the same layer or is refused as an overflow.
#[test]
fn denominators_past_the_number_format_are_refused_not_divided_by() {
    let n = 12;
    let x = random::<f64>(2 * 8 * n, 1.0, 3);
    let v: Vec<f64> = x.iter().map(|x| x * 1e-30).collect();
    let (x32, v32): (Vec<f32>, Vec<f32>) =
        x.iter().zip(&v).map(|(a, b)| (*a as f32, *b as f32)).unzip();
    for kind in kinds_with_parameters() {
        let (mut l64, mut l32) = (layer_of::<f64>(2, 8, kind), layer_of::<f32>(2, 8, kind));
        // steps of 5 %: the window where single scores are finite and their sum is not is
        // narrow (a factor 12 in the scores is 12^(1/2p) in the gain)
        for gain in (0..70).map(|i| 1e4 * 1.05f64.powi(i)) {
            l64.parameters_mut()[0].data.iter_mut().for_each(|g| *g = gain);
            l32.parameters_mut()[0].data.iter_mut().for_each(|g| *g = gain as f32);
            match l32.forward(&x32, &x32, &v32, 1, n, Par::Seq) {
                Ok((out, _)) => {
                    let (expected, _) = l64.forward(&x, &x, &v, 1, n, Par::Seq).unwrap();
                    let scale = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
                    for (a, b) in out.iter().zip(&expected) {
                        assert!(
                            (*a as f64 - b).abs() <= 1e-2 * scale,
                            "{kind:?}, gain {gain}: {a} against {b}"
                        );
                    }
                }
                Err(e) => {
                    assert!(matches!(e, AttentionError::Overflow { .. }), "{kind:?}: {e}")
                }
            }
        }
    }
}

#[test]
fn zero_sizes_name_the_argument() {
    let layer = layer_of::<f32>(1, 4, AttentionKind::Softmax);
    let x = vec![0.5f32; 8];
    for (batch, n, name) in [(1, 0, "n"), (0, 2, "batch")] {
        let err = layer.forward(&x, &x, &x, batch, n, Par::Seq).unwrap_err();
        assert!(
            matches!(err, AttentionError::InvalidArgument { argument, .. } if argument == name),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("`{name}` must be at least 1, got 0")), "{err}");
    }
}
