//! Helpers shared by the attention crate's test files (each file uses a subset).

#![allow(dead_code)]

use faer::MatRef;
use polysketch_attention::{
    Attention, AttentionConfig, AttentionKind, PolySketchConfig, SketchKind,
};
use polysketch_core::{Scalar, seeded_rng};
use rand_distr::{Distribution, StandardNormal};

/// `len` independent N(0, scale²) values from `seed`.
pub fn random<T: Scalar>(len: usize, scale: f64, seed: u64) -> Vec<T> {
    let mut rng = seeded_rng(seed);
    (0..len)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            T::of(scale * z)
        })
        .collect()
}

/// Head `idx` of a row-major `[.., n, h]` buffer as an `[n, h]` view.
pub fn head<T>(x: &[T], idx: usize, n: usize, h: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(&x[idx * n * h..(idx + 1) * n * h], n, h)
}

/// Runs `f` in a rayon pool of `threads` threads.
pub fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// A layer of `heads` heads of size `h` and `kind`, with the default q/k layer norm.
pub fn layer_of<T: Scalar>(heads: usize, h: usize, kind: AttentionKind) -> Attention<T> {
    Attention::new(AttentionConfig::new(heads, h, kind)).unwrap()
}

/// PolySketch attention with random sketches drawn from seed 11.
pub fn config(
    heads: usize, h: usize, p: usize, r: usize, block: usize, local: bool,
) -> AttentionConfig {
    AttentionConfig {
        heads,
        head_dim: h,
        kind: AttentionKind::PolySketch(PolySketchConfig {
            p,
            r,
            block,
            local,
            seed: 11,
            sketch: SketchKind::Random,
        }),
        qk_norm: Default::default(),
        causal: true,
    }
}

/// Moves every parameter off its initial value, deterministically, so that gradients are
/// generic: layer-norm gains near 1, biases small, network weights by a few percent.
pub fn perturb_parameters<T: Scalar>(layer: &mut Attention<T>, seed: u64) {
    for (pi, param) in layer.parameters_mut().into_iter().enumerate() {
        let noise = random::<f64>(param.data.len(), 1.0, seed + pi as u64);
        for (x, z) in param.data.iter_mut().zip(noise) {
            *x = if param.name.ends_with("gain") {
                T::of(1.0 + 0.2 * z)
            } else if param.name.contains(".b") || param.name.ends_with("bias") {
                T::of(0.1 * z)
            } else {
                *x * T::of(1.0 + 0.05 * z)
            };
        }
    }
}

/// `q`, `k`, `v` and an output gradient `g` of `len` values each: N(0, 1) from seeds `seed`,
/// `seed + 1`, `seed + 2`, `seed + 3`.
pub fn qkvg<T: Scalar>(len: usize, seed: u64) -> [Vec<T>; 4] {
    [0, 1, 2, 3].map(|i| random::<T>(len, 1.0, seed + i))
}

/// \\(\langle \mathrm{out}, g\rangle\\) of a layer's forward: the loss whose gradient a
/// finite-difference check compares with the backward given `g`.
pub fn weighted_loss(
    layer: &Attention<f64>, [q, k, v]: [&[f64]; 3], g: &[f64], batch: usize, n: usize,
) -> f64 {
    let (out, _) = layer.forward(q, k, v, batch, n, faer::Par::Seq).unwrap();
    out.iter().zip(g).map(|(o, g)| o * g).sum()
}

/// Checks that a layer's forward and backward give the same numbers, bit for bit, sequentially
/// and in pools of 1, 2 and 3 threads, on inputs drawn from seed 8.
pub fn assert_thread_invariant(layer: &Attention<f32>, batch: usize, n: usize) {
    use faer::Par;
    let (heads, h) = (layer.config().heads, layer.config().head_dim);
    let [q, k, v, g] = qkvg::<f32>(batch * heads * n * h, 8);
    let run = |par: Par| {
        let (out, mut s) = layer.forward(&q, &k, &v, batch, n, par).unwrap();
        (out, layer.backward(&mut s, &g, par).unwrap())
    };
    let reference = run(Par::Seq);
    for threads in [1, 2, 3] {
        assert_eq!(
            in_pool(threads, || run(Par::rayon(0))),
            reference,
            "{threads} threads, {:?}",
            layer.config().kind
        );
    }
}

/// A loss of a layer's inputs `(q, k, v)`.
pub type InputLoss<'a> = dyn Fn(&[f64], &[f64], &[f64]) -> f64 + 'a;

/// Checks the input gradients `[dq, dk, dv]` of a layer against central differences of
/// `loss(q, k, v)` (step `1e-6`) at every `step`-th entry, within `1e-6` of the largest
/// gradient entry plus `1e-9`; `what` names the case in a failure.
pub fn assert_input_gradients(
    loss: &InputLoss<'_>, [q, k, v]: [&[f64]; 3], analytic: [&[f64]; 3], step: usize, what: &str,
) {
    let eps = 1e-6;
    for (which, analytic) in analytic.into_iter().enumerate() {
        let scale = analytic.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for i in (0..q.len()).step_by(step) {
            let mut inputs = [q.to_vec(), k.to_vec(), v.to_vec()];
            inputs[which][i] += eps;
            let up = loss(&inputs[0], &inputs[1], &inputs[2]);
            inputs[which][i] -= 2.0 * eps;
            let down = loss(&inputs[0], &inputs[1], &inputs[2]);
            let fd = (up - down) / (2.0 * eps);
            assert!(
                (analytic[i] - fd).abs() <= 1e-6 * scale + 1e-9,
                "{what} input {which}[{i}]: {} vs {fd}",
                analytic[i]
            );
        }
    }
}

/// Checks a layer's parameter gradients `analytic` (as [`Grads::params`]) against central
/// differences (step `1e-6`) of `loss` evaluated on copies of `layer` with one parameter entry
/// moved, within `1e-6` of the largest entry of that parameter's gradient plus `1e-9`.
///
/// [`Grads::params`]: polysketch_attention::Grads::params
pub fn assert_parameter_gradients(
    layer: &Attention<f64>, analytic: &[(String, Vec<f64>)], loss: &dyn Fn(&Attention<f64>) -> f64,
    what: &str,
) {
    let eps = 1e-6;
    assert_eq!(analytic.len(), layer.parameters().len(), "{what}: one gradient per parameter");
    for (pi, (name, grad)) in analytic.iter().enumerate() {
        let scale = grad.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for (i, g) in grad.iter().enumerate() {
            let mut probe = Attention::<f64>::new(*layer.config()).unwrap();
            let mut at = |delta: f64| {
                for (dst, src) in probe.parameters_mut().into_iter().zip(layer.parameters()) {
                    dst.data.copy_from_slice(src.data);
                }
                probe.parameters_mut()[pi].data[i] += delta;
                loss(&probe)
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!((g - fd).abs() <= 1e-6 * scale + 1e-9, "{what} d{name}[{i}]: {g} vs {fd}");
        }
    }
}

/// Checks every head `idx < count` of `out` (`[count, n, h]`, row-major) against
/// `expected(idx)` (`[n, h]`) within `tol · (1 + |e|)`; `what` names the case in a failure.
pub fn assert_heads_close(
    out: &[f64], (count, n, h): (usize, usize, usize), tol: f64, what: &str,
    expected: impl Fn(usize) -> faer::Mat<f64>,
) {
    for idx in 0..count {
        let (e, got) = (expected(idx), head(out, idx, n, h));
        for i in 0..n {
            for c in 0..h {
                let (g, e) = (got[(i, c)], e[(i, c)]);
                assert!(
                    (g - e).abs() < tol * (1.0 + e.abs()),
                    "{what} head {idx} ({i},{c}): {g} vs {e}"
                );
            }
        }
    }
}

/// Runs `layer`'s forward and backward on `q`, `k`, `v` with output gradient `g` and checks the
/// input gradients (every `step`-th entry, [`assert_input_gradients`]) and every parameter's
/// ([`assert_parameter_gradients`]) against finite differences of \\(\langle\mathrm{out},
/// g\rangle\\).
pub fn assert_layer_gradients(
    layer: &Attention<f64>, [q, k, v, g]: [&[f64]; 4], batch: usize, n: usize, step: usize,
    what: &str,
) {
    let loss = |l: &Attention<f64>, q: &[f64], k: &[f64], v: &[f64]| {
        weighted_loss(l, [q, k, v], g, batch, n)
    };
    let (_, mut saved) = layer.forward(q, k, v, batch, n, faer::Par::Seq).unwrap();
    let grads = layer.backward(&mut saved, g, faer::Par::Seq).unwrap();
    let analytic = [&grads.dq[..], &grads.dk, &grads.dv];
    assert_input_gradients(&|q, k, v| loss(layer, q, k, v), [q, k, v], analytic, step, what);
    assert_parameter_gradients(layer, &grads.params, &|probe| loss(probe, q, k, v), what);
}
