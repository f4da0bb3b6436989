//! What a scan makes of damaged segments: every truncation, every flipped byte, and arbitrary
//! records. It never panics and never returns a wrong record: only a prefix of what was
//! written, ending at a clean tail or at the damage, or a `Corruption` error for a bad header.

use larder_log::format::{encode, scan, segment_header, Op, Scan, Tail, HEADER_LEN};
use larder_log::Error;
use proptest::prelude::*;

const SEGMENT: u64 = 42;

/// A segment of a few records of every kind and size, then a zero tail; with each record's
/// `(offset, end)`.
fn sample() -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut seg = segment_header(SEGMENT).to_vec();
    let mut spans = Vec::new();
    let values: [&[u8]; 4] = [
        b"",
        b"v",
        b"a longer value, of some dozens of bytes",
        &[0u8; 40],
    ];
    for (seq, value) in values.iter().enumerate() {
        let start = seg.len();
        encode(
            seq as u64,
            Op::Put {
                key: format!("key-{seq}").as_bytes(),
                value,
                expires_at_ms: seq as u64 * 1000,
            },
            &mut seg,
        )
        .unwrap();
        spans.push((start, seg.len()));
    }
    for op in [Op::Delete { key: b"key-1" }, Op::Clear] {
        let start = seg.len();
        encode(9, op, &mut seg).unwrap();
        spans.push((start, seg.len()));
    }
    seg.resize(seg.len() + 48, 0);
    (seg, spans)
}

/// The records a scan of `bytes` finds, as `(seq, the op's debug form)`, comparable across
/// buffers.
fn decoded(bytes: &[u8]) -> Vec<(u64, String)> {
    listed(&scan(SEGMENT, bytes).unwrap())
}

/// A scan's records as `(seq, the op's debug form)`.
fn listed(s: &Scan<'_>) -> Vec<(u64, String)> {
    s.records
        .iter()
        .map(|r| (r.seq(), format!("{:?}", r.op())))
        .collect()
}

#[test]
fn every_truncation_yields_a_prefix() {
    let (seg, spans) = sample();
    let full = decoded(&seg);
    assert_eq!(full.len(), spans.len());
    for cut in 0..=seg.len() {
        let bytes = &seg[..cut];
        match scan(SEGMENT, bytes) {
            Err(Error::Corruption { offset: 0, .. }) => assert!(cut < HEADER_LEN, "cut {cut}"),
            Err(e) => panic!("cut {cut}: {e}"),
            Ok(s) => {
                let whole = spans.iter().filter(|&&(_, end)| end <= cut).count();
                assert_eq!(listed(&s), full[..whole], "cut {cut}");
                let boundary = spans.iter().any(|&(_, end)| end == cut)
                    || cut == HEADER_LEN
                    || cut >= spans.last().unwrap().1;
                match s.tail {
                    Tail::Clean { end } => {
                        assert!(boundary, "cut {cut} inside a record reads as clean");
                        assert_eq!(
                            end,
                            spans.get(whole.wrapping_sub(1)).map_or(HEADER_LEN, |s| s.1)
                        );
                    }
                    Tail::Invalid { offset, .. } => {
                        assert!(!boundary, "cut {cut} at a boundary reads as invalid");
                        assert_eq!(offset, spans[whole].0, "cut {cut}");
                    }
                }
            }
        }
    }
}

#[test]
fn every_flipped_byte_is_caught() {
    let (seg, spans) = sample();
    let full = decoded(&seg);
    let records_end = spans.last().unwrap().1;
    for at in 0..seg.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut bad = seg.clone();
            bad[at] ^= flip;
            match scan(SEGMENT, &bad) {
                Err(Error::Corruption { offset, .. }) => {
                    assert!(at < HEADER_LEN, "byte {at}: header error for a body flip");
                    assert!(offset as usize <= at);
                }
                Err(e) => panic!("byte {at}: {e}"),
                Ok(s) => {
                    assert!(at >= HEADER_LEN, "byte {at}: a damaged header was accepted");
                    // The records before the damaged one come back intact; nothing after it.
                    let hit = spans
                        .iter()
                        .position(|&(start, end)| start <= at && at < end);
                    let keep = hit.unwrap_or(spans.len());
                    assert_eq!(listed(&s), full[..keep], "byte {at} ^ {flip:#x}");
                    let offset = match s.tail {
                        Tail::Invalid { offset, .. } => offset,
                        Tail::Clean { end } => panic!("byte {at} ^ {flip:#x}: clean at {end}"),
                    };
                    let expected = hit.map_or(records_end, |i| spans[i].0);
                    assert_eq!(offset, expected, "byte {at} ^ {flip:#x}");
                }
            }
        }
    }
}

fn op_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, u64, u8)> {
    (
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(any::<u8>(), 0..200),
        any::<u64>(),
        0..3u8,
    )
}

proptest! {
    /// Arbitrary records come back exactly, in order, with a clean end.
    #[test]
    fn records_round_trip(ops in prop::collection::vec(op_strategy(), 0..30), tail in 0..64usize) {
        let mut seg = segment_header(SEGMENT).to_vec();
        let mut want = Vec::new();
        for (seq, (key, value, expires, kind)) in ops.iter().enumerate() {
            let op = match kind {
                0 => Op::Put { key, value, expires_at_ms: *expires },
                1 => Op::Delete { key },
                _ => Op::Clear,
            };
            encode(seq as u64, op, &mut seg).unwrap();
            want.push((seq as u64, format!("{op:?}")));
        }
        let end = seg.len();
        seg.resize(end + tail, 0);
        let s = scan(SEGMENT, &seg).unwrap();
        prop_assert_eq!(s.tail, Tail::Clean { end });
        prop_assert_eq!(listed(&s), want);
    }

    /// Arbitrary bytes after a valid header: a scan never panics, and whatever it returns
    /// checks out against its own tail.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut seg = segment_header(SEGMENT).to_vec();
        seg.extend_from_slice(&body);
        let s = scan(SEGMENT, &seg).unwrap();
        let end = s.records.last().map_or(HEADER_LEN, |r| r.offset() + r.len());
        match s.tail {
            Tail::Clean { end: e } => prop_assert_eq!(e, end),
            Tail::Invalid { offset, .. } => prop_assert_eq!(offset, end),
        }
    }
}
