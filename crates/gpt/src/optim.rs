//! AdamW with decoupled weight decay, the learning-rate schedule and gradient clipping.

use polysketch_core::Scalar;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{GptError, ParamInfo, Result};

/// How the learning rate falls after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Linearly to `min_ratio · peak` at the last step.
    Linear,
    /// Half a cosine to `min_ratio · peak` at the last step.
    Cosine,
}

/// Linear warm-up to `peak` over `warmup` steps, then [`Decay`] to `min_ratio · peak` at step
/// `total`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The peak learning rate.
    pub peak: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
    /// The decay after the warm-up.
    pub decay: Decay,
    /// The final learning rate as a fraction of the peak.
    pub min_ratio: f64,
}

impl Schedule {
    /// The learning rate of step `step` (0-based): \\(\eta\,(s+1)/w\\) during the warm-up, then
    /// with progress \\(u = (s - w)/(T - w)\\): linear \\(\eta(1 - u(1-\rho))\\) or cosine
    /// \\(\eta(\rho + (1-\rho)(1+\cos\pi u)/2)\\).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let u = ((step - self.warmup) as f64 / span).min(1.0);
        let rho = self.min_ratio;
        match self.decay {
            Decay::Linear => self.peak * (1.0 - u * (1.0 - rho)),
            Decay::Cosine => {
                self.peak * (rho + (1.0 - rho) * 0.5 * (1.0 + (core::f64::consts::PI * u).cos()))
            }
        }
    }
}

/// AdamW (Loshchilov & Hutter): with \\(g\\) the (clipped) gradient,
/// \\(m \leftarrow \beta_1 m + (1-\beta_1)g\\), \\(v \leftarrow \beta_2 v + (1-\beta_2)g^2\\),
/// \\(\theta \leftarrow \theta - \eta\big(\hat m/(\sqrt{\hat v} + \epsilon) + \lambda\theta\big)\\)
/// with bias-corrected \\(\hat m, \hat v\\); \\(\lambda\\) only on the tensors marked `decay`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW<T> {
    /// \\(\beta_1\\).
    pub beta1: f64,
    /// \\(\beta_2\\).
    pub beta2: f64,
    /// \\(\epsilon\\).
    pub eps: f64,
    /// \\(\lambda\\), decoupled weight decay.
    pub weight_decay: f64,
    /// First moments, laid out like the parameters.
    pub m: Vec<T>,
    /// Second moments.
    pub v: Vec<T>,
    /// Updates taken so far.
    pub t: u64,
}

impl<T: Scalar> AdamW<T> {
    /// Zero moments for `len` parameters.
    pub fn new(len: usize, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        Self {
            beta1,
            beta2,
            eps,
            weight_decay,
            m: vec![T::zero(); len],
            v: vec![T::zero(); len],
            t: 0,
        }
    }

    /// One update of `params` with `grads` at learning rate `lr`, the gradient first scaled so
    /// its global norm is at most `clip` (when positive). Returns the norm before clipping.
    ///
    /// # Errors
    /// [`GptError::Shape`] for lengths that differ; [`GptError::NonFinite`] for a non-finite
    /// gradient (nothing is changed then).
    pub fn step(
        &mut self, params: &mut [T], grads: &[T], table: &[ParamInfo], lr: f64, clip: f64,
    ) -> Result<f64> {
        self.step_with(params, grads, table, &|_| lr, clip)
    }

    /// [`step`](Self::step) with a learning rate per tensor: `lr(info)` for the tensor `info`
    /// (its update and its decay, \\(\eta\lambda\theta\\), both scale with it).
    ///
    /// # Errors
    /// As [`step`](Self::step).
    pub fn step_with(
        &mut self, params: &mut [T], grads: &[T], table: &[ParamInfo],
        lr: &dyn Fn(&ParamInfo) -> f64, clip: f64,
    ) -> Result<f64> {
        if params.len() != grads.len() || params.len() != self.m.len() {
            return Err(GptError::Shape {
                op: "AdamW::step",
                what: format!(
                    "{} parameters, {} gradients, {} moments",
                    params.len(),
                    grads.len(),
                    self.m.len()
                ),
            });
        }
        // the norm in f64, in order: the same whatever the threads
        let norm = grads.iter().map(|g| g.to_f64().unwrap_or(f64::NAN).powi(2)).sum::<f64>().sqrt();
        if !norm.is_finite() {
            return Err(GptError::NonFinite("gradient"));
        }
        let scale = if clip > 0.0 && norm > clip { clip / norm } else { 1.0 };
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        let (b1, b2, scale, eps) = (T::of(b1), T::of(b2), T::of(scale), T::of(self.eps));
        let step_v = T::of(1.0 / c2);
        for info in table {
            let lr = lr(info);
            let step_m = T::of(lr / c1);
            let decay = T::of(if info.decay { lr * self.weight_decay } else { 0.0 });
            let r = info.offset..info.offset + info.len();
            (&mut params[r.clone()], &grads[r.clone()], &mut self.m[r.clone()], &mut self.v[r])
                .into_par_iter()
                .with_min_len(4096)
                .for_each(|(p, g, m, v)| {
                    let g = *g * scale;
                    *m = b1 * *m + (T::one() - b1) * g;
                    *v = b2 * *v + (T::one() - b2) * g * g;
                    *p -= step_m * *m / ((*v * step_v).sqrt() + eps) + decay * *p;
                });
        }
        Ok(norm)
    }
}
