//! The training step and evaluation, independent of where batches come from.

use faer::Par;
use serde::{Deserialize, Serialize};

use crate::optim::Decay;
use crate::{Activations, AdamW, Gpt, GptConfig, GptError, ParamInfo, Result, Schedule};
pub use polysketch_core::collective::{Collective, SingleProcess};

/// Optimisation settings of a run (stored in checkpoints).
///
/// The [`Default`] is `polysketch train`'s: 500 steps of 8 sequences of 256 tokens, peak
/// learning rate 2e-3 after 50 warm-up steps, cosine decay to a tenth, AdamW with
/// \\(\beta = (0.9, 0.95)\\) and weight decay 0.1, gradients clipped at norm 1, seed 0, pieces of
/// one sequence.
/// [`TrainConfig::task`] gives `polysketch task`'s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Total steps.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Decay after the warm-up.
    pub decay: Decay,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// AdamW \\(\lambda\\).
    pub weight_decay: f64,
    /// AdamW \\(\beta_1\\).
    pub beta1: f64,
    /// AdamW \\(\beta_2\\).
    pub beta2: f64,
    /// Gradient-norm clip (0: none).
    pub clip: f64,
    /// Seed of the batches.
    pub seed: u64,
    /// Sequences per piece of the batch (0: the whole batch, or each rank's share of it, is one
    /// piece). The gradient is summed piece by piece in a fixed chain (see [`Collective`](polysketch_core::collective)): with
    /// pieces of a fixed size, 1, 2 or 3 ranks of a data-parallel run give the same numbers,
    /// bit for bit. The default, 1, makes any rank count that divides the batch train the same
    /// model (one sequence per piece cost 3 % of the default run's speed, within the noise);
    /// checkpoints from before pieces read as 0.
    #[serde(default)]
    pub piece: usize,
    /// Multiplier of the learning rate (and so of the weight decay) of the learned sketches'
    /// networks, the tensors named `….sketch.…` (1: the rate of the rest of the model). A
    /// learned sketch with \\(r \ge 32\\) can saturate at the full rate; 0.1 keeps it healthy and
    /// trains best in the book's paper studies for \\(r \ge 32\\) (see "Reproducing the paper").
    /// The default stays 1. Checkpoints from before it read as 1.
    #[serde(default = "one")]
    pub sketch_lr: f64,
    /// Whether the learned sketches' network products and the causal engine's feature products
    /// take bf16 inputs ([`Gpt::set_bf16_products`]; faster on CPUs with AVX-512 BF16). Off by
    /// default; checkpoints from before it read as off.
    #[serde(default)]
    pub bf16: bool,
}

fn one() -> f64 {
    1.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch: 8,
            seq: 256,
            steps: 500,
            lr: 2e-3,
            warmup: 50,
            decay: Decay::Cosine,
            min_lr_ratio: 0.1,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            clip: 1.0,
            seed: 0,
            piece: 1,
            sketch_lr: 1.0,
            bf16: false,
        }
    }
}

impl TrainConfig {
    /// `polysketch task`'s settings: 10,000 steps of 32 sequences of 128 tokens, peak
    /// learning rate 1e-3 after 1,000 warm-up steps; the rest as [`Default`].
    pub fn task() -> Self {
        Self { batch: 32, seq: 128, steps: 10_000, lr: 1e-3, warmup: 1_000, ..Self::default() }
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            peak: self.lr,
            warmup: self.warmup,
            total: self.steps,
            decay: self.decay,
            min_ratio: self.min_lr_ratio,
        }
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`GptError::InvalidConfig`] for zero sizes, a learning rate or sketch factor that is not
    /// positive and finite, betas outside [0, 1), a negative weight decay or clip.
    pub fn validate(&self, model: &GptConfig) -> Result<()> {
        let bad = |m: String| Err(GptError::InvalidConfig(m));
        if self.batch == 0 || self.seq == 0 || self.steps == 0 {
            return bad("batch, seq and steps must be positive".into());
        }
        if self.warmup > self.steps {
            return bad(format!(
                "warm-up of {} steps is longer than the {} steps of training",
                self.warmup, self.steps
            ));
        }
        if self.seq > model.context {
            return bad(format!(
                "seq {} is longer than the model's context {}",
                self.seq, model.context
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate {} must be positive", self.lr));
        }
        if !(self.sketch_lr.is_finite() && self.sketch_lr > 0.0) {
            return bad(format!("sketch learning-rate factor {} must be positive", self.sketch_lr));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("betas must be in [0, 1)".into());
        }
        if !(self.weight_decay >= 0.0
            && self.clip >= 0.0
            && (0.0..=1.0).contains(&self.min_lr_ratio))
        {
            return bad("weight decay and clip must be ≥ 0 and the final lr ratio in [0, 1]".into());
        }
        Ok(())
    }

    /// The learning rate of each tensor when the schedule's is `lr`: `lr` ×
    /// [`sketch_lr`](Self::sketch_lr) for the learned sketches' networks, `lr` for the rest.
    pub fn lr_of(&self, lr: f64) -> impl Fn(&ParamInfo) -> f64 + use<> {
        let sketch = lr * self.sketch_lr;
        move |info: &ParamInfo| if info.name.contains(".sketch.") { sketch } else { lr }
    }

    /// A fresh optimiser for `len` parameters.
    pub fn optimizer(&self, len: usize) -> AdamW<f32> {
        AdamW::new(len, self.beta1, self.beta2, 1e-8, self.weight_decay)
    }
}

/// The sequences `[start, end)` of a global batch of `batch` that rank `rank` of `size`
/// trains on, checked: `size` must divide `batch`, and a nonzero `piece` must divide the share.
///
/// # Errors
/// [`GptError::InvalidConfig`] naming the numbers.
pub fn shard(batch: usize, piece: usize, rank: usize, size: usize) -> Result<(usize, usize)> {
    if size == 0 || !batch.is_multiple_of(size) {
        return Err(GptError::InvalidConfig(format!(
            "{size} ranks do not divide the batch of {batch} sequences (--batch is the global \
             batch: each rank takes batch/ranks)"
        )));
    }
    let share = batch / size;
    if piece > 0 && !share.is_multiple_of(piece) {
        return Err(GptError::InvalidConfig(format!(
            "pieces of {piece} sequences do not divide each rank's {share} (batch {batch} over \
             {size} ranks)"
        )));
    }
    Ok((rank * share, (rank + 1) * share))
}

/// What a step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean training loss of the batch (before the update).
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// A model, its optimiser and the reusable buffers of a run.
#[derive(Debug)]
pub struct Trainer {
    /// The model.
    pub model: Gpt<f32>,
    /// Its optimiser.
    pub opt: AdamW<f32>,
    /// The settings.
    pub config: TrainConfig,
    /// Steps taken.
    pub step: usize,
    acts: Activations<f32>,
    grads: Vec<f32>,
    /// Each piece's gradient, scaled by its share of the targets (reused).
    pieces: Vec<Vec<f32>>,
}

impl Trainer {
    /// A trainer at step `step` (0 for a new run).
    ///
    /// # Errors
    /// An invalid [`TrainConfig`].
    pub fn new(
        mut model: Gpt<f32>, opt: AdamW<f32>, config: TrainConfig, step: usize,
    ) -> Result<Self> {
        config.validate(model.config())?;
        model.set_bf16_products(config.bf16);
        let grads = vec![0.0; model.num_params()];
        Ok(Self { model, opt, config, step, acts: Activations::new(), grads, pieces: Vec::new() })
    }

    /// One step on `tokens`/`targets` (`[batch, n]`): forward, backward, AdamW at the
    /// schedule's learning rate, clipping.
    ///
    /// # Errors
    /// The model's errors; a non-finite loss or gradient (nothing is changed then).
    pub fn step(
        &mut self, tokens: &[u32], targets: &[u32], batch: usize, n: usize, par: Par,
    ) -> Result<StepStats> {
        let loss = self.model.forward(tokens, targets, batch, n, &mut self.acts, par)?;
        self.grads.fill(0.0);
        self.model.backward(&mut self.acts, &mut self.grads, par)?;
        self.update(loss)
    }

    /// AdamW on `self.grads` at the schedule's learning rate, with clipping; the step count
    /// advances.
    fn update(&mut self, loss: f64) -> Result<StepStats> {
        let lr = self.config.schedule().lr(self.step);
        let (opt, grads, clip) = (&mut self.opt, &self.grads, self.config.clip);
        let lr_of = self.config.lr_of(lr);
        let grad_norm =
            self.model.update_params(|p, table| opt.step_with(p, grads, table, &lr_of, clip))?;
        self.step += 1;
        Ok(StepStats { loss, grad_norm, lr })
    }

    /// One data-parallel step: this rank's `shard` of the global batch (`tokens`/`targets` of
    /// `[shard, n]`), cut into pieces of [`TrainConfig::piece`] sequences (0: one piece). Each
    /// piece's gradient of its mean loss is scaled by its share of the `total` targets of the
    /// global batch, the pieces of every rank are summed by [`Collective::chain_sum_f32`], and every
    /// rank takes the same AdamW step. With the same pieces, any number of ranks gives the same
    /// numbers, bit for bit; one piece of the whole batch is exactly [`step`](Self::step).
    ///
    /// Memory: one gradient per piece of this rank (`pieces × parameters` values).
    ///
    /// # Errors
    /// The model's errors; a non-finite loss or gradient (nothing is changed then, on every
    /// rank alike); a communication failure.
    pub fn step_sharded(
        &mut self, tokens: &[u32], targets: &[u32], shard: usize, n: usize, total: usize,
        comm: &dyn Collective, par: Par,
    ) -> Result<StepStats> {
        let piece = if self.config.piece == 0 { shard } else { self.config.piece };
        if piece == 0 || !shard.is_multiple_of(piece) || tokens.len() != shard * n || total == 0 {
            return Err(GptError::InvalidConfig(format!(
                "a shard of {shard} sequences of {n} tokens in pieces of {piece}, {total} \
                 targets in all ({} tokens given)",
                tokens.len()
            )));
        }
        let count = shard / piece;
        self.pieces.resize_with(count, Vec::new);
        let mut loss_sums = Vec::with_capacity(count);
        for (i, g) in self.pieces.iter_mut().enumerate() {
            let rows = i * piece * n..(i + 1) * piece * n;
            let (x, y) = (&tokens[rows.clone()], &targets[rows]);
            g.clear();
            g.resize(self.model.num_params(), 0.0);
            let c = y.iter().filter(|&&t| t != crate::IGNORE).count();
            if c == 0 {
                loss_sums.push(0.0);
                continue;
            }
            let loss = self.model.forward(x, y, piece, n, &mut self.acts, par)?;
            self.model.backward(&mut self.acts, g, par)?;
            let share = (c as f64 / total as f64) as f32;
            if share != 1.0 {
                g.iter_mut().for_each(|v| *v *= share);
            }
            loss_sums.push(loss * c as f64);
        }
        comm.chain_sum_f32(&self.pieces, &mut self.grads)?;
        let loss = comm.chain_values(&loss_sums)? / total as f64;
        if !loss.is_finite() {
            return Err(GptError::NonFinite("loss"));
        }
        self.update(loss)
    }

    /// Mean loss over `batches` (each `(tokens, targets)` of `[batch, n]`), weighted by targets.
    ///
    /// # Errors
    /// The model's errors.
    pub fn eval(
        &mut self, batches: &[(Vec<u32>, Vec<u32>)], batch: usize, n: usize, par: Par,
    ) -> Result<f64> {
        evaluate(&self.model, batches, batch, n, &mut self.acts, par)
    }
}

/// Mean loss of `model` over `batches` (each `[batch, n]`), weighted by the number of targets.
///
/// # Errors
/// The model's errors.
pub fn evaluate(
    model: &Gpt<f32>, batches: &[(Vec<u32>, Vec<u32>)], batch: usize, n: usize,
    acts: &mut Activations<f32>, par: Par,
) -> Result<f64> {
    let (mut sum, mut count) = (0.0, 0usize);
    for (x, y) in batches {
        let c = y.iter().filter(|&&t| t != crate::IGNORE).count();
        sum += model.forward(x, y, batch, n, acts, par)? * c as f64;
        count += c;
    }
    Ok(sum / count.max(1) as f64)
}
