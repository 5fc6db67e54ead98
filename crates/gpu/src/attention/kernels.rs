//! Kernels of the attention layer's glue: `[V, 1]`, dropping its last column, and the
//! normalisation `out = raw[:, :h] / (1 + raw[:, h])`.
//!
//! All arithmetic is `f32`. Layout: every per-head matrix is row-major and heads are stacked,
//! `[bh · n, d]` with `bh = batch · heads`. These kernels are unchecked: the host code beside
//! them validates shapes.

use cubecl::prelude::*;

/// `c[i] = [v[i], 1]`: `v: [rows, h]` → `c: [rows, h + 1]`. One unit per element of `c`.
#[cube(launch_unchecked)]
pub fn append_ones(v: &Array<f32>, c: &mut Array<f32>, h: u32) {
    let e = ABSOLUTE_POS;
    let h = h as usize;
    if e < c.len() {
        let i = e / (h + 1);
        let j = e % (h + 1);
        if j < h {
            c[e] = v[i * h + j];
        } else {
            c[e] = 1.0;
        }
    }
}

/// `dv[i, j] = dc[i, j]` for `j < h` (`dc: [rows, h + 1]`). One unit per element of `dv`.
#[cube(launch_unchecked)]
pub fn drop_last_column(dc: &Array<f32>, dv: &mut Array<f32>, h: u32) {
    let e = ABSOLUTE_POS;
    let h = h as usize;
    if e < dv.len() {
        dv[e] = dc[(e / h) * (h + 1) + e % h];
    }
}

/// Normalisation: `den[i] = 1 + raw[i, h]`, `out[i, j] = raw[i, j]/den[i]` (`raw: [rows, h+1]`).
/// One unit per row.
#[cube(launch_unchecked)]
pub fn normalise_forward(raw: &Array<f32>, out: &mut Array<f32>, den: &mut Array<f32>, h: u32) {
    let i = ABSOLUTE_POS;
    let h = h as usize;
    if i < den.len() {
        let dd = 1.0f32 + raw[i * (h + 1) + h];
        den[i] = dd;
        for j in 0..h {
            out[i * h + j] = raw[i * (h + 1) + j] / dd;
        }
    }
}

/// Backward of [`normalise_forward`]: `draw[i, j] = dout[i, j]/den[i]` for `j < h`,
/// `draw[i, h] = −Σ_j dout[i, j]·out[i, j]/den[i]`. One unit per row.
#[cube(launch_unchecked)]
pub fn normalise_backward(
    dout: &Array<f32>, out: &Array<f32>, den: &Array<f32>, draw: &mut Array<f32>, h: u32,
) {
    let i = ABSOLUTE_POS;
    let h = h as usize;
    if i < den.len() {
        let inv = 1.0f32 / den[i];
        let mut s = 0.0f32;
        for j in 0..h {
            let g = dout[i * h + j];
            draw[i * (h + 1) + j] = g * inv;
            s += g * out[i * h + j];
        }
        draw[i * (h + 1) + h] = -s * inv;
    }
}
