//! Packed sequences (offsets like `cu_seqlens`) give what each sequence gives alone, forward
//! and backward, for every kind.

mod common;
use common::*;

use faer::Par;
use polysketch_attention::{
    Attention, AttentionConfig, AttentionError, AttentionKind, Grads, PackedSaved,
    PolySketchConfig, SketchKind,
};

/// Rows `a..b` of every head of a `[heads, total, h]` buffer, as `[1, heads, b - a, h]`.
fn rows(x: &[f64], heads: usize, total: usize, h: usize, (a, b): (usize, usize)) -> Vec<f64> {
    (0..heads)
        .flat_map(|hd| x[(hd * total + a) * h..(hd * total + b) * h].iter().copied())
        .collect()
}

#[test]
fn packed_sequences_match_running_each_alone() {
    let (heads, h) = (2, 4);
    let offsets = [0usize, 7, 7, 20, 21, 33];
    let total = 33;
    let kinds = [
        AttentionKind::PolySketch(PolySketchConfig {
            r: 5,
            block: 4,
            local: true,
            seed: 1,
            ..Default::default()
        }),
        AttentionKind::PolySketch(PolySketchConfig {
            r: 5,
            block: 4,
            sketch: SketchKind::Learned,
            seed: 1,
            ..Default::default()
        }),
        AttentionKind::Polynomial { p: 2 },
        AttentionKind::Softmax,
    ];
    for (kind, causal) in kinds.into_iter().flat_map(|k| [(k, true), (k, false)]) {
        let layer = Attention::<f64>::new(AttentionConfig {
            causal,
            ..AttentionConfig::new(heads, h, kind)
        })
        .unwrap();
        let len = heads * total * h;
        let (q, k, v, d) = (
            random::<f64>(len, 1.0, 1),
            random::<f64>(len, 1.0, 2),
            random::<f64>(len, 1.0, 3),
            random::<f64>(len, 1.0, 4),
        );
        let mut out = vec![0.0; len];
        let mut saved = PackedSaved::new();
        layer.forward_packed(&q, &k, &v, &offsets, &mut out, &mut saved, Par::rayon(2)).unwrap();
        let mut grads = Grads::default();
        layer.backward_packed(&mut saved, &d, &mut grads, Par::rayon(2)).unwrap();
        let mut params: Option<Vec<(String, Vec<f64>)>> = None;
        for w in offsets.windows(2).filter(|w| w[1] > w[0]) {
            let span = (w[0], w[1]);
            let n = span.1 - span.0;
            let pick = |x: &[f64]| rows(x, heads, total, h, span);
            let (o, mut s) =
                layer.forward(&pick(&q), &pick(&k), &pick(&v), 1, n, Par::Seq).unwrap();
            assert_eq!(pick(&out), o, "{kind:?} causal={causal} output of {span:?}");
            let g = layer.backward(&mut s, &pick(&d), Par::Seq).unwrap();
            assert_eq!(pick(&grads.dq), g.dq, "{kind:?} causal={causal} dq of {span:?}");
            assert_eq!(pick(&grads.dk), g.dk, "{kind:?} causal={causal} dk of {span:?}");
            assert_eq!(pick(&grads.dv), g.dv, "{kind:?} causal={causal} dv of {span:?}");
            params = Some(match params {
                None => g.params,
                Some(mut acc) => {
                    for ((_, a), (_, b)) in acc.iter_mut().zip(g.params) {
                        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    }
                    acc
                }
            });
        }
        assert_eq!(grads.params, params.unwrap(), "{kind:?} causal={causal} parameter gradients");
    }
}

#[test]
fn bad_offsets_get_typed_errors() {
    let layer = Attention::<f64>::new(AttentionConfig::new(1, 2, AttentionKind::Softmax)).unwrap();
    let x = vec![0.1; 10];
    let mut out = vec![0.0; 10];
    let mut saved = PackedSaved::new();
    for offsets in [vec![], vec![0], vec![1, 5], vec![0, 3, 2, 5], vec![0, 4]] {
        assert!(
            matches!(
                layer.forward_packed(&x, &x, &x, &offsets, &mut out, &mut saved, Par::Seq),
                Err(AttentionError::InvalidArgument { argument: "offsets", .. })
            ),
            "{offsets:?}"
        );
    }
    let mut grads = Grads::default();
    assert!(matches!(
        layer.backward_packed(&mut PackedSaved::new(), &x, &mut grads, Par::Seq),
        Err(AttentionError::InvalidState { .. })
    ));
}
