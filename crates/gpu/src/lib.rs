//! GPU kernels for PolySketch attention, written once with [cubecl] and run on CUDA or,
//! through wgpu, on any Vulkan/Metal/DX12 device (Mesa's software Vulkan driver in CI).
//!
//! What is here, forward and backward, every kernel checked against the CPU crates:
//!
//! - [`TreeSketchGpu`]: the degree-\\(q\\) Gaussian tree sketch \\(S^\top x^{\otimes q}\\) (dense
//!   projections by a tiled [`Gpu::matmul`], Hadamard products of the children);
//! - [`Gpu::lowtri_forward`] / [`Gpu::lowtri_backward`]: the block product
//!   \\(\mathrm{lt}(L^{\otimes 2}R^{\otimes 2\top})C\\) with per-block states \\(H_l =
//!   R_l^{\otimes 2\top}C_l\\) in the self-tensored feature space, their exclusive prefix over
//!   blocks and \\(A_lZ_l\\), the \\(r^2\\)-wide features formed in registers and never stored
//!   per row; diagonal blocks as \\((L_lR_l^\top)^{\circ 2}\\) or exact
//!   \\((Q_lK_l^\top)^{\circ p}\\), their scores kept in shared memory;
//! - [`Gpu::layernorm_forward`] / [`Gpu::layernorm_backward`];
//! - [`LearnedSketchGpu`]: the learned sketches of Algorithm 2 (small networks on
//!   [`Gpu::matmul`]), with their parameter gradients;
//! - [`PolySketchGpu`]: causal PolySketch attention with random or learned sketches, with or
//!   without exact local blocks, on `[batch, heads, n, h]` buffers of `f32` or `bf16` (accumulated in `f32`).
//!
//! Everything is generic over the cubecl [`Runtime`]: the features `wgpu` (default) and `cuda`
//! pick which runtimes are compiled in (`Wgpu`, `Cuda`).
//!
//!
//! # Example
//! ```
//! # #[cfg(feature = "wgpu")]
//! # fn example() -> Result<(), polysketch_gpu::GpuError> {
//! use polysketch_gpu::{Gpu, PolySketchGpu, PolySketchGpuConfig, SketchWeights, Wgpu};
//!
//! let gpu = Gpu::<Wgpu>::new(&Default::default())?; // GpuError::NoDevice without an adapter
//! let config = PolySketchGpuConfig { heads: 2, head_dim: 8, p: 4, r: 4, block: 16, local: true };
//! // the degree-2 tree: one level, [h, 2r] (G₁ then G₂)
//! let w: Vec<f32> = (0..8 * 8).map(|i| ((i as f32) * 0.7).sin()).collect();
//! let layer = PolySketchGpu::new(&gpu, config, &[1.0; 8], &[0.0; 8], SketchWeights::Random(&[w]))?;
//! let (batch, n) = (1, 40);
//! let x: Vec<f32> = (0..batch * 2 * n * 8).map(|i| (i as f32 * 0.37).sin()).collect();
//! let q = gpu.upload(&x)?;
//! let (out, saved) = layer.forward(&gpu, &q, &q, &q, batch, n)?;
//! let grads = layer.backward(&gpu, &saved, &gpu.upload(&vec![1.0f32; x.len()])?)?;
//! assert_eq!(gpu.download(&grads.dq)?.len(), x.len());
//! # let _ = out;
//! # Ok(())
//! # }
//! # #[cfg(feature = "wgpu")]
//! # fn main() -> Result<(), polysketch_gpu::GpuError> {
//! #     // no device: skipped, unless POLYSKETCH_REQUIRE_GPU is set
//! #     match example() {
//! #         Err(polysketch_gpu::GpuError::NoDevice { .. }) if !polysketch_gpu::testing::required() => Ok(()),
//! #         r => r,
//! #     }
//! # }
//! # #[cfg(not(feature = "wgpu"))]
//! # fn main() {}
//! ```

#[macro_use]
mod launch;
mod attention;
mod device;
mod error;
mod learned;
mod lowtri;
mod ops;
mod probe;
mod sketch;

/// Devices for tests, doctests and examples: skip without a device, unless CI asks for one.
pub mod testing {
    pub use crate::probe::{REQUIRE_GPU_ENV, device_or_skip, required};
}

pub use attention::{
    PolySketchGpu, PolySketchGpuConfig, PolySketchGpuGrads, PolySketchGpuSaved, SketchWeights,
};
pub use cubecl::Runtime;
pub use cubecl::prelude::{CubeElement, Float};
pub use device::{Buffer, Gpu};
pub use error::{GpuError, Result};
pub use learned::{LearnedSavedGpu, LearnedSketchGpu, PARAMS_PER_NETWORK};
pub use lowtri::{DiagonalGpu, LtGrads, LtSaved, LtShape};
pub use ops::{LN_EPS, LnState, MAX_ELEMENTS, Strided};
pub use sketch::{SketchSaved, TreeSketchGpu};

/// The wgpu runtime (Vulkan, Metal, DX12, WebGPU).
#[cfg(feature = "wgpu")]
pub type Wgpu = cubecl::wgpu::WgpuRuntime;

/// The CUDA runtime.
#[cfg(feature = "cuda")]
pub type Cuda = cubecl::cuda::CudaRuntime;

/// `bf16`, the half-width float the kernels accept as input.
pub use half::bf16;
