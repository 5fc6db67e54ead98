//! The exclusive prefix step that walks the blocks of lt(A Bᵀ) C in order.

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
