//! Whole-model checks: finite-difference gradients in f64 for every attention kind, recurrent
//! inference against the training forward, thread-count determinism, typed errors.

use faer::Par;
use polysketch_attention::{PolySketchConfig, SketchKind};
use polysketch_core::{SketchRng, seeded_rng};
use polysketch_gpt::{
    Activations, AttentionKind, Gpt, GptConfig, GptError, IGNORE, MAX_ACTIVATION_BYTES,
    TrainConfig, Trainer,
};
use rand::RngExt;

fn specs() -> Vec<AttentionKind> {
    let ps = |learned, local| {
        AttentionKind::PolySketch(PolySketchConfig {
            p: 4,
            r: 4,
            block: 4,
            sketch: if learned { SketchKind::Learned } else { SketchKind::Random },
            local,
            seed: 0,
        })
    };
    vec![
        AttentionKind::Softmax,
        AttentionKind::Polynomial { p: 4 },
        ps(false, false),
        ps(false, true),
        ps(true, false),
        ps(true, true),
        AttentionKind::Local { p: 4, block: 4 },
        AttentionKind::Sliding { window: 3 },
        AttentionKind::Performer { features: 8, block: 4, seed: 0 },
        AttentionKind::Hedgehog { features: 8, block: 4, seed: 0 },
    ]
}

fn config(attention: AttentionKind) -> GptConfig {
    GptConfig { vocab: 11, context: 16, d_model: 8, layers: 2, heads: 2, attention, seed: 5 }
}

fn tokens(rng: &mut SketchRng, len: usize, vocab: u32) -> Vec<u32> {
    (0..len).map(|_| rng.random_range(0..vocab)).collect()
}

/// The loss at the model's parameters with `params` put in their place.
fn loss_at(
    model: &mut Gpt<f64>, params: &[f64], x: &[u32], y: &[u32], batch: usize, n: usize,
) -> f64 {
    model.update_params(|p, _| p.copy_from_slice(params));
    model.forward(x, y, batch, n, &mut Activations::new(), Par::Seq).unwrap()
}

#[test]
fn gradients_match_finite_differences_for_every_attention_kind() {
    let (batch, n) = (2, 10);
    for spec in specs() {
        let mut model = Gpt::<f64>::new(config(spec)).unwrap();
        // perturb the initialisation so gains, biases and all weights matter
        let mut rng = seeded_rng(9);
        let base: Vec<f64> =
            model.params().iter().map(|p| p + 0.1 * (rng.random::<f64>() - 0.5)).collect();
        model.update_params(|p, _| p.copy_from_slice(&base));
        let x = tokens(&mut rng, batch * n, 11);
        let mut y = tokens(&mut rng, batch * n, 11);
        y[3] = IGNORE;
        let mut acts = Activations::new();
        model.forward(&x, &y, batch, n, &mut acts, Par::Seq).unwrap();
        let mut grads = vec![0.0; model.num_params()];
        model.backward(&mut acts, &mut grads, Par::Seq).unwrap();
        // two entries of every tensor
        let picks: Vec<usize> = model
            .table()
            .iter()
            .flat_map(|p| [p.offset, p.offset + p.len() / 2 + (p.len() > 2) as usize])
            .collect();
        let eps = 1e-5;
        let mut worst = 0.0f64;
        for &i in &picks {
            let mut plus = base.clone();
            plus[i] += eps;
            let mut minus = base.clone();
            minus[i] -= eps;
            let fd = (loss_at(&mut model, &plus, &x, &y, batch, n)
                - loss_at(&mut model, &minus, &x, &y, batch, n))
                / (2.0 * eps);
            let err = (fd - grads[i]).abs() / (fd.abs() + grads[i].abs()).max(1e-3);
            worst = worst.max(err);
            assert!(err < 1e-5, "{}: param {i} fd {fd:e} analytic {:e}", spec.name(), grads[i]);
        }
        assert!(picks.len() > 30, "{}", spec.name());
        eprintln!(
            "{}: worst relative error {worst:e} over {} parameters",
            spec.name(),
            picks.len()
        );
    }
}

#[test]
fn chunked_inference_matches_the_training_forward() {
    let (batch, n) = (2, 13);
    for spec in specs() {
        let model = Gpt::<f64>::new(config(spec)).unwrap();
        let mut rng = seeded_rng(3);
        let x = tokens(&mut rng, batch * n, 11);
        let mut acts = Activations::new();
        model.forward(&x, &x, batch, n, &mut acts, Par::Seq).unwrap();
        let probs = acts.probs().to_vec();
        // prefill 5 tokens, then one at a time
        let mut state = model.new_state(batch).unwrap();
        let mut scratch = Activations::new();
        let mut t = 0;
        while t < n {
            let m = if t == 0 { 5 } else { 1 };
            let chunk: Vec<u32> =
                (0..batch).flat_map(|b| x[b * n + t..b * n + t + m].to_vec()).collect();
            let logits =
                model.forward_chunk(&chunk, m, &mut state, &mut scratch, Par::Seq).unwrap();
            t += m;
            for b in 0..batch {
                let l = &logits[b * 11..(b + 1) * 11];
                let max = l.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = l.iter().map(|v| (v - max).exp()).sum();
                let want = &probs[(b * n + t - 1) * 11..(b * n + t) * 11];
                for (v, w) in l.iter().zip(want) {
                    let p = (v - max).exp() / z;
                    assert!((p - w).abs() < 1e-10, "{} t {t}: {p} vs {w}", spec.name());
                }
            }
        }
        assert_eq!(state.position(), n);
    }
}

#[test]
fn a_training_step_does_not_depend_on_the_thread_count() {
    let spec = AttentionKind::PolySketch(PolySketchConfig {
        p: 4,
        r: 8,
        block: 16,
        sketch: SketchKind::Learned,
        local: true,
        seed: 0,
    });
    let cfg = GptConfig {
        vocab: 64,
        context: 64,
        d_model: 32,
        layers: 2,
        heads: 2,
        attention: spec,
        seed: 1,
    };
    let tc = TrainConfig {
        batch: 4,
        seq: 64,
        steps: 3,
        lr: 1e-3,
        warmup: 1,
        seed: 2,
        ..TrainConfig::default()
    };
    let mut rng = seeded_rng(4);
    let x = tokens(&mut rng, 4 * 64, 64);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
            let model = Gpt::<f32>::new(cfg).unwrap();
            let opt = tc.optimizer(model.num_params());
            let mut tr = Trainer::new(model, opt, tc, 0).unwrap();
            let y: Vec<u32> = x[1..].iter().chain([&0]).cloned().collect();
            let losses: Vec<f64> =
                (0..3).map(|_| tr.step(&x, &y, 4, 64, Par::rayon(0)).unwrap().loss).collect();
            (losses, tr.model.params().to_vec())
        })
    };
    let (l1, p1) = run(1);
    let (l3, p3) = run(3);
    assert_eq!(l1, l3);
    assert!(p1 == p3, "parameters differ between 1 and 3 threads");
    assert!(l1[2] < l1[0], "loss did not fall: {l1:?}");
}

#[test]
fn bad_input_gets_typed_errors() {
    let bad = [
        GptConfig { d_model: 9, ..config(AttentionKind::Softmax) },
        GptConfig {
            heads: 8, // head size 1: RoPE needs an even one
            ..config(AttentionKind::Softmax)
        },
        GptConfig { vocab: 0, ..config(AttentionKind::Softmax) },
        GptConfig { layers: 0, ..config(AttentionKind::Softmax) },
        // every size in range, their product (2^24 · 2^16 embedding values, 4 TiB) not
        GptConfig { vocab: 1 << 24, d_model: 1 << 16, heads: 1, ..config(AttentionKind::Softmax) },
        config(AttentionKind::Polynomial { p: 3 }),
        config(AttentionKind::PolySketch(PolySketchConfig {
            p: 4,
            r: 0,
            block: 4,
            sketch: SketchKind::Random,
            local: false,
            seed: 0,
        })),
    ];
    let small_heads = GptConfig {
        heads: 4, // head size 2 is even: accepted
        ..config(AttentionKind::Softmax)
    };
    assert!(Gpt::<f32>::new(small_heads).is_ok());
    for (i, c) in bad.iter().enumerate() {
        assert!(Gpt::<f32>::new(*c).is_err(), "config {i} accepted");
    }
    let model = Gpt::<f32>::new(config(AttentionKind::Softmax)).unwrap();
    let mut acts = Activations::new();
    let x = vec![1u32; 8];
    assert!(matches!(
        model.forward(&x, &x, 2, 5, &mut acts, Par::Seq),
        Err(GptError::Shape { .. })
    ));
    assert!(matches!(
        model.forward(&[1, 99], &[1, 2], 1, 2, &mut acts, Par::Seq),
        Err(GptError::Token { .. })
    ));
    assert!(matches!(
        model.forward(&[1, 2], &[IGNORE, IGNORE], 1, 2, &mut acts, Par::Seq),
        Err(GptError::Shape { .. })
    ));
    let long = vec![1u32; 17];
    assert!(matches!(
        model.forward(&long, &long, 1, 17, &mut acts, Par::Seq),
        Err(GptError::Shape { .. })
    ));
    let mut grads = vec![0.0; model.num_params()];
    assert!(model.backward(&mut Activations::new(), &mut grads, Par::Seq).is_err());
    assert!(model.backward(&mut acts, &mut grads[1..], Par::Seq).is_err());
    let big = GptConfig {
        context: 1 << 20,
        d_model: 1024,
        heads: 8,
        vocab: 256,
        ..config(AttentionKind::Softmax)
    };
    let big_model = Gpt::<f32>::new(GptConfig { layers: 1, ..big }).unwrap();
    let huge = vec![0u32; 1 << 20];
    assert!(matches!(
        big_model.forward(&huge, &huge, 1, 1 << 20, &mut acts, Par::Seq),
        Err(GptError::TooLarge { .. })
    ));
}

/// The activation estimate counts what each attention layer keeps: a learned sketch's networks
/// keep several times what the block around them does, so a length that the blocks alone would
/// allow is refused (before anything is allocated) with learned + local.
#[test]
fn the_activation_guard_counts_the_attention_layers_own_state() {
    let shape = |attention: AttentionKind| GptConfig {
        vocab: 256,
        context: 1 << 17,
        d_model: 128,
        layers: 4,
        heads: 4,
        attention,
        seed: 0,
    };
    let learned = Gpt::<f32>::new(shape("learned+local".parse().unwrap())).unwrap();
    let softmax = Gpt::<f32>::new(shape(AttentionKind::Softmax)).unwrap();
    let n = 1 << 17;
    let (l, s) = (learned.activation_bytes(1, n), softmax.activation_bytes(1, n));
    assert!(l > 4 * s, "learned {l} against softmax {s}");
    assert!(s < MAX_ACTIVATION_BYTES && l > MAX_ACTIVATION_BYTES, "{s} {l}");
    let tokens = vec![1u32; n];
    let mut acts = Activations::new();
    assert!(matches!(
        learned.forward(&tokens, &tokens, 1, n, &mut acts, Par::Seq),
        Err(GptError::TooLarge { .. })
    ));
}

#[test]
fn the_sketch_learning_rate_factor_scales_the_sketch_networks_only() {
    let cfg = GptConfig {
        vocab: 64,
        context: 32,
        d_model: 16,
        layers: 1,
        heads: 2,
        attention: AttentionKind::PolySketch(PolySketchConfig {
            p: 4,
            r: 4,
            block: 8,
            sketch: SketchKind::Learned,
            local: true,
            seed: 0,
        }),
        seed: 1,
    };
    let mut rng = seeded_rng(5);
    let x = tokens(&mut rng, 2 * 32, 64);
    let y: Vec<u32> = x[1..].iter().chain([&0]).cloned().collect();
    let after_one_step = |sketch_lr: f64| {
        let tc =
            TrainConfig { batch: 2, seq: 32, lr: 1e-2, warmup: 1, sketch_lr, ..Default::default() };
        let model = Gpt::<f32>::new(cfg).unwrap();
        let opt = tc.optimizer(model.num_params());
        let mut tr = Trainer::new(model, opt, tc, 0).unwrap();
        tr.step(&x, &y, 2, 32, Par::Seq).unwrap();
        (tr.model.params().to_vec(), tr.model.table().to_vec())
    };
    let p0 = Gpt::<f32>::new(cfg).unwrap().params().to_vec();
    let (full, table) = after_one_step(1.0);
    let (half, _) = after_one_step(0.5);
    let sketch: Vec<_> = table.iter().filter(|t| t.name.contains(".sketch.")).collect();
    assert_eq!(sketch.len(), 24, "two networks of 12 tensors in the one layer");
    for t in &table {
        let r = t.offset..t.offset + t.len();
        if t.name.contains(".sketch.") {
            // Adam's update and the decay are linear in the rate: half the step
            for ((a, b), c) in p0[r.clone()].iter().zip(&full[r.clone()]).zip(&half[r]) {
                let (d1, d2) = (b - a, c - a);
                assert!((d2 - 0.5 * d1).abs() <= 1e-6 + 1e-3 * d1.abs(), "{}: {d1} {d2}", t.name);
            }
        } else {
            // the first step's forward and gradients are the same: the rest moves identically
            assert_eq!(full[r.clone()], half[r], "{}", t.name);
        }
    }
    // the factor is checked, and checkpoints from before it read as 1
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let tc = TrainConfig { seq: 32, sketch_lr: bad, ..Default::default() };
        assert!(tc.validate(&cfg).is_err(), "{bad}");
    }
    let mut json = serde_json::to_value(TrainConfig::default()).unwrap();
    json.as_object_mut().unwrap().remove("sketch_lr");
    let old: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old, TrainConfig::default());
}
