//! Named parameters to and from [safetensors](https://github.com/huggingface/safetensors) files,
//! so a model built on these layers saves and loads its weights in the format the Python
//! ecosystem reads.
//!
//! Names are the layers' own ([`crate::Attention::parameters`]); a model with several layers
//! prefixes them (`layer0.ln.gain`, ...). Tensors are written in the precision of `T` (`F32` or
//! `F64`) with their shapes, through a temporary file renamed over the target, so a crash never
//! leaves a torn file.

use std::path::Path;

use polysketch_core::Scalar;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::nn::{Param, ParamMut};
use crate::{AttentionError, Result};

fn file_error(path: &Path, reason: impl core::fmt::Display) -> AttentionError {
    AttentionError::File { path: path.display().to_string(), reason: reason.to_string() }
}

/// The safetensors type of `T`.
fn dtype<T>() -> Dtype {
    if size_of::<T>() == 8 { Dtype::F64 } else { Dtype::F32 }
}

/// Writes `params` to `path` (little-endian, in the precision of `T`), atomically.
///
/// # Errors
/// [`AttentionError::File`] on an I/O failure or two parameters of the same name;
/// [`AttentionError::NonFiniteParameter`] naming a parameter with a NaN or an infinity
/// (nothing is written).
pub fn save_safetensors<T: Scalar>(path: &Path, params: &[Param<'_, T>]) -> Result<()> {
    const OP: &str = "save_safetensors";
    let mut bytes: Vec<Vec<u8>> = Vec::with_capacity(params.len());
    for p in params {
        if let Some(index) = p.data.iter().position(|v| !v.is_finite()) {
            return Err(AttentionError::NonFiniteParameter { op: OP, name: p.name.clone(), index });
        }
        bytes.push(
            p.data
                .iter()
                .flat_map(|v| {
                    if size_of::<T>() == 8 {
                        v.as_f64().to_le_bytes().to_vec()
                    } else {
                        (v.as_f64() as f32).to_le_bytes().to_vec()
                    }
                })
                .collect(),
        );
    }
    let mut names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(file_error(path, format!("two parameters are named {:?}", w[0])));
    }
    let views = params
        .iter()
        .zip(&bytes)
        .map(|(p, b)| {
            TensorView::new(dtype::<T>(), p.shape.clone(), b)
                .map(|v| (p.name.clone(), v))
                .map_err(|e| file_error(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let out = safetensors::serialize(views, None).map_err(|e| file_error(path, e))?;
    polysketch_core::io::write_atomic(path, &out).map_err(|e| file_error(path, e))
}

/// Reads every parameter of `params` from `path`, by name: each must be there with the same
/// shape (as `F32` or `F64`, converted to `T`) and finite values. Nothing is changed unless
/// all of them load.
///
/// # Errors
/// [`AttentionError::File`]: the file cannot be read, is not safetensors, lacks a parameter,
/// holds it with another shape or type, or holds a tensor that is not a parameter (another
/// model's file); [`AttentionError::NonFiniteParameter`] for a NaN or infinity.
pub fn load_safetensors<T: Scalar>(path: &Path, params: &mut [ParamMut<'_, T>]) -> Result<()> {
    const OP: &str = "load_safetensors";
    let raw = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let file = SafeTensors::deserialize(&raw)
        .map_err(|e| file_error(path, format!("not a safetensors file: {e}")))?;
    let mut values: Vec<Vec<T>> = Vec::with_capacity(params.len());
    for p in params.iter() {
        let t = file
            .tensor(&p.name)
            .map_err(|_| file_error(path, format!("no tensor named {:?}", p.name)))?;
        if t.shape() != p.shape.as_slice() {
            return Err(file_error(
                path,
                format!(
                    "{:?} has shape {:?} in the file, {:?} in the model",
                    p.name,
                    t.shape(),
                    p.shape
                ),
            ));
        }
        let v: Vec<T> = match t.dtype() {
            Dtype::F32 => t
                .data()
                .chunks_exact(4)
                .map(|b| T::of(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64))
                .collect(),
            Dtype::F64 => t
                .data()
                .chunks_exact(8)
                .map(|b| T::of(f64::from_le_bytes(b.try_into().expect("8 bytes"))))
                .collect(),
            other => {
                return Err(file_error(
                    path,
                    format!("{:?} is {other:?}; F32 or F64 expected", p.name),
                ));
            }
        };
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(AttentionError::NonFiniteParameter { op: OP, name: p.name.clone(), index });
        }
        values.push(v);
    }
    // both ways: a tensor the model does not have means the file is another model's (or its
    // configuration was edited), and loading the rest would silently drop it
    let mut extra: Vec<&str> =
        file.names().into_iter().filter(|name| !params.iter().any(|p| p.name == **name)).collect();
    if !extra.is_empty() {
        extra.sort_unstable();
        let shown = extra[..extra.len().min(4)].join(", ");
        let more = match extra.len() {
            0..=4 => String::new(),
            count => format!(" and {} more", count - 4),
        };
        return Err(file_error(
            path,
            format!(
                "holds {} tensor(s) the model does not have ({shown}{more}): the file belongs to \
                 a model of another configuration",
                extra.len()
            ),
        ));
    }
    for (p, v) in params.iter_mut().zip(values) {
        p.data.copy_from_slice(&v);
    }
    Ok(())
}
