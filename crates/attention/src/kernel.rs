//! Normalised kernel attention (PolySketch and exact polynomial), forward and backward:
//! \\(\mathrm{out}_i = \mathrm{raw}_i[..h] / (1 + \mathrm{raw}_i[h])\\) with
//! \\(\mathrm{raw}_i = \sum_{j \le i} s_{ij}[v_j, 1]\\) (over every \\(j\\) when bidirectional), the
//! products computed by the lowtri engine (causal PolySketch), by [`crate::bidirectional`]
//! (bidirectional PolySketch) or by exact tiles (polynomial).

use faer::prelude::ReborrowMut;
use faer::{MatMut, MatRef, Par};
use polysketch_core::linalg::{axpy, copy_slice, row_blocks, scaled_copy};
use polysketch_core::{CHUNK_ROWS, Scalar};
use polysketch_lowtri::{Features, Grads as LtGrads, LowTri, Problem, Saved as LtSaved};
use polysketch_sketch::{PolySketch, SketchError};
use rayon::prelude::*;

use crate::bidirectional;
use crate::layernorm::copy_row;
use crate::performer::Side;
use crate::polynomial::{self, PolyViews};
use crate::saved::{Core, HeadSaved, Inner, Rows, reshape_mat};
use crate::tiles::{self, HeadViews, TILE};
use crate::{Attention, AttentionError, AttentionKind, Grads, PolySketchConfig, Result, Saved};

/// `out = raw[..h] / (offset + raw[h])` for one row of `h + 1` accumulated values (the weighted
/// sum of values, then of weights); returns the denominator. The layer's forward and recurrent
/// decoding both normalise through it (`offset` from [`den_offset`]).
pub(crate) fn normalise<T: Scalar, A: Scalar>(raw: &[A], out: &mut [T], offset: A) -> A {
    let h = out.len();
    let den = offset + raw[h];
    let inv = A::one() / den;
    out.iter_mut().zip(&raw[..h]).for_each(|(o, x)| *o = T::of((*x * inv).as_f64()));
    den
}

/// The lowtri problem of one head from its `[l, r, q̃, k̃, C]`: PolySketch's self-tensored
/// features (exact local blocks if asked) or Performer's and Hedgehog's explicit ones.
fn problem<'a, T: Scalar>(
    kind: AttentionKind, [l, r, qt, kt, c]: [MatRef<'a, T>; 5],
) -> Problem<'a, T> {
    match kind {
        AttentionKind::PolySketch(ps) if ps.local => {
            Problem::local_exact(Features::SelfTensored { l, r }, qt, kt, ps.p, c)
        }
        AttentionKind::Performer { .. } | AttentionKind::Hedgehog { .. } => {
            Problem::general(l, r, c)
        }
        _ => Problem::self_tensored(l, r, c),
    }
}

/// Sets `grads` to zero in the shapes of `zero` (a state reused by a layer of other sizes gets
/// `zero` itself; otherwise its memory is kept).
fn zero_grads_like<T: Scalar>(grads: &mut Vec<Vec<T>>, zero: Vec<Vec<T>>) {
    if grads.iter().map(Vec::len).ne(zero.iter().map(Vec::len)) {
        *grads = zero;
    } else {
        grads.iter_mut().for_each(|g| g.fill(T::zero()));
    }
}

/// The block size of the lowtri product of a PolySketch, Performer or Hedgehog layer.
fn block_of(kind: AttentionKind) -> usize {
    match kind {
        AttentionKind::PolySketch(c) => c.block,
        AttentionKind::Performer { block, .. } | AttentionKind::Hedgehog { block, .. } => block,
        _ => 0,
    }
}

/// The lowtri engine of a PolySketch, Performer or Hedgehog layer, without its scans of values:
/// the layer checks its own inputs and every output it returns, and a non-finite internal value
/// (a sketch or a product past the number format's range) reaches one of them (the
/// denominators are checked in [`Attention::kernel_forward`]); its forward's feature products
/// in bf16 when `bf16` ([`Attention::set_bf16_features`]).
fn engine_of(kind: AttentionKind, bf16: bool) -> polysketch_core::Result<LowTri> {
    Ok(LowTri::new(block_of(kind))?.without_value_scans().with_bf16_products(bf16))
}

/// The constant of the normalisation \\(\mathrm{out}_i = \mathrm{raw}_i[..h]/(c +
/// \mathrm{raw}_i[h])\\): 1 for the polynomial kinds (the paper's \\(1 + \sum_j\\)), 0 for
/// Performer and Hedgehog (softmax estimates, normalised by their sums alone).
pub(crate) fn den_offset<T: Scalar>(kind: AttentionKind) -> T {
    match kind {
        AttentionKind::Performer { .. } | AttentionKind::Hedgehog { .. } => T::zero(),
        _ => T::one(),
    }
}

/// Rows `r0..r1` of a row-major matrix, as a slice.
fn rows_of<T: Scalar>(m: &mut Rows<T>, r0: usize, r1: usize) -> &mut [T] {
    let cols = m.cols;
    &mut m.data[r0 * cols..r1 * cols]
}

/// The rows of \\(C = [V, \mathbf 1]\\) for the rows of `v` (`[len, h]`) into `c` (row-major
/// `[len, h + 1]`).
fn value_rows<T: Scalar>(v: MatRef<'_, T>, c: &mut [T]) {
    let h = v.ncols();
    for (i, row) in c.chunks_exact_mut(h + 1).enumerate() {
        copy_row(v, i, &mut row[..h]);
        row[h] = T::one();
    }
}

/// Zeroes the rows of `f` in `chunk = (c0, c1)` outside `keep = (k0, k1)`; returns the rows of
/// the chunk inside it, `(a, b)` with `a <= b`.
fn zero_rows_outside<T: Scalar>(
    mut f: MatMut<'_, T>, (c0, c1): (usize, usize), (k0, k1): (usize, usize),
) -> (usize, usize) {
    let a = k0.clamp(c0, c1);
    let b = k1.clamp(a, c1);
    for (r0, r1) in [(c0, a), (b, c1)] {
        f.rb_mut().subrows_mut(r0, r1 - r0).fill(T::zero());
    }
    (a, b)
}

/// The rows of the sketch `f = S(x)` (`[n, r]`) in `chunk = (c0, c1)`: those in the sketched
/// `range = (first, count)` from the rows of `x` (`[n, h]`), the others 0.
fn sketch_rows<T: Scalar>(
    sk: &dyn PolySketch<T>, x: MatRef<'_, T>, mut f: MatMut<'_, T>, chunk: (usize, usize),
    (r0, len): (usize, usize),
) {
    let (a, b) = zero_rows_outside(f.rb_mut(), chunk, (r0, r0 + len));
    if a < b {
        sk.apply_rows(x.subrows(a, b - a), f.subrows_mut(a, b - a));
    }
}

/// Runs `f` on every head, in parallel under `Par::Rayon`.
fn each_head<T: Scalar, R: Send>(
    heads: &mut [HeadSaved<T>], par: Par, f: impl Fn(usize, &mut HeadSaved<T>) -> R + Sync + Send,
) -> Vec<R> {
    match par {
        Par::Seq => heads.iter_mut().enumerate().map(|(i, s)| f(i, s)).collect(),
        Par::Rayon(_) => heads.par_iter_mut().enumerate().map(|(i, s)| f(i, s)).collect(),
    }
}

/// The rows of \\(\tilde q\\) and \\(\tilde k\\) whose sketches the products read, as
/// `(first row, count)`.
#[derive(Debug, Clone, Copy)]
struct SketchedRows {
    queries: (usize, usize),
    keys: (usize, usize),
}

impl<T: Scalar> Attention<T> {
    /// Which rows need a sketch. Causal with exact local blocks of `b` rows, the sketched part
    /// pairs a query block only with earlier key blocks: the queries of the first block and the
    /// keys of the last are never paired, so their rows of \\(L\\), \\(R\\) stay 0 and
    /// are not sketched (at \\(n \le b\\) none is, and the layer costs what exact polynomial
    /// attention does; the sketch's gradients are then 0, as they are whenever its output is
    /// unused). Otherwise every row.
    fn sketched_rows(&self, n: usize) -> SketchedRows {
        match self.config.kind {
            AttentionKind::PolySketch(c) if c.local && self.config.causal && c.block > 0 => {
                let first = c.block.min(n);
                let last = (n.saturating_sub(1) / c.block) * c.block;
                SketchedRows { queries: (first, n - first), keys: (0, last) }
            }
            _ => SketchedRows { queries: (0, n), keys: (0, n) },
        }
    }

    /// Kernel (PolySketch or exact polynomial) forward of every head.
    pub(crate) fn kernel_forward(
        &self, views: &[HeadViews<'_, T>], out: &mut [T], saved: &mut Saved<T>, par: Par,
    ) -> Result<()> {
        let (h, count, n) = (self.config.head_dim, views.len(), views[0].q.nrows());
        let (sketch, r) = match self.config.kind {
            AttentionKind::PolySketch(c) => (self.sketch.as_deref(), c.r),
            AttentionKind::Performer { features, .. }
            | AttentionKind::Hedgehog { features, .. } => (None, features),
            _ => (None, 0),
        };
        let causal = self.config.causal;
        let fresh_core = || match self.config.kind {
            AttentionKind::PolySketch(_) if !causal => Core::Bidirectional {
                grads: (0..count).map(|_| LtGrads::new()).collect(),
                used: true,
            },
            AttentionKind::PolySketch(_)
            | AttentionKind::Performer { .. }
            | AttentionKind::Hedgehog { .. } => Core::Sketch {
                lowtri: (0..count).map(|_| LtSaved::new()).collect(),
                grads: (0..count).map(|_| LtGrads::new()).collect(),
            },
            AttentionKind::Polynomial { p } | AttentionKind::Local { p, .. } => {
                Core::Exact { p, used: true }
            }
            AttentionKind::Softmax | AttentionKind::Sliding { .. } => {
                Core::Exact { p: 0, used: true }
            }
        };
        // the state's per-head buffers and core fit this call (count, kind, causal or not)
        let core_fits = |core: &Core<T>| match (core, self.config.kind) {
            (
                Core::Sketch { .. },
                AttentionKind::PolySketch(_)
                | AttentionKind::Performer { .. }
                | AttentionKind::Hedgehog { .. },
            ) => causal,
            (Core::Bidirectional { .. }, AttentionKind::PolySketch(_)) => !causal,
            (
                Core::Exact { .. },
                AttentionKind::Polynomial { .. } | AttentionKind::Local { .. },
            ) => true,
            _ => false,
        };
        let reusable = matches!(&saved.inner, Inner::Kernel { heads, core } if heads.len() == count && core_fits(core));
        if !reusable {
            saved.inner = Inner::Kernel {
                heads: (0..count).map(|_| HeadSaved::default()).collect(),
                core: fresh_core(),
            };
        }
        let Inner::Kernel { heads, core } = &mut saved.inner else {
            return Err(AttentionError::InvalidState {
                op: "Attention::forward",
                reason: "internal: kernel state expected".into(),
            });
        };
        // 1. per head, by chunks of rows: q̃ = LN(q)/h^¼, k̃ likewise, C = [V, 1], and for the
        // random sketch L = S(q̃), R = S(k̃) while the chunk's q̃, k̃ are still in cache
        // (the learned sketch, Performer and Hedgehog map every row after)
        let rows = self.sketched_rows(n);
        let prepared: Vec<Result<()>> = each_head(heads, par, |idx, s| {
            let x = &views[idx];
            s.qt.reshape(n, h);
            s.kt.reshape(n, h);
            s.c.reshape(n, h + 1);
            if self.has_layernorm() {
                s.ln_q.resize(n, h);
                s.ln_k.resize(n, h);
            }
            reshape_mat(&mut s.l, n, r);
            reshape_mat(&mut s.r, n, r);
            for c0 in (0..n).step_by(CHUNK_ROWS) {
                let c1 = (c0 + CHUNK_ROWS).min(n);
                let len = c1 - c0;
                self.qk_forward_rows(
                    x.q.subrows(c0, len),
                    rows_of(&mut s.qt, c0, c1),
                    &mut s.ln_q,
                    c0,
                );
                self.qk_forward_rows(
                    x.k.subrows(c0, len),
                    rows_of(&mut s.kt, c0, c1),
                    &mut s.ln_k,
                    c0,
                );
                value_rows(x.v.subrows(c0, len), rows_of(&mut s.c, c0, c1));
                if let Some(sk) = sketch {
                    for (xt, f, range) in
                        [(&s.qt, &mut s.l, rows.queries), (&s.kt, &mut s.r, rows.keys)]
                    {
                        // unchecked: the layer's own checks cover the values (see `engine_of`)
                        sketch_rows(sk, xt.as_ref(), f.as_mut(), (c0, c1), range);
                    }
                }
            }
            if let Some(favor) = &self.favor {
                // Performer: x = q/h^¼, so that ⟨x, y⟩ = ⟨q, k⟩/√h, softmax's score
                let scale = self.scale();
                s.qt.data.iter_mut().chain(s.kt.data.iter_mut()).for_each(|x| *x *= scale);
                favor.apply(s.qt.as_ref(), Side::Query, s.l.as_mut());
                favor.apply(s.kt.as_ref(), Side::Key, s.r.as_mut());
            } else if let Some(map) = &self.hedgehog {
                map.apply(s.qt.as_ref(), s.l.as_mut());
                map.apply(s.kt.as_ref(), s.r.as_mut());
            } else if let Some(ls) = &self.learned {
                // PolySketch: the rows that are not sketched are 0
                for (x, f, sv, (r0, len)) in [
                    (&s.qt, &mut s.l, &mut s.learned_q, rows.queries),
                    (&s.kt, &mut s.r, &mut s.learned_k, rows.keys),
                ] {
                    zero_rows_outside(f.as_mut(), (0, n), (r0, r0 + len));
                    ls.forward(x.as_ref().subrows(r0, len), f.as_mut().subrows_mut(r0, len), sv);
                }
            }
            s.raw.reshape(n, h + 1);
            s.out.reshape(n, h);
            s.den.resize(n, T::zero());
            Ok(())
        });
        prepared.into_iter().collect::<Result<Vec<()>>>()?;
        // 2. the products Σ_{j ≤ i} s_ij [v_j, 1] (every j when bidirectional) of every head
        match (&mut *core, self.config.kind) {
            (Core::Bidirectional { used, .. }, AttentionKind::PolySketch(c)) => {
                let o = bidirectional::Options { p: c.p, block: c.block, local: c.local };
                each_head(heads, par, |_, s| {
                    let HeadSaved { l, r, qt, kt, c: cm, raw, .. } = s;
                    let x = bidirectional::Head {
                        l: l.as_ref(),
                        r: r.as_ref(),
                        qt: qt.as_ref(),
                        kt: kt.as_ref(),
                        c: cm.as_ref(),
                    };
                    bidirectional::forward(&x, o, raw.as_mut());
                });
                *used = false;
            }
            (
                Core::Sketch { lowtri, .. },
                kind @ (AttentionKind::PolySketch(_)
                | AttentionKind::Performer { .. }
                | AttentionKind::Hedgehog { .. }),
            ) => {
                let engine = engine_of(kind, self.bf16_features)?;
                let (problems, outs): (Vec<Problem<'_, T>>, Vec<MatMut<'_, T>>) = heads
                    .iter_mut()
                    .map(|s| {
                        let HeadSaved { l, r, qt, kt, c: cm, raw, .. } = s;
                        let parts = [l.as_ref(), r.as_ref(), qt.as_ref(), kt.as_ref(), cm.as_ref()];
                        (problem(kind, parts), raw.as_mut())
                    })
                    .unzip();
                engine.forward_batch_into(&problems, outs, lowtri, par)?;
            }
            (
                Core::Exact { p, used },
                AttentionKind::Polynomial { .. } | AttentionKind::Local { .. },
            ) => {
                let (p, mask) = (*p, self.config.mask());
                let mut tasks = Vec::new();
                let mut raws: Vec<MatMut<'_, T>> = Vec::with_capacity(count);
                let mut pv = Vec::with_capacity(count);
                for s in heads.iter_mut() {
                    let HeadSaved { qt, kt, c: cm, raw, .. } = s;
                    pv.push(PolyViews { q: qt.as_ref(), k: kt.as_ref(), c: cm.as_ref(), mask });
                    raws.push(raw.as_mut());
                }
                for (idx, m) in raws.into_iter().enumerate() {
                    for (t, block) in row_blocks(m, TILE).into_iter().enumerate() {
                        tasks.push((idx, t, block));
                    }
                }
                tiles::run_tasks(tasks, h + 1, par, |sc, (idx, t, block)| {
                    polynomial::forward_tile(&pv[idx], p, t, block, sc)
                });
                *used = false;
            }
            _ => {
                return Err(AttentionError::InvalidState {
                    op: "Attention::forward",
                    reason: "internal: core of another kind".into(),
                });
            }
        }
        // 3. normalise: out = num / (1 + den) (num / den for Performer and Hedgehog)
        let offset = den_offset(self.config.kind);
        let chunks: Vec<(&mut HeadSaved<T>, &mut [T])> =
            heads.iter_mut().zip(out.chunks_mut(n * h)).collect();
        let finish = |(s, o): (&mut HeadSaved<T>, &mut [T])| {
            for i in 0..n {
                let dst = &mut o[i * h..(i + 1) * h];
                s.den[i] = normalise(s.raw.row(i), dst, offset);
                copy_slice(s.out.row_mut(i), dst);
            }
        };
        match par {
            Par::Seq => chunks.into_iter().for_each(finish),
            Par::Rayon(_) => chunks.into_par_iter().for_each(finish),
        }
        // the engine does not scan its output (see `engine_of`): a denominator past the number
        // format's range would make `out` zeros, not NaN, so the denominators are checked here
        let bad = heads.iter().find_map(|s| s.den.iter().position(|d| !d.is_finite()));
        if let Some(row) = bad {
            let (op, input, output) = ("Attention::forward", "q and k", "the denominators");
            return Err(SketchError::Overflow { op, input, output, row, col: 0 }.into());
        }
        Ok(())
    }

    /// Kernel (PolySketch or exact polynomial) backward of every head.
    pub(crate) fn kernel_backward(
        &self, heads: &mut [HeadSaved<T>], core: &mut Core<T>, d_out: &[T], grads: &mut Grads<T>,
        par: Par,
    ) -> Result<()> {
        let (h, n) = (self.config.head_dim, heads[0].out.nrows());
        // 1. through the normalisation: out = num/den, so dnum = dout/den and
        //    dden = -Σ_c dout_c num_c / den² = -(dout · out)/den
        each_head(heads, par, |idx, s| {
            s.draw.reshape(n, h + 1);
            for i in 0..n {
                let d = &d_out[(idx * n + i) * h..(idx * n + i + 1) * h];
                let inv = T::one() / s.den[i];
                let dden =
                    -d.iter().zip(s.out.row(i)).fold(T::zero(), |acc, (a, b)| acc + *a * *b) * inv;
                let row = s.draw.row_mut(i);
                row[..h].iter_mut().zip(d).for_each(|(r, d)| *r = *d * inv);
                row[h] = dden;
            }
            s.dqt.reshape(n, h);
            s.dkt.reshape(n, h);
            s.dc.reshape(n, h + 1);
        });
        // 2. through the products, to ∂q̃, ∂k̃ and ∂C of every head
        let bidirectional_grads = |lt: &mut Vec<LtGrads<T>>, c: PolySketchConfig| {
            let o = bidirectional::Options { p: c.p, block: c.block, local: c.local };
            let parts: Vec<_> = heads.iter().zip(lt.iter_mut()).collect();
            let run = |(s, g): (&HeadSaved<T>, &mut LtGrads<T>)| {
                let x = bidirectional::Head {
                    l: s.l.as_ref(),
                    r: s.r.as_ref(),
                    qt: s.qt.as_ref(),
                    kt: s.kt.as_ref(),
                    c: s.c.as_ref(),
                };
                bidirectional::backward(&x, o, s.draw.as_ref(), g);
            };
            match par {
                Par::Seq => parts.into_iter().for_each(run),
                Par::Rayon(_) => parts.into_par_iter().for_each(run),
            }
        };
        let lowtri_backward = |lowtri: &mut Vec<LtSaved<T>>, lt: &mut Vec<LtGrads<T>>| {
            let engine = engine_of(self.config.kind, self.bf16_features)?;
            let problems: Vec<Problem<'_, T>> = heads
                .iter()
                .map(|s| {
                    let parts =
                        [s.l.as_ref(), s.r.as_ref(), s.qt.as_ref(), s.kt.as_ref(), s.c.as_ref()];
                    problem(self.config.kind, parts)
                })
                .collect();
            let d_refs: Vec<MatRef<'_, T>> = heads.iter().map(|s| s.draw.as_ref()).collect();
            engine.backward_batch_into(&problems, lowtri, &d_refs, lt, par)
        };
        match (core, self.config.kind) {
            (
                Core::Sketch { lowtri, grads: lt },
                AttentionKind::Performer { .. } | AttentionKind::Hedgehog { .. },
            ) => {
                lowtri_backward(lowtri, lt)?;
                let scale = self.scale();
                each_head(heads, par, |idx, s| {
                    let g = &lt[idx];
                    let HeadSaved { qt, kt, l, r, dqt, dkt, dc, d_learned, .. } = s;
                    // forward: L = φ(q̃), R = φ(k̃)
                    if let Some(favor) = &self.favor {
                        // Performer: q̃ = q/h^¼
                        favor.backward(qt.as_ref(), l.as_ref(), g.d_a.as_ref(), dqt.as_mut());
                        favor.backward(kt.as_ref(), r.as_ref(), g.d_b.as_ref(), dkt.as_mut());
                        dqt.data.iter_mut().chain(dkt.data.iter_mut()).for_each(|x| *x *= scale);
                    }
                    if let Some(map) = &self.hedgehog {
                        zero_grads_like(d_learned, map.zero_grads());
                        map.backward(
                            qt.as_ref(),
                            l.as_ref(),
                            g.d_a.as_ref(),
                            dqt.as_mut(),
                            d_learned,
                        );
                        map.backward(
                            kt.as_ref(),
                            r.as_ref(),
                            g.d_b.as_ref(),
                            dkt.as_mut(),
                            d_learned,
                        );
                    }
                    scaled_copy(dc.as_mut(), g.d_c.as_ref(), T::one());
                });
            }
            (
                core @ (Core::Sketch { .. } | Core::Bidirectional { .. }),
                AttentionKind::PolySketch(c),
            ) => {
                let sketch = self.sketch.as_deref();
                let lt = match core {
                    Core::Sketch { lowtri, grads: lt } => {
                        lowtri_backward(lowtri, lt)?;
                        &*lt
                    }
                    Core::Bidirectional { grads: lt, used } => {
                        *used = true;
                        bidirectional_grads(lt, c);
                        &*lt
                    }
                    Core::Exact { .. } => unreachable!("matched above"),
                };
                let rows = self.sketched_rows(n);
                let done: Vec<Result<()>> = each_head(heads, par, |idx, s| {
                    let g = &lt[idx];
                    // forward: L = S(q̃), R = S(k̃)
                    match (&self.learned, sketch) {
                        (Some(ls), _) => {
                            zero_grads_like(&mut s.d_learned, ls.zero_grads());
                            let HeadSaved { learned_q, learned_k, dqt, dkt, d_learned, .. } = s;
                            for (sv, d, dx, (r0, len)) in [
                                (learned_q, &g.d_a, dqt, rows.queries),
                                (learned_k, &g.d_b, dkt, rows.keys),
                            ] {
                                dx.data.fill(T::zero());
                                let dx = dx.as_mut().subrows_mut(r0, len);
                                ls.backward(sv, d.as_ref().subrows(r0, len), dx, d_learned);
                            }
                        }
                        (None, Some(sk)) => {
                            for (x, d, dx, (r0, len)) in [
                                (&s.qt, &g.d_a, &mut s.dqt, rows.queries),
                                (&s.kt, &g.d_b, &mut s.dkt, rows.keys),
                            ] {
                                dx.data.fill(T::zero());
                                sk.vjp_unchecked(
                                    x.as_ref().subrows(r0, len),
                                    d.as_ref().subrows(r0, len),
                                    dx.as_mut().subrows_mut(r0, len),
                                    Par::Seq,
                                );
                            }
                        }
                        (None, None) => {
                            return Err(AttentionError::InvalidState {
                                op: "Attention::backward",
                                reason: "internal: a PolySketch layer without a sketch".into(),
                            });
                        }
                    }
                    if let (Some(dq), Some(dk)) = (&g.d_q, &g.d_k) {
                        // forward (local): exact ⟨q̃, k̃⟩^p inside the diagonal blocks
                        axpy(s.dqt.as_mut(), dq.as_ref(), T::one());
                        axpy(s.dkt.as_mut(), dk.as_ref(), T::one());
                    }
                    scaled_copy(s.dc.as_mut(), g.d_c.as_ref(), T::one());
                    Ok(())
                });
                done.into_iter().collect::<Result<Vec<()>>>()?;
            }
            (
                Core::Exact { p, used },
                AttentionKind::Polynomial { .. } | AttentionKind::Local { .. },
            ) => {
                *used = true;
                let p = *p;
                let mut views = Vec::with_capacity(heads.len());
                let mut key_tasks = Vec::new();
                let mut query_tasks = Vec::new();
                for (idx, s) in heads.iter_mut().enumerate() {
                    let HeadSaved { qt, kt, c: cm, draw, dqt, dkt, dc, .. } = s;
                    views.push((
                        PolyViews {
                            q: qt.as_ref(),
                            k: kt.as_ref(),
                            c: cm.as_ref(),
                            mask: self.config.mask(),
                        },
                        draw.as_ref(),
                    ));
                    for (t, (k, c)) in row_blocks(dkt.as_mut(), TILE)
                        .into_iter()
                        .zip(row_blocks(dc.as_mut(), TILE))
                        .enumerate()
                    {
                        key_tasks.push((idx, t, k, c));
                    }
                    for (t, q) in row_blocks(dqt.as_mut(), TILE).into_iter().enumerate() {
                        query_tasks.push((idx, t, q));
                    }
                }
                tiles::run_tasks(key_tasks, h + 1, par, |sc, (idx, t, k, c)| {
                    polynomial::backward_key_tile(&views[idx].0, views[idx].1, p, t, c, k, sc)
                });
                tiles::run_tasks(query_tasks, h + 1, par, |sc, (idx, t, q)| {
                    polynomial::backward_query_tile(&views[idx].0, views[idx].1, p, t, q, sc)
                });
            }
            _ => {
                return Err(AttentionError::InvalidState {
                    op: "Attention::backward",
                    reason: "the saved state comes from a layer of another kind".into(),
                });
            }
        }
        // 3. per head: through the layer norm, straight into the row-major gradients
        let slices = grads
            .dq
            .chunks_mut(n * h)
            .zip(grads.dk.chunks_mut(n * h))
            .zip(grads.dv.chunks_mut(n * h));
        let parts: Vec<_> = heads.iter().zip(slices).collect();
        /// One head's state and its `(∂q, ∂k)`, `∂v` output slices.
        type HeadGrads<'a, T> = (&'a HeadSaved<T>, ((&'a mut [T], &'a mut [T]), &'a mut [T]));
        let head = |(s, ((q, k), v)): HeadGrads<'_, T>| -> (Vec<T>, Vec<T>) {
            let ln = self.ln_gain.len();
            let (mut dgain, mut dbias) = (vec![T::zero(); ln], vec![T::zero(); ln]);
            self.qk_backward(&s.dqt.data, &s.ln_q, q, &mut dgain, &mut dbias);
            self.qk_backward(&s.dkt.data, &s.ln_k, k, &mut dgain, &mut dbias);
            // forward: C = [V, 1], so dV is dC without its last column
            for i in 0..n {
                copy_slice(&mut v[i * h..(i + 1) * h], &s.dc.row(i)[..h]);
            }
            (dgain, dbias)
        };
        let per_head: Vec<(Vec<T>, Vec<T>)> = match par {
            Par::Seq => parts.into_iter().map(head).collect(),
            Par::Rayon(_) => parts.into_par_iter().map(head).collect(),
        };
        let ln = self.ln_gain.len();
        let (mut dgain, mut dbias) = (vec![T::zero(); ln], vec![T::zero(); ln]);
        // summed in head order: the same numbers whatever the thread count
        for (g_, b_) in per_head {
            dgain.iter_mut().zip(g_).for_each(|(a, b)| *a += b);
            dbias.iter_mut().zip(b_).for_each(|(a, b)| *a += b);
        }
        grads.params = vec![];
        if self.has_layernorm() {
            grads.params = vec![("ln.gain".into(), dgain), ("ln.bias".into(), dbias)];
        }
        // a learned sketch's or Hedgehog's gradients: the heads' shares, summed in head order
        let learned = match (&self.learned, &self.hedgehog) {
            (Some(ls), _) => Some((ls.zero_grads(), ls.parameters())),
            (None, Some(map)) => Some((map.zero_grads(), map.parameters())),
            (None, None) => None,
        };
        if let Some((mut total, params)) = learned {
            for s in heads.iter() {
                for (t, g) in total.iter_mut().zip(&s.d_learned) {
                    t.iter_mut().zip(g).for_each(|(a, b)| *a += *b);
                }
            }
            grads.params.extend(params.into_iter().zip(total).map(|(p, g)| (p.name, g)));
        }
        Ok(())
    }
}
