//! Kernels of the block lower-triangular product: per-block states, their scan, the
//! self-tensored feature products, and the exact or sketched diagonal blocks.
//!
//! All arithmetic is `f32`. Layout: every per-head matrix is row-major and heads are stacked,
//! `[bh · n, d]` with `bh = batch · heads`. These kernels are unchecked: the host code beside
//! them validates shapes.

use cubecl::prelude::*;

use crate::ops::kernels::at_most;

/// Rows of the query tile of the diagonal-block kernels.
pub const DIAG_ROWS: u32 = 8;

/// Columns of the score chunk the diagonal-block kernels keep in shared memory.
pub const DIAG_CHUNK: u32 = 128;

/// Threads along the columns in the row kernels.
pub const COLS: u32 = 32;

/// Per-block states in the self-tensored feature space:
/// `st[z, l, a·r + c, j] = Σ_{i ∈ block l} f[i, a]·f[i, c]·x[i, j]` for `f: [n, r]`,
/// `x: [n, k]` of head `z0 + z`. `CUBE_POS_X` tiles the `r²·k` entries, `_Y` is the block, `_Z`
/// the head within the group starting at `z0` (the states hold that group only). The `r²`-wide
/// features of a row exist only in registers.
#[cube(launch_unchecked)]
pub fn block_states(
    f: &Array<f32>, x: &Array<f32>, st: &mut Array<f32>, n: u32, r: u32, k: u32, b: u32, z0: u32,
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
        let end = at_most(start + b, n);
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
    f: &Array<f32>, st: &Array<f32>, out: &mut Array<f32>, n: u32, r: u32, k: u32, b: u32, z0: u32,
) {
    let (n, r, k) = (n as usize, r as usize, k as usize);
    let (i, row, base) = feature_row(n, r, k, b as usize, z0 as usize);
    if i < n {
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
    f: &Array<f32>, g: &Array<f32>, st: &Array<f32>, df: &mut Array<f32>, n: u32, r: u32, k: u32,
    b: u32, z0: u32,
) {
    let (n, r, k) = (n as usize, r as usize, k as usize);
    let (i, row, base) = feature_row(n, r, k, b as usize, z0 as usize);
    if i < n {
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
/// `min(hi, n)`, and the chunks of `ch` columns that cover `lo .. min(hi, n)`: none for the
/// tiles past the last row that the grid rounds up to (there `lo ≥ hi`).
/// This unit's row `i` of its head (`CUBE_POS_Z` counts heads from `z0`), that row's index in
/// the stacked features, and the offset of its block's state `[r·r, k]`.
#[cube]
fn feature_row(n: usize, r: usize, k: usize, b: usize, z0: usize) -> (usize, usize, usize) {
    let i = row_tile() * CUBE_DIM_Y as usize + UNIT_POS_Y as usize;
    let z = CUBE_POS_Z as usize;
    let nb = n.div_ceil(b);
    (i, (z0 + z) * n + i, (z * nb + i / b) * r * r * k)
}

#[cube]
fn clamp_chunks(lo: usize, hi: usize, n: usize, ch: usize) -> (usize, usize) {
    let end = at_most(hi, n);
    let mut chunks = 0usize;
    if lo < end {
        chunks = (end - lo).div_ceil(ch);
    }
    (end, chunks)
}

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
    x: &Array<f32>, y: &Array<f32>, g: &Array<f32>, c: &Array<f32>, m: &Array<f32>,
    out: &mut Array<f32>, n: u32, d: u32, k: u32, width: u32, b: u32, deg: u32,
    #[comptime] grad: bool,
) {
    let (n, d, k, w, b) = (n as usize, d as usize, k as usize, width as usize, b as usize);
    let tr = DIAG_ROWS as usize;
    let ch = DIAG_CHUNK as usize;
    let mut s = SharedMemory::<f32>::new(DIAG_ROWS as usize * DIAG_CHUNK as usize);
    let z = CUBE_POS_Z as usize;
    let i0 = row_tile() * tr;
    let ty = UNIT_POS_Y as usize;
    let i = i0 + ty;
    // the keys any row of the tile sees: from the first row's block start to the last row
    let lo = (i0 / b) * b;
    let (hi, chunks) = clamp_chunks(lo, i0 + tr, n, ch);
    let units = (CUBE_DIM_X * CUBE_DIM_Y) as usize;
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
    x: &Array<f32>, y: &Array<f32>, g: &Array<f32>, c: &Array<f32>, dy: &mut Array<f32>,
    dc: &mut Array<f32>, n: u32, d: u32, k: u32, b: u32, deg: u32,
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
    let (hi, chunks) = clamp_chunks(lo, (last / b + 1) * b, n, ch);
    let units = (CUBE_DIM_X * CUBE_DIM_Y) as usize;
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
