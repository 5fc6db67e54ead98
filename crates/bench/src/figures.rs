//! Figures of particular studies, drawn from their library results.

use std::path::Path;

use plotters::prelude::*;
use polysketch_tensoring::amm::{CaseResult, Family};

use crate::{Error, Result};

fn plot_err(e: impl ToString) -> Error {
    Error::Plot(e.to_string())
}

/// A log-log plot of mean AMM error against \\(r\\): one panel per degree, one line per family
/// (solid with dots: self-tensored; thin with crosses: degree-\\(p\\) tree), as SVG.
///
/// # Errors
/// [`Error::Plot`] if drawing fails, [`Error::Io`] if the file cannot be written.
pub fn amm_error(results: &[CaseResult], path: &Path) -> Result<()> {
    let mut degrees: Vec<usize> = results.iter().map(|c| c.p).collect();
    degrees.dedup();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420 * degrees.len().max(1) as u32, 400))
            .into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let panels = root.split_evenly((1, degrees.len().max(1)));
        let colours = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44)];
        for (panel, &p) in panels.iter().zip(&degrees) {
            let cases: Vec<&CaseResult> = results.iter().filter(|c| c.p == p).collect();
            let (rmin, rmax) = cases
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), c| (lo.min(c.r as f64), hi.max(c.r as f64)));
            let errs = cases.iter().flat_map(|c| [Some(c.self_mean), c.tree_mean]).flatten();
            let (emin, emax) = errs.fold((f64::MAX, 0f64), |(lo, hi), e| (lo.min(e), hi.max(e)));
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("p = {p}: AMM error vs r"), ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(
                    (rmin * 0.8..rmax * 1.25).log_scale(),
                    (emin * 0.7..emax * 1.4).log_scale(),
                )
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("base sketch size r")
                .x_label_formatter(&|x| format!("{}", x.round() as u64))
                .y_desc("mean AMM error")
                .draw()
                .map_err(plot_err)?;
            for (family, colour) in Family::ALL.iter().zip(colours) {
                let of_family = || cases.iter().filter(|c| c.family == *family);
                // solid with dots: self-tensored; thin with crosses: the degree-p tree
                let line: Vec<(f64, f64)> =
                    of_family().map(|c| (c.r as f64, c.self_mean)).collect();
                let tree: Vec<(f64, f64)> =
                    of_family().filter_map(|c| c.tree_mean.map(|t| (c.r as f64, t))).collect();
                let name = family.name();
                for (points, width, label) in [
                    (&line, 2, format!("{name} (self-tensored)")),
                    (&tree, 1, format!("{name} (degree-{p} tree)")),
                ] {
                    let style = colour.stroke_width(width);
                    chart
                        .draw_series(LineSeries::new(points.clone(), style))
                        .map_err(plot_err)?
                        .label(label)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
                }
                chart
                    .draw_series(line.iter().map(|&pt| Circle::new(pt, 3, colour.filled())))
                    .map_err(plot_err)?;
                chart
                    .draw_series(tree.iter().map(|&pt| Cross::new(pt, 4, colour.stroke_width(1))))
                    .map_err(plot_err)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 10))
                .position(SeriesLabelPosition::LowerLeft)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    polysketch_core::io::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use faer::Par;
    use polysketch_tensoring::amm::{CaseResult, Config, run_case};

    use super::amm_error;

    #[test]
    fn the_plot_is_written() {
        let cfg = Config {
            degrees: vec![2],
            sizes: vec![16, 32],
            draws: 4,
            rows: 4,
            dim: 4,
            ..Config::quick()
        };
        let results: Vec<CaseResult> = cfg
            .cases()
            .into_iter()
            .map(|(p, r, f)| run_case(&cfg, p, r, f, Par::Seq).unwrap())
            .collect();
        let path = std::env::temp_dir().join(format!("polysketch-amm-{}.svg", std::process::id()));
        amm_error(&results, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("AMM error"));
        std::fs::remove_file(&path).unwrap();
    }
}
