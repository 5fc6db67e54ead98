//! The `#[cube]` kernels. All arithmetic is `f32`; the generic element type `F` appears only in
//! the boundary kernels ([`to_f32`], [`from_f32`]), so `bf16` inputs are accumulated in `f32`.
//!
//! Layout: every per-head matrix is row-major and heads are stacked, `[bh · n, d]` with
//! `bh = batch · heads` (the `[batch, heads, n, h]` layout of the layers). Block `l` of head `z`
//! holds rows `l·b .. min((l+1)·b, n)` of that head. Kernels take `CUBE_POS_Z` as the head
//! index where they work per head.
//!
//! These kernels are unchecked: the launchers in [`crate::ops`] validate shapes.

use cubecl::prelude::*;

/// Rows of the query tile of the diagonal-block kernels.
pub const DIAG_ROWS: u32 = 8;
/// Columns of the score chunk the diagonal-block kernels keep in shared memory.
pub const DIAG_CHUNK: u32 = 128;
/// Threads along the columns in the row kernels.
pub const COLS: u32 = 32;
/// Side of the matmul tile.
pub const TILE: u32 = 16;

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
    a: &Array<f32>,
    b: &Array<f32>,
    c: &mut Array<f32>,
    m: u32,
    n: u32,
    k: u32,
    a_rs: u32,
    a_cs: u32,
    a_bs: u32,
    b_rs: u32,
    b_cs: u32,
    b_bs: u32,
    c_rs: u32,
    c_bs: u32,
    alpha: f32,
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
    x: &Array<f32>,
    gain: &Array<f32>,
    bias: &Array<f32>,
    y: &mut Array<f32>,
    xhat: &mut Array<f32>,
    rstd: &mut Array<f32>,
    h: u32,
    scale: f32,
    eps: f32,
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
    dy: &Array<f32>,
    xhat: &Array<f32>,
    rstd: &Array<f32>,
    gain: &Array<f32>,
    dx: &mut Array<f32>,
    h: u32,
    scale: f32,
) {
    let i = ABSOLUTE_POS;
    let h = h as usize;
    if i < rstd.len() {
        let base = i * h;
        let hf = f32::cast_from(h);
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

/// A tree level's combination: node `j` of row `i` is
/// `out[i, j·r + c] = s · p[i, 2j·r + c] · p[i, (2j+1)·r + c]`, with `p: [rows, 2·nodes·r]`,
/// `out: [rows, nodes·r]`. One unit per output element.
#[cube(launch_unchecked)]
pub fn hadamard_forward(p: &Array<f32>, out: &mut Array<f32>, nodes: u32, r: u32, s: f32) {
    let e = ABSOLUTE_POS;
    if e < out.len() {
        let w = (nodes * r) as usize;
        let r = r as usize;
        let i = e / w;
        let jc = e % w;
        let j = jc / r;
        let c = jc % r;
        let base = i * 2 * w;
        out[e] = s * p[base + 2 * j * r + c] * p[base + (2 * j + 1) * r + c];
    }
}

/// Backward of [`hadamard_forward`]: `dp[2j·r + c] = s·dout[j·r + c]·p[(2j+1)·r + c]` and the
/// mirror for the second child. One unit per output element.
#[cube(launch_unchecked)]
pub fn hadamard_backward(
    p: &Array<f32>,
    dout: &Array<f32>,
    dp: &mut Array<f32>,
    nodes: u32,
    r: u32,
    s: f32,
) {
    let e = ABSOLUTE_POS;
    if e < dout.len() {
        let w = (nodes * r) as usize;
        let r = r as usize;
        let i = e / w;
        let jc = e % w;
        let j = jc / r;
        let c = jc % r;
        let base = i * 2 * w;
        let g = s * dout[e];
        let first = base + 2 * j * r + c;
        let second = base + (2 * j + 1) * r + c;
        dp[first] = g * p[second];
        dp[second] = g * p[first];
    }
}

/// Per-block states in the self-tensored feature space:
/// `st[z, l, a·r + c, j] = Σ_{i ∈ block l} f[i, a]·f[i, c]·x[i, j]` for `f: [n, r]`,
/// `x: [n, k]` of head `z0 + z`. `CUBE_POS_X` tiles the `r²·k` entries, `_Y` is the block, `_Z`
/// the head within the group starting at `z0` (the states hold that group only). The `r²`-wide
/// features of a row exist only in registers.
#[cube(launch_unchecked)]
pub fn block_states(
    f: &Array<f32>,
    x: &Array<f32>,
    st: &mut Array<f32>,
    n: u32,
    r: u32,
    k: u32,
    b: u32,
    z0: u32,
) {
    let (n, r, k, b, z0) = (n as usize, r as usize, k as usize, b as usize, z0 as usize);
    let size = r * r * k;
    let e = CUBE_POS_X as usize * CUBE_DIM as usize + UNIT_POS as usize;
    let l = CUBE_POS_Y as usize;
    let z = CUBE_POS_Z as usize;
    let nb = n.div_ceil(b);
    if e < size {
        let ac = e / k;
        let j = e % k;
        let a = ac / r;
        let c = ac % r;
        let start = l * b;
        let mut end = start + b;
        if end > n {
            end = n;
        }
        let mut acc = 0.0f32;
        for i in start..end {
            let row = (z0 + z) * n + i;
            acc += f[row * r + a] * f[row * r + c] * x[row * k + j];
        }
        st[(z * nb + l) * size + e] = acc;
    }
}

/// Exclusive scan of the block states of each head in place: block `l` becomes the sum of the
/// blocks before it (`reverse = false`) or after it (`reverse = true`). One unit per state
/// entry; `CUBE_POS_Z` is the head.
#[cube(launch_unchecked)]
pub fn scan_blocks(st: &mut Array<f32>, nb: u32, size: u32, #[comptime] reverse: bool) {
    let (nb, size) = (nb as usize, size as usize);
    let e = CUBE_POS_X as usize * CUBE_DIM as usize + UNIT_POS as usize;
    let z = CUBE_POS_Z as usize;
    if e < size {
        let mut run = 0.0f32;
        for t in 0..nb {
            let mut l = t;
            if reverse {
                l = nb - 1 - t;
            }
            let at = (z * nb + l) * size + e;
            let v = st[at];
            st[at] = run;
            run += v;
        }
    }
}

/// `out[i, j] += Σ_{a, c} f[i, a]·f[i, c]·st[z, l(i), a·r + c, j]`: rows times their block's
/// state, the `A_l Z_l` of the block product with `A = f^{⊗2}`, for head `z0 + z` (`z` =
/// `CUBE_POS_Z`, the states holding the group from `z0`). Cube `COLS × DIAG_ROWS`:
/// `UNIT_POS_X` strides the `k` columns, `_Y` picks the row of the cube's tile.
#[cube(launch_unchecked)]
pub fn feature_apply(
    f: &Array<f32>,
    st: &Array<f32>,
    out: &mut Array<f32>,
    n: u32,
    r: u32,
    k: u32,
    b: u32,
    z0: u32,
) {
    let (n, r, k, b, z0) = (n as usize, r as usize, k as usize, b as usize, z0 as usize);
    let i = row_tile() * CUBE_DIM_Y as usize + UNIT_POS_Y as usize;
    let z = CUBE_POS_Z as usize;
    let nb = n.div_ceil(b);
    if i < n {
        let row = (z0 + z) * n + i;
        let base = (z * nb + i / b) * r * r * k;
        let mut j = UNIT_POS_X as usize;
        while j < k {
            let mut acc = 0.0f32;
            for a in 0..r {
                let fa = f[row * r + a];
                let mut inner = 0.0f32;
                for c in 0..r {
                    inner += f[row * r + c] * st[base + (a * r + c) * k + j];
                }
                acc += fa * inner;
            }
            out[row * k + j] += acc;
            j += CUBE_DIM_X as usize;
        }
    }
}

/// Gradient of [`feature_apply`] with respect to `f`:
/// `df[i, a] += Σ_c f[i, c]·Σ_j g[i, j]·(st[a·r + c, j] + st[c·r + a, j])`. Cube
/// `COLS × DIAG_ROWS`: `UNIT_POS_X` strides the `r` columns.
#[cube(launch_unchecked)]
pub fn feature_grad(
    f: &Array<f32>,
    g: &Array<f32>,
    st: &Array<f32>,
    df: &mut Array<f32>,
    n: u32,
    r: u32,
    k: u32,
    b: u32,
    z0: u32,
) {
    let (n, r, k, b, z0) = (n as usize, r as usize, k as usize, b as usize, z0 as usize);
    let i = row_tile() * CUBE_DIM_Y as usize + UNIT_POS_Y as usize;
    let z = CUBE_POS_Z as usize;
    let nb = n.div_ceil(b);
    if i < n {
        let row = (z0 + z) * n + i;
        let base = (z * nb + i / b) * r * r * k;
        let mut a = UNIT_POS_X as usize;
        while a < r {
            let mut acc = 0.0f32;
            for c in 0..r {
                let mut w = 0.0f32;
                for j in 0..k {
                    w += g[row * k + j]
                        * (st[base + (a * r + c) * k + j] + st[base + (c * r + a) * k + j]);
                }
                acc += f[row * r + c] * w;
            }
            df[row * r + a] += acc;
            a += CUBE_DIM_X as usize;
        }
    }
}

/// The index of this cube's tile of rows: row-tile grids spread over X and Y (wgpu allows
/// 65,535 cubes per axis), the head on Z.
#[cube]
fn row_tile() -> usize {
    CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize
}

/// The score `(x_i · y_j)^deg` and its derivative `deg·(x_i · y_j)^(deg−1)` for rows
/// `xi`, `yj` (offsets into `x`, `y`) of width `d`.
#[cube]
fn score(x: &Array<f32>, y: &Array<f32>, xi: usize, yj: usize, d: usize, deg: u32) -> (f32, f32) {
    let mut u = 0.0f32;
    for t in 0..d {
        u += x[xi + t] * y[yj + t];
    }
    let mut pm1 = 1.0f32;
    for _ in 1..deg {
        pm1 *= u;
    }
    (pm1 * u, f32::cast_from(deg) * pm1)
}

/// Diagonal blocks, the query side: for query row `i`, with `u = x_i·y_{j'}` over the keys
/// `j' ≤ i` of `i`'s block, `out[i, :] += Σ_{j'} w_{ij'}·m[j', :]` where
/// - forward (`grad = false`): `w = u^deg`, `m = c`: the block's `lt(S)·C` (`out, m: [n, k]`);
/// - backward (`grad = true`): `w = deg·u^{deg−1}·(g_i·c_{j'})`, `m = y`: the gradient of the
///   scores with respect to `x` (`out, m: [n, d]`).
///
/// `x, y: [n, d]`, `g, c: [n, k]`; `width` is `m`'s. Cube `COLS × DIAG_ROWS` on `DIAG_ROWS` query
/// rows; the weights of a chunk of `DIAG_CHUNK` keys sit in shared memory.
#[cube(launch_unchecked)]
pub fn diag_rows(
    x: &Array<f32>,
    y: &Array<f32>,
    g: &Array<f32>,
    c: &Array<f32>,
    m: &Array<f32>,
    out: &mut Array<f32>,
    n: u32,
    d: u32,
    k: u32,
    width: u32,
    b: u32,
    deg: u32,
    #[comptime] grad: bool,
) {
    let (n, d, k, w, b) = (
        n as usize,
        d as usize,
        k as usize,
        width as usize,
        b as usize,
    );
    let tr = DIAG_ROWS as usize;
    let ch = DIAG_CHUNK as usize;
    let mut s = SharedMemory::<f32>::new(DIAG_ROWS as usize * DIAG_CHUNK as usize);
    let z = CUBE_POS_Z as usize;
    let i0 = row_tile() * tr;
    let ty = UNIT_POS_Y as usize;
    let i = i0 + ty;
    // the keys any row of the tile sees: from the first row's block start to the last row
    let lo = (i0 / b) * b;
    let mut hi = i0 + tr;
    if hi > n {
        hi = n;
    }
    let units = (CUBE_DIM_X * CUBE_DIM_Y) as usize;
    // tiles past the last row (the grid rounds up) may have lo ≥ hi: nothing to do
    let mut chunks = 0usize;
    if lo < hi {
        chunks = (hi - lo).div_ceil(ch);
    }
    for cidx in 0..chunks {
        let c0 = lo + cidx * ch;
        // weights of the tile's rows against keys c0 .. c0 + ch
        let mut e = UNIT_POS as usize;
        while e < tr * ch {
            let ii = i0 + e / ch;
            let jj = c0 + e % ch;
            let mut v = 0.0f32;
            if ii < n && jj <= ii && jj / b == ii / b {
                let (sc, dsc) = score(x, y, (z * n + ii) * d, (z * n + jj) * d, d, deg);
                if grad {
                    let mut ds = 0.0f32;
                    for t in 0..k {
                        ds += g[(z * n + ii) * k + t] * c[(z * n + jj) * k + t];
                    }
                    v = dsc * ds;
                } else {
                    v = sc;
                }
            }
            s[e] = v;
            e += units;
        }
        sync_cube();
        if i < n {
            // each unit owns the columns ≡ UNIT_POS_X (mod CUBE_DIM_X) of its row
            let mut col = UNIT_POS_X as usize;
            while col < w {
                let mut acc = 0.0f32;
                for jj in 0..ch {
                    let key = c0 + jj;
                    if key < hi {
                        acc += s[ty * ch + jj] * m[(z * n + key) * w + col];
                    }
                }
                out[(z * n + i) * w + col] += acc;
                col += CUBE_DIM_X as usize;
            }
        }
        sync_cube();
    }
}

/// Diagonal blocks, backward for the key side: for key row `j`,
/// `dy[j, a] += Σ_{i ≥ j, same block} deg·u^{deg−1}·(g_i·c_j)·x[i, a]` and
/// `dc[j, t] += Σ_{i ≥ j, same block} u^deg·g[i, t]` with `u = x_i·y_j`. Cube
/// `COLS × DIAG_ROWS` on `DIAG_ROWS` key rows.
#[cube(launch_unchecked)]
pub fn diag_backward_key(
    x: &Array<f32>,
    y: &Array<f32>,
    g: &Array<f32>,
    c: &Array<f32>,
    dy: &mut Array<f32>,
    dc: &mut Array<f32>,
    n: u32,
    d: u32,
    k: u32,
    b: u32,
    deg: u32,
) {
    let (n, d, k, b) = (n as usize, d as usize, k as usize, b as usize);
    let tr = DIAG_ROWS as usize;
    let ch = DIAG_CHUNK as usize;
    let mut sd = SharedMemory::<f32>::new(DIAG_ROWS as usize * DIAG_CHUNK as usize);
    let mut ss = SharedMemory::<f32>::new(DIAG_ROWS as usize * DIAG_CHUNK as usize);
    let z = CUBE_POS_Z as usize;
    let j0 = row_tile() * tr;
    let ty = UNIT_POS_Y as usize;
    let j = j0 + ty;
    // queries any key of the tile sees: from the first key to the end of the last key's block
    let mut last = j0 + tr - 1;
    if last >= n {
        last = n - 1;
    }
    let lo = j0;
    let mut hi = (last / b + 1) * b;
    if hi > n {
        hi = n;
    }
    let units = (CUBE_DIM_X * CUBE_DIM_Y) as usize;
    // tiles past the last row (the grid rounds up) may have lo ≥ hi: nothing to do
    let mut chunks = 0usize;
    if lo < hi {
        chunks = (hi - lo).div_ceil(ch);
    }
    for cidx in 0..chunks {
        let c0 = lo + cidx * ch;
        let mut e = UNIT_POS as usize;
        while e < tr * ch {
            let jj = j0 + e / ch;
            let ii = c0 + e % ch;
            let mut vd = 0.0f32;
            let mut vs = 0.0f32;
            if jj < n && ii < n && jj <= ii && jj / b == ii / b {
                let (sc, dsc) = score(x, y, (z * n + ii) * d, (z * n + jj) * d, d, deg);
                let mut ds = 0.0f32;
                for t in 0..k {
                    ds += g[(z * n + ii) * k + t] * c[(z * n + jj) * k + t];
                }
                vd = dsc * ds;
                vs = sc;
            }
            sd[e] = vd;
            ss[e] = vs;
            e += units;
        }
        sync_cube();
        if j < n {
            let mut a = UNIT_POS_X as usize;
            while a < d + k {
                let mut acc = 0.0f32;
                for q in 0..ch {
                    let qi = c0 + q;
                    if qi < hi {
                        if a < d {
                            acc += sd[ty * ch + q] * x[(z * n + qi) * d + a];
                        } else {
                            acc += ss[ty * ch + q] * g[(z * n + qi) * k + a - d];
                        }
                    }
                }
                if a < d {
                    dy[(z * n + j) * d + a] += acc;
                } else {
                    dc[(z * n + j) * k + a - d] += acc;
                }
                a += CUBE_DIM_X as usize;
            }
        }
        sync_cube();
    }
}

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
    dout: &Array<f32>,
    out: &Array<f32>,
    den: &Array<f32>,
    draw: &mut Array<f32>,
    h: u32,
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

/// A learned node: `t = tanh(m₁ ∘ m₂/√r)`, `out = √r·t`. One unit per element.
#[cube(launch_unchecked)]
pub fn node_forward(
    m1: &Array<f32>,
    m2: &Array<f32>,
    t: &mut Array<f32>,
    out: &mut Array<f32>,
    sqrt_r: f32,
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
    dout: &Array<f32>,
    t: &Array<f32>,
    m1: &Array<f32>,
    m2: &Array<f32>,
    dm1: &mut Array<f32>,
    dm2: &mut Array<f32>,
) {
    let e = ABSOLUTE_POS;
    if e < dout.len() {
        let gate = dout[e] * (1.0 - t[e] * t[e]);
        dm1[e] = gate * m2[e];
        dm2[e] = gate * m1[e];
    }
}

/// Column sums over chunks of rows: `part[c, j] = Σ_{i ∈ chunk c} x[i, j]·w[i, j]` for
/// `x, w: [rows, cols]` (`w` read only when `weighted`; pass `x` otherwise). One unit per
/// `(c, j)`; the host adds the chunks in a fixed order.
#[cube(launch_unchecked)]
pub fn column_partials(
    x: &Array<f32>,
    w: &Array<f32>,
    part: &mut Array<f32>,
    cols: u32,
    rows: u32,
    chunk: u32,
    #[comptime] weighted: bool,
) {
    let e = ABSOLUTE_POS;
    let (cols, rows, chunk) = (cols as usize, rows as usize, chunk as usize);
    if e < part.len() {
        let c = e / cols;
        let j = e % cols;
        let start = c * chunk;
        let mut end = start + chunk;
        if end > rows {
            end = rows;
        }
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
