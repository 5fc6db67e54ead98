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
    let mut text = String::new();
    generate_streaming(model, tok, prompt, count, temperature, seed, &mut |piece| {
        text.push_str(piece);
        Ok(())
    })?;
    Ok(text)
}

/// Like [`generate`], handing the text to `sink` as it is generated, so that a long request
/// shows its first characters at once. Pieces are whole characters: a token that ends inside
/// a UTF-8 character waits for the next (at most 4 tokens; then the bytes are passed on with
/// the replacement character, as [`Tokenizer::decode`] does). An error of `sink` (a closed
/// output) ends the generation.
///
/// # Errors
/// The model's errors, and `sink`'s.
pub fn generate_streaming(
    model: &Gpt<f32>, tok: &Tokenizer, prompt: &str, count: usize, temperature: f64, seed: u64,
    sink: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<()> {
    let mut ids = tok.encode(prompt)?;
    if ids.is_empty() {
        ids = tok.encode("\n")?;
    }
    let mut state = model.new_state(1)?;
    let mut scratch = Activations::new();
    let mut logits =
        model.forward_chunk(&ids, ids.len(), &mut state, &mut scratch, Par::rayon(0))?;
    let mut rng = seeded_rng(seed);
    let mut pending = Vec::new();
    for i in 0..count {
        let next = pick(&logits, temperature, rng.random::<f64>());
        pending.push(next);
        let text = tok.decode(&pending);
        if !text.ends_with('\u{FFFD}') || pending.len() >= 4 || i + 1 == count {
            sink(&text)?;
            pending.clear();
        }
        if i + 1 < count {
            logits = model.forward_chunk(&[next], 1, &mut state, &mut scratch, Par::Seq)?;
        }
    }
    Ok(())
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
