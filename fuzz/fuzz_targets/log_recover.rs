//! Arbitrary bytes as a log segment: scanning never panics, and what it returns is consistent
//! with itself (each record starts where the previous one ended, a seal right after the last
//! record, and the tail where the last record or the seal ends). Every record and seal it
//! accepts is exactly what the encoder writes for its number and operation, byte for byte, so
//! a record whose checksum or head is wrong cannot pass as a good one. The bytes are scanned
//! as they are, and again behind a valid header, so the fuzzer spends its time on records
//! rather than on guessing the magic.

#![no_main]

use larder_log::format::{encode, encode_seal, scan, segment_header, Tail, HEADER_LEN, SEAL_LEN};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok(s) = scan(1, bytes) else { return };
    let mut at = HEADER_LEN;
    let mut encoded = Vec::new();
    for r in &s.records {
        assert_eq!(r.offset(), at);
        encoded.clear();
        encode(r.seq(), r.op(), &mut encoded).expect("an accepted record fits a u32 length");
        assert_eq!(
            &bytes[at..at + r.len()],
            &encoded[..],
            "accepted bytes the encoder never writes for record {} ({:?})",
            r.seq(),
            r.op()
        );
        at += r.len();
    }
    if let Some(seal) = s.seal {
        assert_eq!(seal.offset, at, "a seal comes right after the last record");
        assert_eq!(
            bytes[at..at + SEAL_LEN],
            encode_seal(1, seal.next_seq),
            "accepted a seal the encoder never writes"
        );
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
