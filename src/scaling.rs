//! Timing series against a size, written as CSV and as a log-log SVG plot; and the FLOP rate of
//! faer's own matrix product, the yardstick every measured rate is compared with.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use faer::{Mat, Par};
use plotters::prelude::*;

use crate::sketch::linalg::gemm;
use crate::{Error, Result};

/// A named series of `(size, seconds)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// `(n, seconds)`.
    pub points: Vec<(usize, f64)>,
}

impl Series {
    /// An empty series.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            points: Vec::new(),
        }
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
/// [`Error::Plot`] if drawing fails, [`Error::Io`] if writing does, [`Error::Config`] if there
/// is nothing to plot.
pub fn plot_svg(series: &[Series], title: &str, path: &Path) -> Result<()> {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (nmin, nmax, tmin, tmax) = pts
        .fold((f64::MAX, 0f64, f64::MAX, 0f64), |(a, b, c, d), &(n, t)| {
            (a.min(n as f64), b.max(n as f64), c.min(t), d.max(t))
        });
    if nmax == 0.0 || tmax <= 0.0 {
        return Err(Error::Config("no points to plot".into()));
    }
    let plot = |e: &dyn std::fmt::Display| Error::Plot(e.to_string());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (nmin * 0.8..nmax * 1.25).log_scale(),
                (tmin * 0.6..tmax * 1.6).log_scale(),
            )
            .map_err(|e| plot(&e))?;
        chart
            .configure_mesh()
            .x_desc("n")
            .y_desc("seconds")
            .x_label_formatter(&|x| format!("{}", x.round() as u64))
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()
            .map_err(|e| plot(&e))?;
        for (i, s) in series.iter().filter(|s| !s.points.is_empty()).enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let line: Vec<(f64, f64)> = s.points.iter().map(|&(n, t)| (n as f64, t)).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))
                .map_err(|e| plot(&e))?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(|e| plot(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| plot(&e))?;
        root.present().map_err(|e| plot(&e))?;
    }
    crate::io::write_atomic(path, svg.as_bytes())?;
    Ok(())
}
