//! The burn module's two paths against each other and against our CPU layer: forward and every
//! gradient (inputs and parameters), every kind, causal and bidirectional, on burn's ndarray
//! backend; the portable path on wgpu (lavapipe in CI) against ndarray; a burn model trains.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use faer::Par;
use polysketch_attention::{Attention, AttentionKind};
use polysketch_burn::{AttentionPath, PolySketchAttention, PolySketchAttentionConfig};

type Cpu = Autodiff<NdArray>;

const KINDS: [&str; 13] = [
    "softmax",
    "hedgehog:features=10,block=8",
    "performer:features=12,block=8",
    "polynomial:p=4",
    "local:p=4,block=8",
    "sliding:window=5",
    "random:p=2,r=5,block=8",
    "random:p=4,r=4,block=8",
    "random+local:p=4,r=4,block=8",
    "random+local:p=8,r=3,block=16",
    "learned:p=4,r=3,block=8",
    "learned+local:p=4,r=3,block=8",
    "learned+local:p=8,r=2,block=16",
];

/// `len` values of a fixed pseudo-random sequence in [-1.5, 1.5).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
        })
        .collect()
}

fn config(kind: &str, causal: bool) -> PolySketchAttentionConfig {
    let kind: AttentionKind = kind.parse().unwrap();
    PolySketchAttentionConfig::new(2, 8).with_kind(kind).with_causal(causal).with_seed(5)
}

/// `max |a - b| / max(1, max |b|)`.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn data<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

/// Output, then gradients of q, k, v and every parameter, of ⟨out, g⟩ through `run`.
fn outputs<B: burn::tensor::backend::AutodiffBackend>(
    layer: &PolySketchAttention<B>, dims: [usize; 4], device: &B::Device,
    run: impl Fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
) -> Vec<Vec<f32>> {
    let len = dims.iter().product();
    let t = |seed| {
        Tensor::<B, 4>::from_data(TensorData::new(values(len, seed), dims), device).require_grad()
    };
    let (q, k, v, g) = (t(1), t(2), t(3), t(4).detach());
    let out = run(q.clone(), k.clone(), v.clone());
    let grads = (out.clone() * g).sum().backward();
    let mut all = vec![data(out)];
    for x in [q, k, v] {
        all.push(data(x.grad(&grads).unwrap()));
    }
    for name in layer.parameter_names() {
        all.push(data(layer.parameter(name).unwrap().grad(&grads).unwrap()));
    }
    all
}

/// Output, then gradients of q, k, v and every parameter, of ⟨out, g⟩ by our CPU layer (f32).
fn cpu_layer(c: &PolySketchAttentionConfig, dims: [usize; 4]) -> Vec<Vec<f32>> {
    let cpu = Attention::<f32>::new(c.attention_config()).unwrap();
    let len = dims.iter().product();
    let (q, k, v, g) = (values(len, 1), values(len, 2), values(len, 3), values(len, 4));
    let (out, mut saved) = cpu.forward(&q, &k, &v, dims[0], dims[2], Par::Seq).unwrap();
    let grads = cpu.backward(&mut saved, &g, Par::Seq).unwrap();
    let mut expected = vec![out, grads.dq, grads.dk, grads.dv];
    expected.extend(grads.params.into_iter().map(|(_, g)| g));
    expected
}

/// The fast path is our CPU layer (within 1e-6: the same computation); the portable path agrees
/// with both within f32 tolerances relative to the largest entry: 2e-4 for outputs, 5e-4·p for
/// gradients (burn's operations sum in another order and through r² features, and rounding
/// errors of the scores grow with the degree p; softmax counts as p = 4).
#[test]
fn fast_and_portable_paths_agree_with_the_cpu_layer() {
    let dims = [2, 2, 37, 8];
    let device = Default::default();
    for kind in KINDS {
        // performer and hedgehog are causal only
        let causal_only = kind.starts_with("performer") || kind.starts_with("hedgehog");
        for causal in [true, false].into_iter().filter(|&c| c || !causal_only) {
            let c = config(kind, causal);
            let degree = match c.kind {
                AttentionKind::Polynomial { p } | AttentionKind::Local { p, .. } => p,
                AttentionKind::PolySketch(ps) => ps.p,
                AttentionKind::Softmax
                | AttentionKind::Sliding { .. }
                | AttentionKind::Performer { .. }
                | AttentionKind::Hedgehog { .. } => 4,
            };
            let layer: PolySketchAttention<Cpu> = c.init(&device);
            let fast =
                outputs(&layer, dims, &device, |q, k, v| layer.try_forward(q, k, v).unwrap());
            let portable =
                outputs(&layer, dims, &device, |q, k, v| layer.forward_portable(q, k, v).unwrap());
            let expected = cpu_layer(&c, dims);
            assert_eq!(fast.len(), expected.len(), "{kind}");
            let names = ["out", "dq", "dk", "dv"];
            for (i, ((f, p), e)) in fast.iter().zip(&portable).zip(&expected).enumerate() {
                let what = names
                    .get(i)
                    .map_or_else(|| layer.parameter_names()[i - 4].clone(), |s| s.to_string());
                let tol = if i == 0 { 2e-4 } else { 5e-4 * degree as f32 };
                assert!(
                    rel(f, e) < 1e-6,
                    "{kind} causal={causal} {what}: fast vs CPU {:e}",
                    rel(f, e)
                );
                assert!(
                    rel(p, e) < tol,
                    "{kind} causal={causal} {what}: portable vs CPU {:e}",
                    rel(p, e)
                );
            }
        }
    }
}

/// The module's path switch, and its typed errors.
#[test]
fn paths_and_bad_input() {
    let device = Default::default();
    let layer: PolySketchAttention<NdArray> = config("random+local:p=4,r=4,block=8", true)
        .with_path(AttentionPath::Portable)
        .init(&device);
    let x = Tensor::<NdArray, 4>::from_data(
        TensorData::new(values(2 * 8 * 10, 7), [1, 2, 10, 8]),
        &device,
    );
    let a = layer.forward(x.clone(), x.clone(), x.clone());
    let b = layer.forward_portable(x.clone(), x.clone(), x.clone()).unwrap();
    assert_eq!(data(a), data(b));
    let wrong = Tensor::<NdArray, 4>::zeros([1, 3, 10, 8], &device);
    let err = layer.try_forward(x.clone(), wrong, x.clone()).unwrap_err();
    assert!(err.to_string().contains('k'), "{err}");
    let bad = PolySketchAttentionConfig::new(2, 8).with_kind(AttentionKind::Polynomial { p: 3 });
    assert!(bad.try_init::<NdArray>(&device).is_err());
    // a NaN input: the fast path refuses it, forward falls back to burn's NaN propagation
    let fast: PolySketchAttention<NdArray> = config("random:p=4,r=4,block=8", true).init(&device);
    let mut v = values(2 * 8 * 10, 8);
    v[3] = f32::NAN;
    let nan = Tensor::<NdArray, 4>::from_data(TensorData::new(v, [1, 2, 10, 8]), &device);
    assert!(fast.try_forward(nan.clone(), x.clone(), x.clone()).is_err());
    assert!(data(fast.forward(nan, x.clone(), x)).iter().any(|v| v.is_nan()));
}

/// burn's wgpu backend (lavapipe in CI): the fast path (the gpu crate's kernels on burn's
/// buffers, for causal PolySketch) and the portable path (every kind, causal or not) against
/// our CPU layer: outputs within 1e-4 and gradients within 1e-3 of the largest entry (the
/// device sums in another order; learned sketches through tanh and gelu).
#[test]
fn both_paths_run_on_wgpu() {
    let Some(_) =
        polysketch_gpu::testing::device_or_skip::<polysketch_gpu::Wgpu>("both_paths_run_on_wgpu")
    else {
        return;
    };
    type Gpu = Autodiff<burn::backend::Wgpu>;
    use polysketch_burn::PolySketchBackend;
    let dims = [1, 2, 40, 8];
    let device = Default::default();
    for kind in ["softmax", "random+local:p=4,r=4,block=16", "learned:p=4,r=3,block=16"] {
        for causal in [true, false] {
            let c = config(kind, causal);
            let layer: PolySketchAttention<Gpu> = c.init(&device);
            let expected = cpu_layer(&c, dims);
            let fast = <Gpu as PolySketchBackend>::supports(&c.attention_config());
            assert_eq!(fast, causal && kind != "softmax", "{kind} causal={causal}");
            let runs: [(&str, &dyn Fn(_, _, _) -> _); 2] = [
                ("forward", &|q, k, v| layer.try_forward(q, k, v).unwrap()),
                ("portable", &|q, k, v| layer.forward_portable(q, k, v).unwrap()),
            ];
            for (path, run) in runs {
                let got = outputs(&layer, dims, &device, run);
                for (i, (x, e)) in got.iter().zip(&expected).enumerate() {
                    let tol = if i == 0 { 1e-4 } else { 1e-3 };
                    assert!(
                        rel(x, e) < tol,
                        "{kind} causal={causal} {path} output {i}: {:e}",
                        rel(x, e)
                    );
                }
            }
        }
    }
}

/// A small burn model — the multi-head block and a linear read-out — trains with burn's Adam
/// on the fast path: the loss of a fixed batch falls by half within 30 steps.
#[test]
fn a_burn_model_trains() {
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use polysketch_burn::{PolySketchMultiHead, PolySketchMultiHeadConfig};

    #[derive(Module, Debug)]
    struct Model<B: Backend> {
        block: PolySketchMultiHead<B>,
        head: Linear<B>,
    }
    let device = Default::default();
    let (batch, n, c) = (4, 24, 16);
    let mut model = Model::<Cpu> {
        block: PolySketchMultiHeadConfig::new(c, 2)
            .with_kind("learned+local:p=4,r=4,block=8".parse().unwrap())
            .init(&device),
        head: LinearConfig::new(c, 1).init(&device),
    };
    // the target of token t: the running mean of the first input feature up to t (causal)
    let x = values(batch * n * c, 11);
    let y: Vec<f32> = (0..batch * n)
        .map(|row| {
            let (b, t) = (row / n, row % n);
            (0..=t).map(|s| x[(b * n + s) * c]).sum::<f32>() / (t + 1) as f32
        })
        .collect();
    let x = Tensor::<Cpu, 3>::from_data(TensorData::new(x, [batch, n, c]), &device);
    let y = Tensor::<Cpu, 3>::from_data(TensorData::new(y, [batch, n, 1]), &device);
    let mut optim = AdamConfig::new().init();
    let mut losses = vec![];
    for _ in 0..30 {
        let pred = model.head.forward(model.block.forward(x.clone()));
        let loss = (pred - y.clone()).powi_scalar(2).mean();
        losses.push(data(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last < 0.5 * first, "loss {first} → {last}: {losses:?}");
}

/// burn's recorders save and load the module's parameters (the layer norm's and the learned
/// sketch's): a module of another seed loaded from the record computes the same outputs.
#[test]
fn recorders_round_trip_the_parameters() {
    use burn::module::Module;
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    let device = Default::default();
    let c = config("learned+local:p=4,r=3,block=8", true);
    let a: PolySketchAttention<NdArray> = c.init(&device);
    let b: PolySketchAttention<NdArray> = c.clone().with_seed(6).init(&device);
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = recorder.record(a.clone().into_record(), ()).unwrap();
    let b = b.load_record(recorder.load(bytes, &device).unwrap());
    let x = Tensor::<NdArray, 4>::from_data(
        TensorData::new(values(2 * 8 * 12, 9), [1, 2, 12, 8]),
        &device,
    );
    let (ya, yb) = (a.forward(x.clone(), x.clone(), x.clone()), b.forward(x.clone(), x.clone(), x));
    assert_eq!(data(ya), data(yb));
    assert_eq!(a.parameter_names(), b.parameter_names());
}
