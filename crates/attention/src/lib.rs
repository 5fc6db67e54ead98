//! Attention layers, causal or bidirectional, built on the sketch, tensoring and lowtri crates (paper Sections 2.1,
//! 2.3, 3): PolySketch attention — \\(\langle q, k\rangle^p\\) replaced by
//! \\(\langle\phi'(q), \phi'(k)\rangle\\), nonnegative, in time linear in the sequence length —
//! with the layer normalisation of \\(q\\) and \\(k\\) the paper prescribes.
//!
//! The weights of token \\(i\\) are
//! \\[ A_{ij} = \frac{\langle\phi'(\tilde q_i), \phi'(\tilde k_j)\rangle}{1 + \sum_{j' \le i}
//!     \langle\phi'(\tilde q_i), \phi'(\tilde k_{j'})\rangle}, \quad j \le i, \\]
//! and the output is \\(\sum_j A_{ij} v_j\\): one causal product
//! \\(\mathrm{lt}(\phi'(\tilde Q)\phi'(\tilde K)^\top)[V, \mathbf 1]\\) of the lowtri crate, in its
//! self-tensored form (or its local-exact form, with \\(\langle\tilde q_i, \tilde k_j\rangle^p\\)
//! inside the diagonal blocks).
//!
//! Three kinds are here, forward and backward, in f32 and f64:
//!
//! - PolySketch attention with random sketches (paper Algorithm 1) or learned ones (Algorithm 2,
//!   [`LearnedSketch`]: small networks shared by the heads, trained with the model), with or
//!   without exact local blocks;
//! - exact normalised polynomial attention (paper Section 2.1), tiled, \\(O(n^2)\\) time;
//! - exact causal softmax attention, tiled with an online softmax (flash-attention style, \\(O(n)\\)
//!   extra memory), the baseline every comparison is made against.
//!
//! Beyond one forward/backward over `[batch, heads, n, h]`:
//!
//! - **bidirectional attention** (`causal: false` in [`AttentionConfig`]), for encoders: every
//!   kind, forward and backward; PolySketch as \\(\phi'(\tilde Q)(\phi'(\tilde K)^\top[V, \mathbf
//!   1])\\) in linear time, exact inside the block diagonal with local blocks;
//! - **shapes** ([`Shape`], [`Attention::forward_shaped`]): inputs tokens-first
//!   (`[batch, n, heads, h]`, as a model has them after its projections) or heads-first;
//! - **decoding and carried state** ([`State`], [`Attention::decode_step`],
//!   [`Attention::forward_chunk`]): PolySketch keeps the running sums
//!   \(\sum_j \phi'(\tilde k_j)[v_j, 1]^\top\) plus the open local block, so a token costs
//!   \(O(1)\) in the context length; softmax and polynomial keep an ordinary KV cache;
//! - **packed sequences** ([`Attention::forward_packed`], [`Attention::backward_packed`]): many
//!   sequences in one row, given by offsets like `cu_seqlens`, with no attention across them;
//! - **a multi-head block** ([`MultiHead`]): q/k/v and output projections, optional RoPE, the
//!   attention kind — what one swaps into a transformer; [`MultiHeadCore`] runs the same over
//!   weights a model keeps elsewhere (the gpt crate's flat buffer);
//! - **named parameters** ([`Attention::parameters`], [`save_safetensors`],
//!   [`load_safetensors`]) so a model that is not ours can save and load the layer.
//!
//! # Example
//! ```
//! use faer::Par;
//! use polysketch_attention::{Attention, AttentionConfig, AttentionKind, PolySketchConfig, QkNorm};
//!
//! let config = AttentionConfig {
//!     heads: 2,
//!     head_dim: 16,
//!     kind: AttentionKind::PolySketch(PolySketchConfig { r: 8, block: 32, local: true, ..Default::default() }),
//!     qk_norm: QkNorm::LayerNorm, causal: true, // or QkNorm::None: the raw vectors of the paper's Section 2.1
//! };
//! let layer = Attention::<f32>::new(config)?;
//! let (batch, n) = (1, 100);
//! let len = batch * 2 * n * 16;
//! let q: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
//! let (k, v) = (q.iter().map(|x| x.cos()).collect::<Vec<_>>(), q.iter().map(|x| 2.0 * x).collect::<Vec<_>>());
//! let (out, mut saved) = layer.forward(&q, &k, &v, batch, n, Par::Seq)?;
//! assert_eq!(out.len(), len);
//! let grads = layer.backward(&mut saved, &vec![1.0; len], Par::Seq)?;
//! assert_eq!(grads.dq.len(), len);
//! # Ok::<(), polysketch_attention::AttentionError>(())
//! ```

/// The faer version this crate computes with (its matrices and `Par` in the signatures): use
/// it instead of pinning faer by hand.
pub use faer;
/// The float trait of the layer's element type (`f32`, `f64`): `Attention<T: Scalar>`.
pub use polysketch_core::Scalar;

mod bidirectional;
mod checks;
mod config;
pub mod dense;
#[cfg(feature = "gpu")]
pub mod device;
mod error;
pub mod hedgehog;
mod kernel;
mod kind;
mod layer;
pub mod layernorm;
pub mod learned;
mod multihead;
mod nn;
mod packed;
pub mod performer;
mod polynomial;
pub mod reference;
mod safetensors_io;
mod saved;
mod shape;
mod softmax;
pub mod state;
mod tiles;

pub use config::{AttentionConfig, QkNorm};
#[cfg(feature = "gpu")]
pub use device::{DeviceAttention, DeviceSaved};
pub use error::{AttentionError, Result};
pub use kind::{AttentionKind, PolySketchConfig, SketchKind};
pub use layer::{Attention, MAX_STATE_BYTES};
pub use learned::{LearnedSaved, LearnedSketch};
pub use multihead::{
    BlockGrads, MultiHead, MultiHeadConfig, MultiHeadCore, MultiHeadSaved, ProjectionGrads,
    Projections,
};
pub use nn::{Param, ParamMut, gelu, gelu_with_grad};
pub use packed::PackedSaved;
pub use safetensors_io::{load_safetensors, save_safetensors};
pub use saved::{Grads, Saved};
pub use shape::{HeadLayout, Shape};
pub use state::State;
