//! The tensor-square feature map \\(l \mapsto l \otimes l\\) in two layouts, its VJP, and the
//! Gram identity.

use faer::prelude::ReborrowMut;
use faer::{MatMut, MatRef, Par, unzip, zip};
use polysketch_core::{
    Scalar,
    linalg::{gemm, scaled_product, scaled_product_add},
};

/// How the features of \\(l \otimes l\\) are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// All \\(r^2\\) entries \\(l_a l_b\\); feature \\(a r + b\\) is \\(l_a l_b\\).
    Full,
    /// The \\(r(r+1)/2\\) distinct entries, off-diagonal ones scaled by \\(\sqrt 2\\), laid out
    /// by shift so every block is a full-width entrywise product:
    /// block \\(s = 0\\) is \\(l \circ l\\); block \\(s = 1, \dots, \lceil r/2\rceil - 1\\) is
    /// \\(\sqrt 2\,(l \circ \operatorname{rot}_s l)\\) with \\((\operatorname{rot}_s l)_c =
    /// l_{(c+s) \bmod r}\\); for even \\(r\\), block \\(s = r/2\\) keeps only its first \\(r/2\\)
    /// entries (each pair once). Feature \\(s r + c\\) is \\(w_s\, l_c\, l_{(c+s) \bmod r}\\).
    /// Inner products equal the full layout's exactly:
    /// \\(\sum_{a,b} l_a l_b l'_a l'_b = \sum_a (l_a l'_a)^2 + 2\sum_{a<b} l_a l_b l'_a l'_b\\).
    #[default]
    Symmetric,
}

/// Number of features of \\(l \otimes l\\) for \\(l \in \mathbb{R}^r\\): \\(r^2\\) (full) or
/// \\(r(r+1)/2\\) (symmetric).
pub fn feature_dim(r: usize, layout: Layout) -> usize {
    match layout {
        Layout::Full => r * r,
        Layout::Symmetric => r * (r + 1) / 2,
    }
}

/// The blocks of the symmetric layout: `(shift s, entries in the block, weight w_s)`.
fn symmetric_blocks(r: usize) -> impl Iterator<Item = (usize, usize, f64)> {
    let shifts = r / 2 + 1; // s = 0..=r/2 for even r, 0..=(r-1)/2 for odd r
    (0..shifts).map(move |s| {
        let len = if r.is_multiple_of(2) && s == r / 2 { r / 2 } else { r };
        (s, len, if s == 0 { 1.0 } else { core::f64::consts::SQRT_2 })
    })
}

/// \\(\phi'\\) of given sketches: row \\(i\\) of `out` is the tensor square of row \\(i\\) of
/// `l` in `layout`.
///
/// # Shapes
/// `l: [n, r]`, `out: [n, feature_dim(r, layout)]`.
///
/// # Panics
/// If the shapes do not match (an unchecked kernel: callers validate).
pub fn tensor_square<T: Scalar>(l: MatRef<'_, T>, layout: Layout, mut out: MatMut<'_, T>) {
    let r = l.ncols();
    assert_eq!(
        (out.nrows(), out.ncols()),
        (l.nrows(), feature_dim(r, layout)),
        "tensor_square: output shape"
    );
    for (f, a, b, w) in features(r, layout) {
        column_op(out.rb_mut().col_mut(f), l.col(a), l.col(b), T::of(w), false);
    }
}

/// Vector-Jacobian product of [`tensor_square`]: given `dphi` \\(= \partial L/\partial
/// \phi'\\), writes \\(\partial L/\partial l\\) into `dl` (overwriting it).
///
/// For a feature \\(w\, l_a l_b\\): \\(\partial/\partial l_a \mathrel{+}= w\, d\phi\, l_b\\) and
/// \\(\partial/\partial l_b \mathrel{+}= w\, d\phi\, l_a\\) (both for \\(a = b\\), giving the
/// factor 2 of \\(l_a^2\\)).
///
/// # Shapes
/// `l: [n, r]`, `dphi: [n, feature_dim(r, layout)]`, `dl: [n, r]`.
///
/// # Panics
/// If the shapes do not match.
pub fn tensor_square_vjp<T: Scalar>(
    l: MatRef<'_, T>, dphi: MatRef<'_, T>, layout: Layout, mut dl: MatMut<'_, T>,
) {
    let r = l.ncols();
    assert_eq!(
        (dphi.nrows(), dphi.ncols()),
        (l.nrows(), feature_dim(r, layout)),
        "tensor_square_vjp: dphi shape"
    );
    assert_eq!((dl.nrows(), dl.ncols()), (l.nrows(), r), "tensor_square_vjp: dl shape");
    dl.fill(T::zero());
    for (f, a, b, w) in features(r, layout) {
        let w = T::of(w);
        column_op(dl.rb_mut().col_mut(a), dphi.col(f), l.col(b), w, true);
        column_op(dl.rb_mut().col_mut(b), dphi.col(f), l.col(a), w, true);
    }
}

/// The features of `layout` for sketches of width `r`, in their column order, as `(a, b, w)`:
/// column `f` of [`tensor_square`]'s output is `w * l[:, a] * l[:, b]` (computed in that
/// order), so a product that generates the features while it packs them
/// ([`polysketch_core::bf16::Products`]) matches a materialised copy bit for bit.
///
/// ```
/// use polysketch_tensoring::{Layout, feature_dim, feature_pairs};
///
/// let pairs = feature_pairs::<f32>(4, Layout::Symmetric);
/// assert_eq!(pairs.len(), feature_dim(4, Layout::Symmetric)); // r(r+1)/2 = 10
/// assert_eq!(pairs[0], (0, 0, 1.0)); // the squares first, weight 1
/// assert_eq!(pairs[4], (0, 1, std::f32::consts::SQRT_2)); // then l_a l_b, weight √2
/// ```
pub fn feature_pairs<T: Scalar>(r: usize, layout: Layout) -> Vec<(usize, usize, T)> {
    features(r, layout).map(|(_, a, b, w)| (a, b, T::of(w))).collect()
}

/// Every feature of a layout as `(feature column, a, b, weight)`: feature = weight · l_a · l_b.
fn features(r: usize, layout: Layout) -> Box<dyn Iterator<Item = (usize, usize, usize, f64)>> {
    match layout {
        Layout::Full => Box::new((0..r * r).map(move |f| (f, f / r, f % r, 1.0))),
        Layout::Symmetric => Box::new(
            symmetric_blocks(r)
                .flat_map(|(s, len, w)| (0..len).map(move |c| (s, c, w)))
                .enumerate()
                .map(move |(f, (s, c, w))| (f, c, (c + s) % r, w)),
        ),
    }
}

/// `out = w · x ∘ y` (or `out += w · x ∘ y` when `accumulate`) down three columns: through
/// the vectorised slice kernels when all three are contiguous (faer's column-major default),
/// else element by element.
#[inline(always)]
fn column_op<T: Scalar>(
    out: faer::ColMut<'_, T>, x: faer::ColRef<'_, T>, y: faer::ColRef<'_, T>, w: T,
    accumulate: bool,
) {
    if let (Some(xs), Some(ys)) = (x.try_as_col_major(), y.try_as_col_major())
        && (out.row_stride() == 1 || out.nrows() <= 1)
    {
        if let Some(o) = out.try_as_col_major_mut() {
            let (o, xs, ys) = (o.as_slice_mut(), xs.as_slice(), ys.as_slice());
            if accumulate {
                scaled_product_add(o, xs, ys, w);
            } else {
                scaled_product(o, xs, ys, w);
            }
        }
        return;
    }
    if accumulate {
        zip!(out, x, y).for_each(|unzip!(o, x, y)| *o += w * *x * *y);
    } else {
        zip!(out, x, y).for_each(|unzip!(o, x, y)| *o = w * *x * *y);
    }
}

/// The Gram identity \\(\phi'(Q)\phi'(K)^\top = (LR^\top)^{\circ 2}\\) for `l` = \\(L\\) and
/// `r` = \\(R\\), the degree-\\(p/2\\) sketches of the rows of \\(Q\\) and \\(K\\): one
/// \\(b_1 \times b_2\\) product of inner dimension \\(r\\) and an entrywise square,
/// \\(O(b_1 b_2 r)\\) instead of \\(O(b_1 b_2 r^2)\\) through features.
///
/// # Shapes
/// `l: [b1, r]`, `r: [b2, r]`, `out: [b1, b2]`.
///
/// # Panics
/// If the shapes do not match.
pub fn gram_block<T: Scalar>(l: MatRef<'_, T>, r: MatRef<'_, T>, mut out: MatMut<'_, T>, par: Par) {
    gemm(out.rb_mut(), l, r.transpose(), T::one(), false, par);
    zip!(out).for_each(|unzip!(x)| *x = *x * *x);
}
