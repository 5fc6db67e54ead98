//! The same layer on a GPU (feature `gpu`): [`Attention::to_device`] uploads a PolySketch layer
//! (random or learned sketch) to a cubecl device, whose forward and backward take and give what the
//! CPU layer's do. A device choice, not a different model: the output and gradients agree with
//! [`Attention::forward`] / [`Attention::backward`] to `f32` rounding.
//!
//! Supported on the device: PolySketch attention with random or learned sketches (any even `p`
//! with `p/2` a power of two), with or without exact local blocks. Exact polynomial and softmax
//! attention run on the CPU only; asking for them gives [`AttentionError::InvalidConfig`].
//!
//! # Example
//! ```
//! # #[cfg(feature = "wgpu")]
//! # fn example() -> Result<(), polysketch_attention::AttentionError> {
//! use polysketch_attention::device::{Gpu, Wgpu};
//! use polysketch_attention::{Attention, AttentionConfig, AttentionKind, PolySketchConfig};
//!
//! let config = AttentionConfig {
//!     heads: 2,
//!     head_dim: 16,
//!     kind: AttentionKind::PolySketch(PolySketchConfig { r: 8, block: 32, local: true, ..Default::default() }),
//!     qk_norm: Default::default(), causal: true, // the layer norm: the device kernels run it
//! };
//! let layer = Attention::<f32>::new(config)?;
//! let gpu = Gpu::<Wgpu>::new(&Default::default())?; // GpuError::NoDevice without an adapter
//! let on_gpu = layer.to_device(&gpu)?;
//! let (batch, n) = (1, 100);
//! let q: Vec<f32> = (0..batch * 2 * n * 16).map(|i| (i as f32 * 0.37).sin()).collect();
//! let (out, saved) = on_gpu.forward(&q, &q, &q, batch, n)?;
//! let grads = on_gpu.backward(&saved, &vec![1.0; out.len()])?;
//! assert_eq!(grads.params[0].0, "ln.gain");
//! # Ok(())
//! # }
//! # #[cfg(feature = "wgpu")]
//! # fn main() -> Result<(), polysketch_attention::AttentionError> {
//! #     use polysketch_attention::{AttentionError, device::{GpuError, testing}};
//! #     // no device: skipped, unless POLYSKETCH_REQUIRE_GPU is set
//! #     match example() {
//! #         Err(AttentionError::Gpu(GpuError::NoDevice { .. })) if !testing::required() => Ok(()),
//! #         r => r,
//! #     }
//! # }
//! # #[cfg(not(feature = "wgpu"))]
//! # fn main() {}
//! ```

use faer::Par;
#[cfg(feature = "cuda")]
pub use polysketch_gpu::Cuda;
#[cfg(feature = "wgpu")]
pub use polysketch_gpu::Wgpu;
pub use polysketch_gpu::{Buffer, CubeElement, Float, Gpu, GpuError, Runtime, bf16, testing};
use polysketch_gpu::{PolySketchGpu, PolySketchGpuConfig, PolySketchGpuSaved, SketchWeights};

use crate::checks::{check_finite, check_len, check_outputs, check_positive, check_qkv, shape_of};
use crate::{Attention, AttentionConfig, AttentionError, AttentionKind, Grads, Result};

/// A PolySketch layer on a device of runtime `R` (see the [module](self) docs).
#[derive(Debug, Clone)]
pub struct DeviceAttention<R: Runtime> {
    gpu: Gpu<R>,
    layer: PolySketchGpu<R>,
    config: AttentionConfig,
    /// The names of [`Attention::parameters`], in order.
    names: Vec<String>,
}

/// What [`DeviceAttention::backward`] needs from the forward (device buffers).
#[derive(Debug, Clone)]
pub struct DeviceSaved<R: Runtime> {
    batch: usize,
    n: usize,
    inner: PolySketchGpuSaved<R>,
}

impl Attention<f32> {
    /// This layer on a device: a snapshot of its parameters (upload again after changing
    /// them).
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`] for kinds the device does not run (polynomial,
    /// softmax, [`QkNorm::None`](crate::QkNorm::None), bidirectional);
    /// [`AttentionError::Gpu`] if the upload fails.
    pub fn to_device<R: Runtime>(&self, gpu: &Gpu<R>) -> Result<DeviceAttention<R>> {
        let AttentionConfig { heads, head_dim, kind, qk_norm, causal } = self.config;
        if qk_norm != crate::QkNorm::LayerNorm {
            return Err(AttentionError::InvalidConfig(format!(
                "Attention::to_device: the device kernels normalise q and k with the layer norm; \
                 {qk_norm:?} runs on the CPU"
            )));
        }
        if !causal {
            return Err(AttentionError::InvalidConfig(
                "Attention::to_device: the device kernels are causal; bidirectional attention \
                 runs on the CPU"
                    .into(),
            ));
        }
        let AttentionKind::PolySketch(c) = kind else {
            return Err(AttentionError::InvalidConfig(format!(
                "Attention::to_device: the device runs PolySketch attention; {kind:?} runs on the \
                 CPU"
            )));
        };
        let levels: Vec<Vec<f32>>;
        let learned_params;
        let weights = match (self.sketch.as_deref(), &self.learned) {
            (Some(sketch), _) => {
                levels = sketch
                    .dense_levels()
                    .ok_or_else(|| {
                        AttentionError::InvalidConfig(format!(
                            "Attention::to_device: the sketch {} has no dense form",
                            sketch.name()
                        ))
                    })?
                    .iter()
                    .map(|m| {
                        (0..m.nrows())
                            .flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)] as f32))
                            .collect()
                    })
                    .collect();
                SketchWeights::Random(&levels)
            }
            (None, Some(learned)) => {
                learned_params = learned.parameters();
                SketchWeights::Learned(&learned_params.iter().map(|p| p.data).collect::<Vec<_>>())
            }
            (None, None) => {
                return Err(AttentionError::InvalidState {
                    op: "Attention::to_device",
                    reason: "internal: a PolySketch layer without a sketch".into(),
                });
            }
        };
        let config =
            PolySketchGpuConfig { heads, head_dim, p: c.p, r: c.r, block: c.block, local: c.local };
        let layer = PolySketchGpu::new(gpu, config, &self.ln_gain, &self.ln_bias, weights)?;
        Ok(DeviceAttention {
            gpu: gpu.clone(),
            layer,
            config: self.config,
            names: self.parameters().into_iter().map(|p| p.name).collect(),
        })
    }
}

impl<R: Runtime> DeviceAttention<R> {
    /// The device.
    pub fn gpu(&self) -> &Gpu<R> {
        &self.gpu
    }

    /// The layer's configuration.
    pub fn config(&self) -> &AttentionConfig {
        &self.config
    }

    /// As [`Attention::forward`], on the device: `q`, `k`, `v`: `[batch, heads, n, h]`
    /// row-major → the output (same shape) and the state for the backward.
    ///
    /// # Errors
    /// As [`Attention::forward`]: [`AttentionError::InvalidArgument`] for `batch` or `n` = 0,
    /// [`AttentionError::ShapeMismatch`], [`AttentionError::NonFinite`],
    /// [`AttentionError::Overflow`] for a non-finite output of finite inputs;
    /// [`AttentionError::Gpu`] past the kernels' limits or on a device failure.
    pub fn forward(
        &self, q: &[f32], k: &[f32], v: &[f32], batch: usize, n: usize,
    ) -> Result<(Vec<f32>, DeviceSaved<R>)> {
        const OP: &str = "DeviceAttention::forward";
        check_positive(OP, batch, n)?;
        check_qkv(OP, &self.config, [q, k, v], batch, n, Par::Seq)?;
        let up = |x: &[f32]| self.gpu.upload(x);
        let (out, saved) = self.forward_buffers(&up(q)?, &up(k)?, &up(v)?, batch, n)?;
        let out = self.gpu.download(&out)?;
        check_outputs(OP, &[("q", q), ("k", k)], &[("out", &out)])?;
        Ok((out, saved))
    }

    /// The forward on device buffers of `f32` or `bf16` (`[batch, heads, n, h]`), for callers
    /// that keep their activations on the device; accumulation is `f32` whatever `E`.
    ///
    /// # Errors
    /// As [`forward`](Self::forward), except that values are not checked for finiteness
    /// (they would have to be read back).
    pub fn forward_buffers<E: Float + CubeElement>(
        &self, q: &Buffer<R, E>, k: &Buffer<R, E>, v: &Buffer<R, E>, batch: usize, n: usize,
    ) -> Result<(Buffer<R, E>, DeviceSaved<R>)> {
        check_positive("DeviceAttention::forward", batch, n)?;
        let (out, inner) = self.layer.forward(&self.gpu, q, k, v, batch, n)?;
        Ok((out, DeviceSaved { batch, n, inner }))
    }

    /// As [`Attention::backward`], on the device: gradients with respect to `q`, `k`, `v` and
    /// the named parameters (`ln.gain`, `ln.bias`, a learned sketch's), given \\(\partial L/\partial\mathrm{out}\\).
    ///
    /// # Errors
    /// [`AttentionError::ShapeMismatch`] or [`AttentionError::NonFinite`] for a bad `d_out`;
    /// [`AttentionError::Gpu`] on a device failure.
    pub fn backward(&self, saved: &DeviceSaved<R>, d_out: &[f32]) -> Result<Grads<f32>> {
        const OP: &str = "DeviceAttention::backward";
        let (c, batch, n) = (&self.config, saved.batch, saved.n);
        let total = batch * c.heads * n * c.head_dim;
        check_len(OP, "d_out", d_out, total, shape_of(c, batch, n))?;
        check_finite(OP, "d_out", d_out, Par::Seq)?;
        let (dq, dk, dv, params) = self.backward_buffers(saved, &self.gpu.upload(d_out)?)?;
        let (dq, dk, dv) =
            (self.gpu.download(&dq)?, self.gpu.download(&dk)?, self.gpu.download(&dv)?);
        let outputs = [("dq", &dq[..]), ("dk", &dk[..]), ("dv", &dv[..])];
        check_outputs(OP, &[("d_out", d_out)], &outputs)?;
        if params.iter().any(|(_, g)| !polysketch_core::all_finite(g)) {
            return Err(crate::checks::overflow(
                OP,
                "the parameters' gradients",
                &[("d_out", d_out)],
            ));
        }
        Ok(Grads { dq, dk, dv, params })
    }

    /// The backward on device buffers: `(dq, dk, dv)` on the device (type `E`), the parameter
    /// gradients on the host, named as [`Attention::parameters`].
    ///
    /// # Errors
    /// As [`backward`](Self::backward), without the finiteness check.
    #[allow(clippy::type_complexity)]
    pub fn backward_buffers<E: Float + CubeElement>(
        &self, saved: &DeviceSaved<R>, d_out: &Buffer<R, E>,
    ) -> Result<(Buffer<R, E>, Buffer<R, E>, Buffer<R, E>, Vec<(String, Vec<f32>)>)> {
        let g = self.layer.backward(&self.gpu, &saved.inner, d_out)?;
        let values = [g.d_gain, g.d_bias].into_iter().chain(g.d_sketch);
        let params = self.names.iter().cloned().zip(values).collect();
        Ok((g.dq, g.dk, g.dv, params))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_device_layer_norm_has_the_cpu_epsilon() {
        assert_eq!(
            polysketch_gpu::LN_EPS,
            crate::layernorm::LN_EPS as f32,
            "the GPU crate keeps its own copy of the layer norm's epsilon (it has no faer)"
        );
    }
}
