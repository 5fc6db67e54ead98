//! A small burn transformer language model on the bundled corpus (Austen, bytes), trained
//! with burn's own training loop (`SupervisedTraining`, Adam) twice: softmax attention, then
//! PolySketch — one config change. Prints each run's validation loss and training tokens/s;
//! the last line is `losses <softmax> <polysketch>` (validation, nats per token).
//!
//! ```sh
//! cargo run --release -p polysketch-burn --example burn_lm            # a few hundred steps
//! cargo run -p polysketch-burn --example burn_lm -- --quick           # CI-sized, under 2 minutes
//! ```

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::optim::AdamConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData, activation::gelu};
use burn::train::metric::LossMetric;
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};
use clap::Parser;
use polysketch_attention::AttentionKind;
use polysketch_burn::{PolySketchBackend, PolySketchMultiHead, PolySketchMultiHeadConfig};
use polysketch_gpt::data::{Corpus, Tokenizer, TokenizerSpec, read_text};

#[derive(Parser, Debug)]
#[command(about = "A burn transformer LM with softmax, then PolySketch attention")]
struct Args {
    /// CI-sized run: a short context, few steps (under two minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// The PolySketch kind (text form).
    #[arg(long, default_value = "learned+local:p=4,r=16,block=64")]
    kind: AttentionKind,
    /// The corpus (UTF-8 text).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/austen_emma_persuasion.txt"))]
    data: PathBuf,
}

/// Sizes of a run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    n: usize,
    batch: usize,
    steps: usize,
    d_model: usize,
    heads: usize,
    layers: usize,
    val_windows: usize,
}

/// A pre-LayerNorm transformer block: attention, then a GELU MLP of width 4C.
#[derive(Module, Debug)]
struct Block<B: Backend> {
    ln1: LayerNorm<B>,
    attention: PolySketchMultiHead<B>,
    ln2: LayerNorm<B>,
    up: Linear<B>,
    down: Linear<B>,
}

#[derive(Module, Debug)]
struct Lm<B: Backend> {
    embed: Embedding<B>,
    blocks: Vec<Block<B>>,
    ln: LayerNorm<B>,
    head: Linear<B>,
}

impl<B: PolySketchBackend> Lm<B> {
    fn new(s: Sizes, kind: AttentionKind, device: &B::Device) -> Self {
        let c = s.d_model;
        let block = |l: usize| Block {
            ln1: LayerNormConfig::new(c).init(device),
            attention: PolySketchMultiHeadConfig::new(c, s.heads)
                .with_kind(kind)
                .with_seed(l as u64)
                .init(device),
            ln2: LayerNormConfig::new(c).init(device),
            up: LinearConfig::new(c, 4 * c).init(device),
            down: LinearConfig::new(4 * c, c).init(device),
        };
        Lm {
            embed: EmbeddingConfig::new(256, c).init(device),
            blocks: (0..s.layers).map(block).collect(),
            ln: LayerNormConfig::new(c).init(device),
            head: LinearConfig::new(c, 256).init(device),
        }
    }

    /// Logits `[batch·n, 256]` of `tokens` `[batch, n]`.
    fn logits(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [batch, n] = tokens.dims();
        let mut x = self.embed.forward(tokens);
        for b in &self.blocks {
            x = x.clone() + b.attention.forward(b.ln1.forward(x.clone()));
            x = x.clone() + b.down.forward(gelu(b.up.forward(b.ln2.forward(x))));
        }
        self.head.forward(self.ln.forward(x)).reshape([batch * n, 256])
    }

    fn step(&self, batch: LmBatch<B>) -> ClassificationOutput<B> {
        let logits = self.logits(batch.inputs);
        let targets = batch.targets.flatten::<1>(0, 1);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), targets.clone());
        ClassificationOutput::new(loss, logits, targets)
    }
}

#[derive(Clone, Debug)]
struct LmBatch<B: Backend> {
    inputs: Tensor<B, 2, Int>,
    targets: Tensor<B, 2, Int>,
}

/// Windows of `n + 1` tokens → inputs (the first `n`) and targets (the last `n`).
#[derive(Clone, Default)]
struct LmBatcher;

impl<B: Backend> Batcher<B, Vec<u32>, LmBatch<B>> for LmBatcher {
    fn batch(&self, windows: Vec<Vec<u32>>, device: &B::Device) -> LmBatch<B> {
        let n = windows[0].len() - 1;
        let take = |range: core::ops::Range<usize>| {
            let data: Vec<i64> =
                windows.iter().flat_map(|w| w[range.clone()].iter().map(|&t| t as i64)).collect();
            Tensor::from_data(TensorData::new(data, [windows.len(), n]), device)
        };
        LmBatch { inputs: take(0..n), targets: take(1..n + 1) }
    }
}

impl<B: AutodiffBackend + PolySketchBackend> TrainStep for Lm<B>
where
    B::InnerBackend: PolySketchBackend,
{
    type Input = LmBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let out = Lm::step(self, batch);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl<B: PolySketchBackend> InferenceStep for Lm<B> {
    type Input = LmBatch<B>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> ClassificationOutput<B> {
        Lm::step(self, batch)
    }
}

type Train = Autodiff<NdArray>;

/// burn's training loop reports its progress here: an indicatif bar over the steps.
struct Bar(indicatif::ProgressBar);

impl MetricsRendererTraining for Bar {
    fn update_train(&mut self, _: MetricState) {}
    fn update_valid(&mut self, _: MetricState) {}
    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        self.0.set_position(item.iteration.unwrap_or(0) as u64);
    }
    fn render_valid(&mut self, _: TrainingProgress, _: Vec<ProgressType>) {
        self.0.set_message("validation");
    }
}

impl MetricsRendererEvaluation for Bar {
    fn update_test(&mut self, _: EvaluationName, _: MetricState) {}
    fn render_test(&mut self, _: EvaluationProgress, _: Vec<ProgressType>) {}
}

impl MetricsRenderer for Bar {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, _: burn::train::metric::MetricDefinition) {}
}

/// Trains one model; returns (validation loss in nats/token, training tokens per second).
fn run(
    name: &str, kind: AttentionKind, s: Sizes, corpus: &Corpus,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let device = Default::default();
    <Train as Backend>::seed(&device, 7);
    // the training windows: `steps · batch` at fixed pseudo-random offsets (one epoch)
    let train: Vec<Vec<u32>> = (0..s.steps)
        .flat_map(|step| {
            let (x, y) = corpus.train_batch(7, step, s.batch, s.n);
            (0..s.batch)
                .map(|b| {
                    let mut w = x[b * s.n..(b + 1) * s.n].to_vec();
                    w.push(y[(b + 1) * s.n - 1]);
                    w
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let val: Vec<Vec<u32>> =
        (0..s.val_windows).map(|i| corpus.val[i * s.n..(i + 1) * s.n + 1].to_vec()).collect();
    let train = DataLoaderBuilder::<Train, _, _>::new(LmBatcher)
        .batch_size(s.batch)
        .build(InMemDataset::new(train));
    let valid = DataLoaderBuilder::<NdArray, _, _>::new(LmBatcher)
        .batch_size(s.batch)
        .build(InMemDataset::new(val.clone()));
    let dir =
        std::env::temp_dir().join(format!("polysketch-burn-lm-{}-{name}", std::process::id()));
    let training = SupervisedTraining::new(&dir, train, valid)
        .metrics((LossMetric::new(),))
        .renderer(Bar(indicatif::ProgressBar::new(s.steps as u64).with_message(name.to_string())))
        .num_epochs(1);
    let model = Lm::<Train>::new(s, kind, &device);
    let start = Instant::now();
    let result = training.launch(Learner::new(model, AdamConfig::new().init(), 3e-3));
    let seconds = start.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir).ok();
    // validation loss of the trained model (on the inner, no-autodiff backend)
    let model = result.model;
    let batcher = LmBatcher;
    let mut total = 0.0;
    for chunk in val.chunks(s.batch) {
        let batch: LmBatch<NdArray> = batcher.batch(chunk.to_vec(), &device);
        let loss = model.step(batch).loss.into_data().convert::<f64>().into_vec::<f64>()?[0];
        total += loss * chunk.len() as f64;
    }
    let loss = total / s.val_windows as f64;
    let tokens_per_s = (s.steps * s.batch * s.n) as f64 / seconds;
    println!(
        "{name:<10} {kind:<40} validation loss {loss:.4} nats/token, {tokens_per_s:.0} tokens/s"
    );
    Ok((loss, tokens_per_s))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let s = if args.quick {
        Sizes { n: 128, batch: 8, steps: 120, d_model: 32, heads: 2, layers: 1, val_windows: 16 }
    } else {
        Sizes { n: 256, batch: 16, steps: 300, d_model: 64, heads: 4, layers: 2, val_windows: 64 }
    };
    let text = read_text(&args.data)?;
    let tokenizer = Tokenizer::from_spec(TokenizerSpec::Bytes, &text)?;
    let corpus = Corpus::from_text(&text, &tokenizer, 0.1, s.n)?;
    println!(
        "burn transformer LM: {} layers, C = {}, {} heads, n = {}, batch {}, {} steps, bytes of {}",
        s.layers,
        s.d_model,
        s.heads,
        s.n,
        s.batch,
        s.steps,
        args.data.display()
    );
    let (softmax, _) = run("softmax", AttentionKind::Softmax, s, &corpus)?;
    let (polysketch, _) = run("polysketch", args.kind, s, &corpus)?;
    println!("losses {softmax:.4} {polysketch:.4}");
    Ok(())
}
