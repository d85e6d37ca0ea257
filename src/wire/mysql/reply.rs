//! What a server answers: OK, ERR and EOF packets, the session state changes an OK
//! reports, the reply to COM_STMT_PREPARE, and how to tell a result set's terminator
//! from a row.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{Reader, put_lenenc, put_lenenc_bytes};
use super::{MAX_PAYLOAD, WireError, caps, status};

/// The first byte of an OK packet.
pub const OK: u8 = 0x00;
/// The first byte of an EOF packet, and of an OK that ends a result set under
/// CLIENT_DEPRECATE_EOF.
pub const EOF: u8 = 0xFE;
/// The first byte of an ERR packet.
pub const ERR: u8 = 0xFF;
/// The first byte of a LOCAL INFILE request.
pub const LOCAL_INFILE: u8 = 0xFB;

/// An OK packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OkPacket {
    /// 0x00, or 0xFE where it ends a result set.
    pub header: u8,
    /// Rows the statement affected.
    pub affected_rows: u64,
    /// The id an AUTO_INCREMENT column got.
    pub last_insert_id: u64,
    /// Status flags.
    pub status: u16,
    /// Warnings.
    pub warnings: u16,
    /// Human-readable information.
    pub info: Bytes,
    /// The session state changes (under CLIENT_SESSION_TRACK, with the status flag).
    pub session_state: Option<Bytes>,
}

impl OkPacket {
    /// Decodes one as a peer that negotiated `capabilities` receives it.
    pub fn decode(payload: Bytes, capabilities: u32) -> Result<OkPacket, WireError> {
        let mut r = Reader::new("OK", payload);
        let header = r.u8()?;
        let affected_rows = r.lenenc()?;
        let last_insert_id = r.lenenc()?;
        let status = r.u16()?;
        let warnings = r.u16()?;
        let mut ok = OkPacket {
            header,
            affected_rows,
            last_insert_id,
            status,
            warnings,
            ..OkPacket::default()
        };
        if capabilities & caps::SESSION_TRACK == 0 {
            ok.info = untracked_info(r.rest());
            return Ok(ok);
        }
        if !r.is_empty() {
            ok.info = r.lenenc_bytes()?;
        }
        if status & status::SESSION_STATE_CHANGED != 0 && !r.is_empty() {
            ok.session_state = Some(r.lenenc_bytes()?);
        }
        Ok(ok)
    }

    /// Encodes it for a peer that negotiated `capabilities`: without CLIENT_SESSION_TRACK
    /// the state changes are left out, and so is their flag.
    pub fn encode(&self, capabilities: u32) -> BytesMut {
        let mut out = BytesMut::with_capacity(16 + self.info.len());
        out.put_u8(self.header);
        put_lenenc(&mut out, self.affected_rows);
        put_lenenc(&mut out, self.last_insert_id);
        let tracked = capabilities & caps::SESSION_TRACK != 0;
        let mut flags = self.status;
        if !tracked || self.session_state.is_none() {
            flags &= !status::SESSION_STATE_CHANGED;
        }
        out.put_u16_le(flags);
        out.put_u16_le(self.warnings);
        if !tracked {
            // As servers write it (the documentation says string<EOF>, and readers
            // accept both).
            if !self.info.is_empty() {
                put_lenenc_bytes(&mut out, &self.info);
            }
            return out;
        }
        if self.info.is_empty() && self.session_state.is_none() {
            return out;
        }
        put_lenenc_bytes(&mut out, &self.info);
        if let Some(state) = &self.session_state {
            put_lenenc_bytes(&mut out, state);
        }
        out
    }

    /// The session state changes it reports.
    pub fn state_changes(&self) -> Result<Vec<StateChange>, WireError> {
        match &self.session_state {
            Some(state) => StateChange::decode_all(state.clone()),
            None => Ok(Vec::new()),
        }
    }
}

/// The info of an OK without session tracking: length-encoded, as servers write it,
/// or the plain rest of the packet, as the documentation has it.
fn untracked_info(rest: Bytes) -> Bytes {
    let mut r = Reader::new("OK", rest.clone());
    match r.lenenc_bytes() {
        Ok(info) if r.is_empty() => info,
        _ => rest,
    }
}

/// One session state change an OK packet reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange {
    /// A system variable and its new value.
    Variable {
        /// Its name.
        name: Bytes,
        /// Its value, as the server prints it.
        value: Bytes,
    },
    /// The current database.
    Schema(Bytes),
    /// Some other state changed (user variables, temporary tables, prepared statements…).
    State,
    /// Transaction characteristics or state, GTIDs: informational.
    Other(u8),
}

impl StateChange {
    const SYSTEM_VARIABLES: u8 = 0;
    const SCHEMA: u8 = 1;
    const STATE_CHANGE: u8 = 2;

    fn decode_all(state: Bytes) -> Result<Vec<StateChange>, WireError> {
        let mut r = Reader::new("session state", state);
        let mut changes = Vec::new();
        while !r.is_empty() {
            let kind = r.u8()?;
            let mut data = Reader::new("session state", r.lenenc_bytes()?);
            changes.push(match kind {
                Self::SYSTEM_VARIABLES => StateChange::Variable {
                    name: data.lenenc_bytes()?,
                    value: data.lenenc_bytes()?,
                },
                Self::SCHEMA => StateChange::Schema(data.lenenc_bytes()?),
                Self::STATE_CHANGE => StateChange::State,
                other => StateChange::Other(other),
            });
        }
        Ok(changes)
    }
}

/// An ERR packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrPacket {
    /// The error number.
    pub code: u16,
    /// The SQLSTATE.
    pub sql_state: [u8; 5],
    /// The message.
    pub message: Bytes,
}

impl ErrPacket {
    /// Decodes one (protocol 4.1).
    pub fn decode(payload: Bytes) -> Result<ErrPacket, WireError> {
        let mut r = Reader::new("ERR", payload);
        if r.u8()? != ERR {
            return Err(r.malformed("not an ERR packet"));
        }
        let code = r.u16()?;
        let mut sql_state = *b"HY000";
        let rest = r.rest();
        let message = if rest.first() == Some(&b'#') && rest.len() >= 6 {
            sql_state.copy_from_slice(&rest[1..6]);
            rest.slice(6..)
        } else {
            rest
        };
        Ok(ErrPacket {
            code,
            sql_state,
            message,
        })
    }

    /// Encodes it as a server sends it before the handshake, when it cannot know yet
    /// that the client speaks 4.1: without the SQLSTATE.
    pub fn encode_before_handshake(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(3 + self.message.len());
        out.put_u8(ERR);
        out.put_u16_le(self.code);
        out.put_slice(&self.message);
        out
    }

    /// Encodes it.
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(9 + self.message.len());
        out.put_u8(ERR);
        out.put_u16_le(self.code);
        out.put_u8(b'#');
        out.put_slice(&self.sql_state);
        out.put_slice(&self.message);
        out
    }
}

/// An EOF packet (protocol 4.1): its warnings and status flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EofPacket {
    /// Warnings.
    pub warnings: u16,
    /// Status flags.
    pub status: u16,
}

impl EofPacket {
    /// Decodes one.
    pub fn decode(payload: Bytes) -> Result<EofPacket, WireError> {
        let mut r = Reader::new("EOF", payload);
        if r.u8()? != EOF {
            return Err(r.malformed("not an EOF packet"));
        }
        Ok(EofPacket {
            warnings: r.u16()?,
            status: r.u16()?,
        })
    }

    /// Encodes it.
    pub fn encode(&self) -> [u8; 5] {
        let [w0, w1] = self.warnings.to_le_bytes();
        let [s0, s1] = self.status.to_le_bytes();
        [EOF, w0, w1, s0, s1]
    }
}

/// Where the status flags are in an EOF packet's payload, or in an OK packet's (`ok`):
/// behind the header, or behind the header and two length-encoded integers.
pub fn status_offset(payload: &[u8], ok: bool) -> Option<usize> {
    let lenenc_len = |at: usize| match payload.get(at)? {
        0xFC => Some(3),
        0xFD => Some(4),
        0xFE => Some(9),
        _ => Some(1),
    };
    let at = match ok {
        false => 3,
        true => {
            let affected = 1 + lenenc_len(1)?;
            affected + lenenc_len(affected)?
        }
    };
    (payload.len() >= at + 2).then_some(at)
}

/// Whether a packet inside a result set is its terminator (an EOF, or the OK that
/// replaces it) rather than a row: a row that starts with 0xFE is at least 16 MiB.
pub fn ends_rows(payload: &[u8]) -> bool {
    payload.first() == Some(&EOF) && payload.len() < MAX_PAYLOAD
}

/// The first packet of a reply to COM_STMT_PREPARE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareOk {
    /// The statement id.
    pub statement_id: u32,
    /// Result columns.
    pub columns: u16,
    /// Parameters.
    pub params: u16,
    /// Warnings.
    pub warnings: u16,
}

impl PrepareOk {
    /// Decodes one.
    pub fn decode(payload: Bytes) -> Result<PrepareOk, WireError> {
        let mut r = Reader::new("COM_STMT_PREPARE OK", payload);
        if r.u8()? != OK {
            return Err(r.malformed("not an OK packet"));
        }
        let statement_id = r.u32()?;
        let columns = r.u16()?;
        let params = r.u16()?;
        r.skip(1)?;
        let warnings = if r.is_empty() { 0 } else { r.u16()? };
        Ok(PrepareOk {
            statement_id,
            columns,
            params,
            warnings,
        })
    }

    /// Encodes it.
    pub fn encode(&self) -> [u8; 12] {
        let mut out = [0; 12];
        out[1..5].copy_from_slice(&self.statement_id.to_le_bytes());
        out[5..7].copy_from_slice(&self.columns.to_le_bytes());
        out[7..9].copy_from_slice(&self.params.to_le_bytes());
        out[10..12].copy_from_slice(&self.warnings.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_flags_are_found_in_eof_and_ok_packets() {
        assert_eq!(status_offset(b"\xfe\x01\x00\x02\x00", false), Some(3));
        assert_eq!(
            status_offset(b"\xfe\x00\x00\x02\x00\x00\x00", true),
            Some(3)
        );
        // Affected rows 300 (0xFC, two bytes), insert id 0.
        assert_eq!(
            status_offset(b"\x00\xfc\x2c\x01\x00\x02\x00\x00\x00", true),
            Some(5)
        );
        assert_eq!(status_offset(b"\xfe\x00", false), None);
    }

    const TRACKED: u32 = caps::PROTOCOL_41 | caps::SESSION_TRACK;

    fn state(entries: &[(u8, &[&[u8]])]) -> Bytes {
        let mut out = BytesMut::new();
        for (kind, fields) in entries {
            let mut data = BytesMut::new();
            for field in *fields {
                put_lenenc_bytes(&mut data, field);
            }
            out.put_u8(*kind);
            put_lenenc_bytes(&mut out, &data);
        }
        out.freeze()
    }

    #[test]
    fn ok_reports_session_state_changes() {
        let ok = OkPacket {
            header: OK,
            affected_rows: 3,
            last_insert_id: 300,
            status: status::AUTOCOMMIT | status::SESSION_STATE_CHANGED,
            warnings: 1,
            info: Bytes::from_static(b"Rows matched: 3"),
            session_state: Some(state(&[
                (0, &[b"sql_mode", b"ANSI"]),
                (1, &[b"shop"]),
                (2, &[b"1"]),
                (5, &[b"T_______"]),
            ])),
        };
        let decoded = OkPacket::decode(ok.encode(TRACKED).freeze(), TRACKED).expect("valid");
        assert_eq!(decoded, ok);
        assert_eq!(
            decoded.state_changes().expect("valid"),
            vec![
                StateChange::Variable {
                    name: Bytes::from_static(b"sql_mode"),
                    value: Bytes::from_static(b"ANSI")
                },
                StateChange::Schema(Bytes::from_static(b"shop")),
                StateChange::State,
                StateChange::Other(5),
            ]
        );
    }

    #[test]
    fn ok_for_an_untracked_client_drops_the_state_and_its_flag() {
        let ok = OkPacket {
            header: OK,
            status: status::AUTOCOMMIT | status::SESSION_STATE_CHANGED,
            info: Bytes::from_static(b"done"),
            session_state: Some(state(&[(1, &[b"shop"])])),
            ..OkPacket::default()
        };
        let plain = caps::PROTOCOL_41;
        let decoded = OkPacket::decode(ok.encode(plain).freeze(), plain).expect("valid");
        assert_eq!(decoded.status, status::AUTOCOMMIT);
        assert_eq!(&decoded.info[..], b"done");
        assert_eq!(decoded.session_state, None);
        let bare = OkPacket::decode(Bytes::from_static(b"\x00\x00\x00\x02\x00\x00\x00"), TRACKED);
        assert_eq!(bare.expect("valid").status, status::AUTOCOMMIT);
    }

    #[test]
    fn err_and_eof_round_trip() {
        let err = ErrPacket {
            code: 1045,
            sql_state: *b"28000",
            message: Bytes::from_static(b"Access denied"),
        };
        assert_eq!(
            ErrPacket::decode(err.encode().freeze()).expect("valid"),
            err
        );
        let eof = EofPacket {
            warnings: 2,
            status: status::IN_TRANS,
        };
        assert_eq!(
            EofPacket::decode(Bytes::copy_from_slice(&eof.encode())),
            Ok(eof)
        );
        assert!(ends_rows(&eof.encode()));
        assert!(!ends_rows(b"\x00\x01"));
        let prepare = PrepareOk {
            statement_id: 7,
            columns: 2,
            params: 1,
            warnings: 0,
        };
        assert_eq!(
            PrepareOk::decode(Bytes::copy_from_slice(&prepare.encode())),
            Ok(prepare)
        );
    }
}
