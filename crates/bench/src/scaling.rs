//! Timing series against a size, written as CSV and as a log-log SVG plot; and the FLOP rate of
//! faer's own matrix product, the yardstick every measured rate is compared with.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use faer::{Mat, Par};

use crate::Result;
use crate::plot::{Axes, Line, line_plot};
use polysketch_core::linalg::gemm;

/// A named series of `(size, seconds)` points.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// `(n, seconds)`.
    pub points: Vec<(usize, f64)>,
    /// Drawn dashed (see [`Line::dashed`]).
    pub dashed: bool,
}

impl Series {
    /// An empty series.
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), ..Self::default() }
    }

    /// Appends a point.
    pub fn push(&mut self, n: usize, seconds: f64) {
        self.points.push((n, seconds));
    }
}

/// GFLOP/s of faer's `f32` product `[s, s] x [s, s]` (\\(2s^3\\) FLOPs) under `par`: the best
/// of `reps` runs after one warm-up. The best, not the median, so that rates compared with it
/// are judged against the most faer reached in the run (the conservative choice).
pub fn faer_gflops(s: usize, reps: usize, par: Par) -> f64 {
    let a = Mat::<f32>::from_fn(s, s, |i, j| ((i * 7 + j * 3) % 11) as f32 / 11.0);
    let mut c = Mat::<f32>::zeros(s, s);
    let mut times = Vec::with_capacity(reps.max(1));
    for rep in 0..=reps.max(1) {
        let start = Instant::now();
        gemm(c.as_mut(), a.as_ref(), a.as_ref(), 1.0, false, par);
        if rep > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    2.0 * (s as f64).powi(3) / times[0] / 1e9
}

/// `series,n,seconds` lines with a header.
pub fn to_csv(series: &[Series]) -> String {
    let mut s = String::from("series,n,seconds\n");
    for line in series {
        for (n, t) in &line.points {
            let _ = writeln!(s, "{},{n},{t:.6e}", line.name);
        }
    }
    s
}

/// A log-log plot of time against `n`, one line per series, as SVG (written atomically).
///
/// # Errors
/// As [`crate::plot::line_plot`].
pub fn plot_svg(series: &[Series], title: &str, path: &Path) -> Result<()> {
    let lines: Vec<Line> = series
        .iter()
        .filter(|s| !s.points.is_empty())
        .map(|s| Line {
            name: s.name.clone(),
            points: s.points.iter().map(|&(n, t)| (n as f64, t)).collect(),
            dashed: s.dashed,
        })
        .collect();
    let axes = Axes { title, x_label: "n", y_label: "seconds", log_x: true, log_y: true };
    line_plot(&lines, &[], &axes, path)
}
