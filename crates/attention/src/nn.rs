//! Named parameters and the small network pieces the layers share (the layer norm is in
//! [`crate::layernorm`]).

/// \\(\sqrt{2/\pi}\\) and the cubic coefficient of the tanh form of gelu.
const GELU_C: f64 = 0.797_884_560_802_865_4;
const GELU_A: f64 = 0.044_715;

/// A named parameter tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Param<'a, T> {
    /// Its name, e.g. `ln.gain` or `sketch.node0.f1.w1`.
    pub name: String,
    /// Its shape: `[d]` for vectors, `[rows, cols]` for matrices (row-major `data`).
    pub shape: Vec<usize>,
    /// Its values.
    pub data: &'a [T],
}

/// A named parameter tensor, mutable (for optimisers and loading).
#[derive(Debug, PartialEq)]
pub struct ParamMut<'a, T> {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values.
    pub data: &'a mut [T],
}

polysketch_core::multiversion! {
    /// `z = gelu(a)` elementwise, tanh form:
    /// \\(\mathrm{gelu}(x) = \tfrac12 x\,(1 + \tanh(\sqrt{2/\pi}(x + 0.044715x^3)))\\).
    /// Shapes: `a`, `z` of one length.
    pub fn gelu<T: Scalar>(a: &[T], z: &mut [T]) {
        let (half, c, k) = (T::of(0.5), T::of(GELU_C), T::of(GELU_A));
        for (z, &x) in z.iter_mut().zip(a) {
            let t = (c * (x + k * x * x * x)).fast_tanh();
            *z = half * x * (T::one() + t);
        }
    }
}

polysketch_core::multiversion! {
    /// `z = gelu(a)` and `g = gelu'(a)` elementwise (tanh form, as [`gelu`]).
    /// Shapes: `a`, `z`, `g` of one length.
    pub fn gelu_with_grad<T: Scalar>(a: &[T], z: &mut [T], g: &mut [T]) {
        let (half, c, k, k3) = (T::of(0.5), T::of(GELU_C), T::of(GELU_A), T::of(3.0 * GELU_A));
        for ((z, g), &x) in z.iter_mut().zip(g.iter_mut()).zip(a) {
            let t = (c * (x + k * x * x * x)).fast_tanh();
            *g = half * (T::one() + t) + half * x * (T::one() - t * t) * c * (T::one() + k3 * x * x);
            *z = half * x * (T::one() + t);
        }
    }
}
