//! `larder bench`, run as a user runs it: a short measurement prints its table, and each bad
//! argument is one line on stderr with exit code 2.

use assert_cmd::Command;
use predicates::prelude::*;

fn larder() -> Command {
    Command::cargo_bin("larder").expect("the larder binary is built for tests")
}

#[test]
fn a_short_run_prints_each_cache_with_its_throughput_and_ratio() {
    let out = larder()
        .args(["bench", "--workload", "cache-aside", "--threads", "1"])
        .args(["--seconds", "0.05", "--compare", "quick_cache,dashmap"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.contains("cache_aside (capacity 10000)"), "{text}");
    let row = |name: &str| {
        text.lines()
            .find(|l| {
                let mut fields = l.split_whitespace();
                fields.next() == Some(name)
                    && fields.next().is_some_and(|f| f.parse::<f64>().is_ok())
            })
            .unwrap_or_else(|| panic!("no row for {name} in\n{text}"))
            .to_string()
    };
    // larder against itself is 1.00x; its hit ratio is a percentage.
    let larder_row = row("larder");
    assert!(larder_row.contains("1.00x"), "{larder_row}");
    assert!(larder_row.trim_end().ends_with('%'), "{larder_row}");
    let quick_cache = row("quick_cache");
    let fields: Vec<&str> = quick_cache.split_whitespace().collect();
    let mops: f64 = fields[1].parse().expect("Mops/s is a number");
    assert!(mops > 0.0);
    // An unbounded map sits out cache-aside: it could not bound itself.
    assert!(!text.lines().any(|l| l.starts_with("dashmap")), "{text}");
}

#[test]
fn plot_draws_a_panel_per_workload_and_a_bar_per_cache_and_thread_count() {
    let path = std::env::temp_dir().join(format!("larder-bench-{}.svg", std::process::id()));
    larder()
        .args([
            "bench",
            "--workload",
            "insert",
            "--threads",
            "1,2",
            "--seconds",
            "0.05",
        ])
        .args(["--compare", "quick_cache,papaya", "--plot"])
        .arg(&path)
        .assert()
        .success();
    let svg = std::fs::read_to_string(&path).expect("the chart was written");
    std::fs::remove_file(&path).expect("removed");
    assert!(
        svg.contains("insert_only (capacity 100000)"),
        "the panel's title"
    );
    // The SVG backend puts each text on a line of its own, between its tags.
    let texts: Vec<&str> = svg.lines().map(str::trim).collect();
    for label in ["larder", "quick_cache", "papaya", "1 thread", "2 threads"] {
        assert!(texts.contains(&label), "{label} is labelled");
    }
    // Three caches at two thread counts: six bars, plus three legend swatches, each a filled
    // <rect> of the cache's colour beside the panel's frame and background.
    let filled = svg.matches("<rect").count();
    assert!(filled >= 9, "{filled} rectangles");
}

#[test]
fn bad_arguments_are_one_line_and_exit_2() {
    let cases: [(&[&str], &str); 11] = [
        (&["--plot", "bars.pdf"], "must end in .svg or .png"),
        (&["--compare", "memcached"], "unknown cache `memcached`"),
        (
            &["--compare", "moka,moka"],
            "--compare: `moka` is given twice",
        ),
        (&["--compare", "larder"], "`larder` is always measured"),
        (
            &["--threads", "0"],
            "--threads needs thread counts of at least 1",
        ),
        (&["--threads", "two"], "invalid value 'two'"),
        (&["--threads", "1,2,1"], "--threads: `1` is given twice"),
        (
            &["--seconds=0"],
            "--seconds 0: the time per cache must be more than 0 and at most 3600 seconds",
        ),
        (
            &["--seconds=3600.5"],
            "--seconds 3600.5: the time per cache must be more",
        ),
        (
            &["--seconds=NaN"],
            "--seconds NaN: the time per cache must be more",
        ),
        (&["--workload", "scan"], "invalid value 'scan'"),
    ];
    for (args, message) in cases {
        let assert = larder()
            .arg("bench")
            .args(args)
            .assert()
            .code(2)
            .stdout(predicate::str::is_empty());
        let stderr = String::from_utf8(assert.get_output().stderr.clone()).expect("utf-8");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("larder: "), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn help_describes_every_option() {
    let out = larder().args(["bench", "--help"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).expect("utf-8");
    for option in ["--workload", "--threads", "--seconds", "--compare"] {
        assert!(text.contains(option), "{option} missing from\n{text}");
    }
}

/// A thread the system refuses (a thread limit: `ulimit -u`, a container's pids limit) ends the
/// run with one line and exit 1, as every failure does. It panicked (`failed to spawn thread`,
/// exit 101), and when the refused thread was not a measurement's first, the workers already
/// started waited for it at the start for good: the run hung after the panic's message.
///
/// `RUST_MIN_STACK`, which sets the stack of every thread Rust starts, makes the system refuse
/// them, as root too: a stack of 1 PiB, every one; one of 8 GiB under an address-space limit of
/// 12 GiB, the second of two (or, where such a stack is refused outright, the first).
#[cfg(unix)]
#[test]
fn a_thread_the_system_refuses_is_one_line_and_exit_1() {
    const GIB: u64 = 1 << 30;
    let bench = [
        "bench",
        "--workload",
        "insert",
        "--seconds",
        "0.01",
        "--compare",
        "",
        "--threads",
    ];
    let mut every_one = larder();
    every_one
        .args(bench)
        .arg("1")
        .env("RUST_MIN_STACK", (1u64 << 50).to_string());
    // `ulimit -v` counts KiB.
    let mut the_second = Command::new("sh");
    the_second
        .arg("-c")
        .arg(format!(
            "ulimit -v {} && exec \"$0\" \"$@\"",
            12 * GIB / 1024
        ))
        .arg(assert_cmd::cargo::cargo_bin("larder"))
        .args(bench)
        .arg("2")
        .env("RUST_MIN_STACK", (8 * GIB).to_string());
    for (case, command) in [("every thread", every_one), ("the second", the_second)] {
        let mut command = command;
        let assert = command.assert().code(1);
        let stderr = String::from_utf8(assert.get_output().stderr.clone()).expect("utf-8");
        assert_eq!(stderr.lines().count(), 1, "{case}: {stderr}");
        assert!(
            stderr.starts_with("larder: could not start the workers for insert_only at "),
            "{case}: {stderr}"
        );
    }
}

/// `--compare`'s help names every cache it accepts, the ones its error lists: `papaya_ahash`
/// was accepted and never named.
#[test]
fn the_help_names_every_cache_compare_accepts() {
    let out = larder().args(["bench", "--help"]).assert().success();
    let help = String::from_utf8(out.get_output().stdout.clone()).expect("utf-8");
    let refused = larder()
        .args(["bench", "--compare", "memcached"])
        .assert()
        .code(2);
    let stderr = String::from_utf8(refused.get_output().stderr.clone()).expect("utf-8");
    let (_, accepted) = stderr
        .trim_end()
        .split_once("choose from ")
        .unwrap_or_else(|| panic!("no list of caches in {stderr}"));
    for name in accepted.split(", ") {
        let named = help
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| word == name);
        assert!(named, "{name} is not named in\n{help}");
    }
}
