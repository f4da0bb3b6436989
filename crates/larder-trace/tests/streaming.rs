//! A trace is read as it streams: the reader holds its keys, not its bytes, so a trace far
//! larger than the memory the reader is given is read whole when its keys fit. Read whole
//! into memory first, it needed as many bytes as the file, and an endless input
//! (`larder sim /dev/zero`) took memory until the host had none. The bound is real: a child
//! process (this test binary run again) lowers its address-space limit, in a process of its
//! own because the limit would make every other test's allocations in the process fail too.
#![cfg(all(target_os = "linux", not(miri)))]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::Barrier;

use larder_testkit::{address_space, child};
use larder_trace::read::read_trace_with;

/// Set in the child's environment; the child test does nothing without it.
const CHILD_VAR: &str = "LARDER_TRACE_STREAMING_CHILD";

/// Blank lines sent between the trace's two keys, 128 MiB of them.
const BLANK_BYTES: usize = 128 << 20;

/// The length of a blank line sent, white space and its `\n` (long lines, because a debug
/// build parses one short line at a time slowly).
const BLANK_LINE_BYTES: usize = 1 << 12;

/// The address space the read may take beyond what the process has, a quarter of what it is
/// sent: room for the reader's buffers and keys, not for the trace's bytes.
const ROOM: u64 = 32 << 20;

/// What the sender writes at a time: a static, so that sending allocates nothing.
static BLANK_LINES: [u8; 1 << 16] = blank_lines();

const fn blank_lines() -> [u8; 1 << 16] {
    let mut lines = [b' '; 1 << 16];
    let mut end = BLANK_LINE_BYTES - 1;
    while end < lines.len() {
        lines[end] = b'\n';
        end += BLANK_LINE_BYTES;
    }
    lines
}

/// The child's half of the test below.
#[test]
#[ignore = "the child process of the test below"]
fn read_through_a_pipe_child() {
    if !child::is_child(CHILD_VAR) {
        return;
    }
    let (reader, mut writer) = std::io::pipe().expect("a pipe");
    // The reader opens the pipe by this name, as it would a FIFO or `/dev/stdin`.
    let path = format!("/proc/self/fd/{}", reader.as_raw_fd());
    let started = &Barrier::new(2);
    let (read, sent) = std::thread::scope(|s| {
        // Moved in, so that the write end closes once the trace is sent.
        let sender = s.spawn(move || -> std::io::Result<()> {
            started.wait();
            writer.write_all(b"7\n")?;
            for _ in 0..BLANK_BYTES / BLANK_LINES.len() {
                writer.write_all(&BLANK_LINES)?;
            }
            writer.write_all(b"8\n")
        });
        // Only once the sender runs: a thread's stacks and arena are address space too.
        started.wait();
        let read = address_space::with_room(ROOM, || read_trace_with(&path, None));
        // The last reader gone, a sender still writing gets an error rather than waiting.
        drop(reader);
        (read, sender.join().expect("the sender does not panic"))
    });
    let trace = read.unwrap_or_else(|e| panic!("the trace is read in {ROOM} bytes: {e:?}"));
    assert_eq!(trace.keys, [7, 8]);
    sent.expect("the whole trace was sent");
}

/// 128 MiB of trace, in 32 MiB of address space: read whole.
#[test]
fn a_trace_larger_than_the_readers_memory_is_read_as_it_streams() {
    child::run("read_through_a_pipe_child", CHILD_VAR, &[]);
}
