//! How a durable cache turns keys and values into the bytes its log stores, and back.
//!
//! The default, [`Postcard`], uses serde with postcard's format: compact (varint integers, no
//! field names), stable (postcard 1.x froze its wire format), and maintained. [`RawBytes`]
//! stores byte and string types exactly as they are, with no length prefix or framing: the
//! log's record already says where a key ends and the value is the record's rest.

use std::fmt;
use std::sync::Arc;

/// Encodes values of `T` into bytes and decodes them back. Decoding what `encode` wrote must
/// give back an equal value; decoding anything else must return an error, never panic.
///
/// A key codec must also encode equal keys to equal bytes. Replay compares decoded keys, but
/// compaction compares the log's key bytes: with a key type whose `Eq` is coarser than its
/// encoding (a case-insensitive string that encodes as written, say), `remove` of `"foo"`
/// after `insert` of `"Foo"` holds after a restart, and is undone by a compaction, which
/// keeps the put of `"Foo"` and drops the delete of `"foo"`.
pub trait Codec<T>: Send + Sync {
    /// Appends the encoding of `value` to `out`.
    ///
    /// # Errors
    /// A value the format cannot express.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Decodes all of `bytes` into a value.
    ///
    /// # Errors
    /// Bytes that are not an encoding of a `T` (including trailing bytes).
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// A codec's failure, with its cause.
#[derive(Debug)]
pub struct CodecError(Box<dyn std::error::Error + Send + Sync>);

impl CodecError {
    /// Wraps a codec's own error (or a message).
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> CodecError {
        CodecError(cause.into())
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// serde with postcard's format: the default codec for keys and values.
///
/// The format holds no types or field names, so decoding meets the contract of [`Codec`] only
/// for bytes that cannot be read as a `T`. Bytes another type wrote often cannot (a `u64` read
/// as a `String`, a struct read with a field added), but some can, and decode to other values:
/// an `i32` read as a `u32` (-1 becomes 1), an enum whose variants were reordered, two fields
/// of one type swapped. A durable cache reopened with such a change opens without an error;
/// change its directory with the types, or keep a version in the value.
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl<T> Codec<T> for Postcard
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        *out = postcard::to_extend(value, std::mem::take(out)).map_err(CodecError::new)?;
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        match postcard::take_from_bytes(bytes) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(CodecError::new(format!(
                "{} bytes left over after the value",
                rest.len()
            ))),
            Err(e) => Err(CodecError::new(e)),
        }
    }
}

/// Bytes and strings stored as they are: no framing, no copy beyond the log's own.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytes;

impl Codec<Vec<u8>> for RawBytes {
    fn encode(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(value);
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        Ok(bytes.to_vec())
    }
}

impl Codec<Box<[u8]>> for RawBytes {
    fn encode(&self, value: &Box<[u8]>, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(value);
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Box<[u8]>, CodecError> {
        Ok(bytes.into())
    }
}

impl Codec<Arc<[u8]>> for RawBytes {
    fn encode(&self, value: &Arc<[u8]>, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(value);
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Arc<[u8]>, CodecError> {
        Ok(bytes.into())
    }
}

/// UTF-8, checked on the way back in.
impl Codec<String> for RawBytes {
    fn encode(&self, value: &String, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<String, CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(CodecError::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<T, C>(codec: &C, value: &T) -> T
    where
        C: Codec<T>,
    {
        let mut out = vec![0xAA]; // encoders append: what was there stays
        codec.encode(value, &mut out).unwrap();
        assert_eq!(out[0], 0xAA);
        codec.decode(&out[1..]).unwrap()
    }

    proptest! {
        #[test]
        fn postcard_round_trips(
            k in any::<(u64, String, Vec<i32>)>(),
            v in any::<Option<(bool, f64, Vec<u8>)>>(),
        ) {
            prop_assert_eq!(round_trip(&Postcard, &k), k);
            let back = round_trip(&Postcard, &v);
            // NaN != NaN: compare the bits.
            prop_assert_eq!(
                back.map(|(b, f, bytes)| (b, f.to_bits(), bytes)),
                v.map(|(b, f, bytes)| (b, f.to_bits(), bytes))
            );
        }

        #[test]
        fn raw_bytes_round_trip_untouched(bytes in any::<Vec<u8>>(), text in any::<String>()) {
            let mut out = Vec::new();
            RawBytes.encode(&bytes, &mut out).unwrap();
            prop_assert_eq!(&out, &bytes);
            prop_assert_eq!(round_trip(&RawBytes, &bytes), bytes.clone());
            prop_assert_eq!(round_trip(&RawBytes, &text), text);
            let boxed: Box<[u8]> = bytes.clone().into();
            prop_assert_eq!(round_trip(&RawBytes, &boxed), boxed);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in any::<Vec<u8>>()) {
            let _ = Codec::<(u64, String)>::decode(&Postcard, &bytes);
            let _ = Codec::<Vec<String>>::decode(&Postcard, &bytes);
            let _ = Codec::<String>::decode(&RawBytes, &bytes);
        }
    }

    #[test]
    fn trailing_bytes_and_bad_utf8_are_errors() {
        let mut out = Vec::new();
        Postcard.encode(&7u32, &mut out).unwrap();
        out.push(0);
        assert!(Codec::<u32>::decode(&Postcard, &out).is_err());
        assert!(Codec::<String>::decode(&RawBytes, &[0xff, 0xfe]).is_err());
    }
}
