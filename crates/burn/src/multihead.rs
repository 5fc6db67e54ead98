//! [`PolySketchMultiHead`]: projections, optional RoPE and [`PolySketchAttention`] as one burn
//! module — the block one swaps into a burn transformer.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use polysketch_attention::{AttentionError, AttentionKind, SketchKind};

use crate::{AttentionPath, PolySketchAttention, PolySketchAttentionConfig, PolySketchBackend};

/// Configuration of [`PolySketchMultiHead`]: `PolySketchMultiHeadConfig::new(d_model,
/// heads).with_kind(..)`.
#[derive(Config, Debug)]
pub struct PolySketchMultiHeadConfig {
    /// The model width \\(C\\) (input and output rows).
    pub d_model: usize,
    /// Number of heads; each has \\(C/\text{heads}\\) dimensions.
    pub heads: usize,
    /// The attention kind (see [`PolySketchAttentionConfig::kind`]).
    #[config(default = "AttentionKind::polysketch(SketchKind::Learned, true)")]
    pub kind: AttentionKind,
    /// Causal (decoder) or bidirectional (encoder).
    #[config(default = true)]
    pub causal: bool,
    /// Rotary position embeddings (\\(\theta = 10000\\), pairs \\((x_i, x_{i+h/2})\\)) on q and k.
    #[config(default = true)]
    pub rope: bool,
    /// The q/k layer norm of the polynomial and PolySketch kinds.
    #[config(default = true)]
    pub qk_layer_norm: bool,
    /// Seed of the sketch.
    #[config(default = 0)]
    pub seed: u64,
    /// Which implementation the attention runs.
    #[config(default = "AttentionPath::Auto")]
    pub path: AttentionPath,
}

impl PolySketchMultiHeadConfig {
    /// The attention inside.
    pub fn attention(&self) -> PolySketchAttentionConfig {
        PolySketchAttentionConfig::new(
            self.heads,
            self.d_model.checked_div(self.heads).unwrap_or(0),
        )
        .with_kind(self.kind)
        .with_causal(self.causal)
        .with_qk_layer_norm(self.qk_layer_norm)
        .with_seed(self.seed)
        .with_path(self.path)
    }

    /// The block on `device`: projections without bias (burn's default initialisation), the
    /// attention as [`PolySketchAttentionConfig::try_init`] makes it.
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`]: `heads` of 0 or not dividing `d_model`, and what the
    /// attention refuses.
    pub fn try_init<B: Backend>(
        &self, device: &B::Device,
    ) -> Result<PolySketchMultiHead<B>, AttentionError> {
        if self.heads == 0 || !self.d_model.is_multiple_of(self.heads) {
            return Err(AttentionError::InvalidConfig(format!(
                "heads ({}) must divide d_model ({})",
                self.heads, self.d_model
            )));
        }
        let attention = self.attention().try_init(device)?;
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        Ok(PolySketchMultiHead {
            wqkv: linear(self.d_model, 3 * self.d_model),
            wo: linear(self.d_model, self.d_model),
            attention,
            heads: self.heads,
            rope: self.rope,
        })
    }

    /// [`try_init`](Self::try_init) for configurations known to be valid.
    ///
    /// # Panics
    /// If the configuration is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PolySketchMultiHead<B> {
        match self.try_init(device) {
            Ok(m) => m,
            Err(e) => panic!("PolySketchMultiHeadConfig::init: {e}"),
        }
    }
}

/// A multi-head attention block: \\([Q, K, V] = XW_{qkv}\\), RoPE on \\(Q, K\\), the attention per
/// head, heads merged, \\(\cdot W_o\\). `x`: `[batch, n, C]` → `[batch, n, C]`.
#[derive(Module, Debug)]
pub struct PolySketchMultiHead<B: Backend> {
    wqkv: Linear<B>,
    wo: Linear<B>,
    attention: PolySketchAttention<B>,
    heads: usize,
    rope: bool,
}

/// RoPE at positions `0..n` on `x` (`[batch, heads, n, h]`): pairs \\((x_i, x_{i+h/2})\\) turn by
/// \\(t\,10000^{-2i/h}\\).
pub fn rope<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, hd, n, h] = x.dims();
    let half = h / 2;
    if half == 0 {
        return x;
    }
    let device = x.device();
    let angle = |t: usize, i: usize| t as f64 * 10000f64.powf(-2.0 * i as f64 / h as f64);
    let table = |f: fn(f64) -> f64| {
        let data: Vec<f32> =
            (0..n * half).map(|at| f(angle(at / half, at % half)) as f32).collect();
        Tensor::<B, 4>::from_data(TensorData::new(data, [1, 1, n, half]), &device)
    };
    let (cos, sin) = (table(f64::cos), table(f64::sin));
    let lo = x.clone().slice([0..b, 0..hd, 0..n, 0..half]);
    let hi = x.clone().slice([0..b, 0..hd, 0..n, half..2 * half]);
    let mut parts = vec![lo.clone() * cos.clone() - hi.clone() * sin.clone(), lo * sin + hi * cos];
    if h % 2 == 1 {
        parts.push(x.slice([0..b, 0..hd, 0..n, h - 1..h]));
    }
    Tensor::cat(parts, 3)
}

impl<B: Backend> PolySketchMultiHead<B> {
    /// The attention inside (its parameters, configuration).
    pub fn attention(&self) -> &PolySketchAttention<B> {
        &self.attention
    }

    /// `x` (`[batch, n, C]`) → q, k, v `[batch, heads, n, C/heads]`, RoPE applied.
    fn heads_of(&self, x: Tensor<B, 3>) -> [Tensor<B, 4>; 3] {
        let [batch, n, c] = x.dims();
        let h = c / self.heads;
        let qkv = self.wqkv.forward(x);
        let split = |i: usize| {
            qkv.clone()
                .slice([0..batch, 0..n, i * c..(i + 1) * c])
                .reshape([batch, n, self.heads, h])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (split(0), split(1), split(2));
        match self.rope {
            true => [rope(q), rope(k), v],
            false => [q, k, v],
        }
    }

    /// `[batch, heads, n, h]` → `[batch, n, C]` → \\(\cdot W_o\\).
    fn merge(&self, att: Tensor<B, 4>) -> Tensor<B, 3> {
        let [batch, heads, n, h] = att.dims();
        self.wo.forward(att.swap_dims(1, 2).reshape([batch, n, heads * h]))
    }

    /// The block on the portable path (any backend).
    ///
    /// # Errors
    /// As [`PolySketchAttention::forward_portable`].
    pub fn forward_portable(&self, x: Tensor<B, 3>) -> Result<Tensor<B, 3>, AttentionError> {
        let [q, k, v] = self.heads_of(x);
        Ok(self.merge(self.attention.forward_portable(q, k, v)?))
    }
}

impl<B: PolySketchBackend> PolySketchMultiHead<B> {
    /// The block's output, the attention by [`PolySketchAttention::try_forward`].
    ///
    /// # Errors
    /// As [`PolySketchAttention::try_forward`].
    pub fn try_forward(&self, x: Tensor<B, 3>) -> Result<Tensor<B, 3>, AttentionError> {
        let [q, k, v] = self.heads_of(x);
        Ok(self.merge(self.attention.try_forward(q, k, v)?))
    }

    /// The block's output, the attention by [`PolySketchAttention::forward`].
    ///
    /// # Panics
    /// If `x`'s last dimension is not the block's width (burn's `Linear` convention).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [q, k, v] = self.heads_of(x);
        self.merge(self.attention.forward(q, k, v))
    }
}
