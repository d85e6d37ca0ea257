//! MySQL client/server protocol 4.1+ (MariaDB included).
//!
//! - [`Packet`] and [`MysqlFraming`]: packets with their sequence ids, the 16 MiB
//!   continuation packets joined into one payload; [`write_packet`] splits them again.
//! - [`codec`]: length-encoded integers and strings, and a reader that refuses to overrun.
//! - [`handshake`]: the server's greeting (v10), the client's response, SSL request and
//!   auth switch.
//! - [`reply`]: OK, ERR and EOF packets, the session state changes an OK reports, and
//!   the layout of result sets and prepared-statement replies.
//! - [`command`]: the command a client packet carries, and COM_STMT_EXECUTE's layout.
//!
//! Reference: the MySQL client/server protocol documentation and MariaDB's.

pub mod binary;
pub mod codec;
pub mod column;
pub mod command;
pub mod handshake;
pub mod reply;
pub mod response;

use bytes::{Bytes, BytesMut};

/// The largest payload one physical packet holds; a payload of exactly this length is
/// continued in the next packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// A packet's header: three bytes of length, one of sequence id.
pub const HEADER_LEN: usize = 4;

/// Capability flags (`CLIENT_*`).
pub mod caps {
    /// New, longer passwords (MariaDB reads it as "a MySQL client").
    pub const LONG_PASSWORD: u32 = 1;
    /// Affected rows count matched rows, not changed ones.
    pub const FOUND_ROWS: u32 = 1 << 1;
    /// All column flags.
    pub const LONG_FLAG: u32 = 1 << 2;
    /// A database may be named in the handshake response.
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    /// Compression (never offered).
    pub const COMPRESS: u32 = 1 << 5;
    /// LOAD DATA LOCAL is allowed.
    pub const LOCAL_FILES: u32 = 1 << 7;
    /// Protocol 4.1.
    pub const PROTOCOL_41: u32 = 1 << 9;
    /// TLS after the SSL request.
    pub const SSL: u32 = 1 << 11;
    /// Transaction status in OK and EOF packets.
    pub const TRANSACTIONS: u32 = 1 << 13;
    /// 4.1 authentication.
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    /// Several statements in one COM_QUERY.
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    /// Several result sets per COM_QUERY.
    pub const MULTI_RESULTS: u32 = 1 << 17;
    /// Several result sets per COM_STMT_EXECUTE.
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    /// Authentication plugins.
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    /// Connection attributes in the handshake response.
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    /// The auth response is length-encoded.
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    /// Session state changes in OK packets.
    pub const SESSION_TRACK: u32 = 1 << 23;
    /// OK packets replace EOF packets.
    pub const DEPRECATE_EOF: u32 = 1 << 24;

    /// What warpdrive speaks, both as a client and as a server (SSL and FOUND_ROWS
    /// besides, where they apply).
    pub const SPOKEN: u32 = LONG_PASSWORD
        | LONG_FLAG
        | CONNECT_WITH_DB
        | LOCAL_FILES
        | PROTOCOL_41
        | TRANSACTIONS
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_CLIENT_DATA
        | SESSION_TRACK
        | DEPRECATE_EOF;
}

/// Server status flags (`SERVER_STATUS_*`, `SERVER_MORE_RESULTS_EXISTS`, …).
pub mod status {
    /// A transaction is open.
    pub const IN_TRANS: u16 = 1;
    /// Autocommit is on.
    pub const AUTOCOMMIT: u16 = 1 << 1;
    /// Another result follows.
    pub const MORE_RESULTS_EXISTS: u16 = 1 << 3;
    /// A cursor is open for the statement.
    pub const CURSOR_EXISTS: u16 = 1 << 6;
    /// The cursor's last row was sent.
    pub const LAST_ROW_SENT: u16 = 1 << 7;
    /// The open transaction is read-only.
    pub const IN_TRANS_READONLY: u16 = 1 << 13;
    /// The session's state changed; the OK packet says how.
    pub const SESSION_STATE_CHANGED: u16 = 1 << 14;
}

/// Errors in bytes received from a peer. Each ends that peer's connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A packet (with its continuations) above the configured limit.
    #[error("packet of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The length declared so far.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A packet whose payload does not match its type's layout.
    #[error("malformed {packet} packet: {problem}")]
    Malformed {
        /// The packet's protocol name.
        packet: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// A packet out of sequence.
    #[error("packet sequence id {got} where {expected} was due")]
    OutOfSequence {
        /// The id received.
        got: u8,
        /// The id due.
        expected: u8,
    },
}

/// One logical packet: its first sequence id and its whole payload (continuations
/// joined).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The sequence id of its first physical packet.
    pub seq: u8,
    /// How many physical packets it took (one, unless it reached 16 MiB).
    pub parts: u8,
    /// The payload.
    pub payload: Bytes,
}

impl Packet {
    /// The first payload byte (the packet's type, for most), or `None` when empty.
    pub fn first(&self) -> Option<u8> {
        self.payload.first().copied()
    }

    /// The sequence id the peer's next packet carries.
    pub fn next_seq(&self) -> u8 {
        self.seq.wrapping_add(self.parts)
    }
}

/// MySQL's framing: a three-byte length, a sequence id, a payload.
#[derive(Debug)]
pub struct MysqlFraming;

impl super::Framing for MysqlFraming {
    type Frame = Packet;
    type Error = WireError;

    fn split(buf: &mut BytesMut, limit: usize) -> Result<Option<Packet>, WireError> {
        split_packet(buf, limit)
    }

    fn holds_whole(buf: &[u8]) -> bool {
        whole_len(buf, usize::MAX).is_ok_and(|whole| whole.is_some())
    }
}

fn declared_len(header: &[u8]) -> usize {
    usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16
}

/// The length on the wire of the logical packet at the front of `buf`, with its
/// continuations, if all of it is there; its physical packets, and the payload length.
fn whole_len(buf: &[u8], limit: usize) -> Result<Option<(usize, u8, usize)>, WireError> {
    let mut at = 0;
    let mut payload = 0;
    let mut parts: u8 = 0;
    loop {
        let Some(header) = buf.get(at..at + HEADER_LEN) else {
            return Ok(None);
        };
        let len = declared_len(header);
        payload += len;
        if payload > limit {
            return Err(WireError::TooLarge {
                len: payload,
                limit,
            });
        }
        at += HEADER_LEN + len;
        parts = parts.wrapping_add(1);
        if buf.len() < at {
            return Ok(None);
        }
        if len < MAX_PAYLOAD {
            return Ok(Some((at, parts, payload)));
        }
    }
}

/// Splits one logical packet off the front of `buf`; `Ok(None)` when more bytes are
/// needed. The payload, with its continuations, is checked against `limit` before memory
/// is reserved for it.
pub fn split_packet(buf: &mut BytesMut, limit: usize) -> Result<Option<Packet>, WireError> {
    let Some((wire_len, parts, payload_len)) = whole_len(buf, limit)? else {
        if let Some(header) = buf.get(..HEADER_LEN) {
            let len = declared_len(header);
            buf.reserve((HEADER_LEN + len).saturating_sub(buf.len()));
        }
        return Ok(None);
    };
    let seq = buf[3];
    let mut raw = buf.split_to(wire_len);
    if parts == 1 {
        let _ = raw.split_to(HEADER_LEN);
        return Ok(Some(Packet {
            seq,
            parts,
            payload: raw.freeze(),
        }));
    }
    let mut payload = BytesMut::with_capacity(payload_len);
    while !raw.is_empty() {
        let len = declared_len(&raw[..HEADER_LEN]);
        let _ = raw.split_to(HEADER_LEN);
        payload.extend_from_slice(&raw.split_to(len));
    }
    Ok(Some(Packet {
        seq,
        parts,
        payload: payload.freeze(),
    }))
}

/// Appends `payload` as packets from sequence id `seq`, split at 16 MiB (a payload of a
/// multiple of 16 MiB ends with an empty packet); returns the next sequence id.
pub fn write_packet(out: &mut BytesMut, seq: u8, payload: &[u8]) -> u8 {
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let len = rest.len().min(MAX_PAYLOAD);
        let (part, tail) = rest.split_at(len);
        out.reserve(HEADER_LEN + len);
        out.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
        out.extend_from_slice(&[seq]);
        out.extend_from_slice(part);
        seq = seq.wrapping_add(1);
        rest = tail;
        if len < MAX_PAYLOAD {
            return seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Framing;

    fn framed(seq: u8, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        write_packet(&mut out, seq, payload);
        out
    }

    #[test]
    fn splits_one_packet_and_waits_for_the_rest() {
        let mut buf = framed(3, b"\x03SELECT 1");
        let tail = buf.split_off(6);
        assert_eq!(split_packet(&mut buf, 1024), Ok(None));
        buf.extend_from_slice(&tail);
        buf.extend_from_slice(b"\x01\x00");
        let packet = split_packet(&mut buf, 1024).expect("valid").expect("whole");
        assert_eq!((packet.seq, packet.parts), (3, 1));
        assert_eq!(&packet.payload[..], b"\x03SELECT 1");
        assert_eq!(packet.next_seq(), 4);
        assert_eq!(split_packet(&mut buf, 1024), Ok(None));
    }

    #[test]
    fn joins_and_splits_sixteen_mebibyte_payloads() {
        for len in [
            MAX_PAYLOAD - 1,
            MAX_PAYLOAD,
            MAX_PAYLOAD + 5,
            2 * MAX_PAYLOAD,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut buf = framed(0, &payload);
            let parts = len / MAX_PAYLOAD + 1;
            assert_eq!(buf.len(), len + parts * HEADER_LEN, "{len}");
            assert!(MysqlFraming::holds_whole(&buf));
            assert!(!MysqlFraming::holds_whole(&buf[..buf.len() - 1]));
            let packet = split_packet(&mut buf, 64 << 20)
                .expect("valid")
                .expect("whole");
            assert_eq!(packet.payload.len(), len);
            assert!(packet.payload[..] == payload[..], "{len}");
            assert_eq!(usize::from(packet.parts), parts);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn refuses_oversized_packets_before_reserving() {
        let mut buf = BytesMut::from(&b"\xff\xff\xff\x00"[..]);
        assert_eq!(
            split_packet(&mut buf, 1 << 20),
            Err(WireError::TooLarge {
                len: MAX_PAYLOAD,
                limit: 1 << 20
            })
        );
        assert!(buf.capacity() < 1 << 20);
    }
}
