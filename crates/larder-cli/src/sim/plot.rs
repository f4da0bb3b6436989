//! `larder sim --plot`: hit ratio against capacity, one curve per column (policy, peer or
//! reference) and one panel per trace, stacked top to bottom.
//!
//! The capacity axis is logarithmic, as capacities are usually chosen in steps of a factor; the
//! hit-ratio axis runs from 0 to 100 % in every panel, so panels compare at a glance.
//!
//! # Fonts
//!
//! | output | text drawn by | needs a font file |
//! |---|---|---|
//! | `.svg` | the viewer, from `<text>` elements | no |
//! | `.png` | ab_glyph, rasterised here | yes: `$LARDER_FONT`, else DejaVu Sans or Liberation Sans from `/usr/share/fonts` |
//!
//! plotters lays text out (to size the label areas and the legend) through its font backend,
//! which would need a font for SVG too. [`FontlessSvg`] wraps the SVG backend and answers that
//! layout from the font size alone, as the viewer's font is unknown here anyway. On Debian,
//! `fonts-dejavu-core` provides the PNG font.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

use super::Report;
use crate::failure::Failure;

/// The environment variable naming a TrueType or OpenType font for PNG text.
pub const FONT_ENV: &str = "LARDER_FONT";

/// Fonts tried for PNG text when [`FONT_ENV`] is not set, in order (Debian and Ubuntu, Fedora,
/// Arch).
const SYSTEM_FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

/// The width of the image, and the height of one panel, in pixels.
const WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 420;
/// The room right of each panel's chart, for its legend.
const LEGEND_WIDTH: u32 = 170;

/// Where to write the chart, and in which format.
#[derive(Debug)]
pub struct Target {
    path: PathBuf,
    format: ImageFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ImageFormat {
    Svg,
    Png,
}

impl Target {
    /// Checks the file's directory and extension and, for a PNG, that a font can be had, so
    /// that a replay is not run for a chart that cannot be drawn.
    pub fn new(path: &Path) -> Result<Target, Failure> {
        let directory = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(directory) = directory.filter(|d| !d.is_dir()) {
            return Err(Failure::new(format!(
                "--plot {}: there is no directory {}",
                path.display(),
                directory.display()
            )));
        }
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let format = match extension.as_deref() {
            Some("svg") => ImageFormat::Svg,
            Some("png") => {
                register_font()?;
                ImageFormat::Png
            }
            _ => {
                return Err(Failure::usage(format!(
                    "--plot {}: the file name must end in .svg or .png",
                    path.display()
                )))
            }
        };
        Ok(Target {
            path: path.to_owned(),
            format,
        })
    }
}

/// Draws the report's curves into the target file.
pub fn write(target: &Target, report: &Report) -> Result<(), Failure> {
    let panels = u32::try_from(report.traces.len()).unwrap_or(u32::MAX);
    let size = (WIDTH, PANEL_HEIGHT.saturating_mul(panels));
    let drawn = match target.format {
        ImageFormat::Svg => {
            let root = FontlessSvg(SVGBackend::new(&target.path, size)).into_drawing_area();
            draw(&root, report).map_err(|e| e.to_string())
        }
        ImageFormat::Png => {
            let root = BitMapBackend::new(&target.path, size).into_drawing_area();
            draw(&root, report).map_err(|e| e.to_string())
        }
    };
    drawn.map_err(|e| {
        Failure::new(format!(
            "cannot write the plot {}: {e}",
            target.path.display()
        ))
    })
}

/// Draws one panel per trace on `root`, then writes it out.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
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
            let (px, py) = chart.backend_coord(&(x, 0.0));
            root.draw(&Text::new(
                capacity.to_string(),
                (px, py + 8),
                ("sans-serif", 15)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
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
            // The legend, in the right margin. plotters' own legend measures its text with
            // the font backend, which an SVG has no font for; this one needs no measure. Its
            // swatch is a rectangle, so each curve is its panel's only polyline of its colour.
            let (panel_width, _) = panel.dim_in_pixel();
            let x = panel_width as i32 - LEGEND_WIDTH as i32 + 12;
            let y = 50 + 22 * column as i32;
            panel.draw(&Rectangle::new(
                [(x, y - 5), (x + 16, y + 5)],
                color.filled(),
            ))?;
            panel.draw(&Text::new(
                label,
                (x + 24, y),
                ("sans-serif", 15)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
    }
    root.present()
}

/// Loads a font for PNG text and registers it with plotters as `sans-serif`.
fn register_font() -> Result<(), Failure> {
    let from_env = std::env::var_os(FONT_ENV).filter(|v| !v.is_empty());
    let (path, bytes) = match &from_env {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                Failure::new(format!(
                    "cannot read the font ${FONT_ENV} = {}: {e}",
                    Path::new(path).display()
                ))
            })?;
            (PathBuf::from(path), bytes)
        }
        None => SYSTEM_FONTS
            .iter()
            .find_map(|path| Some((PathBuf::from(path), std::fs::read(path).ok()?)))
            .ok_or_else(|| {
                Failure::new(format!(
                    "no font to draw a PNG's text: install fonts-dejavu-core, set {FONT_ENV} to \
                     a .ttf file, or plot to .svg, which needs none"
                ))
            })?,
    };
    // plotters keeps registered fonts for the life of the process, by `'static` reference;
    // `larder` registers one font once per run.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| {
        Failure::new(format!(
            "{} is not a TrueType or OpenType font",
            path.display()
        ))
    })
}

/// The SVG backend, with text laid out from the font size alone (see the module docs).
///
/// Every drawing call goes to the SVG backend unchanged; only [`estimate_text_size`] is
/// answered here: an average glyph is taken as 0.6 em wide, a line as 1 em high, close to
/// common sans-serif faces.
///
/// [`estimate_text_size`]: DrawingBackend::estimate_text_size
struct FontlessSvg<'a>(SVGBackend<'a>);

impl std::fmt::Debug for FontlessSvg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FontlessSvg").finish_non_exhaustive()
    }
}

type SvgResult = Result<(), DrawingErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

impl DrawingBackend for FontlessSvg<'_> {
    type ErrorType = <SVGBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> SvgResult {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> SvgResult {
        self.0.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> SvgResult {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> SvgResult {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> SvgResult {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> SvgResult {
        self.0.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> SvgResult {
        self.0.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vertices: I,
        style: &S,
    ) -> SvgResult {
        self.0.fill_polygon(vertices, style)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        position: BackendCoord,
    ) -> SvgResult {
        self.0.draw_text(text, style, position)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        // plotters' sizes are 1.24 times the em, as the SVG backend's `font-size` shows.
        let em = style.size() / 1.24;
        let width = 0.6 * em * text.chars().count() as f64;
        Ok((width.ceil() as u32, em.ceil() as u32))
    }

    fn blit_bitmap(&mut self, position: BackendCoord, size: (u32, u32), src: &[u8]) -> SvgResult {
        self.0.blit_bitmap(position, size, src)
    }
}
