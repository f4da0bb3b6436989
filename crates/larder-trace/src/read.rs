//! Trace readers: ARC, LIRS and plain text, and cache2k binary; raw or
//! compressed with zstd, gzip or xz.
//!
//! A trace is a list of keys in request order. Three layouts are in use:
//!
//! | layout ([`TraceFormat`]) | the content is | stands for |
//! |---|---|---|
//! | ARC (Megiddo & Modha, FAST 2003) | lines `start count x y` | the keys `start, start+1, …, start+count-1`; `x` and `y` are ignored |
//! | plain, or LIRS (Jiang & Zhang, SIGMETRICS 2002) | lines `key` | one key; a line `*` is a checkpoint marker |
//! | cache2k (the cache2k benchmark's `.trc` files) | 4-byte little-endian `i32` keys, no header | one key each |
//!
//! LIRS and plain text are the same layout; only the usual compression differs.
//! A cache2k key is read as the `u32` of its bits, so distinct keys stay
//! distinct, which is all a replay needs. Its byte order cannot change a hit
//! ratio either: swapping the bytes of every key renames keys one to one.
//!
//! # How a file is read
//!
//! 1. The file is read as it streams, decoded and parsed a piece at a time:
//!    the reader holds the keys and buffers of a few kilobytes, never the
//!    file. So a pipe can be read too, and endless input (`/dev/zero`) ends
//!    in an error at a limit (below) rather than in memory running out.
//! 2. The compression is taken from the first bytes, not the file name:
//!    `28 B5 2F FD` is a zstd frame, `1F 8B` a gzip member, `FD 37 7A 58 5A 00`
//!    an xz stream, anything else is uncompressed. Every zstd frame and gzip
//!    member is decoded, so concatenated files read whole, and zstd
//!    skippable frames are passed over; an xz file must hold one stream.
//!    Checksums are checked where the data has them (gzip and xz always,
//!    zstd when the frame carries one), so corrupt data that still decodes
//!    is a [`TraceError::Decompress`], not other keys.
//! 3. The layout is the one the caller names, if any ([`read_trace_with`]).
//!    Otherwise a file name ending in `.trc` or `.bin`, before any `.zst`,
//!    `.gz` or `.xz`, names a cache2k trace ([`TraceFormat::from_path`]).
//!    Otherwise the start of the content decides, its first 4 KiB (after a
//!    UTF-8 byte order mark if it starts with one): if they hold a byte no
//!    text holds, a control character other than white space, and fewer
//!    than half of their lines that are not blank hold only numbers (or are
//!    `*`), it is a cache2k trace, and [`TraceError::UnknownFormat`] if its
//!    length turns out not to be a multiple of 4, unless it starts as data
//!    compressed in a way this reader does not decode (bzip2, lz4, zip, 7z):
//!    that is a [`TraceError::UnsupportedCompression`], where read as
//!    cache2k keys it would be figures for the bytes of the compressed data.
//!    If not, it is text, ARC or plain by step 4. A byte beyond ASCII, a
//!    stray one or a comment in UTF-8, leaves text text, and so does a stray
//!    control byte among key lines (a DOS end-of-file mark, zero bytes left
//!    by a crash): its line is a [`TraceError::Parse`], where read as cache2k
//!    keys it would be figures for keys the file does not hold.
//! 4. Text is split into lines, each ended by `\n`, `\r\n` or a lone `\r`,
//!    and at most [`MAX_LINE_BYTES`] long. Blank lines and lines `*` are
//!    skipped. The first line that holds a key decides the layout, unless the
//!    caller named one: more than one whitespace-separated field means ARC,
//!    one field means plain. A later line that does not fit that layout is a
//!    [`TraceError::Parse`].
//!
//! Bad input never panics: it ends in a [`TraceError`] naming what went wrong.
//! One ARC line may stand for at most [`MAX_RUN`] keys and a whole trace, in
//! any layout, for at most [`MAX_KEYS`], so neither corrupt counts nor endless
//! input can make the reader allocate without bound: a few kilobytes of lines
//! `0 16777216` would otherwise ask for hundreds of gigabytes. The content,
//! decoded, may be at most [`MAX_DECOMPRESSED`] bytes, so that input which
//! holds no keys ends too: a few megabytes of zstd can stand for terabytes of
//! blank lines.

use std::error::Error;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::StreamingDecoder;

/// The most keys one ARC line may stand for (its `count` field), 2^24.
///
/// The published ARC traces stay far below it; a larger count is treated as
/// corruption ([`ParseProblem::RunTooLong`]) rather than allocated.
pub const MAX_RUN: u64 = 1 << 24;

/// The most keys a trace may have, in any layout, 2^28 (2 GiB of keys): it
/// bounds the memory a read takes.
///
/// About 290 times the ARC OLTP trace's 914,145; more is treated as corruption
/// ([`ParseProblem::TraceTooLong`] in text, [`TraceError::TooManyKeys`] in a
/// cache2k trace).
pub const MAX_KEYS: u64 = 1 << 28;

/// The most bytes a trace's content may have, decoded if it is compressed,
/// 4 GiB less one byte; more is a [`TraceError::TooLarge`], found as the
/// content passes the limit. The content is never held whole (step 1 of the
/// module docs): the limit ends input that holds no keys.
///
/// A cache2k trace of [`MAX_KEYS`] keys takes 1 GiB, and the ARC OLTP trace,
/// decompressed, 21 MB.
pub const MAX_DECOMPRESSED: usize = u32::MAX as usize;

/// The longest line a text trace may have, 64 KiB; a longer one is a
/// [`ParseProblem::LineTooLong`]. A trace line is a few numbers: the bound
/// keeps a file without line endings from being held whole.
pub const MAX_LINE_BYTES: usize = 1 << 16;

/// How many of the content's first bytes its layout is detected from (step 3
/// of the module docs).
const DETECTION_BYTES: usize = 1 << 12;

/// The buffer a trace file is read through.
const READ_BUFFER_BYTES: usize = 1 << 16;

/// The UTF-8 byte order mark some editors put at the start of a text file.
const UTF8_BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

/// How many bytes of an offending line a [`TraceError::Parse`] keeps.
const MAX_QUOTED_TEXT: usize = 80;

/// The first bytes of an xz stream.
const XZ_MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0];

/// The size of one key in a cache2k trace.
const CACHE2K_KEY_BYTES: usize = 4;

/// The compression a trace file was found to use, from its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// Zstandard: the file starts with `28 B5 2F FD`.
    Zstd,
    /// Gzip: the file starts with `1F 8B`.
    Gzip,
    /// xz: the file starts with `FD 37 7A 58 5A 00`.
    Xz,
}

impl Compression {
    /// Detects the compression from the first bytes of a file.
    ///
    /// ```
    /// use larder_trace::read::Compression;
    /// assert_eq!(Compression::detect(&[0x28, 0xB5, 0x2F, 0xFD, 0]), Compression::Zstd);
    /// assert_eq!(Compression::detect(&[0x1F, 0x8B, 8]), Compression::Gzip);
    /// assert_eq!(Compression::detect(b"\xFD7zXZ\0"), Compression::Xz);
    /// assert_eq!(Compression::detect(b"1 1 0 0\n"), Compression::None);
    /// ```
    pub fn detect(bytes: &[u8]) -> Compression {
        if bytes.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
            Compression::Zstd
        } else if bytes.starts_with(&[0x1F, 0x8B]) {
            Compression::Gzip
        } else if bytes.starts_with(XZ_MAGIC) {
            Compression::Xz
        } else {
            Compression::None
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
        })
    }
}

/// The layout of a trace's content, once decompressed (see the module docs).
///
/// Its names, for [`FromStr`] and [`TraceFormat::name`], are `arc`, `plain`
/// (also `lirs`) and `cache2k`.
///
/// ```
/// use larder_trace::read::TraceFormat;
/// assert_eq!("lirs".parse::<TraceFormat>().unwrap(), TraceFormat::Plain);
/// assert_eq!(TraceFormat::Cache2k.name(), "cache2k");
/// assert!("csv".parse::<TraceFormat>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TraceFormat {
    /// Text, `start count ignored ignored`: a run of consecutive keys per line.
    Arc,
    /// Text, one key per line (the LIRS traces use this layout).
    Plain,
    /// Binary, 4-byte little-endian keys (the cache2k benchmark's traces).
    Cache2k,
}

impl TraceFormat {
    /// Every name [`FromStr`] accepts, for help texts.
    pub const NAMES: &'static [&'static str] = &["arc", "lirs", "plain", "cache2k"];

    /// The format's name, as [`FromStr`] reads it back.
    pub fn name(self) -> &'static str {
        match self {
            TraceFormat::Arc => "arc",
            TraceFormat::Plain => "plain",
            TraceFormat::Cache2k => "cache2k",
        }
    }

    /// The format a file name announces, if it announces one: a name ending
    /// in `.trc` or `.bin`, once a `.zst`, `.gz` or `.xz` is taken off, is a
    /// cache2k trace (the cache2k benchmark names them `trace-cpp.trc.bin.gz`).
    /// Text names say nothing: the content tells ARC from plain better.
    ///
    /// ```
    /// use larder_trace::read::TraceFormat;
    /// use std::path::Path;
    /// let format = |name| TraceFormat::from_path(Path::new(name));
    /// assert_eq!(format("traces/trace-cpp.trc.bin.gz"), Some(TraceFormat::Cache2k));
    /// assert_eq!(format("keys.TRC"), Some(TraceFormat::Cache2k));
    /// assert_eq!(format("OLTP.lis.zst"), None);
    /// ```
    pub fn from_path(path: &Path) -> Option<TraceFormat> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = [".zst", ".gz", ".xz"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        (name.ends_with(".trc") || name.ends_with(".bin")).then_some(TraceFormat::Cache2k)
    }
}

impl fmt::Display for TraceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TraceFormat {
    type Err = UnknownFormat;

    fn from_str(name: &str) -> Result<TraceFormat, UnknownFormat> {
        match name {
            "arc" => Ok(TraceFormat::Arc),
            "plain" | "lirs" => Ok(TraceFormat::Plain),
            "cache2k" => Ok(TraceFormat::Cache2k),
            _ => Err(UnknownFormat {
                name: name.to_owned(),
            }),
        }
    }
}

/// A format name that [`TraceFormat`]'s [`FromStr`] does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFormat {
    name: String,
}

impl UnknownFormat {
    /// The name as given.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown trace format `{}` (expected one of: {})",
            self.name,
            TraceFormat::NAMES.join(", ")
        )
    }
}

impl Error for UnknownFormat {}

/// A trace as read: its keys, and what the reader found it to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The keys, in request order.
    pub keys: Vec<u64>,
    /// The layout, as named by the caller or detected.
    pub format: TraceFormat,
    /// The compression, from the magic bytes.
    pub compression: Compression,
}

impl Trace {
    /// The number of distinct keys (from this capacity on, any cache misses
    /// only first requests). O(r), with a hash set.
    ///
    /// ```
    /// let trace = larder_trace::read::parse_trace_with(b"1\n2\n1\n", None).unwrap();
    /// assert_eq!(trace.unique_keys(), 2);
    /// ```
    pub fn unique_keys(&self) -> usize {
        crate::hash::distinct_keys(&self.keys)
    }
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
    /// A line's keys would take the trace past [`MAX_KEYS`] keys.
    TraceTooLong,
    /// A line is longer than [`MAX_LINE_BYTES`].
    LineTooLong,
}

impl fmt::Display for ParseProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseProblem::NotANumber => "a field is not a decimal u64",
            ParseProblem::MissingCount => "an ARC line needs `start count`",
            ParseProblem::ExtraFields => "a plain trace line must hold one key",
            ParseProblem::RunOverflow => "the run's last key does not fit in a u64",
            ParseProblem::RunTooLong => "the run's count is larger than MAX_RUN",
            ParseProblem::TraceTooLong => "the line takes the trace past MAX_KEYS keys",
            ParseProblem::LineTooLong => "the line is longer than MAX_LINE_BYTES",
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
    /// The content, decoded if it is compressed, is more than
    /// [`MAX_DECOMPRESSED`] bytes.
    TooLarge {
        /// The compression the magic bytes announced ([`Compression::None`]:
        /// the file itself is that large, or endless).
        compression: Compression,
        /// The limit it passed, in bytes.
        limit: usize,
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
    /// The content is not text, and not a cache2k trace either: its length
    /// is not a multiple of 4. Only detection reports this; a cache2k trace
    /// named by the caller or its file name is a [`TraceError::PartialKey`].
    UnknownFormat {
        /// The length of the decompressed content, in bytes.
        length: usize,
    },
    /// A cache2k trace whose length is not a multiple of 4: it ends inside
    /// a key.
    PartialKey {
        /// The length of the decompressed content, in bytes.
        length: usize,
    },
    /// A cache2k trace of more than [`MAX_KEYS`] keys (in a text trace, the
    /// line that passes the limit is a [`ParseProblem::TraceTooLong`]).
    TooManyKeys {
        /// The limit it passed, in keys.
        limit: u64,
    },
    /// With no layout named, the content starts as data compressed in a way
    /// this reader does not decode (bzip2, lz4, zip or 7z): read as it is, it
    /// would pass for a cache2k trace of the keys its bytes spell.
    UnsupportedCompression {
        /// The compression, as its tools name it (`bzip2`).
        name: &'static str,
    },
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Io { path, .. } => write!(f, "cannot read trace file {}", path.display()),
            TraceError::Decompress { compression, .. } => {
                write!(f, "corrupt {compression} data in trace")
            }
            TraceError::TooLarge {
                compression: Compression::None,
                limit,
            } => write!(f, "trace is more than {limit} bytes, the reader's limit"),
            TraceError::TooLarge { compression, limit } => write!(
                f,
                "{compression} data in trace decodes to more than {limit} bytes, the reader's \
                 limit"
            ),
            TraceError::Parse {
                line,
                text,
                problem,
            } => write!(f, "trace line {line} `{text}`: {problem}"),
            TraceError::UnknownTrace { name } => write!(
                f,
                "unknown trace `{name}` (expected `OLTP` or `lirs/<name>`)"
            ),
            TraceError::UnknownFormat { length } => write!(
                f,
                "unknown trace format: the content is not text, and its {length} bytes are \
                 not whole 4-byte cache2k keys"
            ),
            TraceError::PartialKey { length } => write!(
                f,
                "cache2k trace of {length} bytes ends inside a key (keys are 4 bytes)"
            ),
            TraceError::TooManyKeys { limit } => write!(
                f,
                "cache2k trace holds more than {limit} keys, the reader's limit"
            ),
            TraceError::UnsupportedCompression { name } => write!(
                f,
                "trace is {name} data, which this reader does not decode (it reads zstd, gzip \
                 and xz): decompress it first"
            ),
        }
    }
}

impl Error for TraceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            TraceError::Io { source, .. } => Some(source),
            TraceError::Decompress { source, .. } => Some(&**source),
            TraceError::TooLarge { .. }
            | TraceError::Parse { .. }
            | TraceError::UnknownTrace { .. }
            | TraceError::UnknownFormat { .. }
            | TraceError::PartialKey { .. }
            | TraceError::TooManyKeys { .. }
            | TraceError::UnsupportedCompression { .. } => None,
        }
    }
}

/// Reads the trace file at `path`, whatever its compression and layout.
///
/// # Errors
///
/// As [`read_trace_with`].
pub fn read_trace(path: impl AsRef<Path>) -> Result<Vec<u64>, TraceError> {
    read_trace_with(path, None).map(|trace| trace.keys)
}

/// Reads the trace file at `path` in the layout `format`, or, given `None`, in
/// the layout its name or content shows (steps 3 and 4 of the module docs).
/// The file is read as it streams (step 1), so it may also be a pipe.
///
/// # Errors
///
/// [`TraceError::Io`] if the file cannot be opened or read, and otherwise as
/// [`parse_trace_with`].
pub fn read_trace_with(
    path: impl AsRef<Path>,
    format: Option<TraceFormat>,
) -> Result<Trace, TraceError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| TraceError::Io {
        path: path.to_owned(),
        source,
    })?;
    let format = format.or_else(|| TraceFormat::from_path(path));
    let input = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    parse_input(input, path, format, LIMITS)
}

/// Parses a trace held in memory, whatever its compression and layout (the
/// layout is detected from the content alone).
///
/// ```
/// // An ARC run of three keys, then a single key.
/// let keys = larder_trace::read::parse_trace(b"10 3 0 0\n42 1 0 0\n").unwrap();
/// assert_eq!(keys, [10, 11, 12, 42]);
/// ```
///
/// # Errors
///
/// As [`parse_trace_with`].
pub fn parse_trace(bytes: &[u8]) -> Result<Vec<u64>, TraceError> {
    parse_trace_with(bytes, None).map(|trace| trace.keys)
}

/// Parses a trace held in memory: detects the compression and decodes, then
/// parses the content in the layout `format`, or, given `None`, in the layout
/// the content shows.
///
/// ```
/// use larder_trace::read::{parse_trace_with, Compression, TraceFormat};
/// // Two little-endian keys, 7 and 1: not text, so a cache2k trace.
/// let trace = parse_trace_with(&[7, 0, 0, 0, 1, 0, 0, 0], None).unwrap();
/// assert_eq!(trace.keys, [7, 1]);
/// assert_eq!((trace.format, trace.compression), (TraceFormat::Cache2k, Compression::None));
/// // Named cache2k, four bytes of text are one key.
/// let trace = parse_trace_with(b"1\n2\n", Some(TraceFormat::Cache2k)).unwrap();
/// assert_eq!(trace.keys, [u64::from(u32::from_le_bytes(*b"1\n2\n"))]);
/// ```
///
/// # Errors
///
/// [`TraceError::Decompress`] if the compressed data is corrupt,
/// [`TraceError::TooLarge`] if the content is more than [`MAX_DECOMPRESSED`] bytes,
/// [`TraceError::Parse`] for the first bad line of a text trace,
/// [`TraceError::PartialKey`] for a cache2k trace that ends inside a key,
/// [`TraceError::TooManyKeys`] for one of more than [`MAX_KEYS`] keys, and
/// [`TraceError::UnknownFormat`] if, with no layout named, the content is
/// neither text nor whole cache2k keys, and
/// [`TraceError::UnsupportedCompression`] if, with no layout named, it starts
/// as bzip2, lz4, zip or 7z data.
pub fn parse_trace_with(bytes: &[u8], format: Option<TraceFormat>) -> Result<Trace, TraceError> {
    parse_trace_up_to(bytes, format, MAX_DECOMPRESSED)
}

/// [`parse_trace_with`], with the content limited to `max_content` bytes (a parameter so that
/// the limit's test need not decode 4 GiB).
fn parse_trace_up_to(
    bytes: &[u8],
    format: Option<TraceFormat>,
    max_content: usize,
) -> Result<Trace, TraceError> {
    let limits = Limits {
        content: max_content,
        ..LIMITS
    };
    // Reading a slice cannot fail, so no `TraceError::Io` names this empty path.
    parse_input(bytes, Path::new(""), format, limits)
}

/// What one read may take: bytes of content (decoded, if compressed), and keys.
#[derive(Clone, Copy, Debug)]
struct Limits {
    content: usize,
    keys: u64,
}

/// The public readers' limits; tests pass smaller ones, so as not to need gigabytes.
const LIMITS: Limits = Limits {
    content: MAX_DECOMPRESSED,
    keys: MAX_KEYS,
};

/// Reads a trace from `input`: takes the compression from its first bytes, and streams its
/// content, decoded, into a [`Parser`] (steps 1 to 4 of the module docs). `path` names the
/// input in a [`TraceError::Io`].
fn parse_input(
    input: impl BufRead,
    path: &Path,
    format: Option<TraceFormat>,
    limits: Limits,
) -> Result<Trace, TraceError> {
    let mut input = Watched {
        inner: input,
        error: None,
    };
    let mut magic = Vec::with_capacity(XZ_MAGIC.len());
    let read = (&mut input)
        .take(XZ_MAGIC.len() as u64)
        .read_to_end(&mut magic);
    let compression = Compression::detect(&magic);
    let mut content = Parser::new(format, compression, limits);
    let decoded = match read {
        Ok(_) => decode(magic.chain(&mut input), compression, &mut content),
        Err(e) => Err(e.into()),
    };
    // A failed read is reported as one, whatever the decoder made of the error it was handed,
    // and refused content as itself, whatever the decoder wrapped the failed write in.
    if let Some(source) = input.error {
        return Err(TraceError::Io {
            path: path.to_owned(),
            source,
        });
    }
    if let Some(refusal) = content.refused.take() {
        return Err(refusal);
    }
    decoded.map_err(|source| TraceError::Decompress {
        compression,
        source,
    })?;
    content.finish()
}

/// The input, keeping the first error that reading it met: the decoder that meets it stops,
/// but calls it corrupt data, and kept, it is reported as the failed read it was.
struct Watched<R> {
    inner: R,
    error: Option<io::Error>,
}

/// Keeps `error` in `kept`, unless it is an interruption (which the reader retries), and
/// returns one of the same kind for the decoder.
fn keep(kept: &mut Option<io::Error>, error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::Interrupted {
        return error;
    }
    let kind = error.kind();
    kept.get_or_insert(error);
    io::Error::new(kind, "the trace could not be read")
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| keep(&mut self.error, e))
    }
}

impl<R: BufRead> BufRead for Watched<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self.inner.fill_buf() {
            Ok(bytes) => Ok(bytes),
            Err(e) => Err(keep(&mut self.error, e)),
        }
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
    }
}

/// A trace's content, parsed as it comes: the decoders write it here in pieces of any size, so
/// that a read holds the trace's keys and a few small buffers, never the trace itself. A write
/// that finds the content bad fails, which stops the decoder, and keeps the reason.
struct Parser {
    /// The layout named by the caller or by the file name, if any.
    named: Option<TraceFormat>,
    /// The compression, for [`TraceError::TooLarge`].
    compression: Compression,
    /// The most bytes the content may have.
    max_content: usize,
    /// The content's bytes so far.
    length: usize,
    /// The content's first bytes, held until the layout is chosen from them.
    head: Vec<u8>,
    /// The layout, once chosen, with what it holds of a line or key not yet ended.
    layout: Option<Layout>,
    keys: Keys,
    /// Why the content was refused, if it was.
    refused: Option<TraceError>,
}

/// A layout, with what it holds between two pieces of content.
enum Layout {
    Text(Lines),
    Cache2k(Cache2k),
}

impl Layout {
    fn take(&mut self, piece: &[u8], keys: &mut Keys) -> Result<(), TraceError> {
        match self {
            Layout::Text(lines) => lines.take(piece, keys),
            Layout::Cache2k(cache2k) => cache2k.take(piece, keys),
        }
    }
}

impl Parser {
    fn new(named: Option<TraceFormat>, compression: Compression, limits: Limits) -> Parser {
        Parser {
            named,
            compression,
            max_content: limits.content,
            length: 0,
            head: Vec::new(),
            layout: None,
            keys: Keys::new(limits.keys),
            refused: None,
        }
    }

    /// Parses the next piece of content.
    fn take(&mut self, piece: &[u8]) -> Result<(), TraceError> {
        if piece.len() > self.max_content - self.length {
            return Err(TraceError::TooLarge {
                compression: self.compression,
                limit: self.max_content,
            });
        }
        self.length += piece.len();
        if let Some(layout) = &mut self.layout {
            return layout.take(piece, &mut self.keys);
        }
        let missing = (DETECTION_BYTES - self.head.len()).min(piece.len());
        self.head.extend_from_slice(&piece[..missing]);
        if self.head.len() < DETECTION_BYTES {
            return Ok(());
        }
        let mut layout = self.choose()?;
        let taken = layout.take(&piece[missing..], &mut self.keys);
        self.layout = Some(layout);
        taken
    }

    /// Chooses the layout, the named one or the one the head shows (step 3), and parses the
    /// head in it.
    fn choose(&mut self) -> Result<Layout, TraceError> {
        let head = std::mem::take(&mut self.head);
        let text = without_bom(&head);
        let (mut layout, content) = match self.named {
            Some(TraceFormat::Cache2k) => (Layout::Cache2k(Cache2k::default()), &head[..]),
            None if is_binary(text) => {
                if let Some(name) = foreign_compression(&head) {
                    return Err(TraceError::UnsupportedCompression { name });
                }
                (Layout::Cache2k(Cache2k::default()), &head[..])
            }
            layout => (Layout::Text(Lines::new(layout)), text),
        };
        layout.take(content, &mut self.keys)?;
        Ok(layout)
    }

    /// Parses what the content ended with, and returns the trace.
    fn finish(mut self) -> Result<Trace, TraceError> {
        let layout = match self.layout.take() {
            Some(layout) => layout,
            None => self.choose()?,
        };
        let format = match layout {
            Layout::Text(lines) => lines.finish(&mut self.keys)?,
            Layout::Cache2k(cache2k) => {
                cache2k.finish(self.length, self.named.is_some())?;
                TraceFormat::Cache2k
            }
        };
        Ok(Trace {
            keys: self.keys.keys,
            format,
            compression: self.compression,
        })
    }
}

impl io::Write for Parser {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.refused.is_none() {
            self.refused = self.take(buf).err();
        }
        match self.refused {
            Some(_) => Err(io::Error::other("the trace's content was refused")),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The keys read so far, and the most there may be.
struct Keys {
    keys: Vec<u64>,
    max: u64,
}

impl Keys {
    fn new(max: u64) -> Keys {
        Keys {
            keys: Vec::new(),
            max,
        }
    }

    /// Makes room for `more` keys, unless they would take the trace past its limit. The room
    /// grows by doubling, but never past the limit: a read never holds room for more keys
    /// than it may return.
    fn reserve(&mut self, more: u64) -> bool {
        let len = self.keys.len() as u64;
        if more > self.max - len {
            return false;
        }
        if more > (self.keys.capacity() - self.keys.len()) as u64 {
            let room = (len + more).max(2 * len).max(1024).min(self.max);
            self.keys.reserve_exact((room - len) as usize);
        }
        true
    }
}

/// `content` without the UTF-8 byte order mark it starts with, if it does.
fn without_bom(content: &[u8]) -> &[u8] {
    content.strip_prefix(UTF8_BOM).unwrap_or(content)
}

/// Whether `head`, the content's first bytes, is binary: it holds a byte no text holds, a
/// control character other than white space, and fewer than half of its lines that are not
/// blank are key lines (numbers, or `*`).
///
/// The two guesses do not fail alike. Read as text, every byte is checked, and a wrong guess
/// ends in a [`TraceError::Parse`] that names the line; read as cache2k, no byte is, and a
/// wrong guess is keys the file does not hold, replayed without a word. So a head that could
/// be text is: a stray control byte among key lines (a DOS end-of-file mark, zero bytes left
/// by a crash) leaves text text and its line a bad line. A cache2k trace has a control byte
/// within a few keys (every key below 2^24 has a zero byte, and 29 of the 256 byte values are
/// such characters, so 4 KiB of keys without one are as good as impossible) and next to no
/// key lines: its lines are what lies between bytes `0A` or `0D`, and a key line among them
/// needs such a byte, then digits and spaces only, then another.
fn is_binary(head: &[u8]) -> bool {
    if !head
        .iter()
        .any(|&b| b.is_ascii_control() && !b.is_ascii_whitespace())
    {
        return false;
    }
    let (mut lines, mut key_lines) = (0usize, 0usize);
    for line in head.split(|&b| b == b'\n' || b == b'\r') {
        let mut fields = line
            .split(u8::is_ascii_whitespace)
            .filter(|field| !field.is_empty())
            .peekable();
        if fields.peek().is_none() {
            continue; // blank line
        }
        lines += 1;
        let marker = line.trim_ascii() == b"*";
        if marker || fields.all(|field| field.iter().all(u8::is_ascii_digit)) {
            key_lines += 1;
        }
    }
    2 * key_lines < lines
}

/// The compression `head` starts as, among those this reader does not decode: bzip2 (`BZh`
/// and a block size digit), lz4 frames, zip and 7z archives. Binary content with one of these
/// magic numbers is refused (step 3 of the module docs) rather than read as cache2k keys. A
/// cache2k trace is mistaken for one only if its first key is one of 12 values of 2^32, and
/// it is still read when named.
fn foreign_compression(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (&[0x04, 0x22, 0x4D, 0x18], "lz4"),
        (b"PK\x03\x04", "zip"),
        (b"7z\xBC\xAF\x27\x1C", "7z"),
    ];
    if let [b'B', b'Z', b'h', b'1'..=b'9', ..] = head {
        return Some("bzip2");
    }
    MAGIC
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|&(_, name)| name)
}

/// Reads a cache2k trace: 4-byte little-endian keys, no header.
///
/// ```
/// use larder_trace::read::parse_cache2k;
/// assert_eq!(parse_cache2k(&[1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]).unwrap(), [1, 0xFFFF_FFFF]);
/// assert!(parse_cache2k(&[1, 0, 0]).is_err());
/// ```
///
/// # Errors
///
/// [`TraceError::PartialKey`] if the length is not a multiple of 4, and
/// [`TraceError::TooManyKeys`] if it is more than [`MAX_KEYS`] keys.
pub fn parse_cache2k(content: &[u8]) -> Result<Vec<u64>, TraceError> {
    let mut keys = Keys::new(MAX_KEYS);
    let mut cache2k = Cache2k::default();
    cache2k.take(content, &mut keys)?;
    cache2k.finish(content.len(), true)?;
    Ok(keys.keys)
}

/// A cache2k trace as it comes: a key begun in one piece of content is held until the next
/// piece ends it.
#[derive(Default)]
struct Cache2k {
    partial: Vec<u8>,
}

impl Cache2k {
    fn take(&mut self, mut bytes: &[u8], keys: &mut Keys) -> Result<(), TraceError> {
        if !self.partial.is_empty() {
            let missing = (CACHE2K_KEY_BYTES - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..missing]);
            bytes = &bytes[missing..];
            if self.partial.len() == CACHE2K_KEY_BYTES {
                add_cache2k_keys(&std::mem::take(&mut self.partial), keys)?;
            }
        }
        let whole = bytes.len() - bytes.len() % CACHE2K_KEY_BYTES;
        add_cache2k_keys(&bytes[..whole], keys)?;
        self.partial.extend_from_slice(&bytes[whole..]);
        Ok(())
    }

    /// Checks that the content, `length` bytes, ended with a whole key; `named`: the layout
    /// was named rather than detected.
    fn finish(self, length: usize, named: bool) -> Result<(), TraceError> {
        match (self.partial.is_empty(), named) {
            (true, _) => Ok(()),
            (false, true) => Err(TraceError::PartialKey { length }),
            (false, false) => Err(TraceError::UnknownFormat { length }),
        }
    }
}

/// Adds the keys of `whole`, whole 4-byte keys, unless that takes the trace past its limit.
fn add_cache2k_keys(whole: &[u8], keys: &mut Keys) -> Result<(), TraceError> {
    if !keys.reserve((whole.len() / CACHE2K_KEY_BYTES) as u64) {
        return Err(TraceError::TooManyKeys { limit: keys.max });
    }
    let parsed = whole
        .chunks_exact(CACHE2K_KEY_BYTES)
        .map(|key| u64::from(u32::from_le_bytes([key[0], key[1], key[2], key[3]])));
    keys.keys.extend(parsed);
    Ok(())
}

/// Streams `input`, compressed with `compression`, into `out`.
fn decode(
    mut input: impl BufRead,
    compression: Compression,
    out: &mut Parser,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    match compression {
        Compression::None => {
            io::copy(&mut input, out)?;
            Ok(())
        }
        Compression::Zstd => decode_zstd(input, out),
        Compression::Gzip => decode_gzip(input, out),
        Compression::Xz => decode_xz(input, out),
    }
}

/// Decodes every zstd frame in `input`, skipping skippable frames, and checks
/// each frame's content checksum where it has one.
///
/// `StreamingDecoder` reads one frame and leaves its input just past that
/// frame, so a loop over the input decodes a whole file. It reads a frame's
/// checksum but does not compare it: that is done here, as gzip's and xz's
/// decoders do for theirs, so that a flipped bit in a compressed block is
/// refused rather than read as other keys.
fn decode_zstd(
    mut input: impl BufRead,
    out: &mut Parser,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    while !input.fill_buf()?.is_empty() {
        match StreamingDecoder::new(&mut input) {
            Ok(mut frame) => {
                io::copy(&mut frame, out)?;
                let frame = frame.into_frame_decoder();
                let stored = frame.get_checksum_from_data();
                if stored.is_some() && stored != frame.get_calculated_checksum() {
                    return Err("the decoded data does not match the frame's checksum".into());
                }
            }
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                // The header read consumed the magic number and the length field.
                let length = u64::from(length);
                if io::copy(&mut (&mut input).take(length), &mut io::sink())? < length {
                    return Err("a skippable zstd frame runs past the end of the file".into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Decodes every gzip member in `input` (`MultiGzDecoder` continues past the
/// first member, as `gzip -d` does).
fn decode_gzip(input: impl BufRead, out: &mut Parser) -> Result<(), Box<dyn Error + Send + Sync>> {
    io::copy(&mut flate2::bufread::MultiGzDecoder::new(input), out)?;
    Ok(())
}

/// Decodes an xz file. `lzma_rs` reads a single stream and refuses anything
/// after it, so a file of concatenated xz streams (rare: `xz -T` writes one
/// stream of many blocks) is reported as corrupt rather than read in part.
fn decode_xz(
    mut input: impl BufRead,
    out: &mut Parser,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    lzma_rs::xz_decompress(&mut input, out)?;
    Ok(())
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
    parse_lines(text, None).map(|(keys, _)| keys)
}

/// Parses text lines in the layout `layout` (ARC or plain), or in the one the
/// first key line shows; returns the keys and the layout used.
fn parse_lines(
    text: &[u8],
    layout: Option<TraceFormat>,
) -> Result<(Vec<u64>, TraceFormat), TraceError> {
    parse_lines_up_to(text, layout, MAX_KEYS)
}

/// [`parse_lines`], with the trace limited to `max_keys` keys (a parameter so that the
/// limit's test need not allocate 2 GiB).
fn parse_lines_up_to(
    text: &[u8],
    layout: Option<TraceFormat>,
    max_keys: u64,
) -> Result<(Vec<u64>, TraceFormat), TraceError> {
    let mut keys = Keys::new(max_keys);
    let mut lines = Lines::new(layout);
    lines.take(without_bom(text), &mut keys)?;
    let layout = lines.finish(&mut keys)?;
    Ok((keys.keys, layout))
}

/// Text as it comes, split into lines, each ended by `\n`, `\r\n` or a lone `\r` (classic Mac
/// OS): a line begun in one piece of content is held until a later piece ends it. A lone `\r`
/// must end a line: taken for white space inside one, it would join every line of such a file
/// into one line of many fields.
struct Lines {
    /// ARC or plain, once named or chosen by the first key line.
    layout: Option<TraceFormat>,
    /// The line begun and not yet ended.
    line: Vec<u8>,
    /// How many lines have ended.
    ended: usize,
    /// The last line ended with a `\r`: a `\n` next ends no line, it completes a `\r\n`.
    after_cr: bool,
}

impl Lines {
    fn new(layout: Option<TraceFormat>) -> Lines {
        Lines {
            layout,
            line: Vec::new(),
            ended: 0,
            after_cr: false,
        }
    }

    fn take(&mut self, mut text: &[u8], keys: &mut Keys) -> Result<(), TraceError> {
        loop {
            if self.after_cr && !text.is_empty() {
                self.after_cr = false;
                text = text.strip_prefix(b"\n").unwrap_or(text);
            }
            let Some(end) = text.iter().position(|&b| b == b'\n' || b == b'\r') else {
                return self.extend(text);
            };
            self.extend(&text[..end])?;
            self.after_cr = text[end] == b'\r';
            text = &text[end + 1..];
            self.end_line(keys)?;
        }
    }

    /// Adds `part` to the line begun, unless that makes it longer than [`MAX_LINE_BYTES`]:
    /// without a bound, a file without line endings would be held whole.
    fn extend(&mut self, part: &[u8]) -> Result<(), TraceError> {
        if part.len() <= MAX_LINE_BYTES - self.line.len() {
            self.line.extend_from_slice(part);
            return Ok(());
        }
        let kept = self.line.len().min(MAX_QUOTED_TEXT);
        let mut start = self.line[..kept].to_vec();
        start.extend_from_slice(&part[..part.len().min(MAX_QUOTED_TEXT - kept)]);
        Err(TraceError::Parse {
            line: self.ended + 1,
            text: quote(&start),
            problem: ParseProblem::LineTooLong,
        })
    }

    /// Parses the line just ended.
    fn end_line(&mut self, keys: &mut Keys) -> Result<(), TraceError> {
        self.ended += 1;
        let parsed = parse_line(&self.line, &mut self.layout, keys);
        let parsed = parsed.map_err(|problem| TraceError::Parse {
            line: self.ended,
            text: quote(&self.line),
            problem,
        });
        self.line.clear();
        parsed
    }

    /// Parses the last line, if no line ending ended it, and returns the layout read.
    fn finish(mut self, keys: &mut Keys) -> Result<TraceFormat, TraceError> {
        if !self.line.is_empty() {
            self.end_line(keys)?;
        }
        Ok(self.layout.unwrap_or(TraceFormat::Plain))
    }
}

/// Parses one line in the layout `layout`, or, if it is `None` and the line holds a key, in
/// the layout the line shows, which it then sets.
fn parse_line(
    line: &[u8],
    layout: &mut Option<TraceFormat>,
    keys: &mut Keys,
) -> Result<(), ParseProblem> {
    let mut fields = line
        .split(u8::is_ascii_whitespace)
        .filter(|field| !field.is_empty());
    let Some(first) = fields.next() else {
        return Ok(()); // blank line
    };
    if first == b"*" {
        return Ok(()); // LIRS checkpoint marker
    }
    let second = fields.next();
    let layout = *layout.get_or_insert(if second.is_some() {
        TraceFormat::Arc
    } else {
        TraceFormat::Plain
    });
    match layout {
        TraceFormat::Arc => parse_arc_line(first, second, keys),
        _ => parse_plain_line(first, second, keys),
    }
}

fn parse_plain_line(key: &[u8], extra: Option<&[u8]>, keys: &mut Keys) -> Result<(), ParseProblem> {
    if extra.is_some() {
        return Err(ParseProblem::ExtraFields);
    }
    let key = parse_u64(key)?;
    if !keys.reserve(1) {
        return Err(ParseProblem::TraceTooLong);
    }
    keys.keys.push(key);
    Ok(())
}

/// Expands `start count` into the run `start..start + count`, unless that takes
/// the trace past its limit; any fields after the count are ignored, as the ARC
/// format prescribes.
fn parse_arc_line(start: &[u8], count: Option<&[u8]>, keys: &mut Keys) -> Result<(), ParseProblem> {
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
    if !keys.reserve(count) {
        return Err(ParseProblem::TraceTooLong);
    }
    keys.keys.extend((0..count).map(|offset| start + offset));
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

    fn xz(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut &text[..], &mut out).unwrap();
        out
    }

    fn cache2k(keys: &[i32]) -> Vec<u8> {
        keys.iter().flat_map(|key| key.to_le_bytes()).collect()
    }

    fn parse_problem(text: &[u8]) -> (usize, String, ParseProblem) {
        parse_error(parse_trace(text))
    }

    /// The line, its text and the problem of a read that must have failed to parse.
    fn parse_error<T: std::fmt::Debug>(
        read: Result<T, TraceError>,
    ) -> (usize, String, ParseProblem) {
        match read {
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

    /// A file saved with classic Mac OS line endings, a lone `\r`, holds one key or run a
    /// line like any other: the `\r` ends the line. Read as one line of many fields, a plain
    /// trace became an ARC run of its first two keys, and an ARC trace its first run alone.
    #[test]
    fn lone_carriage_returns_end_lines() {
        let trace = parse_trace_with(b"1\r2\r3\r4\r5\r", None).unwrap();
        assert_eq!(
            (trace.keys, trace.format),
            (vec![1, 2, 3, 4, 5], TraceFormat::Plain)
        );
        let trace = parse_trace_with(b"0 2 0 0\r10 2 0 0\r20 1 0 0", None).unwrap();
        assert_eq!(
            (trace.keys, trace.format),
            (vec![0, 1, 10, 11, 20], TraceFormat::Arc)
        );
        // Mixed endings; a bad line is still numbered as a person counts lines.
        assert_eq!(parse_text(b"1\r\n2\r3\n4").unwrap(), [1, 2, 3, 4]);
        assert_eq!(
            parse_problem(b"1\r2\r\nx\r4\n"),
            (3, "x".to_owned(), ParseProblem::NotANumber)
        );
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
        assert_eq!(parse_trace(&xz(text)).unwrap(), [1, 2, 3]);
        let trace = parse_trace_with(&xz(b"4 2 0 0\n"), None).unwrap();
        assert_eq!(trace.keys, [4, 5]);
        assert_eq!(
            (trace.format, trace.compression),
            (TraceFormat::Arc, Compression::Xz)
        );
    }

    #[test]
    fn binary_content_is_a_cache2k_trace_in_any_compression() {
        let bytes = cache2k(&[7, -1, 7, 0, i32::MIN]);
        let expected = [7, 0xFFFF_FFFF, 7, 0, 0x8000_0000];
        for packed in [bytes.clone(), gzip(&bytes), zstd(&bytes), xz(&bytes)] {
            let trace = parse_trace_with(&packed, None).unwrap();
            assert_eq!(trace.keys, expected);
            assert_eq!(trace.format, TraceFormat::Cache2k);
            assert_eq!(trace.unique_keys(), 4);
        }
    }

    #[test]
    fn a_named_format_overrides_detection() {
        // Text read as cache2k keys: four bytes a key.
        let trace = parse_trace_with(b"1 2\n", Some(TraceFormat::Cache2k)).unwrap();
        assert_eq!(trace.keys, [u64::from(u32::from_le_bytes(*b"1 2\n"))]);
        // Named plain, an ARC line is an error; named ARC, a plain line is.
        let plain = parse_trace_with(b"1 2 0 0\n", Some(TraceFormat::Plain));
        assert!(matches!(
            plain,
            Err(TraceError::Parse {
                problem: ParseProblem::ExtraFields,
                ..
            })
        ));
        let arc = parse_trace_with(b"5\n", Some(TraceFormat::Arc));
        assert!(matches!(
            arc,
            Err(TraceError::Parse {
                problem: ParseProblem::MissingCount,
                ..
            })
        ));
        assert_eq!(
            parse_trace_with(b"", Some(TraceFormat::Arc))
                .unwrap()
                .format,
            TraceFormat::Arc
        );
    }

    #[test]
    fn binary_content_that_is_not_whole_keys_is_refused() {
        let odd = [0u8, 1, 2, 3, 4];
        assert!(matches!(
            parse_trace(&odd),
            Err(TraceError::UnknownFormat { length: 5 })
        ));
        assert!(matches!(
            parse_trace_with(&odd, Some(TraceFormat::Cache2k)),
            Err(TraceError::PartialKey { length: 5 })
        ));
    }

    #[test]
    fn file_names_announce_cache2k_traces() {
        let dir = std::env::temp_dir().join(format!("larder-trace-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Printable bytes: by content alone this would be text.
        let text_like = b"1234";
        let named = dir.join("keys.trc");
        std::fs::write(&named, text_like).unwrap();
        let trace = read_trace_with(&named, None).unwrap();
        assert_eq!(trace.format, TraceFormat::Cache2k);
        assert_eq!(trace.keys, [u64::from(u32::from_le_bytes(*text_like))]);
        let unnamed = dir.join("keys.txt");
        std::fs::write(&unnamed, text_like).unwrap();
        assert_eq!(read_trace(&unnamed).unwrap(), [1234]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn format_names_round_trip() {
        for name in TraceFormat::NAMES {
            let format: TraceFormat = name.parse().unwrap();
            assert_eq!(format.name().parse::<TraceFormat>().unwrap(), format);
        }
        let error = "ARC".parse::<TraceFormat>().unwrap_err();
        assert_eq!(error.name(), "ARC");
        assert!(error.to_string().contains("arc, lirs, plain, cache2k"));
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

        // Not xz: lzma-rs reads one stream, and the rest is refused, not dropped.
        let mut streams = xz(b"1\n");
        streams.extend(xz(b"2\n"));
        assert!(matches!(
            parse_trace(&streams),
            Err(TraceError::Decompress {
                compression: Compression::Xz,
                ..
            })
        ));
    }

    /// A zstd frame's content checksum is checked: a corrupt block that still decodes, here a
    /// run's count changed in the literals, is refused rather than read as other keys (the
    /// decoder reads the checksum but leaves the comparison to its caller).
    #[test]
    fn a_zstd_frame_that_does_not_match_its_checksum_is_corrupt() {
        let text = b"10 3 0 0\n42 1 0 0\n";
        let mut packed = zstd(text);
        assert_eq!(parse_trace(&packed).unwrap(), [10, 11, 12, 42]);
        let count = packed
            .windows(4)
            .position(|w| w == b"10 3")
            .expect("the literals are stored as they are")
            + 3;
        packed[count] = b'5';
        assert!(
            matches!(
                parse_trace(&packed),
                Err(TraceError::Decompress {
                    compression: Compression::Zstd,
                    ..
                })
            ),
            "{:?}",
            parse_trace(&packed)
        );
    }

    /// Lines that each stay within `MAX_RUN` must not add up past the trace's limit: the
    /// line that would is refused, before its keys are made.
    #[test]
    fn runs_may_not_add_up_past_the_traces_limit() {
        let text = b"0 4 0 0\n100 4 0 0\n200 4 0 0\n";
        let (keys, _) = parse_lines_up_to(&text[..16], None, 8).unwrap();
        assert_eq!(keys, [0, 1, 2, 3, 100, 101, 102, 103]);
        match parse_lines_up_to(text, None, 8) {
            Err(TraceError::Parse {
                line: 3, problem, ..
            }) => assert_eq!(problem, ParseProblem::TraceTooLong),
            other => panic!("expected line 3 to be refused, got {other:?}"),
        }
        // Through the public reader, the limit is MAX_KEYS.
        assert_eq!(parse_lines(text, None).unwrap().0.len(), 12);
    }

    /// A text trace saved with a UTF-8 byte order mark is still text: whatever its length,
    /// never read as cache2k keys, and its first key is read whole.
    #[test]
    fn a_byte_order_mark_before_a_text_trace_is_skipped() {
        for text in [
            &b"1\n2\n3\n4\n5555\n"[..],
            b"10 2 0 0\n7 1 0 0\n",
            b"1\n2\n3\n4\n500\n",
        ] {
            let mut marked = UTF8_BOM.to_vec();
            marked.extend_from_slice(text);
            let plain = parse_trace_with(text, None).unwrap();
            let trace = parse_trace_with(&marked, None).unwrap();
            assert_eq!((&trace.keys, trace.format), (&plain.keys, plain.format));
            let named = parse_trace_with(&marked, Some(plain.format)).unwrap();
            assert_eq!(named.keys, plain.keys);
            assert_eq!(parse_trace(&gzip(&marked)).unwrap(), plain.keys);
        }
    }

    /// Plain lines count against the trace's limit as ARC runs do: the line that would pass
    /// it is refused, so a trace of one key a line cannot grow its keys without bound either.
    #[test]
    fn plain_keys_may_not_add_up_past_the_traces_limit() {
        let text = b"1\n*\n2\n3\n";
        assert_eq!(parse_lines_up_to(&text[..6], None, 2).unwrap().0, [1, 2]);
        match parse_lines_up_to(text, None, 2) {
            Err(TraceError::Parse {
                line: 4, problem, ..
            }) => assert_eq!(problem, ParseProblem::TraceTooLong),
            other => panic!("expected line 4 to be refused, got {other:?}"),
        }
    }

    /// A text trace with a stray byte, or a comment in UTF-8, is still text: the content is
    /// binary only if its start holds a byte no text holds. Taken for binary, these traces
    /// were read as cache2k keys, silently, whenever their length was a multiple of 4.
    #[test]
    fn a_stray_byte_or_a_comment_leaves_text_text() {
        for (text, line, quoted) in [
            (&b"10\n20\n3\xE90\n4\n"[..], 3, "3\u{FFFD}0"),
            (b"# caf\xC3\xA9\n1\n2\n", 1, "# caf\u{E9}"),
        ] {
            assert_eq!(text.len() % 4, 0, "whole cache2k keys, by length");
            assert_refused_at(text, line, quoted);
        }
        // A byte no text holds, far from the start, is a bad line too.
        let mut text: Vec<u8> = (0..2000)
            .flat_map(|k| format!("{k}\n").into_bytes())
            .collect();
        text.extend(b"\x00\x01\n");
        assert_eq!(parse_problem(&text).0, 2001);
    }

    /// Asserts that `text`, its layout detected, is refused at its line `line`, quoted as
    /// `quoted`.
    fn assert_refused_at(text: &[u8], line: usize, quoted: &str) {
        match parse_trace_with(text, None) {
            Err(e @ TraceError::Parse { .. }) => {
                let start = format!("trace line {line} `{quoted}`");
                assert!(e.to_string().starts_with(&start), "{e}");
            }
            other => panic!("expected line {line} to be refused, got {other:?}"),
        }
    }

    /// A text trace with a stray control byte among its lines is still text, and the byte's
    /// line a bad line: DOS end-of-file marks, zero bytes left at the end by a crash, a byte
    /// that a transfer garbled. Taken for binary, such a trace was read as cache2k keys that
    /// no line of it holds, without a word, whenever its length was a multiple of 4 (the first
    /// two here), and refused as "not text" otherwise.
    #[test]
    fn a_stray_control_byte_among_key_lines_leaves_text_text() {
        for (text, line, quoted) in [
            (&b"10\n20\n30\n\x1a\x1a\x1a"[..], 4, "\u{1a}\u{1a}\u{1a}"),
            (b"1\n2\n1\n2\n\0\0\0\0", 5, "\0\0\0\0"),
            (b"5 2 0 0\r\n9\x7f 1 0 0\r\n", 2, "9\u{7f} 1 0 0"),
            (b"7\n\x1a", 2, "\u{1a}"),
        ] {
            assert_refused_at(text, line, quoted);
        }
        // Keys whose bytes hold line endings are still binary: the bytes between them are
        // not lines of numbers.
        let keys: Vec<i32> = (0..1024).map(|k| k * 0x0A0D).collect();
        let trace = parse_trace_with(&cache2k(&keys), None).unwrap();
        assert_eq!(trace.format, TraceFormat::Cache2k);
    }

    /// Content compressed in a way this reader does not decode is refused by name, not taken
    /// for cache2k keys: a `.bz2` or `.lz4` trace was replayed as the keys its compressed bytes
    /// spell whenever its length was a multiple of 4. Named cache2k, the bytes are keys.
    #[test]
    fn a_compression_the_reader_does_not_decode_is_refused_by_name() {
        let noise = |len: usize| (0..len).map(|i| (i * 37 % 251) as u8);
        for (magic, name) in [
            (&b"BZh91AY&SY"[..], "bzip2"),
            (&[0x04, 0x22, 0x4D, 0x18], "lz4"),
            (b"PK\x03\x04", "zip"),
            (b"7z\xBC\xAF\x27\x1C", "7z"),
        ] {
            let mut packed = magic.to_vec();
            packed.extend(noise(64 - magic.len()));
            match parse_trace_with(&packed, None) {
                Err(e @ TraceError::UnsupportedCompression { .. }) => {
                    assert!(e.to_string().contains(name), "{e}");
                }
                other => panic!("{name}: expected a refusal, got {other:?}"),
            }
            let named = parse_trace_with(&packed, Some(TraceFormat::Cache2k)).unwrap();
            assert_eq!(named.keys.len(), 16);
        }
    }

    /// What holds a byte no text holds (a control character other than white space) at its
    /// start, and few lines of numbers, is binary, whatever else it holds.
    #[test]
    fn control_bytes_at_the_start_mean_binary() {
        // No zero byte, and every other byte printable or above ASCII.
        let bytes = cache2k(&[0x3132_0133, -0x7F7F_7F80, 0x4141_4141]);
        let trace = parse_trace_with(&bytes, None).unwrap();
        assert_eq!(trace.format, TraceFormat::Cache2k);
        assert_eq!(trace.keys, [0x3132_0133, 0x8080_8080, 0x4141_4141]);
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
        // Not text, so it is only parsed as lines when named so.
        assert!(matches!(
            parse_trace_with(b"\xFF\xFE\n", Some(TraceFormat::Plain)),
            Err(TraceError::Parse {
                problem: ParseProblem::NotANumber,
                ..
            })
        ));
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
        for packed in [gzip(&text), zstd(&text), xz(&text)] {
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
        assert!(matches!(
            parse_trace(XZ_MAGIC),
            Err(TraceError::Decompress { .. })
        ));
    }

    #[test]
    fn compressed_data_may_decode_to_no_more_than_the_limit() {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|k| format!("{k}\n").into_bytes())
            .collect();
        let keys: Vec<u64> = (0..20_000).collect();
        for packed in [gzip(&text), zstd(&text), xz(&text)] {
            let compression = Compression::detect(&packed);
            let at_the_limit = parse_trace_up_to(&packed, None, text.len());
            assert_eq!(
                at_the_limit.map(|trace| trace.keys).ok(),
                Some(keys.clone())
            );
            for limit in [text.len() - 1, 1000, 0] {
                match parse_trace_up_to(&packed, None, limit) {
                    Err(e @ TraceError::TooLarge { .. }) => {
                        assert!(
                            matches!(e, TraceError::TooLarge { compression: c, limit: l } if c == compression && l == limit)
                        );
                        assert!(e.to_string().contains("more than"), "{e}");
                    }
                    other => panic!("{compression} past a limit of {limit}: {other:?}"),
                }
            }
        }
        // Uncompressed content has the same limit.
        assert_eq!(
            parse_trace_up_to(&text, None, text.len()).unwrap().keys,
            keys
        );
        match parse_trace_up_to(&text, None, text.len() - 1) {
            Err(e @ TraceError::TooLarge { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "trace is more than {} bytes, the reader's limit",
                    text.len() - 1
                )
            ),
            other => panic!("uncompressed past the limit: {other:?}"),
        }
    }

    /// Endless input ends at a limit, in whatever it streams: keys (here zero bytes, a cache2k
    /// trace), blank lines that hold none, or one line that never ends.
    #[test]
    fn endless_input_ends_at_a_limit() {
        let limits = Limits {
            content: 1 << 20,
            keys: 1000,
        };
        let read = |byte| {
            let endless = BufReader::new(io::repeat(byte));
            parse_input(endless, Path::new("endless"), None, limits)
        };
        assert!(
            matches!(read(0), Err(TraceError::TooManyKeys { limit: 1000 })),
            "{:?}",
            read(0)
        );
        assert!(matches!(
            read(b'\n'),
            Err(TraceError::TooLarge {
                compression: Compression::None,
                limit: 0x10_0000
            })
        ));
        let (line, _, problem) = parse_error(read(b'7'));
        assert_eq!((line, problem), (1, ParseProblem::LineTooLong));
        // The same through a decoder.
        let zeros = zstd(&[0; 1 << 16]);
        let trace = parse_input(&zeros[..], Path::new(""), None, limits);
        assert!(matches!(
            trace,
            Err(TraceError::TooManyKeys { limit: 1000 })
        ));
    }

    /// Content is parsed as it comes, in pieces of any size: a line ending, a key or a byte
    /// order mark split between two pieces reads as it does whole.
    #[test]
    fn pieces_of_any_size_read_as_the_whole() {
        let mut marked = UTF8_BOM.to_vec();
        marked.extend_from_slice(b"10 2 0 0\r\n\r\n7 1 0 0\r30 1");
        let long_text: Vec<u8> = (0..2000)
            .flat_map(|k| format!("{k}\r\n").into_bytes())
            .collect();
        let contents = [
            marked,
            b"1\r\r2\r\n*\n3\n\n".to_vec(),
            long_text,
            cache2k(&[7, -1, 0, 9, i32::MIN]),
            cache2k(&(0..2000).collect::<Vec<_>>()),
        ];
        for content in contents {
            let whole = parse_trace_with(&content, None).unwrap();
            for size in [1, 2, 3, 5, 4096] {
                let mut parser = Parser::new(None, Compression::None, LIMITS);
                for piece in content.chunks(size) {
                    io::Write::write_all(&mut parser, piece).unwrap();
                }
                assert_eq!(parser.finish().unwrap(), whole, "pieces of {size}");
            }
        }
        let bad = parse_problem(b"1\r\n2\r\nx\r\n");
        let mut parser = Parser::new(None, Compression::None, LIMITS);
        for piece in b"1\r\n2\r\nx\r\n".chunks(1) {
            io::Write::write_all(&mut parser, piece).unwrap();
        }
        match parser.finish() {
            Err(TraceError::Parse {
                line,
                text,
                problem,
            }) => assert_eq!((line, text, problem), bad),
            other => panic!("expected {bad:?}, got {other:?}"),
        }
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
        // Opened, but failing at the first read: still an I/O error, not corrupt data.
        let dir = std::env::temp_dir();
        assert!(
            matches!(read_trace(&dir), Err(TraceError::Io { ref path, .. }) if *path == dir),
            "{:?}",
            read_trace(&dir)
        );
    }
}
