//! Causal PolySketch attention (random or learned sketches) on the device, forward and
//! backward, for `[batch, heads, n, h]` inputs of any float type (`f32`, `bf16`), accumulated
//! in `f32`.

mod kernels;

use cubecl::prelude::*;

use crate::learned::{LearnedSavedGpu, LearnedSketchGpu};
use crate::lowtri::{DiagonalGpu, LtSaved, LtShape};
use crate::ops::{LN_EPS, LnState, check_len, u32_of};
use crate::sketch::SketchSaved;
use crate::{Buffer, Gpu, GpuError, Result, TreeSketchGpu};

/// The sketch of a [`PolySketchGpu`] layer, as given to [`PolySketchGpu::new`].
#[derive(Debug, Clone, Copy)]
pub enum SketchWeights<'a> {
    /// A random Gaussian tree (JL for `p = 2`): its dense levels (see [`TreeSketchGpu::new`]).
    Random(&'a [Vec<f32>]),
    /// A learned sketch (`p ≥ 4`): its networks' parameters (see [`LearnedSketchGpu::new`]).
    Learned(&'a [&'a [f32]]),
}

/// The uploaded sketch.
#[derive(Debug, Clone)]
enum Sketch<R: Runtime> {
    Random(TreeSketchGpu<R>),
    Learned(LearnedSketchGpu<R>),
}

/// What the sketch's backward needs.
#[derive(Debug, Clone)]
enum SketchState<R: Runtime> {
    Random(SketchSaved<R>),
    Learned(LearnedSavedGpu<R>),
}

impl<R: Runtime> Sketch<R> {
    fn forward(&self, gpu: &Gpu<R>, x: &Buffer<R>) -> Result<(Buffer<R>, SketchState<R>)> {
        Ok(match self {
            Sketch::Random(s) => {
                let (out, st) = s.forward(gpu, x)?;
                (out, SketchState::Random(st))
            }
            Sketch::Learned(s) => {
                let (out, st) = s.forward(gpu, x)?;
                (out, SketchState::Learned(st))
            }
        })
    }

    /// `∂x`, and the parameter gradients of a learned sketch (none for a random one).
    fn backward(
        &self, gpu: &Gpu<R>, state: &SketchState<R>, dout: &Buffer<R>,
    ) -> Result<(Buffer<R>, Vec<Vec<f32>>)> {
        match (self, state) {
            (Sketch::Random(s), SketchState::Random(st)) => {
                Ok((s.backward(gpu, st, dout)?, vec![]))
            }
            (Sketch::Learned(s), SketchState::Learned(st)) => s.backward(gpu, st, dout),
            _ => Err(GpuError::InvalidArgument(
                "PolySketchGpu::backward: a state of another sketch".into(),
            )),
        }
    }
}

/// Shape and options of a PolySketch layer (the CPU layer's `PolySketchConfig` with random
/// sketches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolySketchGpuConfig {
    /// Number of heads.
    pub heads: usize,
    /// Head size \\(h\\).
    pub head_dim: usize,
    /// Degree \\(p\\) (even; \\(p/2\\) a power of two).
    pub p: usize,
    /// Sketch size \\(r\\).
    pub r: usize,
    /// Block size \\(b\\).
    pub block: usize,
    /// Exact \\(\langle\tilde q, \tilde k\rangle^p\\) inside the diagonal blocks.
    pub local: bool,
}

/// A PolySketch attention layer on the device: \\(\tilde q = s\,\mathrm{LN}(q)\\),
/// \\(\tilde k = s\,\mathrm{LN}(k)\\) with \\(s = h^{-1/4}\\) and a layer norm shared by `q` and
/// `k`; \\(L = S(\tilde Q)\\), \\(R = S(\tilde K)\\) with the degree-\\(p/2\\) sketch \\(S\\);
/// `out = D⁻¹ lt((L Rᵀ)^{∘2}) V` with `D = 1 + lt(·) 1` (diagonal blocks exact when `local`).
#[derive(Debug, Clone)]
pub struct PolySketchGpu<R: Runtime> {
    config: PolySketchGpuConfig,
    gain: Buffer<R>,
    bias: Buffer<R>,
    sketch: Sketch<R>,
}

/// What [`PolySketchGpu::backward`] needs from the forward.
#[derive(Debug, Clone)]
pub struct PolySketchGpuSaved<R: Runtime> {
    batch: usize,
    n: usize,
    qt: Buffer<R>,
    kt: Buffer<R>,
    ln_q: LnState<R>,
    ln_k: LnState<R>,
    l: Buffer<R>,
    r: Buffer<R>,
    sk_q: SketchState<R>,
    sk_k: SketchState<R>,
    c: Buffer<R>,
    lt: LtSaved<R>,
    out: Buffer<R>,
    den: Buffer<R>,
}

/// Gradients of a [`PolySketchGpu`] layer.
#[derive(Debug, Clone)]
pub struct PolySketchGpuGrads<R: Runtime, E = f32> {
    /// \\(\partial L/\partial q\\), `[batch, heads, n, h]`.
    pub dq: Buffer<R, E>,
    /// \\(\partial L/\partial k\\).
    pub dk: Buffer<R, E>,
    /// \\(\partial L/\partial v\\).
    pub dv: Buffer<R, E>,
    /// \\(\partial L/\partial g\\) of the shared layer norm, `[h]`.
    pub d_gain: Vec<f32>,
    /// \\(\partial L/\partial\beta\\), `[h]`.
    pub d_bias: Vec<f32>,
    /// A learned sketch's parameter gradients, in the order of its parameters (empty for a
    /// random sketch).
    pub d_sketch: Vec<Vec<f32>>,
}

impl<R: Runtime> PolySketchGpu<R> {
    /// Uploads a layer: its configuration, the layer norm's gain and bias (`[h]`) and the
    /// sketch of degree `p/2` (random: [`TreeSketchGpu::new`]; learned:
    /// [`LearnedSketchGpu::new`]).
    ///
    /// # Errors
    /// [`GpuError::InvalidArgument`] for zero sizes or a degree that is odd, above 64, or with
    /// \\(p/2\\) not a power of two; [`GpuError::Shape`] / [`GpuError::NonFinite`] for
    /// parameters of the wrong size or with NaNs.
    pub fn new(
        gpu: &Gpu<R>, config: PolySketchGpuConfig, ln_gain: &[f32], ln_bias: &[f32],
        sketch: SketchWeights<'_>,
    ) -> Result<Self> {
        const OP: &str = "PolySketchGpu::new";
        let PolySketchGpuConfig { heads, head_dim: h, p, r, block, .. } = config;
        if heads == 0 || h == 0 || r == 0 || block == 0 {
            return Err(GpuError::InvalidArgument(format!(
                "{OP}: heads, head_dim, r and block must be positive, got {config:?}"
            )));
        }
        if p == 0 || !p.is_multiple_of(2) || p > 64 || !(p / 2).is_power_of_two() {
            return Err(GpuError::InvalidArgument(format!(
                "{OP}: p must be even, at most 64, with p/2 a power of two; got {p}"
            )));
        }
        for (name, x) in [("ln_gain", ln_gain), ("ln_bias", ln_bias)] {
            if x.len() != h {
                return Err(GpuError::Shape { op: OP, input: name, expected: h, got: x.len() });
            }
            if let Some(index) = x.iter().position(|v| !v.is_finite()) {
                return Err(GpuError::NonFinite { op: OP, input: name, index });
            }
        }
        Ok(Self {
            config,
            gain: gpu.upload(ln_gain)?,
            bias: gpu.upload(ln_bias)?,
            sketch: match sketch {
                SketchWeights::Random(levels) => {
                    Sketch::Random(TreeSketchGpu::new(gpu, h, r, p / 2, levels)?)
                }
                SketchWeights::Learned(params) => {
                    Sketch::Learned(LearnedSketchGpu::new(gpu, h, r, p / 2, params)?)
                }
            },
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PolySketchGpuConfig {
        &self.config
    }

    fn shape(&self, batch: usize, n: usize) -> LtShape {
        LtShape {
            heads: batch * self.config.heads,
            n,
            r: self.config.r,
            k: self.config.head_dim + 1,
            block: self.config.block,
        }
    }

    fn diagonal<'a>(&self, qt: &'a Buffer<R>, kt: &'a Buffer<R>) -> DiagonalGpu<'a, R> {
        if self.config.local {
            DiagonalGpu::LocalExact { q: qt, k: kt, d: self.config.head_dim, p: self.config.p }
        } else {
            DiagonalGpu::SelfTensored
        }
    }

    /// The layer's output for `q, k, v: [batch, heads, n, h]` and what the backward needs.
    ///
    /// # Errors
    /// [`GpuError::InvalidArgument`] for `batch = 0` or `n = 0`; [`GpuError::Shape`] for
    /// inputs of the wrong length; [`GpuError::TooLarge`] past the kernels' limits.
    pub fn forward<E: Float + CubeElement>(
        &self, gpu: &Gpu<R>, q: &Buffer<R, E>, k: &Buffer<R, E>, v: &Buffer<R, E>, batch: usize,
        n: usize,
    ) -> Result<(Buffer<R, E>, PolySketchGpuSaved<R>)> {
        const OP: &str = "PolySketchGpu::forward";
        if batch == 0 || n == 0 {
            return Err(GpuError::InvalidArgument(format!(
                "{OP}: batch and n must be at least 1, got {batch} and {n}"
            )));
        }
        gpu.require::<E>(OP)?;
        let h = self.config.head_dim;
        let total = batch * self.config.heads * n * h;
        for (name, x) in [("q", q), ("k", k), ("v", v)] {
            check_len(OP, name, x, total)?;
        }
        let s = (h as f32).powf(-0.25);
        let (qf, kf, vf) = (gpu.to_f32(q)?, gpu.to_f32(k)?, gpu.to_f32(v)?);
        let (qt, ln_q) = gpu.layernorm_forward(&qf, &self.gain, &self.bias, s, LN_EPS)?;
        let (kt, ln_k) = gpu.layernorm_forward(&kf, &self.gain, &self.bias, s, LN_EPS)?;
        let (l, sk_q) = self.sketch.forward(gpu, &qt)?;
        let (r, sk_k) = self.sketch.forward(gpu, &kt)?;
        let c = gpu.append_ones(&vf, h)?;
        let shape = self.shape(batch, n);
        let (raw, lt) = gpu.lowtri_forward(&shape, &l, &r, &c, self.diagonal(&qt, &kt))?;
        let (out, den) = gpu.normalise_forward(&raw, h)?;
        let result = gpu.from_f32::<E>(&out)?;
        Ok((
            result,
            PolySketchGpuSaved { batch, n, qt, kt, ln_q, ln_k, l, r, sk_q, sk_k, c, lt, out, den },
        ))
    }

    /// Gradients with respect to `q`, `k`, `v` and the layer norm's parameters, given
    /// \\(\partial L/\partial\mathrm{out}\\) = `d_out`.
    ///
    /// # Errors
    /// [`GpuError::Shape`] if `d_out` differs from the forward's output shape.
    pub fn backward<E: Float + CubeElement>(
        &self, gpu: &Gpu<R>, saved: &PolySketchGpuSaved<R>, d_out: &Buffer<R, E>,
    ) -> Result<PolySketchGpuGrads<R, E>> {
        const OP: &str = "PolySketchGpu::backward";
        gpu.require::<E>(OP)?;
        let h = self.config.head_dim;
        check_len(OP, "d_out", d_out, saved.out.len())?;
        let g = gpu.to_f32(d_out)?;
        let draw = gpu.normalise_backward(&g, &saved.out, &saved.den, h)?;
        let shape = self.shape(saved.batch, saved.n);
        let grads = gpu.lowtri_backward(
            &shape,
            &saved.l,
            &saved.r,
            &saved.c,
            self.diagonal(&saved.qt, &saved.kt),
            &saved.lt,
            &draw,
        )?;
        let (dqt, mut d_sketch) = self.sketch.backward(gpu, &saved.sk_q, &grads.dl)?;
        let (dkt, dsk) = self.sketch.backward(gpu, &saved.sk_k, &grads.dr)?;
        for (a, b) in d_sketch.iter_mut().zip(dsk) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        if let Some((dq_local, dk_local)) = &grads.dq_dk {
            gpu.axpy(1.0, dq_local, &dqt)?;
            gpu.axpy(1.0, dk_local, &dkt)?;
        }
        let dv = gpu.drop_last_column(&grads.dc, h)?;
        let (dq, mut d_gain, mut d_bias) = gpu.layernorm_backward(&dqt, &saved.ln_q, &self.gain)?;
        let (dk, dg, db) = gpu.layernorm_backward(&dkt, &saved.ln_k, &self.gain)?;
        d_gain.iter_mut().zip(dg).for_each(|(a, b)| *a += b);
        d_bias.iter_mut().zip(db).for_each(|(a, b)| *a += b);
        Ok(PolySketchGpuGrads {
            dq: gpu.from_f32(&dq)?,
            dk: gpu.from_f32(&dk)?,
            dv: gpu.from_f32(&dv)?,
            d_gain,
            d_bias,
            d_sketch,
        })
    }
}

impl<R: Runtime> Gpu<R> {
    /// `[v, 1]` for `v: [rows, h]`.
    pub(crate) fn append_ones(&self, v: &Buffer<R>, h: usize) -> Result<Buffer<R>> {
        let c = self.empty(v.len() / h * (h + 1));
        // SAFETY: c holds rows·(h+1) entries, v rows·h.
        unsafe {
            launch_1d!(self, kernels::append_ones::<R>, (c.len(), 256);
                v.arg(), c.arg(), u32_of("Gpu::append_ones", "h", h)?)
        };
        Ok(c)
    }

    /// The first `h` of the `h + 1` columns of `dc`.
    pub(crate) fn drop_last_column(&self, dc: &Buffer<R>, h: usize) -> Result<Buffer<R>> {
        let dv = self.empty(dc.len() / (h + 1) * h);
        // SAFETY: as in `append_ones`.
        unsafe {
            launch_1d!(self, kernels::drop_last_column::<R>, (dv.len(), 256);
                dc.arg(), dv.arg(), u32_of("Gpu::drop_last_column", "h", h)?)
        };
        Ok(dv)
    }

    /// `out = raw[:, :h] / (1 + raw[:, h])` and the denominators.
    pub(crate) fn normalise_forward(
        &self, raw: &Buffer<R>, h: usize,
    ) -> Result<(Buffer<R>, Buffer<R>)> {
        let rows = raw.len() / (h + 1);
        let (out, den) = (self.empty(rows * h), self.empty(rows));
        // SAFETY: one unit per row, bounds checked.
        unsafe {
            launch_1d!(self, kernels::normalise_forward::<R>, (rows, 64);
                raw.arg(), out.arg(), den.arg(), u32_of("Gpu::normalise_forward", "h", h)?)
        };
        Ok((out, den))
    }

    /// Backward of [`normalise_forward`](Self::normalise_forward): the gradient of `raw`.
    pub(crate) fn normalise_backward(
        &self, dout: &Buffer<R>, out: &Buffer<R>, den: &Buffer<R>, h: usize,
    ) -> Result<Buffer<R>> {
        let draw = self.empty(den.len() * (h + 1));
        // SAFETY: one unit per row, bounds checked.
        unsafe {
            launch_1d!(self, kernels::normalise_backward::<R>, (den.len(), 64);
                dout.arg(), out.arg(), den.arg(), draw.arg(),
                u32_of("Gpu::normalise_backward", "h", h)?)
        };
        Ok(draw)
    }
}
