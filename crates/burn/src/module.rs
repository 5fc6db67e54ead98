//! [`PolySketchAttention`]: the attention layer as a burn module.

use std::sync::{Arc, Mutex};

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use polysketch_attention::{
    Attention, AttentionConfig, AttentionError, AttentionKind, QkNorm, SketchKind,
};
use polysketch_sketch::{GaussianJl, PolySketch, TreeSketch};

use crate::fast::{self, PolySketchBackend};
use crate::portable;

/// Which implementation a forward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AttentionPath {
    /// Our kernels where the backend has them for the layer's kind
    /// ([`PolySketchBackend::supports`]), else the portable path.
    #[default]
    Auto,
    /// Burn tensor operations only, differentiated by burn's autodiff (every backend).
    Portable,
}

/// Configuration of [`PolySketchAttention`]: `PolySketchAttentionConfig::new(heads,
/// head_dim).with_kind(..)`, then [`init`](Self::init).
#[derive(Config, Debug)]
pub struct PolySketchAttentionConfig {
    /// Number of heads.
    pub heads: usize,
    /// Size \\(h\\) of each head.
    pub head_dim: usize,
    /// The attention kind (text form: `softmax`, `polynomial:p=4`, `learned+local`, `sliding`,
    /// `performer`, …).
    /// Default: learned sketches with exact local blocks (p = 4, r = 32, b = 256), the paper's
    /// best.
    #[config(default = "AttentionKind::polysketch(SketchKind::Learned, true)")]
    pub kind: AttentionKind,
    /// Causal (decoder) or bidirectional (encoder).
    #[config(default = true)]
    pub causal: bool,
    /// The layer norm of \\(q\\) and \\(k\\) (polynomial and PolySketch); false for the raw
    /// vectors of the paper's Section 2.1.
    #[config(default = true)]
    pub qk_layer_norm: bool,
    /// Seed of the random sketch and of the learned sketch's initial weights.
    #[config(default = 0)]
    pub seed: u64,
    /// Which implementation runs.
    #[config(default = "AttentionPath::Auto")]
    pub path: AttentionPath,
}

impl PolySketchAttentionConfig {
    /// The attention crate's configuration of this layer.
    pub fn attention_config(&self) -> AttentionConfig {
        AttentionConfig {
            heads: self.heads,
            head_dim: self.head_dim,
            kind: self.kind.with_seed(self.seed),
            qk_norm: if self.qk_layer_norm { QkNorm::LayerNorm } else { QkNorm::None },
            causal: self.causal,
        }
    }

    /// The module on `device`, its parameters initialised as the CPU layer initialises its
    /// own (so both paths start from the same numbers).
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`] for a configuration the layer refuses.
    pub fn try_init<B: Backend>(
        &self, device: &B::Device,
    ) -> Result<PolySketchAttention<B>, AttentionError> {
        let config = self.attention_config();
        let cpu = Attention::<f32>::new(config)?;
        let (mut names, mut shapes, mut params) = (vec![], vec![], vec![]);
        for p in cpu.parameters() {
            let data = TensorData::new(p.data.to_vec(), [p.data.len()]);
            params.push(Param::from_tensor(Tensor::from_data(data, device)));
            names.push(p.name);
            shapes.push(p.shape);
        }
        let random = match config.kind {
            AttentionKind::PolySketch(c) if c.sketch == SketchKind::Random => {
                Some(RandomSketch::of(config.head_dim, c.r, c.p, c.seed)?)
            }
            _ => cpu.performer_features().map(|favor| {
                let w = favor.omega();
                let (m, h) = (w.nrows(), w.ncols());
                let data = (0..h).flat_map(|c| (0..m).map(move |f| w[(f, c)]));
                RandomSketch::Performer {
                    omega_t: (data.collect(), [h, m]),
                    key_shift: favor.key_shift(),
                }
            }),
        };
        let meta =
            Meta { config, path: self.path, names, shapes, random, cpu: Arc::new(Mutex::new(cpu)) };
        Ok(PolySketchAttention { params, meta })
    }

    /// [`try_init`](Self::try_init) for configurations known to be valid.
    ///
    /// # Panics
    /// If the configuration is invalid (burn's `init` convention; use `try_init` to get the
    /// error).
    pub fn init<B: Backend>(&self, device: &B::Device) -> PolySketchAttention<B> {
        match self.try_init(device) {
            Ok(m) => m,
            Err(e) => panic!("PolySketchAttentionConfig::init: {e}"),
        }
    }
}

/// One `[rows, cols]` matrix, row-major.
pub(crate) type Matrix = (Vec<f32>, [usize; 2]);

/// The fixed projections of a random sketch (the CPU layer's, drawn from the same seed).
#[derive(Debug, Clone)]
pub(crate) enum RandomSketch {
    /// \\(p = 2\\): the JL map \\(x \mapsto xM\\), `[h, r]`.
    Linear(Matrix),
    /// \\(p \ge 4\\): the tree's projections per level, bottom first, in node order.
    Tree { levels: Vec<Vec<Matrix>>, r: usize },
    /// Performer's features: \\(\Omega^\top\\), `[h, m]`, and the keys' shift.
    Performer { omega_t: Matrix, key_shift: f32 },
}

impl RandomSketch {
    fn of(h: usize, r: usize, p: usize, seed: u64) -> Result<Self, AttentionError> {
        if p == 2 {
            let jl = GaussianJl::<f32>::new(h, r, seed)?;
            let m = jl.apply(faer::Mat::<f32>::identity(h, h).as_ref(), faer::Par::Seq)?;
            let data = (0..h).flat_map(|i| (0..r).map(move |c| (i, c))).map(|(i, c)| m[(i, c)]);
            return Ok(RandomSketch::Linear((data.collect(), [h, r])));
        }
        let tree = TreeSketch::<f32>::gaussian(h, r, p / 2, seed)?;
        let levels = (0..tree.levels())
            .map(|l| {
                let mats = tree.dense_projections(l).unwrap_or_default();
                mats.iter()
                    .map(|m| {
                        let (rows, cols) = (m.nrows(), m.ncols());
                        let data = (0..rows * cols).map(|at| m[(at / cols, at % cols)] as f32);
                        (data.collect(), [rows, cols])
                    })
                    .collect()
            })
            .collect();
        Ok(RandomSketch::Tree { levels, r })
    }
}

/// What the module keeps besides its parameters (not saved by recorders).
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) config: AttentionConfig,
    pub(crate) path: AttentionPath,
    /// The parameters' names and shapes, in the CPU layer's order.
    pub(crate) names: Vec<String>,
    pub(crate) shapes: Vec<Vec<usize>>,
    pub(crate) random: Option<RandomSketch>,
    /// The CPU layer the fast path runs (its parameters set from the module's at each call).
    pub(crate) cpu: Arc<Mutex<Attention<f32>>>,
}

impl Meta {
    pub(crate) fn has_layernorm(&self) -> bool {
        self.config.kind.normalises_qk() && self.config.qk_norm == QkNorm::LayerNorm
    }
}

/// PolySketch (or polynomial, softmax, or one of the baselines local, sliding, Performer,
/// Hedgehog) attention as a burn module: causal or bidirectional, `q`, `k`, `v`
/// `[batch, heads, n, h]` → `[batch, heads, n, h]`.
///
/// Parameters (burn [`Param`]s, seen by optimisers, recorders and gradient clipping): the q/k
/// layer norm's gain and bias and a learned sketch's networks (or Hedgehog's map), each flat,
/// in the order and
/// with the names of [`Attention::parameters`] ([`parameter_names`](Self::parameter_names)).
/// A random sketch is fixed by the config's seed, not a parameter: a record restores a module
/// built from the same config (burn saves configs beside records), and a learned sketch is
/// entirely in the record.
///
/// [`forward`](Self::forward) runs our kernels on backends that have them
/// ([`PolySketchBackend::supports`]: burn's ndarray backend for every kind, burn's cubecl
/// backends for causal PolySketch with the q/k layer norm, with or without autodiff) and the
/// portable path (burn operations) elsewhere; [`forward_portable`](Self::forward_portable) on
/// any backend.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Distribution, Tensor};
/// use polysketch_burn::PolySketchAttentionConfig;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let layer = PolySketchAttentionConfig::new(2, 16).with_kind("learned+local:r=8,block=32".parse()?).init::<B>(&device);
/// let x = || Tensor::<B, 4>::random([1, 2, 100, 16], Distribution::Normal(0.0, 1.0), &device).require_grad();
/// let (q, k, v) = (x(), x(), x());
/// let out = layer.forward(q.clone(), k, v);
/// let grads = out.sum().backward();
/// assert_eq!(q.grad(&grads).unwrap().dims(), [1, 2, 100, 16]);
/// # Ok::<(), polysketch_attention::AttentionError>(())
/// ```
#[derive(Module, Debug)]
pub struct PolySketchAttention<B: Backend> {
    params: Vec<Param<Tensor<B, 1>>>,
    #[module(skip)]
    meta: Meta,
}

impl<B: Backend> PolySketchAttention<B> {
    /// The attention configuration.
    pub fn config(&self) -> &AttentionConfig {
        &self.meta.config
    }

    /// The parameters' names (`ln.gain`, `ln.bias`, `sketch.node0.f1.w1`, …), in order.
    pub fn parameter_names(&self) -> &[String] {
        &self.meta.names
    }

    /// The parameters' shapes (row-major; each is stored flat), in order.
    pub fn parameter_shapes(&self) -> &[Vec<usize>] {
        &self.meta.shapes
    }

    /// The parameter `name` (flat), if the layer has one.
    pub fn parameter(&self, name: &str) -> Option<Tensor<B, 1>> {
        let i = self.meta.names.iter().position(|n| n == name)?;
        Some(self.params[i].val())
    }

    fn values(&self) -> Vec<Tensor<B, 1>> {
        self.params.iter().map(|p| p.val()).collect()
    }

    /// Checks that `q`, `k`, `v` are `[batch, heads, n, h]` alike with this layer's heads and
    /// head size.
    fn check(
        &self, q: &Tensor<B, 4>, k: &Tensor<B, 4>, v: &Tensor<B, 4>,
    ) -> Result<(), AttentionError> {
        const OP: &str = "PolySketchAttention::forward";
        let (heads, h) = (self.meta.config.heads, self.meta.config.head_dim);
        let [batch, _, n, _] = q.dims();
        for (input, x) in [("q", q), ("k", k), ("v", v)] {
            let dims = x.dims();
            if dims != [batch, heads, n, h] || batch == 0 || n == 0 {
                return Err(AttentionError::ShapeMismatch {
                    op: OP,
                    input,
                    expected: batch * heads * n * h,
                    got: dims.iter().product(),
                    shape: format!(
                        "[batch, heads {heads}, n, h {h}] with batch, n ≥ 1 and as q's ({batch}, {n}); got {dims:?}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The portable path (burn tensor operations) on any backend.
    ///
    /// # Errors
    /// Inputs not `[batch, heads, n, h]` alike.
    pub fn forward_portable(
        &self, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>, AttentionError> {
        self.check(&q, &k, &v)?;
        Ok(portable::forward(&self.meta, &self.values(), q, k, v))
    }
}

impl<B: PolySketchBackend> PolySketchAttention<B> {
    /// The layer's output, by our kernels where the backend has them, else by the portable
    /// path (see [`AttentionPath`]).
    ///
    /// # Errors
    /// Inputs not `[batch, heads, n, h]` alike; on the fast path, what the CPU layer refuses
    /// (non-finite inputs or parameters, scores past the number format: see the book's
    /// Errors chapter).
    pub fn try_forward(
        &self, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>, AttentionError> {
        self.check(&q, &k, &v)?;
        if B::supports(&self.meta.config) && self.meta.path == AttentionPath::Auto {
            return fast::forward(&self.meta, self.values(), q, k, v);
        }
        Ok(portable::forward(&self.meta, &self.values(), q, k, v))
    }

    /// [`try_forward`](Self::try_forward) in burn's infallible form: where the fast path
    /// refuses its inputs (a NaN, an overflow) the portable path runs instead and gives what
    /// burn operations give (NaN propagates).
    ///
    /// # Panics
    /// If `q`, `k`, `v` are not `[batch, heads, n, h]` alike (as burn's own layers do on a
    /// shape mismatch).
    pub fn forward(&self, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
        if let Err(e) = self.check(&q, &k, &v) {
            panic!("{e}");
        }
        match self.try_forward(q.clone(), k.clone(), v.clone()) {
            Ok(out) => out,
            Err(_) => portable::forward(&self.meta, &self.values(), q, k, v),
        }
    }
}
