//! Argument checks shared by the layer, the device layer, packed sequences and decoding.

use faer::{MatRef, Par};
use polysketch_core::Scalar;

use crate::learned::WIDE;
use crate::{AttentionConfig, AttentionError, AttentionKind, MAX_STATE_BYTES, Result, SketchKind};

/// `batch` and `n` must be at least 1: [`AttentionError::InvalidArgument`] naming the one
/// that is not.
pub(crate) fn check_positive(op: &'static str, batch: usize, n: usize) -> Result<()> {
    for (argument, value) in [("batch", batch), ("n", n)] {
        if value == 0 {
            return Err(AttentionError::InvalidArgument {
                op,
                argument,
                expected: "at least 1",
                got: "0".into(),
            });
        }
    }
    Ok(())
}

/// `batch · heads · n · h`, the values of each of q, k, v and the output, computed without
/// wrapping: [`AttentionError::TooLarge`] when the product does not fit in a `usize` (no buffer
/// of that length can exist).
pub(crate) fn elements<T>(
    op: &'static str, config: &AttentionConfig, batch: usize, n: usize,
) -> Result<usize> {
    let (heads, h) = (config.heads, config.head_dim);
    let total =
        batch.checked_mul(heads).and_then(|x| x.checked_mul(n)).and_then(|x| x.checked_mul(h));
    total.ok_or_else(|| AttentionError::TooLarge {
        op,
        bytes: [batch, heads, n, h, size_of::<T>()]
            .iter()
            .map(|&x| x as u128)
            .fold(1, u128::saturating_mul),
        limit: usize::MAX as u128,
    })
}

/// `[batch, heads, n, h]` spelled out for error messages.
pub(crate) fn shape_of(config: &AttentionConfig, batch: usize, n: usize) -> String {
    let (heads, h) = (config.heads, config.head_dim);
    format!("[batch {batch}, heads {heads}, n {n}, h {h}]")
}

/// Checks that `q`, `k`, `v` are `[batch, heads, n, h]` and finite; returns their length.
pub(crate) fn check_qkv<T: Scalar>(
    op: &'static str, config: &AttentionConfig, [q, k, v]: [&[T]; 3], batch: usize, n: usize,
    par: Par,
) -> Result<usize> {
    let total = elements::<T>(op, config, batch, n)?;
    for (name, x) in [("q", q), ("k", k), ("v", v)] {
        check_len(op, name, x, total, shape_of(config, batch, n))?;
        check_finite(op, name, x, par)?;
    }
    Ok(total)
}

pub(crate) fn check_len<T>(
    op: &'static str, input: &'static str, x: &[T], expected: usize, shape: String,
) -> Result<()> {
    if x.len() != expected {
        return Err(AttentionError::ShapeMismatch { op, input, expected, got: x.len(), shape });
    }
    Ok(())
}

pub(crate) fn check_finite<T: Scalar>(
    op: &'static str, input: &'static str, x: &[T], par: Par,
) -> Result<()> {
    if polysketch_core::all_finite_par(x, par) {
        return Ok(());
    }
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(AttentionError::NonFinite { op, input, index }),
        None => Ok(()),
    }
}

/// [`AttentionError::Overflow`] for `output` of `op`, reporting the largest magnitude of each of
/// `inputs` (the layer's inputs and parameters that set the scale of its scores).
pub(crate) fn overflow<T: Scalar>(
    op: &'static str, output: &'static str, inputs: &[(&'static str, &[T])],
) -> AttentionError {
    let max = |x: &[T]| x.iter().fold(0.0f64, |m, v| m.max(v.as_f64().abs()));
    let magnitudes: Vec<String> =
        inputs.iter().map(|(name, x)| format!("max |{name}| = {:.3e}", max(x))).collect();
    AttentionError::Overflow {
        op,
        output,
        precision: core::any::type_name::<T>(),
        magnitudes: magnitudes.join(", "),
    }
}

/// `Err(overflow(..))` for the first of `outputs` that is not finite.
#[cfg(feature = "gpu")]
pub(crate) fn check_outputs<T: Scalar>(
    op: &'static str, inputs: &[(&'static str, &[T])], outputs: &[(&'static str, &[T])],
) -> Result<()> {
    match outputs.iter().find(|(_, x)| !polysketch_core::all_finite(x)) {
        Some((name, _)) => Err(overflow(op, name, inputs)),
        None => Ok(()),
    }
}

/// Head `idx` of a row-major `[.., n, h]` array as an `[n, h]` view.
pub(crate) fn head_matrix<T>(x: &[T], idx: usize, n: usize, h: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(&x[idx * n * h..(idx + 1) * n * h], n, h)
}

/// Estimated bytes of what a training forward keeps for `batch` sequences of `n` tokens
/// (saturating; see [`AttentionConfig::saved_bytes`]).
pub(crate) fn state_bytes<T>(config: &AttentionConfig, batch: usize, n: usize) -> u128 {
    let (heads, h) = (config.heads, config.head_dim);
    // what the forward keeps per token and head
    let per_token = match config.kind {
        // q̃, k̃, LN's x̂ for both (4h), L and R (2r), C, the product and its gradient
        // (3(h + 1)), the output and ∂q̃, ∂k̃ (3h), the denominator, the lowtri prefixes
        // (≈ m(h+1)/b)
        AttentionKind::PolySketch(c) => {
            let learned = match c.sketch {
                // per q̃ and k̃: each of the p - 2 networks keeps ≤ h + 18r, each of the
                // p/2 - 1 nodes 2r, and the work buffers ≈ 2·8r + 4r + 3h
                SketchKind::Learned => {
                    2 * ((c.p - 2) * (h + (2 * WIDE + 2) * c.r)
                        + (c.p / 2 - 1) * 2 * c.r
                        + (2 * WIDE + 4) * c.r
                        + 3 * h)
                }
                SketchKind::Random => 0,
            };
            10 * h + 2 * c.r + 5 + c.r * (c.r + 1) / 2 * (h + 1) / c.block + learned
        }
        AttentionKind::Polynomial { .. } | AttentionKind::Local { .. } => 10 * h + 5,
        // as PolySketch, with m features in place of r, and the lowtri prefixes (m(h+1)/b)
        AttentionKind::Performer { features, block, .. }
        | AttentionKind::Hedgehog { features, block, .. } => {
            10 * h + 2 * features + 5 + features * (h + 1) / block
        }
        // copies of q, k, v, the output and its log-sum-exp
        AttentionKind::Softmax | AttentionKind::Sliding { .. } => 4 * h + 1,
    };
    // in u128 from the start: batch · heads may not fit in a usize
    [batch, heads, n, per_token, size_of::<T>()]
        .iter()
        .map(|&x| x as u128)
        .fold(1, u128::saturating_mul)
}

/// Checks that what a forward keeps for `batch` sequences of `n` tokens stays under
/// [`MAX_STATE_BYTES`], estimated before anything is allocated.
pub(crate) fn check_state_bytes<T>(
    op: &'static str, config: &AttentionConfig, batch: usize, n: usize,
) -> Result<()> {
    let bytes = state_bytes::<T>(config, batch, n);
    if bytes > MAX_STATE_BYTES {
        return Err(AttentionError::TooLarge { op, bytes, limit: MAX_STATE_BYTES });
    }
    Ok(())
}
