//! Arbitrary bytes as a log segment: scanning never panics, and what it returns is consistent
//! with itself (each record starts where the previous one ended, a seal right after the last
//! record, and the tail where the last record or the seal ends). The bytes are scanned as they are, and again behind a valid header, so the
//! fuzzer spends its time on records rather than on guessing the magic.

#![no_main]

use larder_log::format::{scan, segment_header, Tail, HEADER_LEN, SEAL_LEN};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok(s) = scan(1, bytes) else { return };
    let mut at = HEADER_LEN;
    for r in &s.records {
        assert_eq!(r.offset(), at);
        at += r.len();
    }
    if let Some(seal) = s.seal {
        assert_eq!(seal.offset, at, "a seal comes right after the last record");
        at += SEAL_LEN;
    }
    match s.tail {
        Tail::Clean { end } => {
            assert_eq!(end, at);
            assert!(bytes[end..].iter().all(|&b| b == 0));
        }
        Tail::Invalid { offset, .. } => assert_eq!(offset, at),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut segment = segment_header(1).to_vec();
    segment.extend_from_slice(data);
    check(&segment);
});
