//! A mini GPT on CPU with hand-written forward and backward passes over any attention kind of
//! `polysketch-attention` — softmax, exact polynomial, PolySketch with random or learned
//! sketches, with or without exact local blocks — for reproducing the comparisons of the
//! PolySketchFormer paper (Section 4, Appendices E, F, I) at laptop scale.
//!
//! - [`Gpt`]: decoder-only, pre-LayerNorm, the Transformer++ recipe (RoPE and a sinusoidal
//!   position embedding, GLU feed-forward with GELU, dense layers without bias, tied
//!   embeddings); parameters in one flat buffer of named tensors; [`Gpt::forward`] /
//!   [`Gpt::backward`] for training, [`Gpt::forward_chunk`] with a recurrent [`InferState`] for
//!   generation. Each layer is a forward/backward pair in [`ops`].
//! - [`AdamW`] with decoupled weight decay, [`Schedule`] (linear warm-up, then linear or cosine
//!   decay), gradient-norm clipping.
//! - [`data`]: the byte tokenizer, a text corpus with a deterministic split and batches;
//!   [`tasks`]: induction heads and selective copying with exact accuracy.
//! - [`checkpoint`]: safetensors weights and optimiser state plus a JSON file, written atomically.
//!
//! Everything is deterministic for a seed, whatever the number of threads.
//!
//! # Example
//! ```
//! use faer::Par;
//! use polysketch_gpt::{Activations, Gpt, GptConfig};
//!
//! let config = GptConfig {
//!     vocab: 256, context: 64, d_model: 32, layers: 2, heads: 2, seed: 1,
//!     attention: "learned+local:p=4,r=8,block=16".parse()?,
//! };
//! let model = Gpt::<f32>::new(config)?;
//! let tokens: Vec<u32> = b"hello, polysketch world! ".iter().map(|&b| b as u32).collect();
//! let (inputs, targets) = (&tokens[..24], &tokens[1..25]);
//! let mut acts = Activations::new();
//! let loss = model.forward(inputs, targets, 1, 24, &mut acts, Par::Seq)?;
//! assert!(loss.is_finite() && loss > 0.0); // mean cross-entropy, nats per token
//! let mut grads = vec![0.0f32; model.num_params()];
//! model.backward(&mut acts, &mut grads, Par::Seq)?;
//! # Ok::<(), polysketch_gpt::GptError>(())
//! ```

/// The faer version this crate computes with (its matrices and `Par` in the signatures): use
/// it instead of pinning faer by hand.
pub use faer;

mod block;
pub mod checkpoint;
mod config;
pub mod data;
mod error;
mod model;
pub mod ops;
mod optim;
pub mod run;
pub mod sample;
pub mod tasks;
mod train;

pub use config::GptConfig;
pub use error::{GptError, Result};
pub use model::{Activations, Gpt, InferState, MAX_ACTIVATION_BYTES, ParamInfo, views, views_mut};
pub use ops::IGNORE;
pub use optim::{AdamW, Decay, Schedule};
/// The attention kind of a model's blocks (the attention crate's).
pub use polysketch_attention::AttentionKind;
pub use sample::{generate, generate_streaming};
pub use train::{Collective, SingleProcess, StepStats, TrainConfig, Trainer, evaluate, shard};
