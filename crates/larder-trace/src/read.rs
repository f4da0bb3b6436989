//! Trace readers: ARC, LIRS and plain text, raw or compressed.
//!
//! A trace is a list of keys in request order. Three text layouts are in use:
//!
//! | layout | a line reads | stands for |
//! |---|---|---|
//! | ARC (Megiddo & Modha, FAST 2003) | `start count x y` | the keys `start, start+1, …, start+count-1`; `x` and `y` are ignored |
//! | LIRS (Jiang & Zhang, SIGMETRICS 2002) | `key` | one key; a line `*` is a checkpoint marker |
//! | plain | `key` | one key |
//!
//! LIRS and plain text are the same layout; only the usual compression differs.
//!
//! # How a file is read
//!
//! 1. The whole file is read into memory (the traces are a few megabytes).
//! 2. The compression is taken from the first bytes, not the file name:
//!    `28 B5 2F FD` is a zstd frame, `1F 8B` a gzip member, anything else is text.
//!    Every frame or member is decoded, so concatenated files read whole; zstd
//!    skippable frames are passed over.
//! 3. The text is split into lines. Blank lines and lines `*` are skipped; `\r\n`
//!    endings are accepted.
//! 4. The first line that holds a key decides the layout: more than one
//!    whitespace-separated field means ARC, one field means plain. A later line
//!    that does not fit that layout is a [`TraceError::Parse`].
//!
//! Bad input never panics: it ends in a [`TraceError`] naming what went wrong.
//! One ARC line may stand for at most [`MAX_RUN`] keys, so a corrupt count cannot
//! make the reader allocate without bound.

use std::error::Error;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::StreamingDecoder;

/// The most keys one ARC line may stand for (its `count` field), 2^24.
///
/// The published ARC traces stay far below it; a larger count is treated as
/// corruption ([`ParseProblem::RunTooLong`]) rather than allocated.
pub const MAX_RUN: u64 = 1 << 24;

/// How many bytes of an offending line a [`TraceError::Parse`] keeps.
const MAX_QUOTED_TEXT: usize = 80;

/// The compression a trace file was found to use, from its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain text.
    None,
    /// Zstandard: the file starts with `28 B5 2F FD`.
    Zstd,
    /// Gzip: the file starts with `1F 8B`.
    Gzip,
}

impl Compression {
    /// Detects the compression from the first bytes of a file.
    ///
    /// ```
    /// use larder_trace::read::Compression;
    /// assert_eq!(Compression::detect(&[0x28, 0xB5, 0x2F, 0xFD, 0]), Compression::Zstd);
    /// assert_eq!(Compression::detect(&[0x1F, 0x8B, 8]), Compression::Gzip);
    /// assert_eq!(Compression::detect(b"1 1 0 0\n"), Compression::None);
    /// ```
    pub fn detect(bytes: &[u8]) -> Compression {
        if bytes.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
            Compression::Zstd
        } else if bytes.starts_with(&[0x1F, 0x8B]) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "plain text",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        })
    }
}

/// The text layout of a trace, decided by its first line that holds a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `start count ignored ignored`: a run of consecutive keys per line.
    Arc,
    /// One key per line (the LIRS traces use this layout).
    Plain,
}

/// What was wrong with a line of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseProblem {
    /// A field that must be a key or a count is not a decimal `u64`.
    NotANumber,
    /// An ARC line has a start but no count.
    MissingCount,
    /// A plain trace has a line with more than one field.
    ExtraFields,
    /// An ARC run's last key, `start + count - 1`, does not fit in a `u64`.
    RunOverflow,
    /// An ARC line's count is larger than [`MAX_RUN`].
    RunTooLong,
}

impl fmt::Display for ParseProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseProblem::NotANumber => "a field is not a decimal u64",
            ParseProblem::MissingCount => "an ARC line needs `start count`",
            ParseProblem::ExtraFields => "a plain trace line must hold one key",
            ParseProblem::RunOverflow => "the run's last key does not fit in a u64",
            ParseProblem::RunTooLong => "the run's count is larger than MAX_RUN",
        })
    }
}

/// Why a trace could not be read or found.
#[derive(Debug)]
#[non_exhaustive]
pub enum TraceError {
    /// The file could not be opened or read.
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        source: io::Error,
    },
    /// The compressed data is corrupt or truncated.
    Decompress {
        /// The compression the magic bytes announced.
        compression: Compression,
        /// The decoder's report.
        source: Box<dyn Error + Send + Sync>,
    },
    /// A line of the decompressed text is not a valid trace line.
    Parse {
        /// The 1-based line number in the decompressed text.
        line: usize,
        /// The line (its first 80 bytes, lossily decoded as UTF-8).
        text: String,
        /// What is wrong with it.
        problem: ParseProblem,
    },
    /// [`crate::traces::load`] was given a name it does not know.
    UnknownTrace {
        /// The name as given.
        name: String,
    },
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Io { path, .. } => write!(f, "cannot read trace file {}", path.display()),
            TraceError::Decompress { compression, .. } => {
                write!(f, "corrupt {compression} data in trace")
            }
            TraceError::Parse {
                line,
                text,
                problem,
            } => write!(f, "trace line {line} `{text}`: {problem}"),
            TraceError::UnknownTrace { name } => write!(
                f,
                "unknown trace `{name}` (expected `OLTP` or `lirs/<name>`)"
            ),
        }
    }
}

impl Error for TraceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            TraceError::Io { source, .. } => Some(source),
            TraceError::Decompress { source, .. } => Some(&**source),
            TraceError::Parse { .. } | TraceError::UnknownTrace { .. } => None,
        }
    }
}

/// Reads the trace file at `path`, whatever its compression and layout.
///
/// # Errors
///
/// [`TraceError::Io`] if the file cannot be read, and otherwise as
/// [`parse_trace`].
pub fn read_trace(path: impl AsRef<Path>) -> Result<Vec<u64>, TraceError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| TraceError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_trace(&bytes)
}

/// Parses a trace held in memory: detects the compression, decodes, then parses
/// the text as [`parse_text`] does.
///
/// ```
/// // An ARC run of three keys, then a single key.
/// let keys = larder_trace::read::parse_trace(b"10 3 0 0\n42 1 0 0\n").unwrap();
/// assert_eq!(keys, [10, 11, 12, 42]);
/// ```
///
/// # Errors
///
/// [`TraceError::Decompress`] if the compressed data is corrupt, and
/// [`TraceError::Parse`] for the first bad line of the text.
pub fn parse_trace(bytes: &[u8]) -> Result<Vec<u64>, TraceError> {
    let compression = Compression::detect(bytes);
    let decoded = match compression {
        Compression::None => return parse_text(bytes),
        Compression::Zstd => decode_zstd(bytes),
        Compression::Gzip => decode_gzip(bytes),
    };
    let text = decoded.map_err(|source| TraceError::Decompress {
        compression,
        source,
    })?;
    parse_text(&text)
}

/// Decodes every zstd frame in `input`, skipping skippable frames.
///
/// `StreamingDecoder` reads one frame and leaves the slice it was handed just
/// past that frame, so a loop over the shrinking slice decodes a whole file.
fn decode_zstd(mut input: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
    let mut out = Vec::with_capacity(input.len() * 4);
    while !input.is_empty() {
        match StreamingDecoder::new(&mut input) {
            Ok(mut frame) => {
                frame.read_to_end(&mut out)?;
            }
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                // The header read consumed the magic number and the length field.
                input = usize::try_from(length)
                    .ok()
                    .and_then(|length| input.get(length..))
                    .ok_or("a skippable zstd frame runs past the end of the file")?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Decodes every gzip member in `input` (`MultiGzDecoder` continues past the
/// first member, as `gzip -d` does).
fn decode_gzip(input: &[u8]) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
    let mut out = Vec::with_capacity(input.len() * 4);
    flate2::bufread::MultiGzDecoder::new(input).read_to_end(&mut out)?;
    Ok(out)
}

/// Parses uncompressed trace text (the layout rules are in the module docs).
///
/// ```
/// use larder_trace::read::parse_text;
/// // A LIRS-style trace with a checkpoint marker and Windows line endings.
/// assert_eq!(parse_text(b"7\r\n*\r\n8\r\n7\r\n").unwrap(), [7, 8, 7]);
/// ```
///
/// # Errors
///
/// [`TraceError::Parse`] for the first line that is not valid in the layout the
/// first key line chose.
pub fn parse_text(text: &[u8]) -> Result<Vec<u64>, TraceError> {
    let mut keys = Vec::with_capacity(text.len() / 8);
    let mut format = None;
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        let mut fields = line
            .split(u8::is_ascii_whitespace)
            .filter(|field| !field.is_empty());
        let Some(first) = fields.next() else {
            continue; // blank line
        };
        if first == b"*" {
            continue; // LIRS checkpoint marker
        }
        let second = fields.next();
        let layout = *format.get_or_insert(if second.is_some() {
            Format::Arc
        } else {
            Format::Plain
        });
        let parsed = match layout {
            Format::Plain => parse_plain_line(first, second, &mut keys),
            Format::Arc => parse_arc_line(first, second, &mut keys),
        };
        parsed.map_err(|problem| TraceError::Parse {
            line: index + 1,
            text: quote(line),
            problem,
        })?;
    }
    Ok(keys)
}

fn parse_plain_line(
    key: &[u8],
    extra: Option<&[u8]>,
    keys: &mut Vec<u64>,
) -> Result<(), ParseProblem> {
    if extra.is_some() {
        return Err(ParseProblem::ExtraFields);
    }
    keys.push(parse_u64(key)?);
    Ok(())
}

/// Expands `start count` into the run `start..start + count`; any fields after
/// the count are ignored, as the ARC format prescribes.
fn parse_arc_line(
    start: &[u8],
    count: Option<&[u8]>,
    keys: &mut Vec<u64>,
) -> Result<(), ParseProblem> {
    let start = parse_u64(start)?;
    let count = parse_u64(count.ok_or(ParseProblem::MissingCount)?)?;
    if count > MAX_RUN {
        return Err(ParseProblem::RunTooLong);
    }
    if count > 0 {
        start
            .checked_add(count - 1)
            .ok_or(ParseProblem::RunOverflow)?;
    }
    keys.extend((0..count).map(|offset| start + offset));
    Ok(())
}

fn parse_u64(field: &[u8]) -> Result<u64, ParseProblem> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|field| field.parse().ok())
        .ok_or(ParseProblem::NotANumber)
}

/// The start of a bad line, kept for the error message.
fn quote(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let end = line.len().min(MAX_QUOTED_TEXT);
    String::from_utf8_lossy(&line[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(text: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(text, ruzstd::encoding::CompressionLevel::Fastest)
    }

    fn parse_problem(text: &[u8]) -> (usize, String, ParseProblem) {
        match parse_trace(text) {
            Err(TraceError::Parse {
                line,
                text,
                problem,
            }) => (line, text, problem),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn arc_lines_expand_to_runs_and_ignore_trailing_fields() {
        let keys = parse_text(b"5 3 9 9\n\n100 1 0 0\n7 0 0 0\n").unwrap();
        assert_eq!(keys, [5, 6, 7, 100]);
        // Two fields are enough for ARC.
        assert_eq!(parse_text(b"1 2\n").unwrap(), [1, 2]);
    }

    #[test]
    fn plain_lines_skip_markers_blanks_and_carriage_returns() {
        let keys = parse_text(b"*\n3\r\n\n*\r\n 4 \n18446744073709551615").unwrap();
        assert_eq!(keys, [3, 4, u64::MAX]);
    }

    #[test]
    fn empty_input_is_an_empty_trace() {
        assert_eq!(parse_trace(b"").unwrap(), Vec::<u64>::new());
        assert_eq!(parse_trace(b"*\n\n").unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn compressed_traces_decode_to_the_same_keys() {
        let text = b"1\n2\n*\n3\n";
        assert_eq!(parse_trace(&gzip(text)).unwrap(), [1, 2, 3]);
        assert_eq!(parse_trace(&zstd(text)).unwrap(), [1, 2, 3]);
    }

    #[test]
    fn concatenated_frames_and_members_are_all_read() {
        let mut two_members = gzip(b"1\n2\n");
        two_members.extend(gzip(b"3\n"));
        assert_eq!(parse_trace(&two_members).unwrap(), [1, 2, 3]);

        let mut frames = zstd(b"1 2 0 0\n");
        // A skippable frame: magic 0x184D2A50, a 3-byte payload.
        frames.extend([0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 0xAA, 0xBB, 0xCC]);
        frames.extend(zstd(b"10 1 0 0\n"));
        assert_eq!(parse_trace(&frames).unwrap(), [1, 2, 10]);
    }

    #[test]
    fn bad_lines_are_reported_with_number_text_and_problem() {
        assert_eq!(
            parse_problem(b"1\n2\nx3\n"),
            (3, "x3".to_owned(), ParseProblem::NotANumber)
        );
        assert_eq!(
            parse_problem(b"1\n2 2\n"),
            (2, "2 2".to_owned(), ParseProblem::ExtraFields)
        );
        assert_eq!(parse_problem(b"1 1 0 0\n2\n").2, ParseProblem::MissingCount);
        assert_eq!(parse_problem(b"1 -1 0 0\n").2, ParseProblem::NotANumber);
        assert_eq!(
            parse_problem(b"18446744073709551615 2 0 0\n").2,
            ParseProblem::RunOverflow
        );
        assert_eq!(
            parse_problem(b"0 18446744073709551615 0 0\n").2,
            ParseProblem::RunTooLong
        );
        assert_eq!(
            parse_problem(b"18446744073709551616\n").2,
            ParseProblem::NotANumber
        );
        assert_eq!(parse_problem(b"\xFF\xFE\n").2, ParseProblem::NotANumber);
    }

    #[test]
    fn long_bad_lines_are_quoted_short() {
        let line = vec![b'z'; 1000];
        let (_, text, _) = parse_problem(&line);
        assert_eq!(text.len(), MAX_QUOTED_TEXT);
    }

    #[test]
    fn corrupt_or_truncated_compression_is_an_error() {
        let text: Vec<u8> = (0..2000)
            .flat_map(|k| format!("{k}\n").into_bytes())
            .collect();
        for packed in [gzip(&text), zstd(&text)] {
            let compression = Compression::detect(&packed);
            let truncated = &packed[..packed.len() / 2];
            assert!(
                matches!(parse_trace(truncated), Err(TraceError::Decompress { compression: c, .. }) if c == compression),
                "truncated {compression} must fail"
            );
            // Flipping bytes must never panic; it may or may not be detected.
            for position in (4..packed.len()).step_by(7) {
                let mut corrupt = packed.clone();
                corrupt[position] ^= 0x5A;
                let _ = parse_trace(&corrupt);
            }
        }
        // A bare magic number.
        assert!(matches!(
            parse_trace(&[0x28, 0xB5, 0x2F, 0xFD]),
            Err(TraceError::Decompress { .. })
        ));
        assert!(matches!(
            parse_trace(&[0x1F, 0x8B]),
            Err(TraceError::Decompress { .. })
        ));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let path = Path::new("/nonexistent/larder/trace.lis");
        match read_trace(path) {
            Err(e @ TraceError::Io { .. }) => {
                assert!(e.to_string().contains("/nonexistent/larder/trace.lis"));
                assert!(e.source().is_some());
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}
