//! Sans-I/O wire protocols: framing, decoding into `Bytes`-backed types, and encoding of
//! the messages warpdrive synthesises.
//!
//! Nothing here reads a socket, logs, or knows about sessions, SQL or the cache: decoders
//! take a `BytesMut` and return `Ok(None)` when they need more bytes; encoders append to a
//! `BytesMut`. Every length a peer declares is checked against a cap before memory is
//! reserved for it.

pub mod mysql;
pub mod pg;

use bytes::BytesMut;

/// How one protocol cuts a byte stream into messages.
pub trait Framing {
    /// One message.
    type Frame;
    /// Why bytes are not a message.
    type Error;
    /// Splits one message off the front of `buf`; `Ok(None)` when more bytes are
    /// needed. A message above `limit` bytes is refused before memory is reserved for it.
    fn split(buf: &mut BytesMut, limit: usize) -> Result<Option<Self::Frame>, Self::Error>;
    /// Whether `buf` starts with a whole message.
    fn holds_whole(buf: &[u8]) -> bool;
}
