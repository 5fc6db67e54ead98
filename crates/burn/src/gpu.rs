//! The fast path on burn's cubecl backends (wgpu; CUDA with the `cuda` feature of the gpu
//! crate): the gpu crate's kernels on the tensors' own device buffers, on burn's own client, so
//! `q`, `k`, `v`, the output and their gradients never pass through the host. The parameters
//! (a few kilobytes) are read to the host at each call to build the device layer
//! ([`Attention::to_device`]), and the parameters' gradients come back through it.
//!
//! The device runs causal PolySketch with the q/k layer norm in f32 ([`supports`]); other
//! configurations and element types run the portable path.
//!
//! [`supports`]: crate::PolySketchBackend::supports

use std::sync::{Arc, Mutex};

use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::element::BoolElement;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime, FloatElement, IntElement};
use polysketch_attention::{
    Attention, AttentionConfig, AttentionError, AttentionKind, DeviceAttention, DeviceSaved, QkNorm,
};
use polysketch_gpu::{Buffer, Gpu};

use crate::PolySketchBackend;

/// What the device backward needs: the device layer of the forward (its parameters) and its
/// saved state, and the output's shape.
#[derive(Debug, Clone)]
pub struct DeviceState<R: CubeRuntime> {
    layer: DeviceAttention<R>,
    saved: DeviceSaved<R>,
    dims: [usize; 4],
    params: usize,
}

/// The tensor's buffer (made contiguous first), without a copy when it already is.
fn buffer<R: CubeRuntime>(t: CubeTensor<R>) -> (Buffer<R, f32>, CubeTensor<R>) {
    let t = into_contiguous(t);
    let len = t.meta.shape().num_elements();
    // SAFETY: `t` is a contiguous f32 tensor (checked by `supports` and the caller) of `len`
    // elements on this client; its handle keeps the allocation alive while the buffer lives.
    let b = unsafe { Buffer::from_handle(t.handle.clone(), len) };
    (b, t)
}

/// A contiguous f32 tensor over `b` on `like`'s client and device.
fn tensor<R: CubeRuntime>(
    b: Buffer<R, f32>, like: &CubeTensor<R>, dims: &[usize],
) -> CubeTensor<R> {
    let shape = Shape::from(dims.to_vec());
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        b.into_handle(),
        DType::F32,
    )
}

/// The parameters' values on the host, and the device layer with them.
fn device_layer<R: CubeRuntime>(
    cpu: &Arc<Mutex<Attention<f32>>>, gpu: &Gpu<R>, params: CubeTensor<R>,
) -> Result<(DeviceAttention<R>, usize), AttentionError> {
    let (b, _) = buffer(params);
    let values = gpu.download(&b)?;
    let mut layer = cpu.lock().unwrap_or_else(|p| p.into_inner());
    let mut at = 0;
    for p in layer.parameters_mut() {
        let len = p.data.len();
        p.data.copy_from_slice(&values[at..at + len]);
        at += len;
    }
    Ok((layer.to_device(gpu)?, values.len()))
}

fn forward<R: CubeRuntime>(
    cpu: &Arc<Mutex<Attention<f32>>>, q: CubeTensor<R>, k: CubeTensor<R>, v: CubeTensor<R>,
    params: CubeTensor<R>,
) -> Result<(CubeTensor<R>, DeviceState<R>), AttentionError> {
    let gpu = Gpu::from_client(q.client.clone());
    let shape = q.meta.shape();
    let dims = [shape[0], shape[1], shape[2], shape[3]];
    let (layer, count) = device_layer(cpu, &gpu, params)?;
    let ((qb, like), (kb, _), (vb, _)) = (buffer(q), buffer(k), buffer(v));
    let (out, saved) = layer.forward_buffers(&qb, &kb, &vb, dims[0], dims[2])?;
    let state = DeviceState { layer, saved, dims, params: count };
    Ok((tensor(out, &like, &dims), state))
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> PolySketchBackend
    for CubeBackend<R, F, I, BT>
{
    type FastState = DeviceState<R>;

    fn supports(config: &AttentionConfig) -> bool {
        matches!(config.kind, AttentionKind::PolySketch(_))
            && config.qk_norm == QkNorm::LayerNorm
            && config.causal
            && core::any::TypeId::of::<F>() == core::any::TypeId::of::<f32>()
    }

    fn fast_attention(
        layer: &Arc<Mutex<Attention<f32>>>, q: FloatTensor<Self>, k: FloatTensor<Self>,
        v: FloatTensor<Self>, params: FloatTensor<Self>,
    ) -> Result<FloatTensor<Self>, AttentionError> {
        Ok(forward(layer, q, k, v, params)?.0)
    }

    fn fast_forward_saving(
        layer: &Arc<Mutex<Attention<f32>>>, q: FloatTensor<Self>, k: FloatTensor<Self>,
        v: FloatTensor<Self>, params: FloatTensor<Self>,
    ) -> Result<(FloatTensor<Self>, Self::FastState), AttentionError> {
        forward(layer, q, k, v, params)
    }

    fn fast_backward(state: Self::FastState, grad: FloatTensor<Self>) -> [FloatTensor<Self>; 4] {
        let gpu = Gpu::from_client(grad.client.clone());
        let (g, like) = buffer(grad);
        let dims = state.dims;
        let len = dims.iter().product::<usize>();
        let nan = |n: usize| gpu.upload(&vec![f32::NAN; n]);
        let run = || -> Result<[Buffer<R, f32>; 4], AttentionError> {
            let (dq, dk, dv, params) = state.layer.backward_buffers(&state.saved, &g)?;
            let mut flat: Vec<f32> = params.into_iter().flat_map(|(_, g)| g).collect();
            flat.resize(state.params, 0.0); // a layer without parameters carries one zero
            Ok([dq, dk, dv, gpu.upload(&flat)?])
        };
        let [dq, dk, dv, dp] = match run() {
            Ok(b) => b,
            // a gradient the kernels refuse propagates as NaN; a device that fails to allocate
            // even that has nothing left to report to
            Err(_) => match (nan(len), nan(len), nan(len), nan(state.params)) {
                (Ok(a), Ok(b), Ok(c), Ok(d)) => [a, b, c, d],
                _ => panic!("PolySketchAttention backward: the device failed"),
            },
        };
        let t = |b| tensor(b, &like, &dims);
        [t(dq), t(dk), t(dv), tensor(dp, &like, &[state.params])]
    }
}
