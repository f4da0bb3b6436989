//! `larder bench --plot`: operations per second as bars, one panel per workload, a group of
//! bars per thread count, one bar per cache, in the table's order and colours.
//!
//! The value axis starts at zero in every panel, so bar lengths compare as ratios do. The file,
//! its format and fonts are [`crate::plot`]'s.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Measured;
use crate::plot::{axis_label, legend, Chart, LEGEND_WIDTH};

/// The width of the image, and the height of one panel, in pixels.
const WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 360;
/// The share of a thread count's slot its bars fill together.
const GROUP_WIDTH: f64 = 0.8;

/// One workload's results, as a panel.
#[derive(Debug)]
pub struct Panel {
    /// The panel's title.
    pub title: String,
    /// Each cache's best round at each thread count.
    pub results: Vec<Measured>,
}

/// Every workload run, with the caches and thread counts in the order of the tables.
#[derive(Debug)]
pub struct Bars {
    pub panels: Vec<Panel>,
    pub names: Vec<&'static str>,
    pub threads: Vec<usize>,
}

impl Chart for Bars {
    fn size(&self) -> (u32, u32) {
        let panels = u32::try_from(self.panels.len()).unwrap_or(u32::MAX);
        (WIDTH, PANEL_HEIGHT.saturating_mul(panels))
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let areas = root.split_evenly((self.panels.len(), 1));
        for (area, panel) in areas.iter().zip(&self.panels) {
            self.draw_panel(root, area, panel)?;
        }
        Ok(())
    }
}

impl Bars {
    fn draw_panel<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        area: &DrawingArea<DB, Shift>,
        panel: &Panel,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        // Only the caches that ran in this workload (the unbounded maps sit out cache-aside).
        let names: Vec<&str> = self
            .names
            .iter()
            .copied()
            .filter(|n| panel.results.iter().any(|m| m.name == *n))
            .collect();
        let top = panel
            .results
            .iter()
            .map(|m| m.ops_per_sec / 1e6)
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.1;
        let groups = self.threads.len() as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 20))
            .margin(12)
            .margin_right(LEGEND_WIDTH)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5..groups - 0.5, 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("million operations per second")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        let bar = GROUP_WIDTH / names.len().max(1) as f64;
        for (group, &threads) in self.threads.iter().enumerate() {
            let center = group as f64;
            let label = format!("{threads} thread{}", if threads == 1 { "" } else { "s" });
            axis_label(root, chart.backend_coord(&(center, 0.0)), label)?;
            for (index, name) in names.iter().enumerate() {
                let Some(m) = panel
                    .results
                    .iter()
                    .find(|m| m.name == *name && m.threads == threads)
                else {
                    continue;
                };
                let left = center - GROUP_WIDTH / 2.0 + bar * index as f64;
                let color = color_of(&self.names, name);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(left, 0.0), (left + bar * 0.9, m.ops_per_sec / 1e6)],
                    color.filled(),
                )))?;
            }
        }
        for (index, name) in names.iter().enumerate() {
            legend(area, index, name, color_of(&self.names, name))?;
        }
        Ok(())
    }
}

/// A cache's colour: fixed by its place in the whole run, so it is the same in every panel.
fn color_of(names: &[&str], name: &str) -> RGBAColor {
    let at = names.iter().position(|n| *n == name).unwrap_or(0);
    Palette99::pick(at).to_rgba()
}
