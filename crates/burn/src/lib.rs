//! PolySketch attention as a [burn](https://burn.dev) module (burn 0.21, on cubecl 0.10 like
//! our GPU kernels).
//!
//! - [`PolySketchAttention`]: the attention layer (every kind of the attention crate — random or
//!   learned PolySketch with or without exact local blocks, exact polynomial, softmax — causal
//!   or bidirectional), configured through burn's `Config` derive, its layer-norm and
//!   learned-sketch weights burn `Param`s.
//! - [`PolySketchMultiHead`]: the block with q/k/v/o projections and optional RoPE, what one
//!   swaps into a burn transformer.
//! - Two implementations: a **portable path** in burn tensor operations, differentiated by
//!   burn's autodiff, on every backend; **fast paths** with hand-written backwards registered
//!   through burn's autodiff extension ([`PolySketchBackend`]): our CPU layer on burn's ndarray
//!   backend (every kind), the gpu crate's cubecl kernels on burn's cubecl backends (wgpu;
//!   causal PolySketch with the q/k layer norm, f32), on the tensors' own device buffers.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Distribution, Tensor};
//! use polysketch_burn::{PolySketchMultiHeadConfig};
//!
//! let device = Default::default();
//! // the one change from softmax: the kind
//! let block = PolySketchMultiHeadConfig::new(64, 4).with_kind("learned+local:r=16,block=64".parse()?).init::<NdArray>(&device);
//! let x = Tensor::<NdArray, 3>::random([2, 300, 64], Distribution::Normal(0.0, 1.0), &device);
//! assert_eq!(block.forward(x).dims(), [2, 300, 64]);
//! # Ok::<(), polysketch_attention::AttentionError>(())
//! ```

mod fast;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu;
mod module;
mod multihead;
mod portable;

pub use fast::{CpuState, PolySketchBackend};
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use gpu::DeviceState;
pub use module::{AttentionPath, PolySketchAttention, PolySketchAttentionConfig};
pub use multihead::{PolySketchMultiHead, PolySketchMultiHeadConfig};
/// The attention crate, whose kinds and errors the module uses.
pub use polysketch_attention;
