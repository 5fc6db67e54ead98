//! Kernels of the learned sketch's nodes: \\(\sqrt r\tanh(f_1 \circ f_2/\sqrt r)\\).
//!
//! All arithmetic is `f32`. Layout: every per-head matrix is row-major and heads are stacked,
//! `[bh · n, d]` with `bh = batch · heads`. These kernels are unchecked: the host code beside
//! them validates shapes.

use cubecl::prelude::*;

/// A learned node: `t = tanh(m₁ ∘ m₂/√r)`, `out = √r·t`. One unit per element.
#[cube(launch_unchecked)]
pub fn node_forward(
    m1: &Array<f32>, m2: &Array<f32>, t: &mut Array<f32>, out: &mut Array<f32>, sqrt_r: f32,
) {
    let e = ABSOLUTE_POS;
    if e < out.len() {
        let v = f32::tanh(m1[e] * m2[e] / sqrt_r);
        t[e] = v;
        out[e] = sqrt_r * v;
    }
}

/// Backward of [`node_forward`]: with `gate = dout ∘ (1 − t²)`, `dm₁ = gate ∘ m₂`,
/// `dm₂ = gate ∘ m₁`. One unit per element.
#[cube(launch_unchecked)]
pub fn node_backward(
    dout: &Array<f32>, t: &Array<f32>, m1: &Array<f32>, m2: &Array<f32>, dm1: &mut Array<f32>,
    dm2: &mut Array<f32>,
) {
    let e = ABSOLUTE_POS;
    if e < dout.len() {
        let gate = dout[e] * (1.0 - t[e] * t[e]);
        dm1[e] = gate * m2[e];
        dm2[e] = gate * m1[e];
    }
}
