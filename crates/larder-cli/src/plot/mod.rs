//! Charts for `larder sim --plot` (hit-ratio curves) and `larder bench --plot` (throughput
//! bars): the file and its format ([`Target`]), the font PNG text needs, and a legend that
//! needs none. What each chart draws lives with its subcommand ([`Chart`]).
//!
//! # Fonts
//!
//! | output | text drawn by | needs a font file |
//! |---|---|---|
//! | `.svg` | the viewer, from `<text>` elements | no |
//! | `.png` | ab_glyph, rasterised here | yes: `$LARDER_FONT`, else DejaVu Sans or Liberation Sans from `/usr/share/fonts` |
//!
//! plotters lays text out (to size the label areas and the legend) through its font backend,
//! which would need a font for SVG too. [`svg::FontlessSvg`] wraps the SVG backend and answers
//! that layout from the font size alone, as the viewer's font is unknown here anyway. On
//! Debian, `fonts-dejavu-core` provides the PNG font.

mod svg;

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::failure::Failure;
use svg::FontlessSvg;

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

/// The most pixels a PNG chart may have. Its image is drawn in memory, three bytes a pixel (768
/// MiB at this limit), and plotters counts the pixels in a `u32`, which a taller chart, some
/// eleven thousand of `sim`'s panels, overflows.
const MAX_PNG_PIXELS: u64 = 1 << 28;

/// The room right of each panel's chart, for its legend.
pub const LEGEND_WIDTH: u32 = 170;

/// A chart a subcommand draws: its size, and how to draw it on any backend.
pub trait Chart {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);

    /// Draws the chart on `root` (already white).
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

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
    /// Checks the file's directory and extension, that the file can be written and, for a PNG,
    /// that a font can be had, so that a replay is not run for a chart that cannot be drawn.
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
        check_writable(path).map_err(|e| {
            Failure::new(format!(
                "--plot {}: cannot write the chart there: {e}",
                path.display()
            ))
        })?;
        Ok(Target {
            path: path.to_owned(),
            format,
        })
    }

    /// Refuses a chart that would be written over `input`, a file the run reads (`what` names
    /// it, as the command line does): the same file, by its own name, a symbolic link or
    /// another hard link. The chart is written once the run is done, over whatever file it
    /// names. (A file that is not there is none.)
    pub fn check_not_over(&self, input: &Path, what: &str) -> Result<(), Failure> {
        use std::os::unix::fs::MetadataExt;
        let same = match (std::fs::metadata(&self.path), std::fs::metadata(input)) {
            (Ok(chart), Ok(input)) => (chart.dev(), chart.ino()) == (input.dev(), input.ino()),
            _ => false,
        };
        if same {
            return Err(Failure::usage(format!(
                "--plot {}: that is {what}, which the chart would overwrite",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Refuses a chart of `size` (width and height in pixels) that this target cannot hold: a
    /// PNG of more than [`MAX_PNG_PIXELS`]. An SVG has no such bound.
    pub fn check_size(&self, (width, height): (u32, u32)) -> Result<(), Failure> {
        if self.format == ImageFormat::Png && u64::from(width) * u64::from(height) > MAX_PNG_PIXELS
        {
            return Err(Failure::usage(format!(
                "--plot {}: a PNG of {width} x {height} pixels is more than the \
                 {MAX_PNG_PIXELS} pixels a chart may have; plot fewer traces, or to .svg",
                self.path.display()
            )));
        }
        Ok(())
    }
}

/// Checks that the chart can be written to `path` without changing what is there: a file that
/// exists is opened for writing but not truncated, and one that does not is created and removed
/// again (through a dangling symbolic link, its target, and the link stays). A directory of
/// that name, or one the user may not write in, fails here rather than after the run. A FIFO or
/// a device is left to the write itself: opening a FIFO waits for a reader, which the chart's
/// own write would then wait for again.
fn check_writable(path: &Path) -> std::io::Result<()> {
    let existed = match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() && !meta.is_dir() => return Ok(()),
        Ok(_) => true,
        Err(_) => false,
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if !existed {
        // A dangling symbolic link's target is what the open created: removing `path` would
        // remove the link and leave the new, empty target.
        let created = if std::fs::symlink_metadata(path)?.is_symlink() {
            std::fs::canonicalize(path)?
        } else {
            path.to_owned()
        };
        std::fs::remove_file(created)?;
    }
    Ok(())
}

/// Draws `chart` into the target file.
pub fn write(target: &Target, chart: &impl Chart) -> Result<(), Failure> {
    fn draw_on<DB: DrawingBackend>(
        root: DrawingArea<DB, Shift>,
        chart: &impl Chart,
    ) -> Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        chart.draw(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    }
    let size = chart.size();
    target.check_size(size)?;
    let drawn = match target.format {
        ImageFormat::Svg => draw_on(
            FontlessSvg(SVGBackend::new(&target.path, size)).into_drawing_area(),
            chart,
        ),
        ImageFormat::Png => draw_on(
            BitMapBackend::new(&target.path, size).into_drawing_area(),
            chart,
        ),
    };
    drawn.map_err(|e| {
        Failure::new(format!(
            "cannot write the plot {}: {e}",
            target.path.display()
        ))
    })
}

/// Writes `text` centred below the backend point `at` (a point on a chart's x axis), on `root`:
/// an x-axis label placed by the chart rather than by plotters' evenly spaced ticks.
pub fn axis_label<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    text: String,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.draw(&Text::new(
        text,
        (at.0, at.1 + 8),
        ("sans-serif", 15)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))
}

/// Draws legend entry `index` (a coloured swatch and its label) in the right margin of
/// `panel`, which the chart left [`LEGEND_WIDTH`] wide. plotters' own legend measures its text
/// with the font backend, which an SVG has no font for; this one needs no measure. Its swatch
/// is a rectangle, so a curve stays its panel's only polyline of its colour.
pub fn legend<DB: DrawingBackend>(
    panel: &DrawingArea<DB, Shift>,
    index: usize,
    label: &str,
    color: RGBAColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (panel_width, _) = panel.dim_in_pixel();
    let x = panel_width as i32 - LEGEND_WIDTH as i32 + 12;
    let y = 50 + 22 * index as i32;
    panel.draw(&Rectangle::new(
        [(x, y - 5), (x + 16, y + 5)],
        color.filled(),
    ))?;
    panel.draw(&Text::new(
        label.to_string(),
        (x + 24, y),
        ("sans-serif", 15)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center)),
    ))
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
