//! The multi-head block: its definition (projections, RoPE, heads) against a plain f64
//! evaluation, finite differences of every gradient, decoding against the training forward,
//! safetensors, and bad input.

mod common;
use common::*;

use faer::Par;
use polysketch_attention::reference::softmax_reference;
use polysketch_attention::{
    AttentionConfig, AttentionError, AttentionKind, MultiHead, MultiHeadConfig, MultiHeadSaved,
    load_safetensors, save_safetensors,
};

fn kinds() -> Vec<AttentionKind> {
    ["softmax", "polynomial:p=4", "random+local:r=4,block=4", "learned:r=3,block=4"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
}

/// `x W_ᵀ` for a row-major `[o, i]` weight, in f64.
fn dense(x: &[f64], w: &[f64], rows: usize, i: usize, o: usize) -> Vec<f64> {
    (0..rows * o).map(|at| (0..i).map(|c| x[at / o * i + c] * w[at % o * i + c]).sum()).collect()
}

/// Softmax block without RoPE from its definition: project, split heads, attend (the
/// reference of the softmax test), merge, project.
#[test]
fn forward_follows_the_definition() {
    let (batch, n, c, heads) = (2, 9, 8, 2);
    let h = c / heads;
    for causal in [true, false] {
        let config = MultiHeadConfig {
            rope: false,
            attention: AttentionConfig {
                causal,
                ..AttentionConfig::new(heads, h, AttentionKind::Softmax)
            },
            d_model: c,
        };
        let block = MultiHead::<f64>::new(config, 3).unwrap();
        let x = random::<f64>(batch * n * c, 1.0, 5);
        let (out, _) = block.forward(&x, batch, n, Par::Seq).unwrap();
        let params = block.parameters();
        let qkv = dense(&x, params[0].data, batch * n, c, 3 * c);
        let mut y = vec![0.0; batch * n * c];
        for b in 0..batch {
            for hd in 0..heads {
                let pick = |which: usize| {
                    faer::Mat::from_fn(n, h, |t, j| {
                        qkv[(b * n + t) * 3 * c + which * c + hd * h + j]
                    })
                };
                let (q, k, v) = (pick(0), pick(1), pick(2));
                let att = softmax_reference(q.as_ref(), k.as_ref(), v.as_ref(), causal);
                for t in 0..n {
                    for j in 0..h {
                        y[(b * n + t) * c + hd * h + j] = att[(t, j)];
                    }
                }
            }
        }
        let expected = dense(&y, params[1].data, batch * n, c, c);
        let worst = out.iter().zip(&expected).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-12, "causal={causal}: {worst:e}");
    }
}

/// Every gradient (input, projections, attention parameters) against central differences of
/// ⟨out, g⟩, with and without RoPE, causal and bidirectional.
#[test]
fn backward_matches_finite_differences() {
    let (batch, n, c, heads) = (1, 7, 8, 2);
    for (kind, rope, causal) in
        kinds().into_iter().flat_map(|k| [(k, true, true), (k, false, false)])
    {
        let mut config = MultiHeadConfig::new(c, heads, kind.with_seed(2));
        (config.rope, config.attention.causal) = (rope, causal);
        let mut block = MultiHead::<f64>::new(config, 4).unwrap();
        for p in block.parameters_mut() {
            if p.name.starts_with("ln.") {
                p.data.iter_mut().enumerate().for_each(|(i, x)| *x += 0.05 * i as f64);
            }
        }
        let [x, g, ..] = qkvg::<f64>(batch * n * c, 9);
        let loss = |b: &MultiHead<f64>, x: &[f64]| -> f64 {
            let (out, _) = b.forward(x, batch, n, Par::Seq).unwrap();
            out.iter().zip(&g).map(|(o, g)| o * g).sum()
        };
        let (_, mut saved) = block.forward(&x, batch, n, Par::Seq).unwrap();
        let grads = block.backward(&mut saved, &g, Par::Seq).unwrap();
        let eps = 1e-6;
        let what = format!("{kind} rope={rope} causal={causal}");
        let check = |name: &str, analytic: &[f64], numeric: &dyn Fn(usize) -> f64| {
            let scale = analytic.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for i in (0..analytic.len()).step_by(analytic.len().div_ceil(40)) {
                let fd = numeric(i);
                assert!(
                    (analytic[i] - fd).abs() <= 1e-6 * scale + 1e-9,
                    "{what} d{name}[{i}]: {} vs {fd}",
                    analytic[i]
                );
            }
        };
        check("x", &grads.dx, &|i| {
            let mut xs = x.clone();
            xs[i] += eps;
            let up = loss(&block, &xs);
            xs[i] -= 2.0 * eps;
            (up - loss(&block, &xs)) / (2.0 * eps)
        });
        let names: Vec<String> = block.parameters().iter().map(|p| p.name.clone()).collect();
        assert_eq!(grads.params.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), names);
        for (pi, (name, analytic)) in grads.params.iter().enumerate() {
            check(name, analytic, &|i| {
                let mut probe = MultiHead::<f64>::new(config, 4).unwrap();
                let mut at = |delta: f64| {
                    for (dst, src) in probe.parameters_mut().into_iter().zip(block.parameters()) {
                        dst.data.copy_from_slice(src.data);
                    }
                    probe.parameters_mut()[pi].data[i] += delta;
                    loss(&probe, &x)
                };
                (at(eps) - at(-eps)) / (2.0 * eps)
            });
        }
    }
}

/// Decoding chunk by chunk (RoPE at the state's positions) gives the training forward's rows.
#[test]
fn decoding_matches_the_training_forward() {
    let (batch, n, c, heads) = (2, 12, 8, 2);
    for kind in kinds() {
        let block = MultiHead::<f64>::new(MultiHeadConfig::new(c, heads, kind), 6).unwrap();
        let x = random::<f64>(batch * n * c, 1.0, 7);
        let (full, _) = block.forward(&x, batch, n, Par::Seq).unwrap();
        let mut state = block.new_state(batch).unwrap();
        let mut scratch = MultiHeadSaved::new();
        let mut t0 = 0;
        for len in [5, 1, 6] {
            let rows = |buf: &[f64]| -> Vec<f64> {
                (0..batch)
                    .flat_map(|b| buf[(b * n + t0) * c..(b * n + t0 + len) * c].to_vec())
                    .collect()
            };
            let mut out = vec![0.0; batch * len * c];
            block
                .forward_chunk(&rows(&x), len, &mut state, &mut out, &mut scratch, Par::Seq)
                .unwrap();
            let worst = out.iter().zip(rows(&full)).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst < 1e-10, "{kind} tokens {t0}..{}: {worst:e}", t0 + len);
            t0 += len;
        }
    }
}

/// One saved state reused across lengths (its RoPE table is kept between calls and remade
/// when `n` changes) gives, bit for bit, the outputs and gradients of a fresh state.
#[test]
fn a_reused_state_gives_the_values_of_a_fresh_one() {
    let (c, heads) = (8, 2);
    let block = MultiHead::<f64>::new(MultiHeadConfig::new(c, heads, kinds()[2]), 8).unwrap();
    let mut reused = MultiHeadSaved::new();
    // decoding first leaves a table of positions 4..13 behind (the sketch, unlike exact
    // attention, is not invariant under a shift of every position)
    let mut state = block.new_state(1).unwrap();
    for len in [4, 9] {
        let (x, mut out) = (random::<f64>(len * c, 1.0, len as u64), vec![0.0; len * c]);
        block.forward_chunk(&x, len, &mut state, &mut out, &mut reused, Par::Seq).unwrap();
    }
    for (batch, n) in [(2, 9), (1, 5), (2, 9), (3, 4)] {
        let x = random::<f64>(batch * n * c, 1.0, n as u64);
        let d_out = random::<f64>(batch * n * c, 1.0, 100 + n as u64);
        let mut out = vec![0.0; x.len()];
        block.forward_into(&x, batch, n, &mut out, &mut reused, Par::Seq).unwrap();
        let grads = block.backward(&mut reused, &d_out, Par::Seq).unwrap();
        let (fresh_out, mut fresh) = block.forward(&x, batch, n, Par::Seq).unwrap();
        let fresh_grads = block.backward(&mut fresh, &d_out, Par::Seq).unwrap();
        assert_eq!(out, fresh_out, "batch {batch}, n {n}");
        assert_eq!(grads.dx, fresh_grads.dx, "batch {batch}, n {n}");
        assert_eq!(grads.params, fresh_grads.params, "batch {batch}, n {n}");
    }
}

#[test]
fn parameters_round_trip_through_safetensors() {
    let dir = std::env::temp_dir().join(format!("polysketch-multihead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("block.safetensors");
    let config = MultiHeadConfig::new(8, 2, "learned+local:r=3,block=4".parse().unwrap());
    let a = MultiHead::<f32>::new(config, 1).unwrap();
    save_safetensors(&path, &a.parameters()).unwrap();
    let mut b = MultiHead::<f32>::new(config, 2).unwrap();
    assert_ne!(a.parameters()[0].data, b.parameters()[0].data);
    load_safetensors(&path, &mut b.parameters_mut()).unwrap();
    assert_eq!(a.parameters(), b.parameters());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_gets_typed_errors() {
    let bad = [
        MultiHeadConfig::new(0, 2, AttentionKind::Softmax),
        MultiHeadConfig::new(8, 0, AttentionKind::Softmax),
        MultiHeadConfig::new(8, 16, AttentionKind::Softmax),
    ];
    for config in bad {
        let err = MultiHead::<f32>::new(config, 0).unwrap_err();
        assert!(matches!(err, AttentionError::InvalidConfig(_)), "{config:?}: {err}");
    }
    let block =
        MultiHead::<f32>::new(MultiHeadConfig::new(8, 2, AttentionKind::Softmax), 0).unwrap();
    let x = vec![0.5f32; 3 * 8];
    let err = block.forward(&x[1..], 1, 3, Par::Seq).unwrap_err();
    assert!(matches!(err, AttentionError::ShapeMismatch { input: "x", .. }), "{err}");
    let err = block.forward(&x, 1, 0, Par::Seq).unwrap_err();
    assert!(matches!(err, AttentionError::InvalidArgument { argument: "n", .. }), "{err}");
    let mut nan = x.clone();
    nan[4] = f32::NAN;
    let err = block.forward(&nan, 1, 3, Par::Seq).unwrap_err();
    assert!(matches!(err, AttentionError::NonFinite { input: "x", .. }), "{err}");
    let mut empty = MultiHeadSaved::new();
    let err = block.backward(&mut empty, &x, Par::Seq).unwrap_err();
    assert!(matches!(err, AttentionError::InvalidState { .. }), "{err}");
    let (_, mut saved) = block.forward(&x, 1, 3, Par::Seq).unwrap();
    let err = block.backward(&mut saved, &x[1..], Par::Seq).unwrap_err();
    assert!(matches!(err, AttentionError::ShapeMismatch { input: "d_out", .. }), "{err}");
}
