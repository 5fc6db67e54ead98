//! The fast path: our CPU layer inside burn, its hand-written backward registered through
//! burn's autodiff backend extension (the pattern of burn's `custom-cubecl-kernel` example).
//!
//! [`PolySketchBackend`] extends burn's `Backend`. On `NdArray<f32>` the forward copies `q`,
//! `k`, `v` and the parameters out of the ndarray tensors, runs [`Attention::forward`] and
//! copies the output back; on burn's cubecl backends (`crate::gpu`) it runs the gpu crate's
//! kernels on the tensors' own buffers; on `Autodiff<B>` it registers an operation whose
//! backward runs the layer's backward on the state the forward kept. Other backends keep the
//! defaults (no fast path: the module runs the portable path).

use std::sync::{Arc, Mutex};

use burn::backend::NdArray;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use faer::Par;
use polysketch_attention::{Attention, AttentionConfig, AttentionError, Saved};

use crate::module::Meta;

/// What the CPU fast backward needs from its forward: the CPU layer, the parameter values the
/// forward used, and the layer's saved state.
#[derive(Debug, Clone)]
pub struct CpuState {
    layer: Arc<Mutex<Attention<f32>>>,
    params: Vec<f32>,
    dims: [usize; 4],
    saved: Arc<Mutex<Saved<f32>>>,
}

/// A burn backend with (or without) the fast path of [`PolySketchAttention`](crate::PolySketchAttention).
///
/// Implemented for `NdArray<f32>` (fast: the CPU layer, every kind), burn's cubecl backends
/// with f32 elements (fast: the gpu crate's kernels, for the kinds the device runs — causal
/// PolySketch with the q/k layer norm; the others run the portable path) and `Autodiff<B>`
/// (fast where `B` is). Another backend joins with an empty `impl PolySketchBackend for
/// MyBackend {}` and runs the portable path.
pub trait PolySketchBackend: burn::tensor::backend::Backend {
    /// What the fast forward keeps for the fast backward.
    type FastState: Clone + Send + core::fmt::Debug + 'static;

    /// Whether [`fast_attention`](Self::fast_attention) runs our kernels for `config`.
    fn supports(_config: &AttentionConfig) -> bool {
        false
    }

    /// The layer on primitives `[batch, heads, n, h]`, `params` flat in the layer's order
    /// (one zero when it has none).
    ///
    /// # Errors
    /// What the layer refuses; [`AttentionError::InvalidConfig`] where
    /// [`supports`](Self::supports) is false.
    fn fast_attention(
        _layer: &Arc<Mutex<Attention<f32>>>, _q: FloatTensor<Self>, _k: FloatTensor<Self>,
        _v: FloatTensor<Self>, _params: FloatTensor<Self>,
    ) -> Result<FloatTensor<Self>, AttentionError> {
        Err(no_fast_path())
    }

    /// The forward keeping what [`fast_backward`](Self::fast_backward) needs.
    ///
    /// # Errors
    /// As [`fast_attention`](Self::fast_attention).
    fn fast_forward_saving(
        _layer: &Arc<Mutex<Attention<f32>>>, _q: FloatTensor<Self>, _k: FloatTensor<Self>,
        _v: FloatTensor<Self>, _params: FloatTensor<Self>,
    ) -> Result<(FloatTensor<Self>, Self::FastState), AttentionError> {
        Err(no_fast_path())
    }

    /// `[dq, dk, dv, dparams]` given \\(\partial L/\partial\mathrm{out}\\); NaN where the layer
    /// refuses `grad` (a non-finite gradient propagates as in burn's own operations).
    ///
    /// # Panics
    /// On a backend without a fast path (the module never calls it there).
    fn fast_backward(_state: Self::FastState, _grad: FloatTensor<Self>) -> [FloatTensor<Self>; 4] {
        unimplemented!("fast_backward on a backend without a fast path")
    }
}

fn no_fast_path() -> AttentionError {
    AttentionError::InvalidConfig("this burn backend has no fast path: use the portable one".into())
}

/// The module's fast forward: the parameters concatenated into one flat tensor (so that one
/// operation carries them all), then the backend's fast attention.
pub(crate) fn forward<B: PolySketchBackend>(
    meta: &Meta, params: Vec<burn::tensor::Tensor<B, 1>>, q: Tensor<B, 4>, k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, AttentionError> {
    let flat = match params.is_empty() {
        true => Tensor::<B, 1>::zeros([1], &q.device()),
        false => Tensor::cat(params, 0),
    };
    let out = B::fast_attention(
        &meta.cpu,
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
        flat.into_primitive().tensor(),
    )?;
    Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

type Cpu = NdArray<f32>;

/// The values of an ndarray tensor and its dimensions.
fn values<const D: usize>(t: FloatTensor<Cpu>) -> Result<(Vec<f32>, [usize; D]), AttentionError> {
    let t = Tensor::<Cpu, D>::from_primitive(TensorPrimitive::Float(t));
    let dims = t.dims();
    let data = t.into_data().into_vec::<f32>().map_err(|e| {
        AttentionError::InvalidConfig(format!("the fast path reads f32 tensors: {e:?}"))
    })?;
    Ok((data, dims))
}

fn tensor<const D: usize>(data: Vec<f32>, dims: [usize; D]) -> FloatTensor<Cpu> {
    let device = Default::default();
    Tensor::<Cpu, D>::from_data(TensorData::new(data, dims), &device).into_primitive().tensor()
}

/// Sets the layer's parameters to `params` (flat, in order).
fn set_parameters(layer: &mut Attention<f32>, params: &[f32]) {
    let mut at = 0;
    for p in layer.parameters_mut() {
        let len = p.data.len();
        p.data.copy_from_slice(&params[at..at + len]);
        at += len;
    }
}

/// Runs the CPU layer's forward; returns the output, its dimensions and the state.
fn cpu_forward(
    layer: &Arc<Mutex<Attention<f32>>>, q: FloatTensor<Cpu>, k: FloatTensor<Cpu>,
    v: FloatTensor<Cpu>, params: FloatTensor<Cpu>,
) -> Result<(FloatTensor<Cpu>, CpuState), AttentionError> {
    let (q, dims) = values::<4>(q)?;
    let (k, _) = values::<4>(k)?;
    let (v, _) = values::<4>(v)?;
    let (params, _) = values::<1>(params)?;
    let mut guard = layer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    set_parameters(&mut guard, &params);
    let (out, saved) = guard.forward(&q, &k, &v, dims[0], dims[2], Par::rayon(0))?;
    let state = CpuState { layer: layer.clone(), params, dims, saved: Arc::new(Mutex::new(saved)) };
    Ok((tensor(out, dims), state))
}

impl PolySketchBackend for Cpu {
    type FastState = CpuState;

    fn supports(_: &AttentionConfig) -> bool {
        true
    }

    fn fast_attention(
        layer: &Arc<Mutex<Attention<f32>>>, q: FloatTensor<Self>, k: FloatTensor<Self>,
        v: FloatTensor<Self>, params: FloatTensor<Self>,
    ) -> Result<FloatTensor<Self>, AttentionError> {
        Ok(cpu_forward(layer, q, k, v, params)?.0)
    }

    fn fast_forward_saving(
        layer: &Arc<Mutex<Attention<f32>>>, q: FloatTensor<Self>, k: FloatTensor<Self>,
        v: FloatTensor<Self>, params: FloatTensor<Self>,
    ) -> Result<(FloatTensor<Self>, CpuState), AttentionError> {
        cpu_forward(layer, q, k, v, params)
    }

    fn fast_backward(state: CpuState, grad: FloatTensor<Self>) -> [FloatTensor<Self>; 4] {
        let dims = state.dims;
        let len: usize = dims.iter().product();
        let plen = state.params.len();
        let run = || -> Result<[Vec<f32>; 4], AttentionError> {
            let (g, _) = values::<4>(grad)?;
            let mut layer = state.layer.lock().unwrap_or_else(|p| p.into_inner());
            set_parameters(&mut layer, &state.params);
            let mut saved = state.saved.lock().unwrap_or_else(|p| p.into_inner());
            let grads = layer.backward(&mut saved, &g, Par::rayon(0))?;
            let mut dp: Vec<f32> = grads.params.into_iter().flat_map(|(_, g)| g).collect();
            dp.resize(plen, 0.0); // a layer without parameters carries one zero
            Ok([grads.dq, grads.dk, grads.dv, dp])
        };
        let [dq, dk, dv, dp] = run().unwrap_or_else(|_| {
            [vec![f32::NAN; len], vec![f32::NAN; len], vec![f32::NAN; len], vec![f32::NAN; plen]]
        });
        [tensor(dq, dims), tensor(dk, dims), tensor(dv, dims), tensor(dp, [plen])]
    }
}

/// The backward of the fast operation: the CPU layer's.
#[derive(Debug)]
struct FastAttentionBackward;

impl<B: PolySketchBackend> Backward<B, 4> for FastAttentionBackward {
    type State = B::FastState;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let computed = B::fast_backward(ops.state, grad);
        for (node, g) in ops.parents.into_iter().zip(computed) {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: PolySketchBackend, C: CheckpointStrategy> PolySketchBackend for Autodiff<B, C> {
    type FastState = ();

    fn supports(config: &AttentionConfig) -> bool {
        B::supports(config)
    }

    fn fast_attention(
        layer: &Arc<Mutex<Attention<f32>>>, q: FloatTensor<Self>, k: FloatTensor<Self>,
        v: FloatTensor<Self>, params: FloatTensor<Self>,
    ) -> Result<FloatTensor<Self>, AttentionError> {
        let nodes = [q.node.clone(), k.node.clone(), v.node.clone(), params.node.clone()];
        match FastAttentionBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, state) = B::fast_forward_saving(
                    layer,
                    q.primitive,
                    k.primitive,
                    v.primitive,
                    params.primitive,
                )?;
                Ok(prep.finish(state, out))
            }
            OpsKind::UnTracked(prep) => {
                let out = B::fast_attention(
                    layer,
                    q.primitive,
                    k.primitive,
                    v.primitive,
                    params.primitive,
                )?;
                Ok(prep.finish(out))
            }
        }
    }
}
