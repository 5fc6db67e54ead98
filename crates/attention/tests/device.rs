//! The layer on a GPU (feature `wgpu`; Mesa's lavapipe in CI) against the same layer on the
//! CPU in f64: outputs to 1e-4 and gradients to 1e-3 of their largest entry (the device sums in
//! f32, block by block), for every supported option, ragged and short sequences, batches.

//!
//! The same tests run on CUDA behind the `cuda` feature, ignored without an NVIDIA GPU
//! (`cargo test -p polysketch-attention --features cuda --test device -- --ignored`).

#![cfg(feature = "gpu")]

mod common;
use common::*;

use faer::Par;
use polysketch_attention::device::{Gpu, Runtime};
use polysketch_attention::{Attention, AttentionError, AttentionKind, SketchKind};

fn assert_close(got: &[f32], expected: &[f64], rtol: f64, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let scale = expected.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-30);
    let diff = got.iter().zip(expected).fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
    assert!(diff <= rtol * scale, "{what}: max difference {diff:e} > {rtol:e} × {scale:e}");
}

fn device_layer_matches_cpu_layer<R: Runtime>(gpu: &Gpu<R>) {
    // (p, r, block, local, learned, batch, n): JL (p = 2), one and two tree levels, learned
    // sketches of one and three nodes, ragged n, n < b
    let cases = [
        (2, 6, 16, false, false, 1, 40),
        (4, 8, 16, false, false, 2, 37),
        (4, 8, 16, true, false, 1, 50),
        (4, 4, 64, true, false, 2, 20),
        (8, 4, 8, true, false, 1, 30),
        (8, 4, 8, false, false, 1, 17),
        (4, 4, 16, true, true, 2, 37),
        (4, 4, 16, false, true, 1, 21),
        (8, 3, 8, true, true, 1, 19),
    ];
    let (heads, h) = (3, 8);
    for (i, &(p, r, block, local, learned, batch, n)) in cases.iter().enumerate() {
        let mut config = config(heads, h, p, r, block, local);
        if learned && let AttentionKind::PolySketch(c) = &mut config.kind {
            c.sketch = SketchKind::Learned;
        }
        let mut cpu = Attention::<f64>::new(config).unwrap();
        let mut single = Attention::<f32>::new(config).unwrap();
        perturb_parameters(&mut cpu, 40 + i as u64);
        perturb_parameters(&mut single, 40 + i as u64);
        let device = single.to_device(gpu).unwrap();
        let len = batch * heads * n * h;
        let seed = 100 * i as u64;
        let (q, k, v, g) = (
            random::<f64>(len, 1.0, seed),
            random::<f64>(len, 1.0, seed + 1),
            random::<f64>(len, 1.0, seed + 2),
            random::<f64>(len, 1.0, seed + 3),
        );
        let narrow = |x: &[f64]| x.iter().map(|v| *v as f32).collect::<Vec<f32>>();
        let (out, mut saved) = cpu.forward(&q, &k, &v, batch, n, Par::Seq).unwrap();
        let grads = cpu.backward(&mut saved, &g, Par::Seq).unwrap();
        let (dout, dsaved) =
            device.forward(&narrow(&q), &narrow(&k), &narrow(&v), batch, n).unwrap();
        let what =
            format!("p {p} r {r} b {block} local {local} learned {learned} batch {batch} n {n}");
        assert_close(&dout, &out, 1e-4, &format!("{what}: output"));
        let dgrads = device.backward(&dsaved, &narrow(&g)).unwrap();
        assert_close(&dgrads.dq, &grads.dq, 1e-3, &format!("{what}: dq"));
        assert_close(&dgrads.dk, &grads.dk, 1e-3, &format!("{what}: dk"));
        assert_close(&dgrads.dv, &grads.dv, 1e-3, &format!("{what}: dv"));
        assert_eq!(dgrads.params.len(), grads.params.len());
        for ((dn, dg), (cn, cg)) in dgrads.params.iter().zip(&grads.params) {
            assert_eq!(dn, cn);
            assert_close(dg, cg, 1e-3, &format!("{what}: {dn}"));
        }
    }
}

fn device_rejects_what_it_does_not_run<R: Runtime>(gpu: &Gpu<R>) {
    for kind in [AttentionKind::Softmax, AttentionKind::Polynomial { p: 4 }] {
        let layer = layer_of::<f32>(1, 8, kind);
        assert!(matches!(layer.to_device(gpu), Err(AttentionError::InvalidConfig(_))), "{kind:?}");
    }
}

fn device_rejects_bad_input<R: Runtime>(gpu: &Gpu<R>) {
    let layer = Attention::<f32>::new(config(2, 4, 4, 4, 8, true)).unwrap();
    let device = layer.to_device(gpu).unwrap();
    let x = vec![0.5f32; 2 * 4 * 10];
    assert!(matches!(
        device.forward(&x, &x, &x, 1, 0),
        Err(AttentionError::InvalidArgument { argument: "n", .. })
    ));
    assert!(matches!(
        device.forward(&x[1..], &x, &x, 1, 10),
        Err(AttentionError::ShapeMismatch { input: "q", .. })
    ));
    let mut bad = x.clone();
    bad[7] = f32::NAN;
    assert!(matches!(
        device.forward(&x, &bad, &x, 1, 10),
        Err(AttentionError::NonFinite { input: "k", index: 7, .. })
    ));
    let (_, saved) = device.forward(&x, &x, &x, 1, 10).unwrap();
    assert!(matches!(
        device.backward(&saved, &x[1..]),
        Err(AttentionError::ShapeMismatch { input: "d_out", .. })
    ));
    assert!(matches!(
        device.backward(&saved, &bad),
        Err(AttentionError::NonFinite { input: "d_out", .. })
    ));
}

/// One test of the suite on runtime `$runtime`: skipped with a line when it has no device.
macro_rules! device_test {
    ($runtime:ty, $test:ident $(, #[$attr:meta])?) => {
        #[test]
        $(#[$attr])?
        fn $test() {
            let name = concat!(stringify!($test), " (", stringify!($runtime), ")");
            if let Some(gpu) = polysketch_attention::device::testing::device_or_skip::<$runtime>(name) {
                super::$test(&gpu);
            }
        }
    };
}

macro_rules! suite {
    ($module:ident, $runtime:ty $(, #[$attr:meta])?) => {
        mod $module {
            device_test!($runtime, device_layer_matches_cpu_layer $(, #[$attr])?);
            device_test!($runtime, device_rejects_what_it_does_not_run $(, #[$attr])?);
            device_test!($runtime, device_rejects_bad_input $(, #[$attr])?);
        }
    };
}

#[cfg(feature = "wgpu")]
suite!(wgpu, polysketch_attention::device::Wgpu);

#[cfg(feature = "cuda")]
suite!(
    cuda,
    polysketch_attention::device::Cuda,
    #[ignore = "needs an NVIDIA GPU"]
);
