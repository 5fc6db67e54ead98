//! Property tests over the public entry points of every crate, fed what a careless or hostile
//! caller could pass: sizes of 0, 1, a few, and huge or overflowing ones; values that are NaN,
//! ±∞, ±1e30, ±1e-30, denormal, 1e20 or 1e200 among ordinary ones; buffers and states that do
//! not match. Each case asserts that the call does not panic (`catch_unwind`) and returns
//! either `Ok` with finite results or a typed error with a message.
//!
//! Every property runs `POLYSKETCH_FUZZ_CASES` cases (512 by default, what CI runs; set it to
//! 10000 or more for a long local run) drawn from the seed `POLYSKETCH_FUZZ_SEED` (fixed by
//! default: CI runs the same cases each time; vary it to explore). Sizes stay small or are refused: no case allocates more
//! than a few megabytes, so a failure to refuse a huge size shows up as a failed case, not as an
//! aborted process... unless the size check is missing, which is what the suite is for.

use std::panic::{AssertUnwindSafe, catch_unwind};

use faer::{Mat, MatRef, Par};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use polysketch::attention::{
    Attention, AttentionConfig, AttentionKind, HeadLayout, LearnedSketch, PackedSaved, QkNorm,
    Saved, Shape,
};
use polysketch::gpt::data::{Corpus, Tokenizer};
use polysketch::gpt::{
    Activations, Gpt, GptConfig, GptError, TrainConfig, Trainer, generate_streaming,
};
use polysketch::kernel::data::{Standardizer, Table, split_indices};
use polysketch::kernel::{
    FeatureKind, KernelRidge, Nystrom, PolyKernel, Ridge, SketchFeatures, center_gram,
    kernel_pca_exact, kernel_pca_features, principal_angles, r2, rmse, top_eigenpairs,
};
use polysketch::lowtri::{Features, LowTri, Problem, baseline};
use polysketch::sketch::{CountSketch, GaussianJl, PolySketch, TensorSketch, TreeSketch, jl};
use polysketch::tensoring::{Layout, SelfTensored, amm};

/// Cases per property: `POLYSKETCH_FUZZ_CASES`, 512 by default; drawn from the seed
/// `POLYSKETCH_FUZZ_SEED` (14 by default, so that CI runs the same cases every time).
fn config() -> ProptestConfig {
    let var = |name| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    ProptestConfig {
        cases: var("POLYSKETCH_FUZZ_CASES").map_or(512, |c| c as u32),
        rng_seed: proptest::test_runner::RngSeed::Fixed(var("POLYSKETCH_FUZZ_SEED").unwrap_or(14)),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A size: mostly 0 ..= 9, sometimes one whose products overflow or that no memory holds.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..=9,
        1 => prop::sample::select(vec![1usize << 31, 1 << 40, 1 << 62, usize::MAX]),
    ]
}

/// A value: mostly ordinary, sometimes non-finite, tiny, denormal or huge.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -3.0f64..3.0,
        1 => prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e30,
            -1e30,
            1e-30,
            -1e-30,
            1e-310,
            0.0,
            1e20,
            1e200,
        ]),
    ]
}

fn values(len: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(value(), len)
}

/// A pool of 64 values to fill inputs from: three times in four all ordinary (so that most
/// cases reach the computation), else with the special values mixed in.
fn pool() -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        3 => prop::collection::vec(-3.0f64..3.0, 64),
        1 => values(64),
    ]
}

/// A matrix of `rows × cols` filled from `pool` (cycling, starting at `offset`), or `None` for
/// shapes too large to build (the call under test gets an empty matrix then).
fn fill(rows: usize, cols: usize, pool: &[f64], offset: usize) -> Mat<f64> {
    // a side of 2^31 with the other 0 is an empty matrix whose columns faer still visits
    match rows.checked_mul(cols) {
        Some(len) if len <= 1 << 14 && rows.max(cols) <= 1 << 14 => {
            Mat::from_fn(rows, cols, |i, j| pool[(offset + i * cols + j) % pool.len()])
        }
        _ => Mat::zeros(0, 0),
    }
}

/// `size` most of the time, else a neighbour: a shape that almost matches.
fn near(size: usize, skew: u8) -> usize {
    match skew {
        0 => size.wrapping_add(1),
        1 => size.saturating_sub(1),
        _ => size,
    }
}

/// A `rows × cols` matrix of [`value`]s, both at most 6.
fn matrix() -> impl Strategy<Value = Mat<f64>> {
    (0usize..=6, 0usize..=6).prop_flat_map(|(r, c)| {
        values(r * c).prop_map(move |v| Mat::from_fn(r, c, |i, j| v[i * c + j]))
    })
}

fn to_f32(m: &Mat<f64>) -> Mat<f32> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)] as f32)
}

/// Runs `f`, turning a panic into a failed case that says where.
fn no_panic<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let message = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        TestCaseError::fail(format!("{what} panicked: {message}"))
    })
}

/// `Ok` must hold finite values; an error must say something.
fn check<T, E: std::fmt::Display>(
    what: &str, r: Result<T, E>, finite: impl FnOnce(&T) -> bool,
) -> Result<Option<T>, TestCaseError> {
    match r {
        Ok(x) => {
            prop_assert!(finite(&x), "{what}: Ok with a non-finite value");
            Ok(Some(x))
        }
        Err(e) => {
            prop_assert!(!e.to_string().is_empty(), "{what}: an empty error message");
            Ok(None)
        }
    }
}

fn finite_mat<T: polysketch::core::Scalar>(m: MatRef<'_, T>) -> bool {
    (0..m.ncols()).all(|j| m.col(j).iter().all(|x| x.is_finite()))
}

fn finite_slice<T: polysketch::core::Scalar>(x: &[T]) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// One of the oblivious sketches, by number.
fn sketch(
    kind: u8, h: usize, r: usize, p: usize, seed: u64,
) -> polysketch::sketch::Result<Box<dyn PolySketch<f32>>> {
    Ok(match kind % 6 {
        0 => Box::new(GaussianJl::new(h, r, seed)?),
        1 => Box::new(CountSketch::new(h, r, seed)?),
        2 => Box::new(TensorSketch::new(h, r, p, seed)?),
        3 => Box::new(TreeSketch::gaussian(h, r, p, seed)?),
        4 => Box::new(TreeSketch::srht(h, r, p, seed)?),
        _ => Box::new(SelfTensored::random(h, r, p, Layout::Symmetric, seed)?),
    })
}

proptest! {
    #![proptest_config(config())]

    /// Sketch constructors, `apply`, `vjp` and `gram` on inputs of (nearly) the right width.
    #[test]
    fn sketches(kind in any::<u8>(), h in size(), r in size(), p in prop_oneof![0usize..=9, Just(64), Just(65), Just(1 << 20)],
                rows in 0usize..=5, skew in (0u8..8, 0u8..8, 0u8..8), pool in pool(), seed in any::<u64>()) {
        let made = no_panic("constructor", || sketch(kind, h, r, p, seed))?;
        if let Some(s) = check("constructor", made, |_| true)? {
            let (h, r) = (s.input_dim(), s.sketch_dim());
            let a = to_f32(&fill(rows, near(h, skew.0), &pool, 0));
            let b = to_f32(&fill(rows + 1, near(h, skew.1), &pool, 7));
            let g = to_f32(&fill(near(rows, skew.2), r, &pool, 13));
            let out = no_panic("apply", || s.apply(a.as_ref(), Par::Seq))?;
            check("apply", out, |m| finite_mat(m.as_ref()))?;
            let out = no_panic("vjp", || s.vjp(a.as_ref(), g.as_ref(), Par::Seq))?;
            check("vjp", out, |m| finite_mat(m.as_ref()))?;
            let out = no_panic("gram", || s.gram(a.as_ref(), b.as_ref(), Par::Seq))?;
            check("gram", out, |m| finite_mat(m.as_ref()))?;
        }
    }

    /// The JL and AMM statistics utilities.
    #[test]
    fn sketch_statistics(x in values(6), y in values(6), len in 0usize..=6, level in value(), t in value(),
                         a in matrix(), b in matrix(), p in 0usize..=9) {
        let (x, y) = (&x[..len], &y[..len.min(y.len())]);
        check("mean_interval", no_panic("mean_interval", || jl::mean_interval(x, level))?, |m| m.mean.is_finite())?;
        check("lt_norm", no_panic("lt_norm", || jl::lt_norm(x, t, level))?, |_| true)?;
        check("log_log_slope", no_panic("log_log_slope", || jl::log_log_slope(x, y))?, |s| s.is_finite())?;
        check("sq_norm_deviations", no_panic("sq_norm_deviations", || jl::sq_norm_deviations(a.as_ref(), b.as_ref(), p))?, |d| finite_slice(d))?;
        check("exact_poly_gram", no_panic("exact_poly_gram", || jl::exact_poly_gram(a.as_ref(), b.as_ref(), p))?, |m| finite_mat(m.as_ref()))?;
        let gram = Mat::<f64>::zeros(a.nrows(), b.nrows());
        check("amm_error_from_gram", no_panic("amm_error_from_gram", || jl::amm_error_from_gram(gram.as_ref(), a.as_ref(), b.as_ref(), p))?, |e| e.is_finite())?;
    }

    /// The lowtri engine and its baselines, forward and backward, on problems of (nearly)
    /// matching shapes and any values; blocks of any size.
    #[test]
    fn lowtri(block in size(), form in 0u8..3, n in 0usize..=40, m in 0usize..=6, k in 0usize..=4,
              skew in (0u8..12, 0u8..12, 0u8..12, 0u8..12), pool in pool(), p in 0usize..=9) {
        let a = to_f32(&fill(n, m, &pool, 0));
        let b = to_f32(&fill(near(n, skew.0), near(m, skew.1), &pool, 5));
        let c = to_f32(&fill(near(n, skew.2), k, &pool, 11));
        let q = to_f32(&fill(n, 3, &pool, 17));
        let g = to_f32(&fill(near(n, skew.3), k, &pool, 23));
        let problem = match form {
            0 => Problem::general(a.as_ref(), b.as_ref(), c.as_ref()),
            1 => Problem::self_tensored(a.as_ref(), b.as_ref(), c.as_ref()),
            _ => Problem::local_exact(Features::SelfTensored { l: a.as_ref(), r: b.as_ref() }, q.as_ref(), q.as_ref(), p, c.as_ref()),
        };
        if let Some(engine) = check("LowTri::new", no_panic("LowTri::new", || LowTri::new(block))?, |_| true)? {
            let fwd = no_panic("forward", || engine.forward(&problem, Par::Seq))?;
            if let Some((_, mut saved)) = check("forward", fwd, |(o, _)| finite_mat(o.as_ref()))? {
                let bwd = no_panic("backward", || engine.backward(&problem, &mut saved, g.as_ref(), Par::Seq))?;
                check("backward", bwd, |gr| finite_mat(gr.d_a.as_ref()) && finite_mat(gr.d_b.as_ref()) && finite_mat(gr.d_c.as_ref()))?;
            }
        }
        check("naive_forward", no_panic("naive_forward", || baseline::naive_forward(a.as_ref(), b.as_ref(), c.as_ref(), Par::Seq))?, |m| finite_mat(m.as_ref()))?;
        check("cumsum_forward", no_panic("cumsum_forward", || baseline::cumsum_forward(a.as_ref(), b.as_ref(), c.as_ref(), Par::Seq))?, |m| finite_mat(m.as_ref()))?;
        check("naive_backward", no_panic("naive_backward", || baseline::naive_backward(a.as_ref(), b.as_ref(), c.as_ref(), g.as_ref(), Par::Seq))?, |gr| finite_mat(gr.d_a.as_ref()) && finite_mat(gr.d_c.as_ref()))?;
        check("cumsum_backward", no_panic("cumsum_backward", || baseline::cumsum_backward(a.as_ref(), b.as_ref(), c.as_ref(), g.as_ref(), Par::Seq))?, |gr| finite_mat(gr.d_a.as_ref()) && finite_mat(gr.d_c.as_ref()))?;
    }

    /// Kernels, features, ridge, Nyström, PCA and the scores, in f64.
    #[test]
    fn kernel_methods(degree in size(), gamma in value(), coef0 in value(), x in matrix(), z in matrix(), y in values(6),
                      lambda in value(), m in size(), dim in size(), fk in 0u8..3, seed in any::<u64>()) {
        let y = &y[..x.nrows().min(y.len())];
        let made = no_panic("PolyKernel::new", || PolyKernel::new(degree, gamma, coef0))?;
        if let Some(kernel) = check("PolyKernel::new", made, |_| true)? {
            let k = no_panic("gram", || kernel.gram(x.as_ref(), z.as_ref(), Par::Seq))?;
            check("gram", k, |k| finite_mat(k.as_ref()))?;
            check("homogenize", no_panic("homogenize", || kernel.homogenize(x.as_ref()))?, |h| finite_mat(h.as_ref()))?;
            let kind = [FeatureKind::Tree, FeatureKind::TensorSketch, FeatureKind::SelfTensored][fk as usize];
            let f = no_panic("SketchFeatures::new", || SketchFeatures::new(kernel, x.ncols(), kind, dim, seed))?;
            if let Some(f) = check("SketchFeatures::new", f, |_| true)? {
                check("transform", no_panic("transform", || f.transform(z.as_ref(), Par::Seq))?, |t| finite_mat(t.as_ref()))?;
            }
            let ny = no_panic("Nystrom::fit", || Nystrom::fit(kernel, x.as_ref(), m, seed, Par::Seq))?;
            if let Some(ny) = check("Nystrom::fit", ny, |_| true)? {
                check("Nystrom::transform", no_panic("Nystrom::transform", || ny.transform(z.as_ref(), Par::Seq))?, |t| finite_mat(t.as_ref()))?;
            }
            let sq = no_panic("gram", || kernel.gram(x.as_ref(), x.as_ref(), Par::Seq))?;
            if let Ok(sq) = sq {
                let fit = no_panic("KernelRidge::fit", || KernelRidge::fit(sq.as_ref(), y, lambda, Par::Seq))?;
                if let Some(model) = check("KernelRidge::fit", fit, |_| true)? {
                    check("KernelRidge::predict", no_panic("predict", || model.predict(z.as_ref(), Par::Seq))?, |p| finite_slice(p))?;
                }
                check("kernel_pca_exact", no_panic("kernel_pca_exact", || kernel_pca_exact(sq.as_ref(), m, Par::Seq))?, |_| true)?;
            }
        }
        let paths = no_panic("Ridge::fit_path", || Ridge::fit_path(x.as_ref(), y, &[lambda, 1.0], Par::Seq))?;
        if let Some(models) = check("Ridge::fit_path", paths, |_| true)? {
            for r in models {
                check("Ridge::predict", no_panic("predict", || r.predict(z.as_ref(), Par::Seq))?, |p| finite_slice(p))?;
            }
        }
        check("center_gram", no_panic("center_gram", || center_gram(x.as_ref()))?, |c| finite_mat(c.as_ref()))?;
        check("top_eigenpairs", no_panic("top_eigenpairs", || top_eigenpairs(x.as_ref(), m, Par::Seq))?, |(v, _)| finite_slice(v))?;
        check("kernel_pca_features", no_panic("kernel_pca_features", || kernel_pca_features(x.as_ref(), m, Par::Seq))?, |_| true)?;
        check("principal_angles", no_panic("principal_angles", || principal_angles(x.as_ref(), z.as_ref()))?, |a| finite_slice(a))?;
        let pred = &y[..y.len().saturating_sub(usize::from(lambda > 0.0))];
        check("rmse", no_panic("rmse", || rmse(pred, y))?, |s| s.is_finite())?;
        check("r2", no_panic("r2", || r2(pred, y))?, |s| s.is_finite())?;
        if let Some(s) = check("Standardizer::fit", no_panic("Standardizer::fit", || Standardizer::fit(x.as_ref()))?, |_| true)? {
            check("Standardizer::transform", no_panic("transform", || s.transform(z.as_ref()))?, |t| finite_mat(t.as_ref()))?;
        }
        let sizes = [m.min(1 << 20), dim.min(1 << 20)];
        check("split_indices", no_panic("split_indices", || split_indices(degree.min(64), &sizes, seed))?, |_| true)?;
    }

    /// The attention layer (causal or bidirectional): configurations parsed from text, forward and backward with sizes
    /// and buffers that (nearly) match, states from other calls, packed sequences, decoding.
    #[test]
    fn attention(kind in kind_text(), heads in size(), h in size(), batch in size(), n in size(),
                 pool in pool(), skew in 0u8..10, offsets in prop::collection::vec(0usize..12, 0..4), reuse in any::<bool>(), raw in any::<bool>(), causal in any::<bool>()) {
        let Ok(kind) = kind.parse::<AttentionKind>() else { return Ok(()) };
        let qk_norm = if raw { QkNorm::None } else { QkNorm::LayerNorm };
        let made = no_panic("Attention::new", || Attention::<f32>::new(AttentionConfig { heads, head_dim: h, kind, qk_norm, causal }))?;
        let Some(layer) = check("Attention::new", made, |_| true)? else { return Ok(()) };
        // the expected length when a buffer of it can be made, else a small one
        let want = batch.checked_mul(heads).and_then(|v| v.checked_mul(n)).and_then(|v| v.checked_mul(h));
        let len = near(want.filter(|&w| w <= 1 << 14).unwrap_or(48), skew).min(1 << 14);
        let x: Vec<f32> = (0..len).map(|i| pool[i % pool.len()] as f32).collect();
        let (qs, ks, vs) = (&x[..], &x[..], &x[..]);
        let fwd = no_panic("forward", || layer.forward(qs, ks, vs, batch, n, Par::Seq))?;
        let mut saved = Saved::new();
        if let Some((out, s)) = check("forward", fwd, |(o, _)| finite_slice(o))? {
            if reuse { saved = s; }
            let bwd = no_panic("backward", || layer.backward(&mut saved, &out, Par::Seq))?;
            check("backward", bwd, |g| finite_slice(&g.dq) && finite_slice(&g.dk) && finite_slice(&g.dv))?;
        } else {
            let bwd = no_panic("backward", || layer.backward(&mut saved, qs, Par::Seq))?;
            check("backward", bwd, |_| true)?;
        }
        let shape = Shape { batch, n, layout: HeadLayout::TokensFirst };
        let fwd = no_panic("forward_shaped", || layer.forward_shaped(qs, ks, vs, shape, Par::Seq))?;
        if let Some((out, mut s)) = check("forward_shaped", fwd, |(o, _)| finite_slice(o))? {
            let bwd = no_panic("backward (tokens first)", || layer.backward(&mut s, &out, Par::Seq))?;
            check("backward (tokens first)", bwd, |g| finite_slice(&g.dq))?;
        }
        let mut packed = PackedSaved::new();
        let mut out = vec![0.0f32; qs.len()];
        let fwd = no_panic("forward_packed", || layer.forward_packed(qs, ks, vs, &offsets, &mut out, &mut packed, Par::Seq))?;
        if check("forward_packed", fwd, |_| finite_slice(&out))?.is_some() {
            let mut grads = Default::default();
            let bwd = no_panic("backward_packed", || layer.backward_packed(&mut packed, &out, &mut grads, Par::Seq))?;
            check("backward_packed", bwd, |_| finite_slice(&grads.dq))?;
        }
        if let Some(mut state) = check("new_state", no_panic("new_state", || layer.new_state(batch))?, |_| true)? {
            let mut out = vec![0.0f32; qs.len()];
            let step = no_panic("forward_chunk", || layer.forward_chunk(qs, ks, vs, batch, n, &mut out, &mut state, Par::Seq))?;
            check("forward_chunk", step, |_| finite_slice(&out))?;
        }
    }

    /// Learned sketches of any size and degree.
    #[test]
    fn learned_sketches(h in size(), r in size(), degree in prop_oneof![0usize..=9, Just(64), Just(128)], seed in any::<u64>()) {
        check("LearnedSketch::new", no_panic("LearnedSketch::new", || LearnedSketch::<f32>::new(h, r, degree, seed))?, |_| true)?;
    }

    /// The GPT: configurations of any size, tokens outside the vocabulary, shapes that do not
    /// match; text too short to train on.
    #[test]
    fn gpt(vocab in size(), context in size(), d_model in size(), layers in size(), heads in size(), kind in kind_text(),
           tokens in prop::collection::vec(0u32..300, 0..20), batch in size(), n in size(), text in "\\PC{0,40}", fraction in value()) {
        let Ok(attention) = kind.parse::<AttentionKind>() else { return Ok(()) };
        let config = GptConfig { vocab, context, d_model, layers, heads, attention, seed: 1 };
        if let Some(model) = check("Gpt::new", no_panic("Gpt::new", || Gpt::<f32>::new(config))?, |_| true)? {
            let mut acts = Activations::new();
            let loss = no_panic("Gpt::forward", || model.forward(&tokens, &tokens, batch, n, &mut acts, Par::Seq))?;
            check("Gpt::forward", loss, |l| l.is_finite())?;
        }
        let corpus = no_panic("Corpus::from_text", || Corpus::from_text(&text, &Tokenizer::Bytes, fraction, context))?;
        check("Corpus::from_text", corpus, |_| true)?;
        let _ = no_panic("decode", || Tokenizer::Bytes.decode(&tokens))?;
    }
}

proptest! {
    #![proptest_config(config())]

    /// Training steps, recurrent decoding and sampling of a small model, with tokens, shapes
    /// and learning rates of any kind (a learning rate of 1e30 diverges: a typed error).
    #[test]
    fn gpt_training_and_decoding(kind in kind_text(), tokens in prop::collection::vec(0u32..300, 0..40),
                                 batch in 0usize..=3, n in 0usize..=12, lr in value(), temperature in value(),
                                 count in prop_oneof![0usize..=6, Just(1 << 40)], prompt in "\\PC{0,6}") {
        let Ok(attention) = kind.parse::<AttentionKind>() else { return Ok(()) };
        let config = GptConfig { vocab: 256, context: 8, d_model: 8, layers: 1, heads: 2, attention, seed: 2 };
        let Ok(model) = Gpt::<f32>::new(config) else { return Ok(()) };
        let train = TrainConfig { batch: batch.max(1), seq: n.clamp(1, 8), steps: 4, lr, warmup: 1, ..TrainConfig::default() };
        let opt = train.optimizer(model.num_params());
        let made = no_panic("Trainer::new", || Trainer::new(model, opt, train, 0))?;
        if let Some(mut trainer) = check("Trainer::new", made, |_| true)? {
            for _ in 0..2 {
                let step = no_panic("Trainer::step", || trainer.step(&tokens, &tokens, batch, n, Par::Seq))?;
                check("Trainer::step", step, |s| s.loss.is_finite() && s.grad_norm.is_finite())?;
            }
            let model = &trainer.model;
            if let Some(mut state) = check("Gpt::new_state", no_panic("new_state", || model.new_state(batch))?, |_| true)? {
                let mut acts = Activations::new();
                let logits = no_panic("Gpt::forward_chunk", || model.forward_chunk(&tokens, n, &mut state, &mut acts, Par::Seq))?;
                check("Gpt::forward_chunk", logits, |l| finite_slice(l))?;
            }
            // a request of 2^40 tokens is refused or streams: stop the sink after a few pieces
            let mut pieces = 0;
            let generated = no_panic("generate_streaming", || generate_streaming(model, &Tokenizer::Bytes, &prompt, count, temperature, 1, &mut |_| {
                pieces += 1;
                if pieces > 8 { Err(GptError::Data("enough".into())) } else { Ok(()) }
            }))?;
            check("generate_streaming", generated, |_| true)?;
        }
    }

    /// Attention decoding one token at a time, with buffers of any length.
    #[test]
    fn attention_decoding(kind in kind_text(), batch in 0usize..=3, len in 0usize..=40, pool in pool()) {
        let Ok(kind) = kind.parse::<AttentionKind>() else { return Ok(()) };
        let Ok(layer) = Attention::<f32>::new(AttentionConfig::new(2, 4, kind)) else { return Ok(()) };
        let x: Vec<f32> = (0..len).map(|i| pool[i % pool.len()] as f32).collect();
        if let Some(mut state) = check("new_state", no_panic("new_state", || layer.new_state(batch))?, |_| true)? {
            for _ in 0..3 {
                let mut out = vec![0.0f32; x.len()];
                let step = no_panic("decode_step", || layer.decode_step(&x, &x, &x, &mut out, &mut state))?;
                check("decode_step", step, |_| finite_slice(&out))?;
            }
        }
    }

    /// Files a user points the crates at: CSV tables and BPE training text of any bytes.
    #[test]
    fn files_and_text(bytes in prop::collection::vec(any::<u8>(), 0..200), csv_text in "[0-9a-z,.\\-\n eE]{0,120}",
                      vocab in prop_oneof![0usize..=300, Just(usize::MAX)]) {
        let dir = std::env::temp_dir().join(format!("polysketch-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in [("raw.csv", &bytes[..]), ("text.csv", csv_text.as_bytes())] {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            let table = no_panic("Table::from_csv", || Table::from_csv(&path))?;
            if let Some(t) = check("Table::from_csv", table, |_| true)? {
                let first = t.names.first().cloned().unwrap_or_default();
                check("split_target", no_panic("split_target", || t.split_target(&first))?, |(x, y)| finite_mat(x.as_ref()) && finite_slice(y))?;
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        check("Tokenizer::train_bpe", no_panic("train_bpe", || Tokenizer::train_bpe(&text, vocab))?, |_| true)?;
    }

    /// The AMM study's cases: any degree, sketch size and family, a small configuration.
    #[test]
    fn amm_study(p in 0usize..=9, r in size(), family in 0usize..3, rows in 0usize..=6, draws in 0usize..=3) {
        let config = amm::Config { degrees: vec![p], sizes: vec![r], draws, rows, dim: 4, ..amm::Config::quick() };
        let family = amm::Family::ALL[family % amm::Family::ALL.len()];
        let case = no_panic("amm::run_case", || amm::run_case(&config, p, r, family, Par::Seq))?;
        check("amm::run_case", case, |_| true)?;
    }
}

/// Attention kinds as text: the documented forms with options of any size, and junk.
fn kind_text() -> impl Strategy<Value = String> {
    let number = prop::sample::select(vec![
        "0",
        "1",
        "2",
        "3",
        "4",
        "8",
        "64",
        "65",
        "99999999999",
        "18446744073709551615",
        "-1",
        "x",
    ]);
    let base = prop::sample::select(vec![
        "softmax",
        "polynomial",
        "random",
        "learned",
        "random+local",
        "learned+local",
        "cubic",
        "",
    ]);
    let key = prop::sample::select(vec!["p", "r", "block", "seed", "q"]);
    (base, prop::collection::vec((key, number), 0..3)).prop_map(|(b, opts)| {
        let opts: Vec<String> = opts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if opts.is_empty() { b.to_string() } else { format!("{b}:{}", opts.join(",")) }
    })
}
