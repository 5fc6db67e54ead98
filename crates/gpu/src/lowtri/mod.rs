//! The block lower-triangular product of the lowtri crate in its self-tensored form, on the
//! device, forward and backward, for a stack of heads.
//!
//! For each head, with \\(A = L^{\otimes 2}\\), \\(B = R^{\otimes 2}\\) (`L, R: [n, r]`),
//! \\(C: [n, k]\\) and blocks of \\(b\\) rows:
//! \\[ H_l = B_l^\top C_l,\quad Z_l = \sum_{j<l} H_j,\quad
//!   \mathrm{out}_l = A_l Z_l + \mathrm{lt}(S_{ll})\,C_l , \\]
//! where the diagonal block's scores are \\(S_{ll} = (L_l R_l^\top)^{\circ 2}\\), or, with exact
//! local blocks, \\((Q_l K_l^\top)^{\circ p}\\) from the raw rows `Q, K: [n, d]`. The
//! \\(r^2\\)-wide features never exist as an `n × r²` array: [`kernels::block_states`] forms
//! them in registers and writes only the per-block states `[blocks, r², k]`.

mod kernels;

use cubecl::prelude::*;

use crate::ops::{check_len, check_size, u32_of};
use crate::{Buffer, Gpu, GpuError, Result};

/// Shape of a stacked block product: `heads` independent problems of `n` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LtShape {
    /// Number of stacked problems (batch × heads).
    pub heads: usize,
    /// Rows per problem.
    pub n: usize,
    /// Width \\(r\\) of `L`, `R`.
    pub r: usize,
    /// Width \\(k\\) of `C`.
    pub k: usize,
    /// Block size \\(b\\).
    pub block: usize,
}

impl LtShape {
    fn blocks(&self) -> usize {
        self.n.div_ceil(self.block)
    }
    fn state_size(&self) -> usize {
        self.r * self.r * self.k
    }
    fn validate(&self, op: &'static str) -> Result<()> {
        let LtShape { heads, n, r, k, block } = *self;
        if heads == 0 || n == 0 || r == 0 || k == 0 || block == 0 {
            return Err(GpuError::InvalidArgument(format!(
                "{op}: heads, n, r, k and the block size must be positive, got {self:?}"
            )));
        }
        if heads > crate::ops::MAX_AXIS || self.blocks() > crate::ops::MAX_AXIS {
            return Err(GpuError::TooLarge {
                op,
                reason: format!("{heads} heads or {} blocks (limit 65,535)", self.blocks()),
            });
        }
        let per_head = self.blocks() as u128 * self.state_size() as u128;
        check_size(op, "one head's block states", per_head.min(u128::from(u64::MAX)) as usize)?;
        check_size(op, "C", heads * n * k.max(r))?;
        Ok(())
    }

    /// The groups of heads `(first, count)` whose block states fit in one buffer of at most
    /// `limit` elements (at least one head per group; `validate` bounds one head's states).
    fn groups(&self, limit: usize) -> Vec<(usize, usize)> {
        let per_head = (self.blocks() * self.state_size()).max(1);
        let size = (limit / per_head).clamp(1, self.heads);
        (0..self.heads).step_by(size).map(|z0| (z0, size.min(self.heads - z0))).collect()
    }
}

/// The scores of the diagonal blocks.
#[derive(Debug)]
pub enum DiagonalGpu<'a, R: Runtime> {
    /// \\((L_l R_l^\top)^{\circ 2}\\) from the features themselves.
    SelfTensored,
    /// \\((Q_l K_l^\top)^{\circ p}\\) from raw rows `q, k: [heads · n, d]`.
    LocalExact {
        /// The query rows.
        q: &'a Buffer<R>,
        /// The key rows.
        k: &'a Buffer<R>,
        /// Their width.
        d: usize,
        /// The exact degree \\(p\\).
        p: usize,
    },
}

impl<R: Runtime> Clone for DiagonalGpu<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R: Runtime> Copy for DiagonalGpu<'_, R> {}

/// What [`Gpu::lowtri_backward`] needs from [`Gpu::lowtri_forward`]: the exclusive prefixes \\(Z_l\\).
#[derive(Debug, Clone)]
pub struct LtSaved<R: Runtime> {
    prefixes: Vec<Buffer<R>>,
}

impl<R: Runtime> LtSaved<R> {
    /// The exclusive prefixes \\(Z_l = \sum_{j<l} R_j^{\otimes 2\top} C_j\\), one buffer per
    /// group of heads (see [`Gpu::with_state_limit`]), each `[heads in the group, blocks, r²,
    /// k]` row-major; feature `a·r + c` is \\(r_a r_c\\) (the tensoring crate's full layout).
    pub fn prefixes(&self) -> &[Buffer<R>] {
        &self.prefixes
    }
}

/// Gradients of the block product.
#[derive(Debug, Clone)]
pub struct LtGrads<R: Runtime> {
    /// \\(\partial/\partial L\\), `[heads · n, r]`.
    pub dl: Buffer<R>,
    /// \\(\partial/\partial R\\), `[heads · n, r]`.
    pub dr: Buffer<R>,
    /// \\(\partial/\partial C\\), `[heads · n, k]`.
    pub dc: Buffer<R>,
    /// With exact local blocks: \\(\partial/\partial Q\\), \\(\partial/\partial K\\)
    /// (`[heads · n, d]`).
    pub dq_dk: Option<(Buffer<R>, Buffer<R>)>,
}

fn check_inputs<R: Runtime>(
    op: &'static str, s: &LtShape, l: &Buffer<R>, r: &Buffer<R>, c: &Buffer<R>,
    diag: &DiagonalGpu<'_, R>,
) -> Result<()> {
    s.validate(op)?;
    let rows = s.heads * s.n;
    check_len(op, "l", l, rows * s.r)?;
    check_len(op, "r", r, rows * s.r)?;
    check_len(op, "c", c, rows * s.k)?;
    if let DiagonalGpu::LocalExact { q, k, d, p } = *diag {
        if d == 0 || p == 0 || p > 64 {
            return Err(GpuError::InvalidArgument(format!(
                "{op}: local blocks need d > 0 and 1 <= p <= 64, got d {d}, p {p}"
            )));
        }
        check_len(op, "q", q, rows * d)?;
        check_len(op, "k", k, rows * d)?;
    }
    Ok(())
}

impl<R: Runtime> Gpu<R> {
    /// Block states of `f^{⊗2}` against `x` (\\(H_l = F_l^{\otimes 2\top} X_l\\)), scanned into
    /// exclusive prefixes (`reverse = false`) or suffixes: one buffer `[count, blocks, r², k]`
    /// per group of heads (see [`Gpu::with_state_limit`]).
    fn scanned_states(
        &self, op: &'static str, s: &LtShape, f: &Buffer<R>, x: &Buffer<R>, reverse: bool,
    ) -> Result<Vec<Buffer<R>>> {
        let (nb, size) = (s.blocks(), s.state_size());
        let tiles = u32_of(op, "state tiles", size.div_ceil(256))?;
        let u = |w, v| u32_of(op, w, v);
        let mut out = Vec::new();
        for (z0, count) in s.groups(self.state_limit) {
            let st = self.empty::<f32>(count * nb * size);
            // SAFETY: shapes validated by the caller; heads z0 .. z0 + count exist, and every
            // state index is inside [count, nb, size].
            unsafe {
                launch!(self, kernels::block_states::<R>,
                    CubeCount::Static(tiles, nb as u32, count as u32), CubeDim::new_1d(256);
                    f.arg(), x.arg(), st.arg(), u("n", s.n)?, u("r", s.r)?, u("k", s.k)?,
                    u("block", s.block)?, z0 as u32);
                launch!(self, kernels::scan_blocks::<R>,
                    CubeCount::Static(tiles, 1, count as u32), CubeDim::new_1d(256);
                    st.arg(), nb as u32, u("state size", size)?, reverse);
            }
            out.push(st);
        }
        Ok(out)
    }

    /// Calls `launch(state, cube count, [n, r, k, block, first head])` for every group of
    /// heads whose states are `states`, the sizes as kernel arguments.
    fn each_group(
        &self, op: &'static str, s: &LtShape, states: &[Buffer<R>],
        mut launch: impl FnMut(&Buffer<R>, CubeCount, [u32; 5]),
    ) -> Result<()> {
        let u = |w, v| u32_of(op, w, v);
        let sizes = [u("n", s.n)?, u("r", s.r)?, u("k", s.k)?, u("block", s.block)?];
        for ((z0, count), st) in s.groups(self.state_limit).into_iter().zip(states) {
            let [n, r, k, block] = sizes;
            launch(st, row_tiles(op, s, count)?, [n, r, k, block, z0 as u32]);
        }
        Ok(())
    }

    /// `out[i] += Σ_{a,c} f[i,a] f[i,c] st[block(i), a·r + c, :]`, group by group.
    fn feature_apply(
        &self, op: &'static str, s: &LtShape, f: &Buffer<R>, states: &[Buffer<R>], out: &Buffer<R>,
    ) -> Result<()> {
        self.each_group(op, s, states, |st, tiles, [n, r, k, block, z0]| {
            let dim = CubeDim::new_2d(kernels::COLS, kernels::DIAG_ROWS);
            // SAFETY: f [heads·n, r], st [count, nb, r²k], out [heads·n, k], validated.
            unsafe {
                launch!(self, kernels::feature_apply::<R>, tiles, dim;
                    f.arg(), st.arg(), out.arg(), n, r, k, block, z0)
            };
        })
    }

    /// `df[i, a] += Σ_c f[i,c] Σ_j g[i,j] (st[ac, j] + st[ca, j])`, group by group.
    fn feature_grad(
        &self, op: &'static str, s: &LtShape, f: &Buffer<R>, g: &Buffer<R>, states: &[Buffer<R>],
        df: &Buffer<R>,
    ) -> Result<()> {
        self.each_group(op, s, states, |st, tiles, [n, r, k, block, z0]| {
            let dim = CubeDim::new_2d(kernels::COLS, kernels::DIAG_ROWS);
            // SAFETY: as in `feature_apply`, df like f.
            unsafe {
                launch!(self, kernels::feature_grad::<R>, tiles, dim;
                    f.arg(), g.arg(), st.arg(), df.arg(), n, r, k, block, z0)
            };
        })
    }

    /// The query side of the diagonal blocks ([`kernels::diag_rows`]): `out += W m` with the
    /// scores (`grad = false`) or their gradients (`grad = true`) as `W`.
    #[allow(clippy::too_many_arguments)]
    fn diag_rows(
        &self, op: &'static str, s: &LtShape,
        (x, y, d, deg): (&Buffer<R>, &Buffer<R>, usize, usize), (g, c): (&Buffer<R>, &Buffer<R>),
        (m, width): (&Buffer<R>, usize), out: &Buffer<R>, grad: bool,
    ) -> Result<()> {
        let u = |w, v| u32_of(op, w, v);
        // SAFETY: x, y [heads·n, d]; g, c [heads·n, k]; m, out [heads·n, width]; validated by
        // the callers.
        unsafe {
            launch!(self, kernels::diag_rows::<R>,
                row_tiles(op, s, s.heads)?, CubeDim::new_2d(kernels::COLS, kernels::DIAG_ROWS);
                x.arg(), y.arg(), g.arg(), c.arg(), m.arg(), out.arg(), u("n", s.n)?, u("d", d)?,
                u("k", s.k)?, u("width", width)?, u("block", s.block)?, u("degree", deg)?, grad)
        };
        Ok(())
    }

    /// The block product \\(\mathrm{lt}(L^{\otimes 2} R^{\otimes 2\top})\,C\\) (diagonal blocks
    /// as `diag` says) of every stacked head: `l, r: [heads · n, r]`, `c: [heads · n, k]` →
    /// `[heads · n, k]`.
    ///
    /// # Errors
    /// [`GpuError::Shape`] for buffers of the wrong length, [`GpuError::InvalidArgument`] for
    /// zero sizes or a local degree out of `1..=64`, [`GpuError::TooLarge`] past the kernels'
    /// indices or launch limits.
    pub fn lowtri_forward(
        &self, s: &LtShape, l: &Buffer<R>, r: &Buffer<R>, c: &Buffer<R>, diag: DiagonalGpu<'_, R>,
    ) -> Result<(Buffer<R>, LtSaved<R>)> {
        const OP: &str = "Gpu::lowtri_forward";
        check_inputs(OP, s, l, r, c, &diag)?;
        let prefixes = self.scanned_states(OP, s, r, c, false)?;
        let out = self.zeros(s.heads * s.n * s.k);
        self.feature_apply(OP, s, l, &prefixes, &out)?;
        let (x, y, d, deg) = diag_inputs(s, l, r, &diag);
        // lt(S_ll) C: `g` is unused in the forward, c stands in for it
        self.diag_rows(OP, s, (x, y, d, deg), (c, c), (c, s.k), &out, false)?;
        Ok((out, LtSaved { prefixes }))
    }

    /// Gradients of \\(\langle G, \mathrm{out}\rangle\\) for [`lowtri_forward`](Self::lowtri_forward)
    /// given `g = ∂L/∂out: [heads · n, k]`.
    ///
    /// # Errors
    /// As [`lowtri_forward`](Self::lowtri_forward), and [`GpuError::Shape`] if `g` differs
    /// from the output's shape.
    #[allow(clippy::too_many_arguments)]
    pub fn lowtri_backward(
        &self, s: &LtShape, l: &Buffer<R>, r: &Buffer<R>, c: &Buffer<R>, diag: DiagonalGpu<'_, R>,
        saved: &LtSaved<R>, g: &Buffer<R>,
    ) -> Result<LtGrads<R>> {
        const OP: &str = "Gpu::lowtri_backward";
        check_inputs(OP, s, l, r, c, &diag)?;
        check_len(OP, "g", g, s.heads * s.n * s.k)?;
        let groups = s.groups(self.state_limit);
        let fits = saved.prefixes.len() == groups.len()
            && groups
                .iter()
                .zip(&saved.prefixes)
                .all(|(&(_, count), b)| b.len() == count * s.blocks() * s.state_size());
        if !fits {
            return Err(GpuError::InvalidArgument(format!(
                "{OP}: the saved state does not belong to a forward of this shape"
            )));
        }
        let rows = s.heads * s.n;
        // Y_l = Σ_{m > l} L_m^{⊗2 ᵀ} G_m
        let suffixes = self.scanned_states(OP, s, l, g, true)?;
        let (dl, dr, dc) = (self.zeros(rows * s.r), self.zeros(rows * s.r), self.zeros(rows * s.k));
        self.feature_grad(OP, s, l, g, &saved.prefixes, &dl)?;
        self.feature_grad(OP, s, r, c, &suffixes, &dr)?;
        self.feature_apply(OP, s, r, &suffixes, &dc)?;
        let (x, y, d, deg) = diag_inputs(s, l, r, &diag);
        let (dx, dy, dq_dk) = match diag {
            DiagonalGpu::SelfTensored => (dl.clone(), dr.clone(), None),
            DiagonalGpu::LocalExact { d, .. } => {
                let (dq, dk) = (self.zeros(rows * d), self.zeros(rows * d));
                (dq.clone(), dk.clone(), Some((dq, dk)))
            }
        };
        self.diag_rows(OP, s, (x, y, d, deg), (g, c), (y, d), &dx, true)?;
        let u = |w, v| u32_of(OP, w, v);
        // SAFETY: x, y, dy [heads·n, d]; g, c, dc [heads·n, k]; validated.
        unsafe {
            launch!(self, kernels::diag_backward_key::<R>,
                row_tiles(OP, s, s.heads)?, CubeDim::new_2d(kernels::COLS, kernels::DIAG_ROWS);
                x.arg(), y.arg(), g.arg(), c.arg(), dy.arg(), dc.arg(), u("n", s.n)?, u("d", d)?,
                u("k", s.k)?, u("block", s.block)?, u("degree", deg)?);
        }
        Ok(LtGrads { dl, dr, dc, dq_dk })
    }
}

/// The rows and degree the diagonal scores come from: `(x, y, width, degree)`.
fn diag_inputs<'a, R: Runtime>(
    s: &LtShape, l: &'a Buffer<R>, r: &'a Buffer<R>, diag: &DiagonalGpu<'a, R>,
) -> (&'a Buffer<R>, &'a Buffer<R>, usize, usize) {
    match *diag {
        DiagonalGpu::SelfTensored => (l, r, s.r, 2),
        DiagonalGpu::LocalExact { q, k, d, p } => (q, k, d, p),
    }
}

/// Cubes of `DIAG_ROWS` rows of each of `heads` heads: the tiles over X and Y (see
/// `kernels::row_tile`), the head on Z. Tiles past the last row find no row and do nothing.
fn row_tiles(op: &'static str, s: &LtShape, heads: usize) -> Result<CubeCount> {
    let tiles = s.n.div_ceil(kernels::DIAG_ROWS as usize);
    let x = tiles.min(crate::ops::MAX_AXIS);
    Ok(CubeCount::Static(
        u32_of(op, "row tiles", x)?,
        u32_of(op, "row tiles", tiles.div_ceil(x))?,
        heads as u32,
    ))
}
