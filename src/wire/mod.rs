//! Sans-I/O wire protocols: framing, decoding into `Bytes`-backed types, and encoding of
//! the messages warpdrive synthesises.
//!
//! Nothing here reads a socket, logs, or knows about sessions, SQL or the cache: decoders
//! take a `BytesMut` and return `Ok(None)` when they need more bytes; encoders append to a
//! `BytesMut`. Every length a peer declares is checked against a cap before memory is
//! reserved for it.

pub mod pg;
