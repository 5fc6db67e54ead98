//! How host code launches the `#[cube(launch_unchecked)]` kernels: one macro for every launch
//! and the 1-D grid most of them use. The arguments follow a `;` and are laid out by hand:
//! rustfmt leaves such macro calls as written.
//!
//! A launch stays `unsafe` at its call: the kernels index their buffers without checks beyond
//! what each kernel documents, so every call site keeps its `// SAFETY:` comment saying why the
//! buffers hold what the kernel reads and writes for that grid.

use cubecl::prelude::*;

use crate::ops::MAX_AXIS;

/// `units` one-dimensional units in cubes of `per_cube`, spread over X and Y so no axis passes
/// wgpu's 65,535 (kernels index with `ABSOLUTE_POS` and check bounds).
pub(crate) fn grid_1d(units: usize, per_cube: u32) -> CubeCount {
    let cubes = units.div_ceil(per_cube as usize).max(1);
    let x = cubes.min(MAX_AXIS);
    CubeCount::Static(x as u32, cubes.div_ceil(x) as u32, 1)
}

/// `launch!(gpu, kernels::name::<R>, count, dim; args...)`: the kernel's `launch_unchecked`
/// on `gpu`'s client with cube count `count` and cube dimension `dim` (an `unsafe` call).
macro_rules! launch {
    ($gpu:expr, $($kernel:ident)::+ $(::<$($g:ty),+>)?, $count:expr, $dim:expr; $($arg:expr),* $(,)?) => {
        $($kernel)::+::launch_unchecked $(::<$($g),+>)? (&$gpu.client, $count, $dim, $($arg),*)
    };
}

/// `launch_1d!(gpu, kernels::name::<R>, (units, per_cube); args...)`: [`launch!`] over
/// [`grid_1d`]`(units, per_cube)` with `per_cube` threads a cube, for the kernels that index
/// with `ABSOLUTE_POS` and check it against their lengths.
macro_rules! launch_1d {
    ($gpu:expr, $($kernel:ident)::+ $(::<$($g:ty),+>)?, ($units:expr, $per:expr); $($arg:expr),* $(,)?) => {
        launch!(
            $gpu,
            $($kernel)::+ $(::<$($g),+>)?,
            $crate::launch::grid_1d($units, $per),
            cubecl::prelude::CubeDim::new_1d($per);
            $($arg),*
        )
    };
}
