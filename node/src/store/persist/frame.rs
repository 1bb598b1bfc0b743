//! The on-disk encoding shared by the log and the snapshots: checksummed frames.
//!
//! A file is a header (8-byte magic, `u32` format, `u64` generation) and then frames:
//! `u32 length | u32 CRC-32 of the payload | payload`, little-endian. A payload is one of:
//! - a record (`1`): HLC `u64`, writer `u64`, expiry `u64` (Unix ms, 0 never), flags `u8`
//!   (bit 0: tombstone), key length `u32`, key, and the value as the rest;
//! - a partition dropped (`2`): partition `u32` (its new owners hold it now);
//! - the end of a snapshot (`3`): how many records it holds, `u64`.
//!
//! A frame is written whole or not at all as far as a reader can tell: a torn write, a
//! flipped bit or garbage after a crash fails the length bound or the checksum, and the
//! reader stops there ([`Reader::next`] says where the last good frame ended).

use std::io::{self, Read};

use crate::clock::Version;
use crate::store::Record;

/// The format of everything in a data dir; a dir of another format is refused.
pub const FORMAT: u32 = 1;
pub const LOG_MAGIC: &[u8; 8] = b"KACHELOG";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"KACHESNP";
pub const HEADER_LEN: u64 = 20;
/// Frame header: length and checksum.
const FRAME_HEADER: usize = 8;
/// A record payload without key and value.
const RECORD_FIXED: usize = 1 + 8 + 8 + 8 + 1 + 4;
/// No payload is larger (a 1 GiB value is far beyond `--max-value-bytes`'s sense); a
/// longer length is corruption, not an allocation to make.
const MAX_PAYLOAD: u32 = 1 << 30;

const RECORD: u8 = 1;
const DROP: u8 = 2;
const END: u8 = 3;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Record(Record),
    Dropped { partition: u32 },
    End { records: u64 },
}

pub fn header(magic: &[u8; 8], generation: u64) -> [u8; HEADER_LEN as usize] {
    let mut header = [0; HEADER_LEN as usize];
    header[..8].copy_from_slice(magic);
    header[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    header[12..].copy_from_slice(&generation.to_le_bytes());
    header
}

/// Appends a record frame to `out`.
pub fn put_record(
    out: &mut Vec<u8>,
    key: &[u8],
    value: &[u8],
    version: Version,
    expires_at_ms: u64,
    tombstone: bool,
) {
    let payload_len = RECORD_FIXED + key.len() + value.len();
    let start = begin(out, payload_len);
    out.push(RECORD);
    out.extend_from_slice(&version.hlc.to_le_bytes());
    out.extend_from_slice(&version.node.to_le_bytes());
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    out.push(u8::from(tombstone));
    // Keys are at most 64 KiB (`entry::MAX_KEY_LEN`).
    out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    finish(out, start);
}

pub fn put_drop(out: &mut Vec<u8>, partition: u32) {
    let start = begin(out, 5);
    out.push(DROP);
    out.extend_from_slice(&partition.to_le_bytes());
    finish(out, start);
}

pub fn put_end(out: &mut Vec<u8>, records: u64) {
    let start = begin(out, 9);
    out.push(END);
    out.extend_from_slice(&records.to_le_bytes());
    finish(out, start);
}

/// Reserves the frame header; returns where the payload starts.
fn begin(out: &mut Vec<u8>, payload_len: usize) -> usize {
    out.reserve(FRAME_HEADER + payload_len);
    out.extend_from_slice(&u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.len()
}

fn finish(out: &mut [u8], payload_start: usize) {
    let crc = crc32fast::hash(&out[payload_start..]);
    out[payload_start - 4..payload_start].copy_from_slice(&crc.to_le_bytes());
}

/// Why a header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("not a kache {0} file (bad magic or too short)")]
    Magic(&'static str),
    #[error("written in format {found}; this node reads format {FORMAT}")]
    Format { found: u32 },
}

/// Reads and checks a header; returns the file's generation.
pub fn read_header(bytes: &[u8], magic: &[u8; 8], kind: &'static str) -> Result<u64, HeaderError> {
    if bytes.len() < HEADER_LEN as usize || &bytes[..8] != magic {
        return Err(HeaderError::Magic(kind));
    }
    let format = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if format != FORMAT {
        return Err(HeaderError::Format { found: format });
    }
    let mut generation = [0; 8];
    generation.copy_from_slice(&bytes[12..20]);
    Ok(u64::from_le_bytes(generation))
}

/// Frames read one by one from a file's body (after its header).
#[derive(Debug)]
pub struct Reader<R> {
    input: R,
    /// Bytes of good frames consumed so far (from the start of the body).
    good: u64,
    payload: Vec<u8>,
}

/// Why reading stopped before the end of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where the last good frame ended, from the start of the body.
    pub good_bytes: u64,
    pub reason: &'static str,
}

impl<R: Read> Reader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            good: 0,
            payload: Vec::new(),
        }
    }

    /// Bytes of good frames read so far.
    pub fn good_bytes(&self) -> u64 {
        self.good
    }

    /// The next frame; `Ok(None)` at a clean end; `Err` at damage (a torn or corrupt
    /// frame, or an I/O error), after which nothing more is read.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Damage> {
        let mut header = [0u8; FRAME_HEADER];
        match read_full(&mut self.input, &mut header) {
            Ok(0) => return Ok(None),
            Ok(FRAME_HEADER) => {}
            Ok(_) => return Err(self.damage("a frame header cut short")),
            Err(_) => return Err(self.damage("an I/O error")),
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_PAYLOAD {
            return Err(self.damage("an impossible frame length"));
        }
        self.payload.clear();
        let wanted = u64::from(len);
        match (&mut self.input)
            .take(wanted)
            .read_to_end(&mut self.payload)
        {
            Ok(n) if n as u64 == wanted => {}
            Ok(_) => return Err(self.damage("a frame cut short")),
            Err(_) => return Err(self.damage("an I/O error")),
        }
        if crc32fast::hash(&self.payload) != crc {
            return Err(self.damage("a checksum mismatch"));
        }
        let frame = decode(&self.payload).ok_or_else(|| self.damage("a malformed payload"))?;
        self.good += FRAME_HEADER as u64 + wanted;
        Ok(Some(frame))
    }

    fn damage(&self, reason: &'static str) -> Damage {
        Damage {
            good_bytes: self.good,
            reason,
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

fn decode(payload: &[u8]) -> Option<Frame> {
    let (&kind, body) = payload.split_first()?;
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?))
    };
    match kind {
        RECORD => {
            let version = Version {
                hlc: u64_at(0)?,
                node: u64_at(8)?,
            };
            let expires_at_ms = u64_at(16)?;
            let flags = *body.get(24)?;
            let key_len = usize::try_from(u32_at(25)?).ok()?;
            let key_end = 29usize.checked_add(key_len)?;
            let key = body.get(29..key_end)?.to_vec();
            let value = body.get(key_end..)?.to_vec();
            Some(Frame::Record(Record {
                key,
                value,
                version,
                expires_at_ms,
                tombstone: flags & 1 == 1,
            }))
        }
        DROP if body.len() == 4 => Some(Frame::Dropped {
            partition: u32_at(0)?,
        }),
        END if body.len() == 8 => Some(Frame::End {
            records: u64_at(0)?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record(key: &[u8], value: &[u8], tombstone: bool) -> Record {
        Record {
            key: key.to_vec(),
            value: value.to_vec(),
            version: Version {
                hlc: 42 << 16,
                node: 7,
            },
            expires_at_ms: if tombstone { 99 } else { 0 },
            tombstone,
        }
    }

    fn encode(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            match frame {
                Frame::Record(r) => {
                    put_record(
                        &mut out,
                        &r.key,
                        &r.value,
                        r.version,
                        r.expires_at_ms,
                        r.tombstone,
                    );
                }
                Frame::Dropped { partition } => put_drop(&mut out, *partition),
                Frame::End { records } => put_end(&mut out, *records),
            }
        }
        out
    }

    fn read_all(bytes: &[u8]) -> (Vec<Frame>, Option<Damage>) {
        let mut reader = Reader::new(bytes);
        let mut frames = Vec::new();
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, None),
                Err(damage) => return (frames, Some(damage)),
            }
        }
    }

    #[test]
    fn frames_round_trip() {
        let frames = vec![
            Frame::Record(record(b"k", b"value", false)),
            Frame::Record(record(b"gone", b"", true)),
            Frame::Dropped { partition: 270 },
            Frame::End { records: 2 },
        ];
        assert_eq!(read_all(&encode(&frames)), (frames, None));
    }

    #[test]
    fn a_torn_tail_stops_at_the_last_whole_frame() {
        let frames = vec![
            Frame::Record(record(b"a", b"1", false)),
            Frame::Record(record(b"b", b"2", false)),
        ];
        let bytes = encode(&frames);
        let first_len = encode(&frames[..1]).len();
        for cut in first_len + 1..bytes.len() {
            let (read, damage) = read_all(&bytes[..cut]);
            assert_eq!(read, frames[..1], "cut at {cut}");
            assert_eq!(damage.map(|d| d.good_bytes), Some(first_len as u64));
        }
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_checksum() {
        let frames = vec![Frame::Record(record(b"a", b"some value", false))];
        let mut bytes = encode(&frames);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x10;
        let (read, damage) = read_all(&bytes);
        assert!(read.is_empty());
        assert_eq!(damage.map(|d| d.reason), Some("a checksum mismatch"));
    }

    #[test]
    fn headers_name_their_kind_format_and_generation() {
        let bytes = header(LOG_MAGIC, 12);
        assert_eq!(read_header(&bytes, LOG_MAGIC, "log"), Ok(12));
        assert_eq!(
            read_header(&bytes, SNAPSHOT_MAGIC, "snapshot"),
            Err(HeaderError::Magic("snapshot"))
        );
        let mut future = bytes;
        future[8] = 9;
        assert_eq!(
            read_header(&future, LOG_MAGIC, "log"),
            Err(HeaderError::Format { found: 9 })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// Any bytes after good frames never panic the reader, and never yield a frame
        /// that was not written (garbage would need a matching CRC-32: odds of 2^-32).
        #[test]
        fn garbage_after_good_frames_is_damage_not_data(
            key in proptest::collection::vec(any::<u8>(), 0..40),
            value in proptest::collection::vec(any::<u8>(), 0..200),
            garbage in proptest::collection::vec(any::<u8>(), 1..64),
        ) {
            let frames = vec![Frame::Record(record(&key, &value, false))];
            let mut bytes = encode(&frames);
            bytes.extend_from_slice(&garbage);
            let (read, _) = read_all(&bytes);
            prop_assert_eq!(read, frames);
        }
    }
}
