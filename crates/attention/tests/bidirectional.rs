//! Bidirectional attention beyond its references (forward, finite differences, packed
//! sequences and thread counts run with the causal cases in softmax.rs, polynomial.rs,
//! polysketch.rs and packed.rs): the invariants of attention without a mask, and what only
//! causal layers do.

mod common;
use common::*;

use faer::Par;
use polysketch_attention::{
    Attention, AttentionConfig, AttentionError, AttentionKind, PolySketchConfig, SketchKind,
};

fn bidirectional(heads: usize, h: usize, kind: AttentionKind) -> Attention<f64> {
    Attention::new(AttentionConfig { causal: false, ..AttentionConfig::new(heads, h, kind) })
        .unwrap()
}

/// The rows of every head of a `[heads, n, h]` buffer in the order `perm`.
fn permute(x: &[f64], heads: usize, n: usize, h: usize, perm: &[usize]) -> Vec<f64> {
    (0..heads)
        .flat_map(|hd| perm.iter().flat_map(move |&i| (0..h).map(move |c| (hd * n + i) * h + c)))
        .map(|at| x[at])
        .collect()
}

/// Without a mask (and without blocks), attention does not see the order of the tokens:
/// permuting them permutes the outputs and the input gradients.
#[test]
fn without_local_blocks_the_order_of_tokens_does_not_matter() {
    let (heads, h, n) = (2, 4, 23);
    let polysketch = |sketch| {
        AttentionKind::PolySketch(PolySketchConfig {
            r: 4,
            block: 5,
            sketch,
            seed: 3,
            ..Default::default()
        })
    };
    let kinds = [
        AttentionKind::Softmax,
        AttentionKind::Polynomial { p: 4 },
        polysketch(SketchKind::Random),
        polysketch(SketchKind::Learned),
    ];
    // a fixed shuffle: i ↦ 7i mod 23
    let perm: Vec<usize> = (0..n).map(|i| 7 * i % n).collect();
    for kind in kinds {
        let layer = bidirectional(heads, h, kind);
        let [q, k, v, g] = qkvg::<f64>(heads * n * h, 21);
        let run = |q: &[f64], k: &[f64], v: &[f64], g: &[f64]| {
            let (out, mut saved) = layer.forward(q, k, v, 1, n, Par::Seq).unwrap();
            (out, layer.backward(&mut saved, g, Par::Seq).unwrap())
        };
        let (out, grads) = run(&q, &k, &v, &g);
        let p = |x: &[f64]| permute(x, heads, n, h, &perm);
        let (out_p, grads_p) = run(&p(&q), &p(&k), &p(&v), &p(&g));
        let close = |a: &[f64], b: &[f64], what: &str| {
            let worst = a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(worst < 1e-11, "{kind:?} {what}: {worst:e}");
        };
        close(&p(&out), &out_p, "out");
        close(&p(&grads.dq), &grads_p.dq, "dq");
        close(&p(&grads.dk), &grads_p.dk, "dk");
        close(&p(&grads.dv), &grads_p.dv, "dv");
        for ((name, a), (_, b)) in grads.params.iter().zip(&grads_p.params) {
            close(a, b, name);
        }
    }
}

/// With exact local blocks and one block covering the sequence, PolySketch is exact
/// polynomial attention (the block diagonal is all of it), bidirectional as causal.
#[test]
fn one_local_block_is_exact_polynomial_attention() {
    let (heads, h, n, p) = (2, 4, 19, 4);
    let [q, k, v, g] = qkvg::<f64>(heads * n * h, 31);
    for causal in [true, false] {
        let of = |kind| {
            Attention::<f64>::new(AttentionConfig {
                causal,
                ..AttentionConfig::new(heads, h, kind)
            })
            .unwrap()
        };
        let sketch = AttentionKind::PolySketch(PolySketchConfig {
            p,
            r: 3,
            block: 32,
            local: true,
            ..Default::default()
        });
        let (exact, sketched) = (of(AttentionKind::Polynomial { p }), of(sketch));
        let (a, mut sa) = exact.forward(&q, &k, &v, 1, n, Par::Seq).unwrap();
        let (b, mut sb) = sketched.forward(&q, &k, &v, 1, n, Par::Seq).unwrap();
        let worst = a.iter().zip(&b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst < 1e-12, "causal={causal}: out off by {worst:e}");
        let (ga, gb) = (
            exact.backward(&mut sa, &g, Par::Seq).unwrap(),
            sketched.backward(&mut sb, &g, Par::Seq).unwrap(),
        );
        for (x, y, what) in [(&ga.dq, &gb.dq, "dq"), (&ga.dk, &gb.dk, "dk"), (&ga.dv, &gb.dv, "dv")]
        {
            let worst = x.iter().zip(y).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(worst < 1e-11, "causal={causal}: {what} off by {worst:e}");
        }
    }
}

/// Decoding continues a causal sequence: a bidirectional layer refuses it with a typed error.
#[test]
fn decoding_a_bidirectional_layer_is_refused() {
    for kind in [AttentionKind::Softmax, "random+local:r=4,block=4".parse().unwrap()] {
        let layer = bidirectional(1, 4, kind);
        let err = layer.new_state(1).unwrap_err();
        assert!(
            matches!(err, AttentionError::InvalidConfig(ref m) if m.contains("bidirectional")),
            "{err}"
        );
    }
}
