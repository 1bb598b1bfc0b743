//! The lean transport's bytes on the wire: the preface that opens a connection and the
//! length-prefixed frames after it. Pure encoding and decoding; no I/O.
//!
//! ```text
//! preface  "KACHE-FWD" VERSION                       (10 bytes, each way, once)
//! frame    length: u32 BE | id: u64 BE | kind: u8 | body
//!          (length counts id, kind and body)
//! ```
//!
//! A request's body is the prost encoding of its `proto::*Request`; a [`Kind::Reply`]'s
//! is the matching `proto::*Response`; a [`Kind::Error`]'s is a tonic `Code` (i32 BE)
//! and the status message (UTF-8). Pings and pongs have empty bodies.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tonic::Status;

/// What a lean connection starts with, so the shared peer port can tell it from gRPC
/// (whose HTTP/2 preface starts with `PRI `).
pub const MAGIC: &[u8; 9] = b"KACHE-FWD";
/// The frame format below. A server answers only the versions it speaks; a client whose
/// preface is not echoed uses gRPC instead.
pub const VERSION: u8 = 1;
/// Magic and version.
pub const PREFACE_LEN: usize = MAGIC.len() + 1;
/// The id and kind that every frame's length counts besides its body.
const ID_AND_KIND: usize = 8 + 1;
/// Bytes before a frame's body.
pub const HEADER_LEN: usize = 4 + ID_AND_KIND;

/// The preface both ends send.
pub fn preface() -> [u8; PREFACE_LEN] {
    let mut preface = [VERSION; PREFACE_LEN];
    preface[..MAGIC.len()].copy_from_slice(MAGIC);
    preface
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Client to server: a `proto::GetRequest`.
    Get,
    /// Client to server: a `proto::ApplyRequest`.
    Apply,
    /// Client to server: are you there? (answered by a [`Kind::Pong`] with the same id).
    Ping,
    /// Server to client: the answer to the request with the same id.
    Reply,
    /// Server to client: the request with the same id failed with this status.
    Error,
    /// Server to client: here.
    Pong,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Self::Get => 1,
            Self::Apply => 2,
            Self::Ping => 3,
            Self::Reply => 0x80,
            Self::Error => 0x81,
            Self::Pong => 0x82,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Get,
            2 => Self::Apply,
            3 => Self::Ping,
            0x80 => Self::Reply,
            0x81 => Self::Error,
            0x82 => Self::Pong,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub id: u64,
    pub kind: Kind,
    pub body: Bytes,
}

/// A byte stream that is not (or no longer) lean frames: the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a frame body of {len} bytes is over the {max}-byte limit")]
    Oversized { len: usize, max: usize },
    #[error("a frame of {0} bytes is shorter than its id and kind")]
    Short(usize),
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
}

/// Appends a frame carrying `message`'s prost encoding. The caller checks the size
/// against the peer's limit first (`encoded_len`).
pub fn encode(out: &mut BytesMut, id: u64, kind: Kind, message: &impl prost::Message) {
    let body = message.encoded_len();
    put_header(out, id, kind, body);
    // Cannot fail: a `BytesMut` grows, and `put_header` reserved room for the body.
    if let Err(err) = message.encode(out) {
        tracing::error!(error = %err, "encoding a lean frame body failed");
    }
}

/// Appends a frame without a body (a ping or a pong).
pub fn encode_empty(out: &mut BytesMut, id: u64, kind: Kind) {
    put_header(out, id, kind, 0);
}

/// Appends an [`Kind::Error`] frame carrying `status`'s code and message.
pub fn encode_error(out: &mut BytesMut, id: u64, status: &Status) {
    let message = status.message().as_bytes();
    put_header(out, id, Kind::Error, 4 + message.len());
    out.put_i32(status.code().into());
    out.put_slice(message);
}

fn put_header(out: &mut BytesMut, id: u64, kind: Kind, body: usize) {
    out.reserve(HEADER_LEN + body);
    // Bodies are bounded by the peer message limit (a few MiB), far below u32::MAX; a
    // length that did not fit would be refused by the receiver's limit either way.
    out.put_u32(u32::try_from(ID_AND_KIND + body).unwrap_or(u32::MAX));
    out.put_u64(id);
    out.put_u8(kind.byte());
}

/// Takes the first complete frame off `buf`: `None` until all of it has arrived. A
/// frame whose body would exceed `max_body` is an error as soon as its length is read,
/// before any of it is buffered.
pub fn decode(buf: &mut BytesMut, max_body: usize) -> Result<Option<Frame>, FrameError> {
    let Some(length) = buf.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    let Some(body_len) = length.checked_sub(ID_AND_KIND) else {
        return Err(FrameError::Short(length));
    };
    if body_len > max_body {
        return Err(FrameError::Oversized {
            len: body_len,
            max: max_body,
        });
    }
    if buf.len() < 4 + length {
        buf.reserve(4 + length - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut frame = buf.split_to(length).freeze();
    let id = frame.get_u64();
    let kind_byte = frame.get_u8();
    let kind = Kind::from_byte(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
    Ok(Some(Frame {
        id,
        kind,
        body: frame,
    }))
}

/// The status an [`Kind::Error`] frame's body carries. A body too short for a code is
/// `UNKNOWN`, like a gRPC answer without a status.
pub fn status_of(mut body: Bytes) -> Status {
    if body.len() < 4 {
        return Status::unknown("a lean error frame without a status code");
    }
    let code = tonic::Code::from_i32(body.get_i32());
    Status::new(code, String::from_utf8_lossy(&body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::proto;

    fn get(key: &[u8]) -> proto::GetRequest {
        proto::GetRequest {
            sender: None,
            key: key.to_vec(),
            request_id: String::new(),
        }
    }

    #[test]
    fn frames_round_trip_whole_and_byte_by_byte() {
        let mut wire = BytesMut::new();
        encode(&mut wire, 7, Kind::Get, &get(b"a key"));
        encode_empty(&mut wire, 8, Kind::Ping);
        encode_error(&mut wire, 9, &Status::unavailable("syncing"));
        let expected = wire.clone();

        let mut whole = wire;
        let first = decode(&mut whole, 1 << 20)
            .expect("valid")
            .expect("complete");
        assert_eq!((first.id, first.kind), (7, Kind::Get));
        let request: proto::GetRequest = prost::Message::decode(first.body).expect("prost");
        assert_eq!(request.key, b"a key");
        let ping = decode(&mut whole, 1 << 20)
            .expect("valid")
            .expect("complete");
        assert_eq!((ping.id, ping.kind, ping.body.len()), (8, Kind::Ping, 0));
        let error = decode(&mut whole, 1 << 20)
            .expect("valid")
            .expect("complete");
        let status = status_of(error.body);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "syncing");
        assert!(whole.is_empty());
        assert_eq!(decode(&mut whole, 1 << 20), Ok(None));

        // The same bytes arriving one at a time make the same three frames.
        let mut trickle = BytesMut::new();
        let mut frames = Vec::new();
        for byte in expected.iter() {
            trickle.put_u8(*byte);
            while let Some(frame) = decode(&mut trickle, 1 << 20).expect("valid") {
                frames.push((frame.id, frame.kind));
            }
        }
        assert_eq!(frames, [(7, Kind::Get), (8, Kind::Ping), (9, Kind::Error)]);
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_length_alone() {
        let mut wire = BytesMut::new();
        encode(&mut wire, 1, Kind::Get, &get(&[b'k'; 100]));
        let mut length_only = BytesMut::from(&wire[..4]);
        let err = decode(&mut length_only, 50).expect_err("over the limit");
        assert!(matches!(err, FrameError::Oversized { max: 50, .. }));
        assert!(
            length_only.capacity() < 1024,
            "nothing reserved for the refused body"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_frame() {
        // An HTTP/2 preface where a frame should be: its length is huge.
        let mut h2 = BytesMut::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
        assert!(matches!(
            decode(&mut h2, 4 << 20),
            Err(FrameError::Oversized { .. })
        ));
        let mut short = BytesMut::from(&[0, 0, 0, 3, 1, 2, 3][..]);
        assert_eq!(decode(&mut short, 100), Err(FrameError::Short(3)));
        let mut unknown = BytesMut::new();
        put_header(&mut unknown, 5, Kind::Get, 0);
        let last = unknown.len() - 1;
        unknown[last] = 0x42;
        assert_eq!(
            decode(&mut unknown, 100),
            Err(FrameError::UnknownKind(0x42))
        );
        assert_eq!(
            status_of(Bytes::from_static(b"\x00")).code(),
            tonic::Code::Unknown
        );
    }

    #[test]
    fn the_preface_is_the_magic_and_the_version() {
        let preface = preface();
        assert_eq!(&preface[..MAGIC.len()], MAGIC);
        assert_eq!(preface[MAGIC.len()], VERSION);
        assert!(!b"PRI * HTTP/2.0".starts_with(&preface[..1]));
    }
}
