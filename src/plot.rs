//! Small SVG line and scatter plots for the examples (plotters, written atomically).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, Result};

/// A named line of `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Legend label.
    pub name: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// Axes of a [`line_plot`].
#[derive(Debug, Clone, PartialEq)]
pub struct Axes<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Label of the x axis.
    pub x_label: &'a str,
    /// Label of the y axis.
    pub y_label: &'a str,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// Draws lines (dots at the points) and horizontal reference lines `(label, y)` (dashed) into an
/// SVG file.
///
/// # Errors
/// [`Error::Config`] with nothing to draw or non-positive values on a log axis; [`Error::Plot`],
/// [`Error::Io`].
pub fn line_plot(
    lines: &[Line],
    hlines: &[(String, f64)],
    axes: &Axes<'_>,
    path: &Path,
) -> Result<()> {
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let ys = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(hlines.iter().map(|h| h.1));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    if x0 > x1 || y0 > y1 || (axes.log_x && x0 <= 0.0) || (axes.log_y && y0 <= 0.0) {
        return Err(Error::Config(
            "nothing to plot, or a non-positive value on a log axis".into(),
        ));
    }
    let pad = |lo: f64, hi: f64, log: bool| -> (f64, f64) {
        if log {
            (lo / 1.3, hi * 1.3)
        } else {
            let span = (hi - lo).max(hi.abs() * 1e-3).max(1e-12);
            (lo - 0.08 * span, hi + 0.08 * span)
        }
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1, axes.log_x), pad(y0, y1, axes.log_y));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        macro_rules! draw {
            ($xr:expr, $yr:expr) => {{
                let mut chart = ChartBuilder::on(&root)
                    .caption(axes.title, ("sans-serif", 18))
                    .margin(12)
                    .x_label_area_size(40)
                    .y_label_area_size(70)
                    .build_cartesian_2d($xr, $yr)
                    .map_err(plot_err)?;
                chart
                    .configure_mesh()
                    .x_desc(axes.x_label)
                    .y_desc(axes.y_label)
                    .x_label_formatter(&|x| format!("{}", *x as f32))
                    .y_label_formatter(&|y| format!("{:.3}", *y as f32))
                    .draw()
                    .map_err(plot_err)?;
                for (i, l) in lines.iter().filter(|l| !l.points.is_empty()).enumerate() {
                    let colour = Palette99::pick(i).to_rgba();
                    chart
                        .draw_series(LineSeries::new(l.points.clone(), colour.stroke_width(2)))
                        .map_err(plot_err)?
                        .label(l.name.clone())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                        });
                    chart
                        .draw_series(l.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                        .map_err(plot_err)?;
                }
                for (label, y) in hlines {
                    // evenly spaced on screen: geometric steps on a log axis
                    let at = |t: f64| {
                        if axes.log_x {
                            x0 * (x1 / x0).powf(t)
                        } else {
                            x0 + (x1 - x0) * t
                        }
                    };
                    let dashes: Vec<(f64, f64)> =
                        (0..40).map(|k| (at(k as f64 / 39.0), *y)).collect();
                    chart
                        .draw_series(
                            dashes
                                .chunks(2)
                                .map(|seg| PathElement::new(seg.to_vec(), BLACK.stroke_width(1))),
                        )
                        .map_err(plot_err)?
                        .label(label.clone())
                        .legend(|(x, y)| {
                            PathElement::new(vec![(x, y), (x + 6, y)], BLACK.stroke_width(1))
                        });
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(plot_err)?;
            }};
        }
        match (axes.log_x, axes.log_y) {
            (true, true) => draw!((x0..x1).log_scale(), (y0..y1).log_scale()),
            (true, false) => draw!((x0..x1).log_scale(), y0..y1),
            (false, true) => draw!(x0..x1, (y0..y1).log_scale()),
            (false, false) => draw!(x0..x1, y0..y1),
        }
        root.present().map_err(plot_err)?;
    }
    crate::io::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// One panel of [`scatter_panels`]: a title and `(x, y, class)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Title of the panel.
    pub title: String,
    /// The points with their class (colour).
    pub points: Vec<(f64, f64, usize)>,
}

fn scatter(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    x_label: &str,
    y_label: &str,
) -> Result<()> {
    let (x0, x1, y0, y1) = panel.points.iter().fold(
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
        |(a, b, c, d), p| (a.min(p.0), b.max(p.0), c.min(p.1), d.max(p.1)),
    );
    let (dx, dy) = ((x1 - x0).max(1e-12) * 0.05, (y1 - y0).max(1e-12) * 0.05);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(x0 - dx..x1 + dx, y0 - dy..y1 + dy)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{:.2}", *x as f32))
        .y_label_formatter(&|y| format!("{:.2}", *y as f32))
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(
            panel
                .points
                .iter()
                .map(|&(x, y, c)| Circle::new((x, y), 2, Palette99::pick(c).to_rgba().filled())),
        )
        .map_err(plot_err)?;
    Ok(())
}

/// Scatter plots side by side, points coloured by class, as SVG.
///
/// # Errors
/// [`Error::Config`] with no panel or an empty one; [`Error::Plot`], [`Error::Io`].
pub fn scatter_panels(panels: &[Panel], x_label: &str, y_label: &str, path: &Path) -> Result<()> {
    if panels.is_empty() || panels.iter().any(|p| p.points.is_empty()) {
        return Err(Error::Config("nothing to plot".into()));
    }
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (460 * panels.len() as u32, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        for (area, panel) in root.split_evenly((1, panels.len())).iter().zip(panels) {
            scatter(area, panel, x_label, y_label)?;
        }
        root.present().map_err(plot_err)?;
    }
    crate::io::write_atomic(path, svg.as_bytes())?;
    Ok(())
}
