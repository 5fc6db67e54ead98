//! Sampling from a model with the recurrent decoding of its attention layers.

use faer::Par;
use polysketch_core::seeded_rng;
use rand::RngExt;

use crate::data::Tokenizer;
use crate::{Activations, Gpt, Result};

/// Generates `count` tokens after `prompt` with the recurrent decoding of the attention layers:
/// the prompt is prefilled in one chunk, then each token costs one step. Sampling at
/// `temperature` (0: greedy) from a seeded generator.
///
/// # Errors
/// The model's errors.
pub fn generate(
    model: &Gpt<f32>, tok: &Tokenizer, prompt: &str, count: usize, temperature: f64, seed: u64,
) -> Result<String> {
    let mut ids = tok.encode(prompt)?;
    if ids.is_empty() {
        ids = tok.encode("\n")?;
    }
    let mut state = model.new_state(1)?;
    let mut scratch = Activations::new();
    let mut logits =
        model.forward_chunk(&ids, ids.len(), &mut state, &mut scratch, Par::rayon(0))?;
    let mut rng = seeded_rng(seed);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let next = pick(&logits, temperature, rng.random::<f64>());
        out.push(next);
        logits = model.forward_chunk(&[next], 1, &mut state, &mut scratch, Par::Seq)?;
    }
    Ok(tok.decode(&out))
}

/// A token from `logits`: arg-max at temperature 0, else the inverse CDF at `u` of
/// softmax(logits / temperature).
fn pick(logits: &[f32], temperature: f64, u: f64) -> u32 {
    let arg = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
    if temperature <= 0.0 {
        return arg as u32;
    }
    let max = f64::from(logits[arg]);
    let w: Vec<f64> = logits.iter().map(|&l| ((f64::from(l) - max) / temperature).exp()).collect();
    let mut target = u * w.iter().sum::<f64>();
    for (i, wi) in w.iter().enumerate() {
        target -= wi;
        if target <= 0.0 {
            return i as u32;
        }
    }
    arg as u32
}
