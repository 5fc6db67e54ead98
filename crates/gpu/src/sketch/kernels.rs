//! Kernels of the random tree sketch: a level's Hadamard combination of its children.
//!
//! All arithmetic is `f32`. Layout: every per-head matrix is row-major and heads are stacked,
//! `[bh · n, d]` with `bh = batch · heads`. These kernels are unchecked: the host code beside
//! them validates shapes.

use cubecl::prelude::*;

/// A tree level's combination: node `j` of row `i` is
/// The indices in `p` of the two children of output element `e = i·nodes·r + j·r + c`:
/// `p[i, 2j·r + c]` and `p[i, (2j+1)·r + c]`.
#[cube]
fn children(e: usize, nodes: u32, r: u32) -> (usize, usize) {
    let w = (nodes * r) as usize;
    let r = r as usize;
    let (i, jc) = (e / w, e % w);
    let (j, c) = (jc / r, jc % r);
    let base = i * 2 * w;
    (base + 2 * j * r + c, base + (2 * j + 1) * r + c)
}

/// `out[i, j·r + c] = s · p[i, 2j·r + c] · p[i, (2j+1)·r + c]`, with `p: [rows, 2·nodes·r]`,
/// `out: [rows, nodes·r]`. One unit per output element.
#[cube(launch_unchecked)]
pub fn hadamard_forward(p: &Array<f32>, out: &mut Array<f32>, nodes: u32, r: u32, s: f32) {
    let e = ABSOLUTE_POS;
    if e < out.len() {
        let (first, second) = children(e, nodes, r);
        out[e] = s * p[first] * p[second];
    }
}

/// Backward of [`hadamard_forward`]: `dp[2j·r + c] = s·dout[j·r + c]·p[(2j+1)·r + c]` and the
/// mirror for the second child. One unit per output element.
#[cube(launch_unchecked)]
pub fn hadamard_backward(
    p: &Array<f32>, dout: &Array<f32>, dp: &mut Array<f32>, nodes: u32, r: u32, s: f32,
) {
    let e = ABSOLUTE_POS;
    if e < dout.len() {
        let g = s * dout[e];
        let (first, second) = children(e, nodes, r);
        dp[first] = g * p[second];
        dp[second] = g * p[first];
    }
}
