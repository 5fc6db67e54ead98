//! Loading numeric CSV data, splitting it, and standardising features.

use std::path::Path;

use faer::{Mat, MatRef};
use rand::seq::SliceRandom;

use crate::error::{KernelError, Result, enough_rows, finite, same};

/// A numeric table read from a CSV file with a header line.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column names, from the header.
    pub names: Vec<String>,
    /// `[rows, columns]` values.
    pub data: Mat<f64>,
}

impl Table {
    /// Reads a CSV file whose first line names the columns and whose other lines are numbers.
    ///
    /// # Errors
    /// [`KernelError::Io`] if the file cannot be read; [`KernelError::Parse`] for an empty file,
    /// a line with the wrong number of fields, or a field that is not a finite number (with the
    /// line number).
    pub fn from_csv(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let io = |source: std::io::Error| KernelError::Io { path: shown.clone(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let parse =
            |line: usize, reason: String| KernelError::Parse { path: shown.clone(), line, reason };
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(file);
        let names: Vec<String> = reader
            .headers()
            .map_err(|e| parse(1, e.to_string()))?
            .iter()
            .map(str::to_owned)
            .collect();
        if names.is_empty() || names.iter().all(|n| n.is_empty()) {
            return Err(parse(1, "no header line".into()));
        }
        let mut values = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let line = i + 2;
            let record = record.map_err(|e| parse(line, e.to_string()))?;
            if record.len() != names.len() {
                return Err(parse(
                    line,
                    format!("{} fields, the header has {}", record.len(), names.len()),
                ));
            }
            for (j, field) in record.iter().enumerate() {
                let v: f64 = field.trim().parse().map_err(|_| {
                    parse(line, format!("column `{}`: `{field}` is not a number", names[j]))
                })?;
                if !v.is_finite() {
                    return Err(parse(
                        line,
                        format!("column `{}`: `{field}` is not finite", names[j]),
                    ));
                }
                values.push(v);
            }
        }
        let (rows, cols) = (values.len() / names.len(), names.len());
        if rows == 0 {
            return Err(parse(2, "no data rows".into()));
        }
        Ok(Self { names, data: Mat::from_fn(rows, cols, |i, j| values[i * cols + j]) })
    }

    /// Splits off the column named `target`: `(features [rows, columns - 1], target [rows])`.
    ///
    /// # Errors
    /// [`KernelError::InvalidParameter`] if there is no such column.
    pub fn split_target(&self, target: &str) -> Result<(Mat<f64>, Vec<f64>)> {
        let t = self.names.iter().position(|n| n == target).ok_or_else(|| {
            KernelError::InvalidParameter {
                op: "Table::split_target",
                reason: format!("no column named `{target}` (columns: {})", self.names.join(", ")),
            }
        })?;
        let keep: Vec<usize> = (0..self.names.len()).filter(|&j| j != t).collect();
        let x = Mat::from_fn(self.data.nrows(), keep.len(), |i, j| self.data[(i, keep[j])]);
        let y = (0..self.data.nrows()).map(|i| self.data[(i, t)]).collect();
        Ok((x, y))
    }
}

/// The given rows of `m`, in order.
pub fn select_rows(m: MatRef<'_, f64>, rows: &[usize]) -> Mat<f64> {
    Mat::from_fn(rows.len(), m.ncols(), |i, j| m[(rows[i], j)])
}

/// A deterministic shuffled split of `n` row indices into consecutive parts of the given sizes
/// (what is left over is dropped).
///
/// # Errors
/// [`KernelError::TooFewRows`] if the sizes add up to more than `n`.
pub fn split_indices(n: usize, sizes: &[usize], seed: u64) -> Result<Vec<Vec<usize>>> {
    enough_rows("split_indices", sizes.iter().sum(), n)?;
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut polysketch_core::seeded_rng(seed));
    let mut start = 0;
    Ok(sizes
        .iter()
        .map(|&s| {
            let part = idx[start..start + s].to_vec();
            start += s;
            part
        })
        .collect())
}

/// Per-column standardisation \\(x \mapsto (x - \mu)/\sigma\\), fitted on training data, optionally
/// clipped to \\([-c, c]\\): a polynomial kernel raises inner products to the power \\(p\\), so
/// one row 40 standard deviations out (there are such rows in real data) would otherwise dominate
/// every kernel matrix it enters.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Column means.
    pub mean: Vec<f64>,
    /// Column standard deviations (1 for constant columns).
    pub std: Vec<f64>,
    /// Clip standardised values to `[-clip, clip]` (no clipping when `None`).
    pub clip: Option<f64>,
}

impl Standardizer {
    /// Fits means and standard deviations of the columns of `x` (`[n, d]`).
    ///
    /// # Errors
    /// [`KernelError::TooFewRows`] with fewer than 2 rows; [`KernelError::NonFinite`].
    pub fn fit(x: MatRef<'_, f64>) -> Result<Self> {
        const OP: &str = "Standardizer::fit";
        enough_rows(OP, 2, x.nrows())?;
        finite(OP, "x", x)?;
        let n = x.nrows() as f64;
        let mean: Vec<f64> = (0..x.ncols()).map(|j| x.col(j).iter().sum::<f64>() / n).collect();
        let std = (0..x.ncols())
            .map(|j| {
                let var = x.col(j).iter().map(|v| (v - mean[j]).powi(2)).sum::<f64>() / (n - 1.0);
                if var > 0.0 { var.sqrt() } else { 1.0 }
            })
            .collect();
        Ok(Self { mean, std, clip: None })
    }

    /// The same standardisation, clipping standardised values to `[-limit, limit]`.
    ///
    /// # Errors
    /// [`KernelError::InvalidParameter`] unless `limit` is positive and finite.
    pub fn with_clip(self, limit: f64) -> Result<Self> {
        if !(limit > 0.0 && limit.is_finite()) {
            return Err(KernelError::InvalidParameter {
                op: "Standardizer::with_clip",
                reason: format!("limit must be positive, got {limit}"),
            });
        }
        Ok(Self { clip: Some(limit), ..self })
    }

    /// The standardised copy of `x` (`[n, d]`).
    ///
    /// # Errors
    /// [`KernelError::Mismatch`] if the width differs from the fit; [`KernelError::NonFinite`].
    pub fn transform(&self, x: MatRef<'_, f64>) -> Result<Mat<f64>> {
        const OP: &str = "Standardizer::transform";
        same(OP, "columns", self.mean.len(), x.ncols())?;
        finite(OP, "x", x)?;
        let c = self.clip.unwrap_or(f64::INFINITY);
        Ok(Mat::from_fn(x.nrows(), x.ncols(), |i, j| {
            ((x[(i, j)] - self.mean[j]) / self.std[j]).clamp(-c, c)
        }))
    }
}
