//! Kernels of the basic operations: type conversion at the boundary, `axpy`, the batched
//! strided matmul, layer norm, bias, gelu, column sums, fill.
//!
//! All arithmetic is `f32`. Layout: every per-head matrix is row-major and heads are stacked,
//! `[bh · n, d]` with `bh = batch · heads`. These kernels are unchecked: the host code beside
//! them validates shapes.

use cubecl::prelude::*;

/// Side of the matmul tile.
pub const TILE: u32 = 16;

/// `min(x, limit)` (the end of a range cut at the array's end).
#[cube]
pub(crate) fn at_most(x: usize, limit: usize) -> usize {
    let mut y = x;
    if y > limit {
        y = limit;
    }
    y
}

/// `y[i] = x[i]` as `f32` (inputs of any float type enter the kernels here).
#[cube(launch_unchecked)]
pub fn to_f32<F: Float>(x: &Array<F>, y: &mut Array<f32>) {
    if ABSOLUTE_POS < y.len() {
        y[ABSOLUTE_POS] = f32::cast_from(x[ABSOLUTE_POS]);
    }
}

/// `y[i] = x[i]` as `F` (results leave the kernels here).
#[cube(launch_unchecked)]
pub fn from_f32<F: Float>(x: &Array<f32>, y: &mut Array<F>) {
    if ABSOLUTE_POS < y.len() {
        y[ABSOLUTE_POS] = F::cast_from(x[ABSOLUTE_POS]);
    }
}

/// `y[i] += a · x[i]`.
#[cube(launch_unchecked)]
pub fn axpy(x: &Array<f32>, y: &mut Array<f32>, a: f32) {
    if ABSOLUTE_POS < y.len() {
        y[ABSOLUTE_POS] += a * x[ABSOLUTE_POS];
    }
}

/// Batched strided product `C_z = α A_z B_z + β C_z` with `A_z: [m, k]`, `B_z: [k, n]`,
/// `C_z: [m, n]`; element `(i, p)` of `A_z` at `z·a_bs + i·a_rs + p·a_cs` (likewise `B`; `C`
/// has unit column stride). Transposes are strides. `β = 0` overwrites (stale NaNs in `C` are
/// not propagated). Cube `TILE × TILE`; `CUBE_POS_X` tiles columns, `_Y` rows, `_Z` the batch.
#[cube(launch_unchecked)]
pub fn matmul(
    a: &Array<f32>, b: &Array<f32>, c: &mut Array<f32>, m: u32, n: u32, k: u32, a_rs: u32,
    a_cs: u32, a_bs: u32, b_rs: u32, b_cs: u32, b_bs: u32, c_rs: u32, c_bs: u32, alpha: f32,
    beta: f32,
) {
    let (m, n, k) = (m as usize, n as usize, k as usize);
    let (a_rs, a_cs, a_bs) = (a_rs as usize, a_cs as usize, a_bs as usize);
    let (b_rs, b_cs, b_bs) = (b_rs as usize, b_cs as usize, b_bs as usize);
    let (c_rs, c_bs) = (c_rs as usize, c_bs as usize);
    let t = TILE as usize;
    let mut sa = SharedMemory::<f32>::new(TILE as usize * TILE as usize);
    let mut sb = SharedMemory::<f32>::new(TILE as usize * TILE as usize);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let row = CUBE_POS_Y as usize * t + ty;
    let col = CUBE_POS_X as usize * t + tx;
    let z = CUBE_POS_Z as usize;
    let mut acc = 0.0f32;
    let tiles = k.div_ceil(t);
    for kt in 0..tiles {
        let pa = kt * t + tx;
        let mut va = 0.0f32;
        if row < m && pa < k {
            va = a[z * a_bs + row * a_rs + pa * a_cs];
        }
        sa[ty * t + tx] = va;
        let pb = kt * t + ty;
        let mut vb = 0.0f32;
        if pb < k && col < n {
            vb = b[z * b_bs + pb * b_rs + col * b_cs];
        }
        sb[ty * t + tx] = vb;
        sync_cube();
        for p in 0..t {
            acc += sa[ty * t + p] * sb[p * t + tx];
        }
        sync_cube();
    }
    if row < m && col < n {
        let at = z * c_bs + row * c_rs + col;
        if beta == 0.0 {
            c[at] = alpha * acc;
        } else {
            c[at] = alpha * acc + beta * c[at];
        }
    }
}

/// Layer norm of each row of `x: [rows, h]`: `xhat = (x − μ)/√(σ² + ε)`,
/// `y = s·(g ∘ xhat + β)`; `rstd[i] = 1/√(σ² + ε)`. One unit per row.
#[cube(launch_unchecked)]
pub fn layernorm_forward(
    x: &Array<f32>, gain: &Array<f32>, bias: &Array<f32>, y: &mut Array<f32>,
    xhat: &mut Array<f32>, rstd: &mut Array<f32>, h: u32, scale: f32, eps: f32,
) {
    let i = ABSOLUTE_POS;
    let h = h as usize;
    if i < rstd.len() {
        let base = i * h;
        let hf = f32::cast_from(h);
        let mut mean = 0.0f32;
        for j in 0..h {
            mean += x[base + j];
        }
        mean /= hf;
        let mut var = 0.0f32;
        for j in 0..h {
            let d = x[base + j] - mean;
            var += d * d;
        }
        let r = 1.0f32 / f32::sqrt(var / hf + eps);
        rstd[i] = r;
        for j in 0..h {
            let xh = (x[base + j] - mean) * r;
            xhat[base + j] = xh;
            y[base + j] = scale * (gain[j] * xh + bias[j]);
        }
    }
}

/// Backward of [`layernorm_forward`] for the input: with `d = s·g ∘ dy`,
/// `dx = rstd·(d − mean(d) − xhat·mean(d ∘ xhat))`. One unit per row.
#[cube(launch_unchecked)]
pub fn layernorm_backward(
    dy: &Array<f32>, xhat: &Array<f32>, rstd: &Array<f32>, gain: &Array<f32>, dx: &mut Array<f32>,
    h: u32, scale: f32,
) {
    let (i, h) = (ABSOLUTE_POS, h as usize);
    if i < rstd.len() {
        let (base, hf) = (i * h, f32::cast_from(h));
        let mut md = 0.0f32;
        let mut mdx = 0.0f32;
        for j in 0..h {
            let d = scale * gain[j] * dy[base + j];
            md += d;
            mdx += d * xhat[base + j];
        }
        md /= hf;
        mdx /= hf;
        let r = rstd[i];
        for j in 0..h {
            let d = scale * gain[j] * dy[base + j];
            dx[base + j] = r * (d - md - xhat[base + j] * mdx);
        }
    }
}

/// `y[i, c] += b[c]` for `y: [rows, cols]`, `cols = b.len()`. One unit per element.
#[cube(launch_unchecked)]
pub fn add_bias(y: &mut Array<f32>, b: &Array<f32>) {
    let e = ABSOLUTE_POS;
    if e < y.len() {
        y[e] += b[e % b.len()];
    }
}

/// `√(2/π)` and the cubic coefficient of the tanh form of gelu.
const GELU_C: f32 = 0.797_884_6;

const GELU_A: f32 = 0.044_715;

/// `z = gelu(a) = ½a(1 + tanh(√(2/π)(a + 0.044715a³)))`. One unit per element.
#[cube(launch_unchecked)]
pub fn gelu_forward(a: &Array<f32>, z: &mut Array<f32>) {
    let e = ABSOLUTE_POS;
    if e < z.len() {
        let x = a[e];
        let t = f32::tanh(GELU_C * (x + GELU_A * x * x * x));
        z[e] = 0.5 * x * (1.0 + t);
    }
}

/// `da = dz · gelu'(a)`, with `gelu' = ½(1 + t) + ½a(1 − t²)·√(2/π)(1 + 3·0.044715a²)`. One unit
/// per element.
#[cube(launch_unchecked)]
pub fn gelu_backward(a: &Array<f32>, dz: &Array<f32>, da: &mut Array<f32>) {
    let e = ABSOLUTE_POS;
    if e < da.len() {
        let x = a[e];
        let t = f32::tanh(GELU_C * (x + GELU_A * x * x * x));
        let g = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * x * x);
        da[e] = dz[e] * g;
    }
}

/// Column sums over chunks of rows: `part[c, j] = Σ_{i ∈ chunk c} x[i, j]·w[i, j]` for
/// `x, w: [rows, cols]` (`w` read only when `weighted`; pass `x` otherwise). One unit per
/// `(c, j)`; the host adds the chunks in a fixed order.
#[cube(launch_unchecked)]
pub fn column_partials(
    x: &Array<f32>, w: &Array<f32>, part: &mut Array<f32>, cols: u32, rows: u32, chunk: u32,
    #[comptime] weighted: bool,
) {
    let e = ABSOLUTE_POS;
    let (cols, rows, chunk) = (cols as usize, rows as usize, chunk as usize);
    if e < part.len() {
        let c = e / cols;
        let j = e % cols;
        let start = c * chunk;
        let end = at_most(start + chunk, rows);
        let mut s = 0.0f32;
        for i in start..end {
            if weighted {
                s += x[i * cols + j] * w[i * cols + j];
            } else {
                s += x[i * cols + j];
            }
        }
        part[e] = s;
    }
}

/// `x[i] = value` for every element. One unit per element.
#[cube(launch_unchecked)]
pub fn fill(x: &mut Array<f32>, value: f32) {
    if ABSOLUTE_POS < x.len() {
        x[ABSOLUTE_POS] = value;
    }
}
