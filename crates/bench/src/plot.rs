//! Small SVG line and scatter plots for the examples (plotters, written atomically).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, Result};

/// A named line of `(x, y)` points.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Line {
    /// Legend label.
    pub name: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed. Solid and dashed lines take colours from the palette separately, so the
    /// `i`-th dashed line has the colour of the `i`-th solid one (e.g. one colour per attention
    /// kind, solid for 1 head and dashed for 8).
    pub dashed: bool,
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

/// Ten colours that stay apart on white (Tableau 10, the darker half first).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(0, 0, 0),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
];

/// The palette's `i`-th colour (cyclic).
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// The pieces of a polyline that lie at or below `cap`, each crossing cut at the exact point
/// where the segment meets `cap` (no point is moved, none outside is drawn).
fn clip_above(points: &[(f64, f64)], cap: f64) -> Vec<Vec<(f64, f64)>> {
    let mut pieces = vec![Vec::new()];
    for (i, &(x, y)) in points.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| points[j]);
        if let Some((px, py)) = prev
            && (py > cap) != (y > cap)
        {
            let t = (cap - py) / (y - py);
            let cut = (px + t * (x - px), cap);
            if let Some(open) = pieces.last_mut() {
                open.push(cut);
            }
            if y > cap {
                pieces.push(Vec::new());
            }
        }
        if y <= cap
            && let Some(open) = pieces.last_mut()
        {
            open.push((x, y));
        }
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}

/// Draws lines (dots at the points) and horizontal reference lines `(label, y)` (dashed, black)
/// into an SVG file, with the legend beside the plot so it hides no line. With `y_cap`, the y
/// axis ends there and the lines are cut where they cross it (for a loss curve whose first steps
/// would squash the rest).
///
/// # Errors
/// [`Error::Config`] with nothing to draw or non-positive values on a log axis; [`Error::Plot`],
/// [`Error::Io`].
pub fn line_plot(
    lines: &[Line], hlines: &[(String, f64)], axes: &Axes<'_>, path: &Path,
) -> Result<()> {
    line_plot_capped(lines, hlines, axes, None, path)
}

/// [`line_plot`] with the y axis ending at `y_cap` (if given and below the data's maximum).
///
/// # Errors
/// As [`line_plot`].
pub fn line_plot_capped(
    lines: &[Line], hlines: &[(String, f64)], axes: &Axes<'_>, y_cap: Option<f64>, path: &Path,
) -> Result<()> {
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let ys =
        lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).chain(hlines.iter().map(|h| h.1));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    if x0 > x1 || y0 > y1 || (axes.log_x && x0 <= 0.0) || (axes.log_y && y0 <= 0.0) {
        return Err(Error::Config("nothing to plot, or a non-positive value on a log axis".into()));
    }
    let cap = y_cap.filter(|&c| c > y0 && c < y1);
    // the padding below is a share of the drawn range; the top stays at the cap itself
    let y1 = cap.unwrap_or(y1);
    let pad = |lo: f64, hi: f64, log: bool| -> (f64, f64) {
        if log {
            (lo / 1.3, hi * 1.3)
        } else {
            let span = (hi - lo).max(hi.abs() * 1e-3).max(1e-12);
            (lo - 0.08 * span, hi + 0.08 * span)
        }
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1, axes.log_x), pad(y0, y1, axes.log_y));
    let y1 = cap.unwrap_or(y1);
    // colours: solid and dashed lines count separately
    let drawn: Vec<(&Line, RGBColor)> = {
        let (mut solid, mut dashed) = (0, 0);
        lines
            .iter()
            .filter(|l| !l.points.is_empty())
            .map(|l| {
                let k = if l.dashed { &mut dashed } else { &mut solid };
                *k += 1;
                (l, colour(*k - 1))
            })
            .collect()
    };
    let legend_width = 40 + 7 * lines.iter().map(|l| l.name.chars().count()).max().unwrap_or(0);
    let legend_width = legend_width.clamp(120, 320) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760 + legend_width, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (plot_area, legend_area) = root.split_horizontally(760);
        macro_rules! draw {
            ($xr:expr, $yr:expr) => {{
                let mut chart = ChartBuilder::on(&plot_area)
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
                for &(l, colour) in &drawn {
                    let style = colour.stroke_width(2);
                    let pieces = match cap {
                        Some(c) => clip_above(&l.points, c),
                        None => vec![l.points.clone()],
                    };
                    for piece in pieces {
                        if l.dashed {
                            chart
                                .draw_series(DashedLineSeries::new(piece, 8, 5, style))
                                .map_err(plot_err)?;
                        } else {
                            chart.draw_series(LineSeries::new(piece, style)).map_err(plot_err)?;
                        }
                    }
                    let inside = l.points.iter().filter(|p| cap.is_none_or(|c| p.1 <= c));
                    chart
                        .draw_series(inside.map(|&p| Circle::new(p, 3, colour.filled())))
                        .map_err(plot_err)?;
                }
                for (_, y) in hlines {
                    // evenly spaced on screen: geometric steps on a log axis
                    let at = |t: f64| {
                        if axes.log_x { x0 * (x1 / x0).powf(t) } else { x0 + (x1 - x0) * t }
                    };
                    let dashes: Vec<(f64, f64)> =
                        (0..40).map(|k| (at(k as f64 / 39.0), *y)).collect();
                    chart
                        .draw_series(
                            dashes
                                .chunks(2)
                                .map(|seg| PathElement::new(seg.to_vec(), BLACK.stroke_width(1))),
                        )
                        .map_err(plot_err)?;
                }
            }};
        }
        match (axes.log_x, axes.log_y) {
            (true, true) => draw!((x0..x1).log_scale(), (y0..y1).log_scale()),
            (true, false) => draw!((x0..x1).log_scale(), y0..y1),
            (false, true) => draw!(x0..x1, (y0..y1).log_scale()),
            (false, false) => draw!(x0..x1, y0..y1),
        }
        // the legend, beside the plot
        let font = ("sans-serif", 13).into_font();
        let entries = drawn
            .iter()
            .map(|&(l, c)| (l.name.as_str(), c, l.dashed))
            .chain(hlines.iter().map(|(n, _)| (n.as_str(), BLACK, true)));
        for (i, (name, colour, dashed)) in entries.enumerate() {
            let y = 50 + 20 * i as i32;
            let style = colour.stroke_width(2);
            if dashed {
                for x in [4, 16] {
                    legend_area
                        .draw(&PathElement::new(vec![(x, y), (x + 8, y)], style))
                        .map_err(plot_err)?;
                }
            } else {
                legend_area
                    .draw(&PathElement::new(vec![(4, y), (28, y)], style))
                    .map_err(plot_err)?;
            }
            legend_area
                .draw(&Text::new(name.to_string(), (34, y - 7), font.clone()))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    polysketch_core::io::write_atomic(path, svg.as_bytes())?;
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
    area: &DrawingArea<SVGBackend<'_>, Shift>, panel: &Panel, x_label: &str, y_label: &str,
) -> Result<()> {
    let (x0, x1, y0, y1) =
        panel.points.iter().fold((f64::MAX, f64::MIN, f64::MAX, f64::MIN), |(a, b, c, d), p| {
            (a.min(p.0), b.max(p.0), c.min(p.1), d.max(p.1))
        });
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
            panel.points.iter().map(|&(x, y, c)| Circle::new((x, y), 2, colour(c).filled())),
        )
        .map_err(plot_err)?;
    Ok(())
}

/// Scatter plots side by side, points coloured by class (class `c` in [`colour`]`(c)`), with a
/// legend row naming the classes (`class_names[c]`; the number where none is given), as SVG.
///
/// # Errors
/// [`Error::Config`] with no panel or an empty one; [`Error::Plot`], [`Error::Io`].
pub fn scatter_panels(
    panels: &[Panel], x_label: &str, y_label: &str, class_names: &[String], path: &Path,
) -> Result<()> {
    if panels.is_empty() || panels.iter().any(|p| p.points.is_empty()) {
        return Err(Error::Config("nothing to plot".into()));
    }
    let classes = panels.iter().flat_map(|p| p.points.iter().map(|q| q.2 + 1)).max().unwrap_or(0);
    let mut svg = String::new();
    {
        let width = 460 * panels.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (width, 470)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (plots, legend) = root.split_vertically(440);
        for (area, panel) in plots.split_evenly((1, panels.len())).iter().zip(panels) {
            scatter(area, panel, x_label, y_label)?;
        }
        let font = ("sans-serif", 13).into_font();
        let step = (width as i32 - 80) / classes.max(1) as i32;
        legend.draw(&Text::new("class:", (10, 8), font.clone())).map_err(plot_err)?;
        for c in 0..classes {
            let x = 60 + step * c as i32;
            let name = class_names.get(c).cloned().unwrap_or_else(|| c.to_string());
            legend.draw(&Circle::new((x, 15), 5, colour(c).filled())).map_err(plot_err)?;
            legend.draw(&Text::new(name, (x + 9, 8), font.clone())).map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    polysketch_core::io::write_atomic(path, svg.as_bytes())?;
    Ok(())
}
