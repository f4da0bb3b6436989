//! Crash recovery: a child process writes and reports every write it starts and every write
//! acknowledged to it, while another of its threads compacts the log over and over; the
//! parent kills it with SIGKILL at a random moment, reopens the directory, and checks that
//! every acknowledged write is there with its value and that nothing appears that was never
//! written. It counts the kills that landed during a compaction. A process crash loses
//! nothing acknowledged in any mode, so each mode has its run: `Always` (a flush per write,
//! shared), `Interval(2 ms)` (the janitor's thread syncing all the time) and `Manual` (a
//! `sync()` every 64 writes).
//!
//! The child is this test binary, re-run with `LARDER_CRASH_DIR` set, so that it runs only
//! `crash_child`. `LARDER_CRASH_KILLS` sets the number of kills per mode (default 50); the seed
//! of the random moments is printed, and `LARDER_CRASH_SEED` replays it.

mod common;

use common::TempDir;
use larder::durable::{Compaction, LogOptions};
use larder::{Cache, Durability, DurableCache, IntoDurable};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DIR_VAR: &str = "LARDER_CRASH_DIR";
const GENERATION_VAR: &str = "LARDER_CRASH_GENERATION";
const MODE_VAR: &str = "LARDER_CRASH_MODE";

/// The modes by the names the parent hands the child.
const MODES: [(&str, Durability); 3] = [
    ("always", Durability::Always),
    ("interval", Durability::Interval(Duration::from_millis(2))),
    ("manual", Durability::Manual),
];

fn mode(name: &str) -> Durability {
    MODES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, durability)| durability)
        .unwrap_or_else(|| panic!("no durability mode is called {name:?}"))
}

fn open(dir: &Path, durability: Durability) -> DurableCache<u64, String> {
    Cache::builder()
        .max_capacity(1 << 20)
        .durable(dir)
        .durability(durability)
        // Small segments, so kills also land in rolls from one segment to the next.
        .log_options(LogOptions::default().with_segment_size(64 << 10))
        // The child compacts by hand, all the time.
        .compaction(Compaction::Manual)
        .build()
        .expect("the directory recovers")
}

/// The child: writes until it is killed. Each line on stdout is `start K V`, `ack K V`,
/// `startdel K` or `del K`; a write is reported started before it is attempted and acked only
/// once `insert`/`remove` has returned `Ok`. In `Manual` mode it syncs after every 64th
/// write. A second thread compacts the log in a loop, between `compact-start` and
/// `compact-end` lines.
#[test]
#[ignore = "the child process of the crash test below"]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return; // run with `--ignored`, but not as a child: nothing to do
    };
    let generation: u64 = std::env::var(GENERATION_VAR).unwrap().parse().unwrap();
    let durability = mode(&std::env::var(MODE_VAR).unwrap());
    let cache = open(Path::new(&dir), durability);
    // The harness has printed `test crash_child ... ` with no line end: end that line, or the
    // first report would be glued to it and missed.
    println!();
    let compactor = cache.clone();
    std::thread::spawn(move || {
        let mut rng = Rng(generation | 1);
        loop {
            println!("compact-start");
            compactor.compact().unwrap();
            println!("compact-end");
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
        }
    });
    let mut rng = Rng(generation.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for i in 0u64.. {
        let mut out = std::io::stdout().lock();
        // Mostly fresh keys, some overwrites and removals of keys of earlier generations.
        let key = if rng.below(4) == 0 {
            rng.below((generation + 1) * 1000)
        } else {
            generation * 1000 + i % 1000
        };
        if rng.below(8) == 0 {
            writeln!(out, "startdel {key}").unwrap();
            out.flush().unwrap();
            cache.remove(&key).unwrap();
            writeln!(out, "del {key}").unwrap();
        } else {
            let value = format!("g{generation}-i{i}");
            writeln!(out, "start {key} {value}").unwrap();
            out.flush().unwrap();
            cache.insert(key, value.clone()).unwrap();
            writeln!(out, "ack {key} {value}").unwrap();
        }
        out.flush().unwrap();
        if durability == Durability::Manual && i % 64 == 63 {
            cache.sync().unwrap();
        }
    }
}

/// What the parent knows of one key.
#[derive(Debug, Default, Clone)]
struct KeyState {
    /// The state after the last acknowledged write: `Some(value)`, or `None` for a removal.
    acked: Option<Option<String>>,
    /// Writes started after it and never acknowledged: each may or may not have landed.
    in_flight: Vec<Option<String>>,
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    survive_sigkill("always");
}

#[test]
fn acknowledged_writes_survive_sigkill_in_interval_mode() {
    survive_sigkill("interval");
}

#[test]
fn acknowledged_writes_survive_sigkill_in_manual_mode() {
    survive_sigkill("manual");
}

/// Kills children writing in the mode named `mode_name`, and checks each reopen.
fn survive_sigkill(mode_name: &str) {
    let durability = mode(mode_name);
    let kills: u64 = std::env::var("LARDER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("LARDER_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test ({mode_name}) seed {seed} (LARDER_CRASH_SEED replays it)");
    let mut rng = Rng(seed | 1);
    let dir = TempDir::new(&format!("crash-{mode_name}"));
    let mut keys: HashMap<u64, KeyState> = HashMap::new();
    let mut acked_total = 0u64;
    let mut kills_in_compaction = 0u64;
    for generation in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, &dir.0)
            .env(GENERATION_VAR, generation.to_string())
            .env(MODE_VAR, mode_name)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a random number of acknowledged writes, or a random time, whichever
        // comes first: both land anywhere in an append, a sync or a segment roll.
        let acks_before_kill = rng.below(400);
        let deadline = Instant::now() + Duration::from_micros(rng.below(40_000));
        let mut acks = 0;
        let mut compacting = false;
        let mut take = |line: &str, acks: &mut u64| match line {
            "compact-start" => compacting = true,
            "compact-end" => compacting = false,
            _ => *acks += u64::from(note(&mut keys, line)),
        };
        while acks < acks_before_kill && Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            take(&line, &mut acks);
        }
        child.kill().unwrap();
        // Everything the child printed before dying counts: read to the end of the pipe.
        for line in lines.map_while(Result::ok) {
            take(&line, &mut acks);
        }
        child.wait().unwrap();
        acked_total += acks;
        kills_in_compaction += u64::from(compacting);

        let cache = open(&dir.0, durability);
        check(&cache, &mut keys, generation);
    }
    println!(
        "{mode_name}: {kills} kills ({kills_in_compaction} during a compaction), \
         {acked_total} acknowledged writes checked"
    );
    assert!(
        acked_total > kills,
        "the children acknowledged too little to test anything"
    );
    assert!(
        kills_in_compaction > 0 || kills < 10,
        "no kill landed during a compaction"
    );
}

/// Takes one line from the child into `keys`; whether it was an acknowledgement.
fn note(keys: &mut HashMap<u64, KeyState>, line: &str) -> bool {
    let mut words = line.split(' ');
    let (word, key) = match (words.next(), words.next().and_then(|k| k.parse().ok())) {
        (Some(w), Some(k)) => (w, k),
        _ => return false, // the test harness's own lines
    };
    let value = words.next().map(str::to_string);
    let state = keys.entry(key).or_default();
    match word {
        "start" => state.in_flight.push(value),
        "startdel" => state.in_flight.push(None),
        "ack" | "del" => {
            state.acked = Some(value);
            state.in_flight.clear();
            return true;
        }
        _ => {}
    }
    false
}

/// Every key holds its last acknowledged state or one of the writes started after it; a key
/// never written is absent. What the reopened cache shows becomes the new acknowledged state.
fn check(cache: &DurableCache<u64, String>, keys: &mut HashMap<u64, KeyState>, generation: u64) {
    let found: HashMap<u64, String> = cache.iter().collect();
    for (key, value) in &found {
        assert!(
            keys.contains_key(key),
            "generation {generation}: key {key} = {value:?} was never written"
        );
    }
    for (key, state) in keys.iter_mut() {
        let now = found.get(key).cloned();
        let allowed = state
            .acked
            .iter()
            .chain(state.in_flight.iter())
            .any(|s| *s == now)
            || (state.acked.is_none() && now.is_none());
        assert!(
            allowed,
            "generation {generation}: key {key} is {now:?}; acknowledged {:?}, in flight {:?}",
            state.acked, state.in_flight
        );
        state.acked = Some(now);
        state.in_flight.clear();
    }
}

/// xorshift64*: reproducible random moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}
