//! Decoding and chunked processing give the numbers of one causal forward over the whole
//! sequence: token by token, in chunks that cut local blocks anywhere, for every kind; and bad
//! states are refused.

mod common;
use common::*;

use faer::Par;
use polysketch_attention::{
    Attention, AttentionConfig, AttentionError, AttentionKind, PolySketchConfig, QkNorm, SketchKind,
};
use polysketch_core::Scalar;

fn kinds() -> Vec<AttentionKind> {
    let ps = |p, local, sketch| {
        AttentionKind::PolySketch(PolySketchConfig { p, r: 6, block: 5, local, seed: 2, sketch })
    };
    vec![
        ps(4, false, SketchKind::Random),
        ps(4, true, SketchKind::Random),
        ps(2, true, SketchKind::Random),
        ps(4, true, SketchKind::Learned),
        ps(8, false, SketchKind::Learned),
        AttentionKind::Polynomial { p: 4 },
        AttentionKind::Softmax,
        AttentionKind::Local { p: 4, block: 5 },
        AttentionKind::Sliding { window: 4 },
        AttentionKind::Performer { features: 12, block: 5, seed: 4 },
        AttentionKind::Hedgehog { features: 8, block: 5, seed: 4 },
    ]
}

/// Rows `start..start + len` of every (batch, head) of a `[batch·heads, n, h]` buffer.
fn slice_rows<T: Copy>(
    x: &[T], groups: usize, n: usize, h: usize, start: usize, len: usize,
) -> Vec<T> {
    (0..groups)
        .flat_map(|g| x[(g * n + start) * h..(g * n + start + len) * h].iter().copied())
        .collect()
}

/// Runs the sequence through `forward_chunk` in pieces of the given lengths and reassembles
/// the output as `[batch, heads, n, h]`.
fn chunked<T: Scalar>(
    layer: &Attention<T>, (q, k, v): (&[T], &[T], &[T]), batch: usize, n: usize, pieces: &[usize],
) -> Vec<T> {
    let (heads, h) = (layer.config().heads, layer.config().head_dim);
    let groups = batch * heads;
    let mut state = layer.new_state(batch).unwrap();
    let mut out = vec![T::zero(); groups * n * h];
    let mut start = 0;
    for &len in pieces {
        let (qc, kc, vc) = (
            slice_rows(q, groups, n, h, start, len),
            slice_rows(k, groups, n, h, start, len),
            slice_rows(v, groups, n, h, start, len),
        );
        let mut oc = vec![T::zero(); qc.len()];
        if len == 1 {
            layer.decode_step(&qc, &kc, &vc, &mut oc, &mut state).unwrap();
        } else {
            layer
                .forward_chunk(&qc, &kc, &vc, batch, len, &mut oc, &mut state, Par::rayon(2))
                .unwrap();
        }
        for g in 0..groups {
            out[(g * n + start) * h..(g * n + start + len) * h]
                .copy_from_slice(&oc[g * len * h..(g + 1) * len * h]);
        }
        start += len;
        assert_eq!(state.position(), start);
    }
    assert_eq!(start, n);
    out
}

/// A layer of `kind`, inputs q, k, v drawn from seeds `seed`, `seed + 1`, `seed + 2`, and its
/// full (training) forward.
#[allow(clippy::type_complexity)]
fn full_forward<T: Scalar>(
    (kind, qk_norm): (AttentionKind, QkNorm), (batch, heads, h, n): (usize, usize, usize, usize),
    seed: u64,
) -> (Attention<T>, [Vec<T>; 3], Vec<T>) {
    let layer =
        Attention::<T>::new(AttentionConfig { heads, head_dim: h, kind, qk_norm, causal: true })
            .unwrap();
    let [q, k, v, _] = qkvg::<T>(batch * heads * n * h, seed);
    let (full, _) = layer.forward(&q, &k, &v, batch, n, Par::Seq).unwrap();
    (layer, [q, k, v], full)
}

fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-300);
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn token_by_token_and_chunks_match_the_full_forward_in_f64() {
    let (batch, heads, h, n) = (2, 2, 4, 23);
    // with the layer norm and on raw vectors (QkNorm::None)
    for (kind, norm) in
        kinds().into_iter().flat_map(|k| [(k, QkNorm::LayerNorm), (k, QkNorm::None)])
    {
        let (layer, [q, k, v], full) = full_forward::<f64>((kind, norm), (batch, heads, h, n), 1);
        // one token at a time; chunks that start mid-block, end mid-block, span blocks
        for pieces in
            [vec![1; n], vec![3, 1, 7, 2, 10], vec![5, 5, 13], vec![23], vec![12, 1, 1, 9]]
        {
            let got = chunked(&layer, (&q, &k, &v), batch, n, &pieces);
            let err = max_rel_err(&got, &full);
            assert!(err < 1e-10, "{kind:?} {norm:?} pieces {pieces:?}: {err:e}");
        }
    }
}

#[test]
fn decoding_in_f32_follows_the_f32_forward() {
    let (batch, heads, h, n) = (1, 2, 16, 70);
    for kind in kinds() {
        let (layer, [q, k, v], full) =
            full_forward::<f32>((kind, QkNorm::LayerNorm), (batch, heads, h, n), 4);
        let got = chunked(&layer, (&q, &k, &v), batch, n, &[40, 1, 1, 1, 27]);
        let widen = |x: &[f32]| x.iter().map(|v| *v as f64).collect::<Vec<f64>>();
        let err = max_rel_err(&widen(&got), &widen(&full));
        assert!(err < 1e-4, "{kind:?}: {err:e}");
    }
}

#[test]
fn polysketch_state_stays_constant_in_size() {
    let kind = AttentionKind::PolySketch(PolySketchConfig {
        r: 4,
        block: 8,
        local: true,
        ..Default::default()
    });
    let layer = layer_of::<f32>(1, 8, kind);
    let mut state = layer.new_state(1).unwrap();
    let x = random::<f32>(8, 1.0, 7);
    let mut out = vec![0.0; 8];
    let mut largest = 0;
    for _ in 0..200 {
        layer.decode_step(&x, &x, &x, &mut out, &mut state).unwrap();
        largest = largest.max(state.bytes());
    }
    // S (10 × 9 f64) and at most one block of 8 tokens (k̃, sketch, v)
    assert!(largest <= 10 * 9 * 8 + 8 * (8 + 4 + 8) * 4, "{largest} bytes");
    assert!(out.iter().all(|x| x.is_finite()));
}

#[test]
fn bad_states_and_inputs_get_typed_errors() {
    let cfg = |kind| AttentionConfig::new(1, 4, kind);
    let ps = Attention::<f64>::new(cfg(AttentionKind::PolySketch(PolySketchConfig {
        r: 3,
        block: 4,
        ..Default::default()
    })))
    .unwrap();
    let soft = Attention::<f64>::new(cfg(AttentionKind::Softmax)).unwrap();
    assert!(matches!(
        ps.new_state(0),
        Err(AttentionError::InvalidArgument { argument: "batch", .. })
    ));
    let x = vec![0.5; 4];
    let mut out = vec![0.0; 4];
    // a state from a layer of another kind, or for another batch
    let mut other = soft.new_state(1).unwrap();
    assert!(matches!(
        ps.decode_step(&x, &x, &x, &mut out, &mut other),
        Err(AttentionError::InvalidState { .. })
    ));
    let mut two = ps.new_state(2).unwrap();
    assert!(matches!(
        ps.forward_chunk(&x, &x, &x, 1, 1, &mut out, &mut two, Par::Seq),
        Err(AttentionError::InvalidState { .. })
    ));
    let mut st = ps.new_state(1).unwrap();
    assert!(ps.decode_step(&x[..3], &x, &x, &mut out, &mut st).is_err());
    let mut nan = x.clone();
    nan[2] = f64::NAN;
    assert!(matches!(
        ps.decode_step(&nan, &x, &x, &mut out, &mut st),
        Err(AttentionError::NonFinite { .. })
    ));
    assert!(ps.forward_chunk(&[], &[], &[], 1, 0, &mut [], &mut st, Par::Seq).is_err());
    // nothing was consumed by the refused calls
    assert_eq!(st.position(), 0);
}
