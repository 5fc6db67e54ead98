//! Exclusive prefix sums over the blocks of lt(A Bᵀ) C, in `f64`, in a fixed order.

use faer::prelude::ReborrowMut;
use faer::{Mat, MatMut, Par};
use polysketch_core::Scalar;
use rayon::prelude::*;

polysketch_core::multiversion! {
    /// One step of an exclusive running sum kept in `f64`: `v[i] ← acc[i]` (rounded to `T`),
    /// then `acc[i] += v[i]` (the old value). Walking the blocks of a prefix in order with it
    /// gives exclusive prefix sums whose rounding does not grow with the number of blocks.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn exclusive_scan_step<T: Scalar>(v: &mut [T], acc: &mut [f64]) {
        assert_eq!(v.len(), acc.len(), "exclusive_scan_step: lengths differ");
        for (v, a) in v.iter_mut().zip(acc.iter_mut()) {
            let x = *v;
            *v = T::of(*a);
            *a += x.as_f64();
        }
    }
}

/// In place, over the `t` blocks of `k` columns of `h` (`[m, t·k]`): block `l` becomes
/// \\(\\sum_{j<l} H_j\\) (or \\(\\sum_{j>l} H_j\\) when `reverse`), summed in `f64` in a fixed
/// order, in parallel over the `k` column positions.
pub(crate) fn exclusive_block_prefix<T: Scalar>(h: &mut Mat<T>, k: usize, reverse: bool, par: Par) {
    let m = h.nrows();
    // group j holds column j of every block, in block order (columns of an owned matrix are
    // contiguous slices)
    let mut groups: Vec<Vec<&mut [T]>> = (0..k).map(|_| Vec::new()).collect();
    for (c, col) in h.as_mut().col_iter_mut().enumerate() {
        if let Some(col) = col.try_as_col_major_mut() {
            groups[c % k].push(col.as_slice_mut());
        }
    }
    let prefix = |group: &mut Vec<&mut [T]>| {
        let mut acc = vec![0.0f64; m];
        let t = group.len();
        for i in 0..t {
            exclusive_scan_step(group[if reverse { t - 1 - i } else { i }], &mut acc);
        }
    };
    match par {
        Par::Seq => groups.iter_mut().for_each(prefix),
        Par::Rayon(_) => groups.par_iter_mut().for_each(prefix),
    }
}

/// One block's step of [`exclusive_block_prefix`] (forward order), for a forward that walks its
/// blocks in order: `h` (`[m, k]`, columns contiguous) becomes the running sum before it, and
/// `acc` (`m·k`, column `j` at `j·m`) adds the old `h`. Each entry sees the same `f64` sums in
/// the same order as in [`exclusive_block_prefix`], so the two give the same values bit for bit.
pub(crate) fn exclusive_scan_block<T: Scalar>(mut h: MatMut<'_, T>, acc: &mut [f64]) {
    let m = h.nrows();
    // one run of m per column (none when m or k is 0)
    for (j, acc) in acc.chunks_exact_mut(m.max(1)).enumerate() {
        if let Some(col) = h.rb_mut().col_mut(j).try_as_col_major_mut() {
            exclusive_scan_step(col.as_slice_mut(), acc);
        }
    }
}
