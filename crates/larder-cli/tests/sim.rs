//! `larder sim`, run as a user runs it: small traces written here in every format and
//! compression it reads, the shared traces against the figures their README publishes, the
//! plots, and every way the command line can be wrong (one line on stderr, a non-zero exit).

use std::io::Write;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use larder_testkit::TempDir;
use larder_trace::reference::{lru_hit_ratio, opt_hit_ratio, Admission, Belady};
use larder_trace::traces::{published, Published};
use predicates::prelude::*;
use serde_json::Value;

fn larder() -> Command {
    Command::cargo_bin("larder").expect("the larder binary is built for tests")
}

/// A fresh directory for one test's files, removed with what is in it when the test ends.
fn scratch(test: &str) -> TempDir {
    let dir = TempDir::new(&format!("sim-{test}"));
    std::fs::create_dir_all(&dir.0).expect("a scratch directory");
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("a trace file");
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
}

fn xz(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    lzma_rs::xz_compress(&mut &bytes[..], &mut out).unwrap();
    out
}

/// A loop over `1..=3`, twice: the keys of every small trace here.
const LOOP: [u64; 6] = [1, 2, 3, 1, 2, 3];

fn plain_text(keys: &[u64]) -> Vec<u8> {
    keys.iter()
        .map(|k| format!("{k}\n"))
        .collect::<String>()
        .into_bytes()
}

fn cache2k(keys: &[u64]) -> Vec<u8> {
    keys.iter()
        .flat_map(|&k| i32::try_from(k).unwrap().to_le_bytes())
        .collect()
}

/// Runs `larder sim ARGS --json` and returns the parsed document.
fn sim_json(args: &[&str]) -> Value {
    let out = larder()
        .arg("sim")
        .args(args)
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("--json prints JSON")
}

/// `hit_ratio` of `cache` at `capacity` in one trace's JSON results.
fn ratio(trace: &Value, capacity: u64, cache: &str) -> f64 {
    trace["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["capacity"] == capacity && r["cache"] == cache)
        .and_then(|r| r["hit_ratio"].as_f64())
        .unwrap_or_else(|| panic!("no {cache} at {capacity} in {trace}"))
}

#[test]
fn help_describes_every_option() {
    let help = larder().args(["sim", "--help"]).assert().success();
    let text = String::from_utf8(help.get_output().stdout.clone()).unwrap();
    for option in [
        "--capacity",
        "--policy",
        "--compare",
        "--opt",
        "--format",
        "--plot",
        "--json",
        "--settle",
        "<TRACE>",
    ] {
        assert!(text.contains(option), "{option} missing from\n{text}");
    }
    for word in [
        "moka",
        "quick_cache",
        "exact-LRU",
        "cache2k",
        "xz",
        "SVG or PNG",
    ] {
        assert!(text.contains(word), "{word} missing from\n{text}");
    }
}

#[test]
fn the_table_has_a_row_per_trace_and_capacity_and_a_column_per_cache() {
    let tmp = scratch("table");
    let dir = tmp.0.clone();
    let first = write(&dir, "loop.txt", &plain_text(&LOOP));
    let second = write(&dir, "again.txt", &plain_text(&[5, 5, 5, 5]));
    let out = larder()
        .arg("sim")
        .args([&first, &second])
        .args([
            "--capacity",
            "2,3",
            "--policy",
            "none",
            "--compare",
            "lru",
            "--opt",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() == 4 && fields[1].parse::<u64>().is_ok())
        .collect();
    let (first, second) = (first.display().to_string(), second.display().to_string());
    // A loop of three through two entries: LRU never hits, OPT keeps two of every three.
    let expected = [
        [first.as_str(), "2", "0.00", "33.33"],
        [first.as_str(), "3", "50.00", "50.00"],
        [second.as_str(), "2", "75.00", "75.00"],
        [second.as_str(), "3", "75.00", "75.00"],
    ];
    assert_eq!(rows, expected, "{text}");
    assert!(text.contains("exact LRU") && text.contains("OPT"), "{text}");
    assert!(
        text.contains("6 requests, 3 distinct keys (plain, uncompressed)"),
        "{text}"
    );
}

#[test]
fn every_format_and_compression_reads_the_same_keys() {
    let tmp = scratch("formats");
    let dir = tmp.0.clone();
    let text = plain_text(&LOOP);
    let binary = cache2k(&LOOP);
    let arc = b"1 3 0 0\n1 3 0 0\n";
    // (file name, content, --format, format and compression reported)
    let cases = [
        ("keys.txt", text.clone(), None, "plain", "uncompressed"),
        (
            "keys.lirs",
            b"*\n1\n2\n3\n*\n1\n2\n3\n".to_vec(),
            None,
            "plain",
            "uncompressed",
        ),
        ("keys.lis", arc.to_vec(), None, "arc", "uncompressed"),
        ("keys.trace.gz", gzip(&text), None, "plain", "gzip"),
        ("keys.lis.zst", zstd(arc), None, "arc", "zstd"),
        ("keys.trace.xz", xz(&text), None, "plain", "xz"),
        // cache2k: by extension, by content (binary), and named with --format.
        ("keys.trc", binary.clone(), None, "cache2k", "uncompressed"),
        ("keys.trc.bin.gz", gzip(&binary), None, "cache2k", "gzip"),
        ("keys.dat", binary.clone(), None, "cache2k", "uncompressed"),
        ("keys.raw.xz", xz(&binary), Some("cache2k"), "cache2k", "xz"),
        (
            "keys.data",
            b"1 3\n1 3\n".to_vec(),
            Some("arc"),
            "arc",
            "uncompressed",
        ),
    ];
    for (name, content, format, expected_format, expected_compression) in cases {
        let path_text = write(&dir, name, &content).display().to_string();
        let mut args = vec![path_text.as_str(), "--capacity", "2,3", "--compare", "lru"];
        if let Some(format) = format {
            args.extend(["--format", format]);
        }
        let report = sim_json(&args);
        let trace = &report["traces"][0];
        assert_eq!(trace["format"], expected_format, "{path_text}");
        assert_eq!(trace["compression"], expected_compression, "{path_text}");
        assert_eq!(trace["requests"], 6, "{path_text}");
        assert_eq!(trace["unique_keys"], 3, "{path_text}");
        assert_eq!(ratio(trace, 2, "exact LRU"), 0.0, "{path_text}");
        assert_eq!(ratio(trace, 3, "exact LRU"), 50.0, "{path_text}");
    }
}

#[test]
fn json_holds_every_trace_capacity_and_cache() {
    let tmp = scratch("json");
    let dir = tmp.0.clone();
    // A skewed trace with reuse at every capacity: key k appears about 600 / k times.
    let keys: Vec<u64> = (0..4000u64)
        .map(|i| (i * 7919 % 601) % (1 + i % 97))
        .collect();
    let path = write(&dir, "skewed.txt", &plain_text(&keys));
    let path = path.display().to_string();
    let report = sim_json(&[
        &path,
        "--capacity",
        "8,32",
        "--policy",
        "s3fifo,lru",
        "--compare",
        "moka,quick_cache,mini_moka,lru",
        "--opt",
    ]);
    let columns = [
        "larder s3fifo",
        "larder lru",
        "moka",
        "quick_cache",
        "mini_moka",
        "exact LRU",
        "OPT",
    ];
    assert_eq!(report["columns"], serde_json::json!(columns));
    let trace = &report["traces"][0];
    assert_eq!(trace["trace"], path.as_str());
    assert_eq!(trace["requests"], keys.len());
    let unique = keys.iter().collect::<std::collections::HashSet<_>>().len();
    assert_eq!(trace["unique_keys"], unique);
    assert_eq!(
        trace["results"].as_array().unwrap().len(),
        2 * columns.len()
    );
    for capacity in [8u64, 32] {
        let exact = ratio(trace, capacity, "exact LRU");
        let opt = ratio(trace, capacity, "OPT");
        assert_eq!(exact, lru_hit_ratio(&keys, capacity as usize));
        assert_eq!(opt, opt_hit_ratio(&keys, capacity as usize));
        // Larder's policies never evict the entry being inserted, so every miss is cached
        // and OPT bounds them. quick_cache holds its capacity but may decline a newcomer, so
        // OPT that may decline bounds it; moka's lazy policy can briefly hold more, so it is
        // only checked for sense.
        for cache in ["larder s3fifo", "larder lru"] {
            let figure = ratio(trace, capacity, cache);
            assert!(
                (0.0..=opt).contains(&figure),
                "{cache} {figure} > OPT {opt}"
            );
        }
        let bound = Belady::new(&keys)
            .replay_with(capacity as usize, Admission::MayDecline)
            .hit_ratio();
        let figure = ratio(trace, capacity, "quick_cache");
        assert!(
            (0.0..=bound).contains(&figure),
            "quick_cache {figure} > OPT {bound}"
        );
        for cache in ["moka", "mini_moka"] {
            assert!((0.0..=100.0).contains(&ratio(trace, capacity, cache)));
        }
        let hits = trace["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["capacity"] == capacity && r["cache"] == "OPT")
            .unwrap()["hits"]
            .as_u64()
            .unwrap();
        assert_eq!(100.0 * hits as f64 / keys.len() as f64, opt);
    }
}

#[test]
fn settled_peers_stay_under_the_bound_for_their_capacity() {
    let tmp = scratch("settle");
    let dir = tmp.0.clone();
    // A loop of 40 keys, then a hot set of 10 among fresh keys: a cache of 16 can hit.
    let keys: Vec<u64> = (0..2000u64)
        .map(|i| {
            if i < 400 {
                i % 40
            } else if i % 2 == 0 {
                i % 10
            } else {
                1000 + i
            }
        })
        .collect();
    let path = write(&dir, "keys.txt", &plain_text(&keys));
    let path = path.to_str().unwrap();
    let report = sim_json(&[
        path,
        "--capacity",
        "16,32",
        "--policy",
        "none",
        "--compare",
        "moka,mini_moka",
        "--settle",
    ]);
    let trace = &report["traces"][0];
    let opt = Belady::new(&keys);
    for capacity in [16, 32] {
        // Admission filters may decline a newcomer, so their bound is OPT that may decline.
        let bound = opt.replay_with(capacity, Admission::MayDecline).hit_ratio();
        for cache in ["moka", "mini_moka"] {
            let figure = ratio(trace, capacity as u64, cache);
            assert!(
                figure > 0.0 && figure <= bound,
                "{cache} @ {capacity}: {figure} > {bound}"
            );
        }
    }
}

/// `--settle` drains the caches that apply their policy lazily (moka, mini_moka). Larder applies
/// its policy inline, so settling it changes no figure, and its `settle` (tens of thousands of
/// epoch flushes, for the memory bench) made each insert cost milliseconds: 20,000 misses took
/// minutes.
#[test]
fn settle_leaves_larder_as_fast_as_without_it() {
    let tmp = scratch("settle-larder");
    let dir = tmp.0.clone();
    let keys: Vec<u64> = (0..20_000).collect();
    let path = write(&dir, "keys.txt", &plain_text(&keys));
    larder()
        .arg("sim")
        .arg(&path)
        .args(["--capacity", "100", "--policy", "s3fifo,lru", "--settle"])
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .success();
}

/// Checks `larder sim` on the shared traces `names` (which the README measures at the same
/// capacities) against the README's exact-LRU and OPT figures, to two decimals.
fn check_published(names: &[&str]) {
    let rows: Vec<&Published> = names
        .iter()
        .map(|name| published(name).unwrap_or_else(|| panic!("the README has no {name}")))
        .collect();
    let capacities: Vec<String> = rows[0].points.iter().map(|p| p.0.to_string()).collect();
    let capacities = capacities.join(",");
    let mut args = names.to_vec();
    args.extend([
        "--capacity",
        &capacities,
        "--policy",
        "none",
        "--compare",
        "lru",
        "--opt",
    ]);
    let report = sim_json(&args);
    let mut wrong = Vec::new();
    for (row, trace) in rows.iter().zip(report["traces"].as_array().unwrap()) {
        assert_eq!(trace["trace"], row.trace);
        if (trace["requests"].as_u64(), trace["unique_keys"].as_u64())
            != (Some(row.requests as u64), Some(row.unique_keys as u64))
        {
            wrong.push(format!("{}: size {trace}", row.trace));
        }
        for &(capacity, lru, opt) in row.points {
            for (cache, published) in [("exact LRU", lru), ("OPT", opt)] {
                let got = format!("{:.2}", ratio(trace, capacity as u64, cache));
                if got != published {
                    wrong.push(format!(
                        "{} @ {capacity}: {cache} {got}, README {published}",
                        row.trace
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn lirs_traces_match_the_readme_references() {
    check_published(&[
        "lirs/multi1",
        "lirs/multi2",
        "lirs/multi3",
        "lirs/gli",
        "lirs/2_pools",
        "lirs/zigzag",
    ]);
    check_published(&["lirs/cs", "lirs/cpp", "lirs/ps", "lirs/scan"]);
}

/// About 3 s unoptimised: OLTP has 914,145 requests, and the references take one pass (LRU)
/// and one replay per capacity (OPT).
#[test]
fn oltp_matches_the_readme_references() {
    check_published(&["OLTP"]);
}

#[test]
fn an_svg_plot_has_a_panel_per_trace_and_a_curve_per_cache() {
    let tmp = scratch("svg");
    let dir = tmp.0.clone();
    let first = write(&dir, "first.txt", &plain_text(&LOOP));
    let second = write(
        &dir,
        "second.trace.gz",
        &gzip(&plain_text(&[1, 2, 1, 3, 1, 4])),
    );
    let svg = dir.join("curves.svg");
    larder()
        .arg("sim")
        .args([&first, &second])
        .args(["--capacity", "1,2,3", "--compare", "lru", "--opt", "--plot"])
        .arg(&svg)
        .env("LARDER_FONT", dir.join("no-font-needed.ttf"))
        .assert()
        .success();
    let text = std::fs::read_to_string(&svg).expect("the SVG is written");
    // Curves are the only polylines drawn 2 px wide: 2 panels of 3 columns.
    let curves = text
        .match_indices("<polyline")
        .filter(|(at, _)| {
            text[*at..]
                .split('>')
                .next()
                .unwrap()
                .contains("stroke-width=\"2\"")
        })
        .count();
    assert_eq!(curves, 6, "{text}");
    for label in [
        first.display().to_string(),
        second.display().to_string(),
        "larder s3fifo".to_owned(),
        "exact LRU".to_owned(),
        "OPT".to_owned(),
    ] {
        let in_text_element = format!(">\n{label}\n</text>");
        assert!(
            text.contains(&in_text_element) || text.contains(&format!(">{label}</text>")),
            "{label} is not drawn in\n{text}"
        );
    }
}

/// The font the PNG needs, if this machine has the one Debian's `fonts-dejavu-core` installs.
const DEJAVU: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[test]
fn a_png_plot_is_written_with_a_system_font() {
    if !Path::new(DEJAVU).exists() {
        eprintln!("skipped: no {DEJAVU} (apt-get install fonts-dejavu-core)");
        return;
    }
    let tmp = scratch("png");
    let dir = tmp.0.clone();
    let trace = write(&dir, "keys.txt", &plain_text(&LOOP));
    let png = dir.join("curves.PNG");
    larder()
        .arg("sim")
        .arg(&trace)
        .args(["--capacity", "2,3", "--plot"])
        .arg(&png)
        .env("LARDER_FONT", DEJAVU)
        .assert()
        .success();
    let bytes = std::fs::read(&png).expect("the PNG is written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
}

/// A PNG is drawn in memory, and plotters counts its pixels in a `u32`: a chart of more than
/// about eleven thousand traces overflowed it, a panic after the whole replay (and short of
/// that, asked for up to 13 GB). Such a chart is refused before the replay.
#[test]
fn a_png_too_large_to_draw_is_refused_before_the_replay() {
    if !Path::new(DEJAVU).exists() {
        eprintln!("skipped: no {DEJAVU} (apt-get install fonts-dejavu-core)");
        return;
    }
    let tmp = scratch("png-size");
    let dir = tmp.0.clone();
    let trace = write(&dir, "keys.txt", &plain_text(&LOOP));
    let png = dir.join("curves.png");
    let mut args = vec![trace.to_str().unwrap(); 11_400];
    args.extend(["--capacity", "2", "--plot", png.to_str().unwrap()]);
    fails(
        &args,
        Some(("LARDER_FONT", Path::new(DEJAVU))),
        2,
        "plot fewer traces, or to .svg",
    );
    assert!(!png.exists());
}

/// Runs `larder sim ARGS` and checks that it fails with `code` and one line on stderr,
/// `larder: ...`, that contains `message`.
fn fails(args: &[&str], env: Option<(&str, &Path)>, code: i32, message: &str) {
    let mut command = larder();
    command.arg("sim").args(args);
    if let Some((name, value)) = env {
        command.env(name, value);
    }
    let out = command.assert().failure().code(code).get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("larder: "), "{args:?}: {stderr}");
    assert!(
        stderr.contains(message),
        "{args:?}: {stderr} lacks {message}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed results");
}

#[test]
fn each_bad_argument_is_one_line_and_exit_2() {
    let tmp = scratch("usage");
    let dir = tmp.0.clone();
    let trace = write(&dir, "keys.txt", &plain_text(&LOOP));
    let trace = trace.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--capacity", ""], "expected a comma-separated list"),
        (&["--capacity", "256,,512"], "no empty item"),
        (&["--capacity", "0"], "at least 1"),
        (&["--capacity", "ten"], "`ten` is not a whole number"),
        (&["--capacity=-5"], "`-5` is not a whole number"),
        (&["--capacity", "256,512,256"], "`256` is given twice"),
        (
            &["--capacity", "9", "--policy", "arc"],
            "unknown policy `arc`",
        ),
        (&["--capacity", "9", "--policy", "lru,lru"], "given twice"),
        (
            &["--capacity", "9", "--compare", "redis"],
            "unknown peer `redis`",
        ),
        (
            &["--capacity", "9", "--policy", "none"],
            "nothing to replay",
        ),
        (
            &["--capacity", "9", "--format", "csv"],
            "unknown trace format `csv`",
        ),
        (
            &["--capacity", "9", "--plot", "curves.pdf"],
            "must end in .svg or .png",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec![trace];
        all.extend_from_slice(args);
        fails(&all, None, 2, message);
    }
}

#[test]
fn each_unreadable_trace_is_one_line_and_exit_1() {
    let tmp = scratch("unreadable");
    let dir = tmp.0.clone();
    let text = plain_text(&LOOP);
    let truncated = gzip(&text);
    let cases = [
        (dir.join("missing.trace"), "cannot read trace file"),
        (
            // Not text, and not whole 4-byte keys.
            write(&dir, "odd.dat", &[0, 1, 2, 3, 4]),
            "unknown trace format",
        ),
        (
            write(&dir, "odd.trc", &[0, 1, 2, 3, 4]),
            "ends inside a key",
        ),
        (
            write(&dir, "bad.txt", b"1\nabc\n"),
            "bad.txt: trace line 2 `abc`: a field is not a decimal u64",
        ),
        (
            // Text ended by DOS end-of-file marks, 12 bytes: not three cache2k keys.
            write(&dir, "dos.txt", b"10\n20\n30\n\x1a\x1a\x1a"),
            "dos.txt: trace line 4 `\u{1a}\u{1a}\u{1a}`: a field is not a decimal u64",
        ),
        (
            // The start of a bzip2 file, 16 bytes: not four cache2k keys.
            write(&dir, "keys.bz2", b"BZh91AY&SY\x8f\x11\x0e\x02\x00\x01"),
            "keys.bz2: trace is bzip2 data, which this reader does not decode",
        ),
        (
            write(&dir, "cut.gz", &truncated[..truncated.len() / 2]),
            "corrupt gzip data in trace",
        ),
    ];
    for (path, message) in &cases {
        fails(
            &[path.to_str().unwrap(), "--capacity", "4"],
            None,
            1,
            message,
        );
    }
    let good = write(&dir, "good.txt", &text);
    fails(
        &[
            good.to_str().unwrap(),
            "--capacity",
            "4",
            "--plot",
            "/nonexistent/larder/c.svg",
        ],
        None,
        1,
        "there is no directory /nonexistent/larder",
    );
    // A good trace before a bad one prints nothing either: every trace is read first.
    fails(
        &[
            good.to_str().unwrap(),
            cases[0].0.to_str().unwrap(),
            "--capacity",
            "4",
        ],
        None,
        1,
        "missing.trace",
    );
}

/// A chart that cannot be written is refused before the replay, as a missing directory is:
/// a directory of the chart's name made the run replay every trace and print its table, then
/// fail at the end, the chart's share of the work lost. A file that is there stays as it was.
#[test]
fn a_plot_that_cannot_be_written_is_refused_before_the_replay() {
    let tmp = scratch("unwritable");
    let dir = tmp.0.clone();
    let trace = write(&dir, "keys.txt", &plain_text(&LOOP));
    let in_the_way = dir.join("curves.svg");
    std::fs::create_dir(&in_the_way).expect("a directory");
    fails(
        &[
            trace.to_str().unwrap(),
            "--capacity",
            "2",
            "--plot",
            in_the_way.to_str().unwrap(),
        ],
        None,
        1,
        "cannot write the chart there",
    );
    // The check leaves no file behind when the run fails later, and empties none that is there.
    let fresh = dir.join("fresh.svg");
    fails(
        &[
            dir.join("missing.txt").to_str().unwrap(),
            "--capacity",
            "2",
            "--plot",
            fresh.to_str().unwrap(),
        ],
        None,
        1,
        "missing.txt",
    );
    assert!(!fresh.exists());
    let kept = write(&dir, "kept.svg", b"an older chart");
    fails(
        &[
            dir.join("missing.txt").to_str().unwrap(),
            "--capacity",
            "2",
            "--plot",
            kept.to_str().unwrap(),
        ],
        None,
        1,
        "missing.txt",
    );
    assert_eq!(std::fs::read(&kept).unwrap(), b"an older chart");
}

/// A chart named as one of the traces it draws (by the trace's own path, a symbolic link to it
/// or another hard link) is refused before the replay, and the trace stays as it was: the
/// chart was written over it once the replay was done.
#[cfg(unix)]
#[test]
fn a_plot_over_one_of_its_own_traces_is_refused_and_the_trace_kept() {
    let tmp = scratch("plot-over-trace");
    let dir = tmp.0.clone();
    let keys = plain_text(&LOOP);
    let trace = write(&dir, "keys.svg", &keys);
    let other = write(&dir, "other.txt", &keys);
    let link = dir.join("link.svg");
    std::os::unix::fs::symlink(&trace, &link).expect("a symbolic link");
    let hard = dir.join("hard.png");
    std::fs::hard_link(&trace, &hard).expect("a hard link");
    let trace_arg = trace.to_str().unwrap();
    for plot in [&trace, &link, &hard] {
        fails(
            &[
                other.to_str().unwrap(),
                trace_arg,
                "--capacity",
                "2",
                "--plot",
                plot.to_str().unwrap(),
            ],
            None,
            2,
            &format!("is the trace {trace_arg}, which the chart would overwrite"),
        );
        assert_eq!(std::fs::read(&trace).unwrap(), keys, "--plot {plot:?}");
    }
}

/// A chart named by a symbolic link whose target is missing is written to that target, and
/// the check before the replay creates it to see that it can: it removes it again, as it does a
/// file of the chart's own name, so a run that fails later leaves the link as dangling as it
/// was. (The check left an empty target behind.)
#[cfg(unix)]
#[test]
fn a_plot_through_a_dangling_link_leaves_no_target_when_the_run_fails() {
    let tmp = scratch("dangling");
    let dir = tmp.0.clone();
    let link = dir.join("curves.svg");
    let target = dir.join("elsewhere.svg");
    std::os::unix::fs::symlink(&target, &link).expect("a symbolic link");
    fails(
        &[
            dir.join("missing.txt").to_str().unwrap(),
            "--capacity",
            "2",
            "--plot",
            link.to_str().unwrap(),
        ],
        None,
        1,
        "missing.txt",
    );
    assert!(!target.exists(), "the check left the link's target behind");
    assert!(std::fs::symlink_metadata(&link).is_ok(), "the link stays");
    let trace = write(&dir, "keys.txt", &plain_text(&LOOP));
    larder()
        .args(["sim", trace.to_str().unwrap(), "--capacity", "2", "--plot"])
        .arg(&link)
        .assert()
        .success();
    assert!(std::fs::read(&target).unwrap().starts_with(b"<svg"));
}

#[test]
fn a_png_without_a_usable_font_is_one_line_and_exit_1() {
    let tmp = scratch("font");
    let dir = tmp.0.clone();
    let trace = write(&dir, "keys.txt", &plain_text(&LOOP));
    let png = dir.join("curves.png");
    let args = [
        trace.to_str().unwrap(),
        "--capacity",
        "2",
        "--plot",
        png.to_str().unwrap(),
    ];
    fails(
        &args,
        Some(("LARDER_FONT", &dir.join("missing.ttf"))),
        1,
        "cannot read the font $LARDER_FONT",
    );
    let not_a_font = write(&dir, "not-a-font.ttf", b"hello");
    fails(
        &args,
        Some(("LARDER_FONT", &not_a_font)),
        1,
        "is not a TrueType or OpenType font",
    );
    assert!(!png.exists());
}

#[test]
fn a_missing_capacity_is_a_usage_error() {
    // clap's own message, as `main` reports it: one line, exit 2.
    larder()
        .args(["sim", "some.trace"])
        .assert()
        .failure()
        .code(2)
        .stderr(predicate::str::starts_with("larder: ").and(predicate::str::contains("required")));
}

/// Results written to a pipe nobody reads any more (`larder sim ... | head -1`) are not a
/// panic: the run ends as it would have, quietly. A stdout that refuses the write for another
/// reason (a full disk) is one line on stderr and exit 1, as any failure is.
#[test]
fn a_closed_pipe_or_a_full_disk_on_stdout_is_not_a_panic() {
    let tmp = scratch("stdout");
    let dir = tmp.0.clone();
    let trace = write(&dir, "keys.txt", &plain_text(&LOOP));
    let sim = || {
        let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("larder"));
        command.arg("sim").arg(&trace).args(["--capacity", "2"]);
        command
    };
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = sim().stdout(writer).output().expect("larder runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (out.status.code(), stderr.as_ref()),
        (Some(0), ""),
        "a closed pipe"
    );
    let Ok(full) = std::fs::File::create("/dev/full") else {
        return; // not Linux
    };
    let out = sim().stdout(full).output().expect("larder runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a full disk: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("larder: cannot write the results: "),
        "{stderr}"
    );
    assert!(!stderr.contains("internal error"), "{stderr}");
}
