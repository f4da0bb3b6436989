//! `larder sim --plot`: hit ratio against capacity, one curve per column (policy, peer or
//! reference) and one panel per trace, stacked top to bottom.
//!
//! The capacity axis is logarithmic, as capacities are usually chosen in steps of a factor; the
//! hit-ratio axis runs from 0 to 100 % in every panel, so panels compare at a glance. The file,
//! its format and fonts are [`crate::plot`]'s.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Report;
use crate::plot::{axis_label, legend, Chart, LEGEND_WIDTH};

/// The width of the image, and the height of one panel, in pixels.
const WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 420;

/// The chart's width and height, in pixels, for `traces` traces.
pub(super) fn size(traces: usize) -> (u32, u32) {
    let panels = u32::try_from(traces).unwrap_or(u32::MAX);
    (WIDTH, PANEL_HEIGHT.saturating_mul(panels))
}

impl Chart for Report {
    fn size(&self) -> (u32, u32) {
        size(self.traces.len())
    }

    /// One panel per trace.
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        draw(root, self)
    }
}

/// Draws one panel per trace on `root`.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let smallest = report.capacities.iter().copied().min().unwrap_or(1) as f64;
    let largest = report.capacities.iter().copied().max().unwrap_or(1) as f64;
    // A little room either side, so the first and last points sit off the frame.
    let capacities = (smallest / 1.25)..(largest * 1.25);
    let panels = root.split_evenly((report.traces.len(), 1));
    for (panel, results) in panels.iter().zip(&report.traces) {
        let mut chart = ChartBuilder::on(panel)
            .caption(&results.label, ("sans-serif", 20))
            .margin(12)
            .margin_right(LEGEND_WIDTH)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(capacities.clone().log_scale(), 0.0..100.0)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|_| String::new())
            .y_labels(11)
            .light_line_style(TRANSPARENT)
            .x_desc("capacity (entries, log scale)")
            .y_desc("hit ratio (%)")
            .y_label_formatter(&|ratio| format!("{ratio:.0}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        // The capacity axis is labelled at the capacities measured, not at powers of ten.
        for &capacity in &report.capacities {
            let x = capacity as f64;
            chart.draw_series(LineSeries::new(
                [(x, 0.0), (x, 100.0)],
                ShapeStyle::from(BLACK.mix(0.15)),
            ))?;
            axis_label(root, chart.backend_coord(&(x, 0.0)), capacity.to_string())?;
        }
        for (column, label) in report.columns.iter().map(|c| c.label()).enumerate() {
            let color = Palette99::pick(column).to_rgba();
            let points: Vec<(f64, f64)> = report
                .capacities
                .iter()
                .enumerate()
                .map(|(at, &capacity)| (capacity as f64, results.stats[at][column].hit_ratio()))
                .collect();
            chart.draw_series(LineSeries::new(
                points.clone(),
                ShapeStyle::from(color).stroke_width(2),
            ))?;
            chart.draw_series(
                points
                    .into_iter()
                    .map(|point| Circle::new(point, 3, color.filled())),
            )?;
            legend(panel, column, &label, color)?;
        }
    }
    Ok(())
}
