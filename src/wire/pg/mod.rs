//! PostgreSQL frontend/backend protocol 3.0.
//!
//! - [`startup`]: the untagged first message of a connection (StartupMessage,
//!   SSLRequest, GSSENCRequest, CancelRequest).
//! - [`Frame`] and [`split_frame`]: the tagged frames of every later message.
//! - [`frontend`]: messages a client sends, decoded for the session.
//! - [`backend`]: messages a server sends, decoded where warpdrive must look inside.
//! - [`encode`]: the messages warpdrive writes itself, in both directions.
//!
//! Reference: PostgreSQL documentation, chapter 55 "Frontend/Backend Protocol".

pub mod backend;
pub mod encode;
pub mod frontend;
pub mod startup;

use bytes::{Buf, Bytes, BytesMut};

/// Length of a tagged frame's header: one tag byte and a four-byte length.
pub const HEADER_LEN: usize = 5;

/// Errors in bytes received from a peer. Each ends that peer's connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A frame declared a length below the four bytes of the length itself.
    #[error("invalid message length {len} (a length counts itself, so it is at least 4)")]
    BadLength {
        /// The declared length.
        len: i64,
    },
    /// A frame declared a length above the configured limit.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The declared length.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A message type byte that is not valid at this point.
    #[error("unexpected message type {:?} (0x{tag:02x})", char::from(*tag))]
    UnexpectedTag {
        /// The tag byte.
        tag: u8,
    },
    /// A message whose body does not match its type's layout.
    #[error("malformed {message} message: {problem}")]
    Malformed {
        /// The message type's protocol name.
        message: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// A startup packet asks for a protocol warpdrive does not speak.
    #[error("unsupported frontend protocol {major}.{minor}: warpdrive speaks 3.0")]
    UnsupportedProtocol {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
}

/// One tagged protocol message as received: tag, length and body in one buffer, kept
/// whole so it can be forwarded byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
}

impl Frame {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.raw[0]
    }

    /// The body, after the tag and length.
    pub fn body(&self) -> Bytes {
        self.raw.slice(HEADER_LEN..)
    }

    /// The whole frame as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The whole frame, consuming it.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Total length on the wire.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Frames always hold at least a header; this exists for clippy's len/is_empty pair.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// A frame from bytes already known to hold exactly one well-formed header and body
    /// (as produced by the encoders).
    pub(crate) fn from_encoded(raw: Bytes) -> Frame {
        debug_assert!(raw.len() >= HEADER_LEN);
        Frame { raw }
    }
}

/// PostgreSQL's framing after startup: a tag byte, a length, a body.
#[derive(Debug)]
pub struct PgFraming;

impl super::Framing for PgFraming {
    type Frame = Frame;
    type Error = WireError;

    fn split(buf: &mut BytesMut, limit: usize) -> Result<Option<Frame>, WireError> {
        split_frame(buf, limit)
    }

    fn holds_whole(buf: &[u8]) -> bool {
        match buf.get(1..HEADER_LEN) {
            Some(&[a, b, c, d]) => buf.len() > u32::from_be_bytes([a, b, c, d]) as usize,
            _ => false,
        }
    }
}

/// Splits one tagged frame off the front of `buf`.
///
/// `Ok(None)` means more bytes are needed (and room for the whole frame is reserved once
/// the header has been checked). The declared length is checked against `limit`, which
/// counts the whole frame, before any memory is reserved.
pub fn split_frame(buf: &mut BytesMut, limit: usize) -> Result<Option<Frame>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let declared = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if declared < 4 {
        return Err(WireError::BadLength {
            len: declared.into(),
        });
    }
    let total = declared as usize + 1;
    if total > limit {
        return Err(WireError::TooLarge { len: total, limit });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame {
        raw: buf.split_to(total).freeze(),
    }))
}

/// A cursor over a message body that refuses to read past its end.
pub(crate) struct Reader {
    message: &'static str,
    body: Bytes,
}

impl Reader {
    pub(crate) fn new(message: &'static str, body: Bytes) -> Reader {
        Reader { message, body }
    }

    fn malformed(&self, problem: &'static str) -> WireError {
        WireError::Malformed {
            message: self.message,
            problem,
        }
    }

    /// A NUL-terminated string, without its terminator, as raw bytes.
    pub(crate) fn cstr(&mut self) -> Result<Bytes, WireError> {
        let end = self
            .body
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.malformed("string is not NUL-terminated"))?;
        let text = self.body.split_to(end);
        self.body.advance(1);
        Ok(text)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        if self.body.is_empty() {
            return Err(self.malformed("body ends early"));
        }
        Ok(self.body.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        if self.body.len() < 2 {
            return Err(self.malformed("body ends early"));
        }
        Ok(self.body.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        if self.body.len() < 4 {
            return Err(self.malformed("body ends early"));
        }
        Ok(self.body.get_u32())
    }

    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        if self.body.len() < 4 {
            return Err(self.malformed("body ends early"));
        }
        Ok(self.body.get_i32())
    }

    /// `n` raw bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, WireError> {
        if self.body.len() < n {
            return Err(self.malformed("body ends early"));
        }
        Ok(self.body.split_to(n))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// Refuses leftover bytes: a body must be exactly as long as its layout.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes after the last field"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_frame_waits_for_the_whole_frame() {
        let mut buf = BytesMut::from(&b"Q\x00\x00\x00\x0dSELECT 1"[..]);
        assert_eq!(split_frame(&mut buf, 1024), Ok(None));
        buf.extend_from_slice(b"\0Z");
        let frame = split_frame(&mut buf, 1024)
            .expect("valid")
            .expect("complete");
        assert_eq!(frame.tag(), b'Q');
        assert_eq!(&frame.body()[..], b"SELECT 1\0");
        assert_eq!(&buf[..], b"Z");
        assert_eq!(split_frame(&mut buf, 1024), Ok(None));
    }

    #[test]
    fn split_frame_refuses_bad_and_oversized_lengths() {
        let mut short = BytesMut::from(&b"Q\x00\x00\x00\x03"[..]);
        assert_eq!(
            split_frame(&mut short, 1024),
            Err(WireError::BadLength { len: 3 })
        );
        let mut negative = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert_eq!(
            split_frame(&mut negative, 1024),
            Err(WireError::BadLength { len: -1 })
        );
        let mut huge = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(matches!(
            split_frame(&mut huge, 1 << 20),
            Err(WireError::TooLarge {
                limit: 1_048_576,
                ..
            })
        ));
        assert!(
            huge.capacity() < 1 << 20,
            "nothing reserved for a refused frame"
        );
    }

    #[test]
    fn reader_refuses_to_overrun() {
        let mut reader = Reader::new("Test", Bytes::from_static(b"ab"));
        assert!(reader.cstr().is_err());
        let mut reader = Reader::new("Test", Bytes::from_static(b"a\0\x00"));
        assert_eq!(&reader.cstr().expect("cstr")[..], b"a");
        assert!(reader.i32().is_err());
        let mut leftover = Reader::new("Test", Bytes::from_static(b"\x00\x01x"));
        assert_eq!(leftover.u16().expect("u16"), 1);
        assert!(leftover.finish().is_err());
    }
}
