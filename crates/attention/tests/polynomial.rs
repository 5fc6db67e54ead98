//! Exact polynomial attention against its definition, finite differences and thread counts.

mod common;
use common::*;

use faer::Par;
use polysketch_attention::reference::{local_reference, polynomial_reference};
use polysketch_attention::{Attention, AttentionConfig, AttentionKind};
use polysketch_core::Scalar;

fn layer<T: Scalar>(heads: usize, h: usize, p: usize, causal: bool) -> Attention<T> {
    Attention::new(AttentionConfig {
        causal,
        ..AttentionConfig::new(heads, h, AttentionKind::Polynomial { p })
    })
    .unwrap()
}

#[test]
fn forward_matches_the_definition() {
    let (batch, heads, h) = (2, 2, 6);
    for (p, causal) in [(2usize, true), (4, true), (2, false), (4, false)] {
        for n in [1usize, 7, 128, 200] {
            let len = batch * heads * n * h;
            let (q, k, v) = (
                random::<f64>(len, 1.0, 1),
                random::<f64>(len, 1.0, 2),
                random::<f64>(len, 1.0, 3),
            );
            let (out, _) = layer::<f64>(heads, h, p, causal)
                .forward(&q, &k, &v, batch, n, Par::rayon(2))
                .unwrap();
            let (g, b) = (vec![1.0; h], vec![0.0; h]);
            let what = format!("p={p} causal={causal} n={n}");
            assert_heads_close(&out, (batch * heads, n, h), 1e-11, &what, |idx| {
                let (qh, kh, vh) = (head(&q, idx, n, h), head(&k, idx, n, h), head(&v, idx, n, h));
                polynomial_reference(qh, kh, vh, &g, &b, p, causal)
            });
        }
    }
}

#[test]
fn backward_matches_finite_differences() {
    let (batch, heads, h) = (1, 2, 4);
    for (p, n, causal) in [(4usize, 9usize, true), (2, 140, true), (4, 9, false), (2, 140, false)] {
        let mut l = layer::<f64>(heads, h, p, causal);
        for param in l.parameters_mut() {
            for (i, x) in param.data.iter_mut().enumerate() {
                *x = if param.name == "ln.gain" { 0.9 + 0.05 * i as f64 } else { 0.02 * i as f64 };
            }
        }
        let len = batch * heads * n * h;
        let [q, k, v, g] = qkvg::<f64>(len, 4);
        let step = if n > 20 { 29 } else { 1 };
        let what = format!("p={p} n={n} causal={causal}");
        assert_layer_gradients(&l, [&q, &k, &v, &g], batch, n, step, &what);
    }
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let (batch, heads, h, n) = (1, 3, 8, 300);
    assert_thread_invariant(&layer::<f32>(heads, h, 4, true), batch, n);
    assert_thread_invariant(&layer::<f32>(heads, h, 4, false), batch, n);
}

/// `QkNorm::None`: the formula of the paper's Section 2.1 on the raw vectors,
/// \\(\mathrm{out}_i = \sum_{j \le i}\langle q_i,k_j\rangle^p v_j / (1 + \sum_{j \le i}\langle
/// q_i,k_j\rangle^p)\\), evaluated here independently in f64 with plain loops; no parameters;
/// input gradients against finite differences; PolySketch takes the option too.
#[test]
fn raw_vectors_follow_section_2_1() {
    use polysketch_attention::QkNorm;
    let raw = |heads, h, kind| {
        Attention::<f64>::new(AttentionConfig {
            heads,
            head_dim: h,
            kind,
            qk_norm: QkNorm::None,
            causal: true,
        })
        .unwrap()
    };
    let (batch, heads, h, n) = (2, 2, 4, 37);
    let len = batch * heads * n * h;
    // small entries: ⟨q, k⟩ stays near 1, so the p-th powers neither vanish nor dominate
    let (q, k, v) =
        (random::<f64>(len, 0.4, 1), random::<f64>(len, 0.4, 2), random::<f64>(len, 1.0, 3));
    for p in [2usize, 4, 8] {
        let layer = raw(heads, h, AttentionKind::Polynomial { p });
        assert!(layer.parameters().is_empty(), "p={p}: no layer-norm parameters");
        let (out, mut saved) = layer.forward(&q, &k, &v, batch, n, Par::rayon(2)).unwrap();
        for idx in 0..batch * heads {
            let (qh, kh, vh, got) = (
                head(&q, idx, n, h),
                head(&k, idx, n, h),
                head(&v, idx, n, h),
                head(&out, idx, n, h),
            );
            for i in 0..n {
                let (mut num, mut den) = (vec![0.0; h], 1.0);
                for j in 0..=i {
                    let s = (0..h).map(|c| qh[(i, c)] * kh[(j, c)]).sum::<f64>().powi(p as i32);
                    den += s;
                    (0..h).for_each(|c| num[c] += s * vh[(j, c)]);
                }
                for c in 0..h {
                    let e = num[c] / den;
                    assert!((got[(i, c)] - e).abs() < 1e-12 * (1.0 + e.abs()), "p={p} ({i},{c})");
                }
            }
        }
        let g = random::<f64>(len, 1.0, 4);
        let grads = layer.backward(&mut saved, &g, Par::Seq).unwrap();
        assert!(grads.params.is_empty());
        let loss = |q: &[f64], k: &[f64], v: &[f64]| weighted_loss(&layer, [q, k, v], &g, batch, n);
        assert_input_gradients(
            &loss,
            [&q, &k, &v],
            [&grads.dq, &grads.dk, &grads.dv],
            7,
            &format!("raw p={p}"),
        );
    }
    // PolySketch with local blocks on raw vectors: its exact diagonal blocks equal the formula
    // above for the first block's rows
    let kind = "random+local:p=4,r=8,block=64".parse().unwrap();
    let sketched = raw(heads, h, kind);
    let exact = raw(heads, h, AttentionKind::Polynomial { p: 4 });
    let (a, _) = sketched.forward(&q, &k, &v, batch, n, Par::Seq).unwrap();
    let (b, _) = exact.forward(&q, &k, &v, batch, n, Par::Seq).unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12), "n = 37 < block: all exact");
}

/// Local-only attention (`local:p,block`): exact polynomial attention inside blocks, nothing
/// across them; against its definition in f64 (blocks smaller than, equal to and larger than
/// a tile), finite differences of inputs and layer-norm parameters, thread counts.
#[test]
fn local_blocks_match_their_definition() {
    let (batch, heads, h) = (2, 2, 6);
    let local = |p, block, causal| {
        Attention::<f64>::new(AttentionConfig {
            causal,
            ..AttentionConfig::new(heads, h, AttentionKind::Local { p, block })
        })
        .unwrap()
    };
    for (n, p, block) in
        [(1usize, 4usize, 1usize), (7, 2, 3), (300, 4, 64), (300, 4, 128), (300, 2, 200)]
    {
        for causal in [true, false] {
            let len = batch * heads * n * h;
            let [q, k, v, _] = qkvg::<f64>(len, 1);
            let mut l = local(p, block, causal);
            perturb_parameters(&mut l, 3);
            let (g, b) = (l.parameters()[0].data.to_vec(), l.parameters()[1].data.to_vec());
            let (out, _) = l.forward(&q, &k, &v, batch, n, Par::rayon(2)).unwrap();
            let what = format!("n={n} p={p} b={block} causal={causal}");
            assert_heads_close(&out, (batch * heads, n, h), 1e-11, &what, |idx| {
                let (qh, kh, vh) = (head(&q, idx, n, h), head(&k, idx, n, h), head(&v, idx, n, h));
                local_reference(qh, kh, vh, &g, &b, p, block, causal)
            });
        }
    }
    // a block covering the sequence is polynomial attention
    let n = 40;
    let [q, k, v, _] = qkvg::<f64>(heads * n * h, 2);
    let (a, _) = local(4, 64, true).forward(&q, &k, &v, 1, n, Par::Seq).unwrap();
    let (b, _) = layer::<f64>(heads, h, 4, true).forward(&q, &k, &v, 1, n, Par::Seq).unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-14));
    for (n, block, causal) in [(140usize, 50usize, true), (9, 4, false)] {
        let mut l = local(4, block, causal);
        perturb_parameters(&mut l, 5);
        let len = heads * n * h;
        let [q, k, v, g] = qkvg::<f64>(len, 6);
        let what = format!("local n={n} b={block} causal={causal}");
        let step = if n > 20 { 29 } else { 1 };
        assert_layer_gradients(&l, [&q, &k, &v, &g], 1, n, step, &what);
    }
    for causal in [true, false] {
        let l32 = Attention::<f32>::new(AttentionConfig {
            causal,
            ..AttentionConfig::new(3, 8, AttentionKind::Local { p: 4, block: 100 })
        })
        .unwrap();
        assert_thread_invariant(&l32, 1, 300);
    }
}
