//! Named parameters and the small network pieces the layers share (the layer norm is in
//! [`crate::layernorm`]).

use polysketch_core::Scalar;

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

/// \\(\mathrm{gelu}(x)\\), tanh form (one element; the loops below vectorise over it).
#[inline(always)]
pub(crate) fn gelu_one<T: Scalar>(x: T) -> T {
    let t = (T::of(GELU_C) * (x + T::of(GELU_A) * x * x * x)).fast_tanh();
    T::of(0.5) * x * (T::one() + t)
}

/// \\((\mathrm{gelu}(x), \mathrm{gelu}'(x))\\), tanh form.
#[inline(always)]
fn gelu_and_grad_one<T: Scalar>(x: T) -> (T, T) {
    let (half, c, k, k3) = (T::of(0.5), T::of(GELU_C), T::of(GELU_A), T::of(3.0 * GELU_A));
    let t = (c * (x + k * x * x * x)).fast_tanh();
    let g = half * (T::one() + t) + half * x * (T::one() - t * t) * c * (T::one() + k3 * x * x);
    (half * x * (T::one() + t), g)
}

polysketch_core::multiversion! {
    /// `z = gelu(a)` elementwise, tanh form:
    /// \\(\mathrm{gelu}(x) = \tfrac12 x\,(1 + \tanh(\sqrt{2/\pi}(x + 0.044715x^3)))\\).
    /// Shapes: `a`, `z` of one length.
    pub fn gelu<T: Scalar>(a: &[T], z: &mut [T]) {
        z.iter_mut().zip(a).for_each(|(z, &x)| *z = gelu_one(x));
    }
}

polysketch_core::multiversion! {
    /// `z = gelu(a)` and `g = gelu'(a)` elementwise (tanh form, as [`gelu`]).
    /// Shapes: `a`, `z`, `g` of one length.
    pub fn gelu_with_grad<T: Scalar>(a: &[T], z: &mut [T], g: &mut [T]) {
        for ((z, g), &x) in z.iter_mut().zip(g.iter_mut()).zip(a) {
            (*z, *g) = gelu_and_grad_one(x);
        }
    }
}
