//! The command a client packet carries, and the layout of the statement commands that
//! name a statement id (COM_STMT_EXECUTE, SEND_LONG_DATA, CLOSE, RESET, FETCH).

use bytes::{BufMut, Bytes, BytesMut};

use super::WireError;

/// Command bytes (`COM_*`).
pub mod code {
    /// Close the connection.
    pub const QUIT: u8 = 0x01;
    /// Change the current database.
    pub const INIT_DB: u8 = 0x02;
    /// A text query.
    pub const QUERY: u8 = 0x03;
    /// A table's columns.
    pub const FIELD_LIST: u8 = 0x04;
    /// Server statistics, as a string.
    pub const STATISTICS: u8 = 0x09;
    /// Kill a connection (deprecated form of KILL).
    pub const PROCESS_KILL: u8 = 0x0C;
    /// Is the server alive.
    pub const PING: u8 = 0x0E;
    /// Log in again, as another user.
    pub const CHANGE_USER: u8 = 0x11;
    /// Prepare a statement.
    pub const STMT_PREPARE: u8 = 0x16;
    /// Execute a prepared statement.
    pub const STMT_EXECUTE: u8 = 0x17;
    /// A parameter's data, in pieces.
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    /// Close a prepared statement.
    pub const STMT_CLOSE: u8 = 0x19;
    /// Reset a prepared statement's long data and cursor.
    pub const STMT_RESET: u8 = 0x1A;
    /// Multi-statements on or off.
    pub const SET_OPTION: u8 = 0x1B;
    /// Rows from a cursor.
    pub const STMT_FETCH: u8 = 0x1C;
    /// Reset the session's state.
    pub const RESET_CONNECTION: u8 = 0x1F;
}

/// COM_STMT_EXECUTE's flag that opens a read-only cursor.
pub const CURSOR_TYPE_READ_ONLY: u8 = 1;

/// The statement id of a COM_STMT_* packet.
pub fn statement_id(payload: &[u8]) -> Result<u32, WireError> {
    match payload.get(1..5) {
        Some(&[a, b, c, d]) => Ok(u32::from_le_bytes([a, b, c, d])),
        _ => Err(WireError::Malformed {
            packet: "statement command",
            problem: "no statement id",
        }),
    }
}

/// The same COM_STMT_* packet for statement `id`.
pub fn with_statement_id(payload: &[u8], id: u32) -> BytesMut {
    let mut out = BytesMut::from(payload);
    out[1..5].copy_from_slice(&id.to_le_bytes());
    out
}

/// The parts of a COM_STMT_EXECUTE that depend on what was executed before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execute {
    /// Cursor flags.
    pub flags: u8,
    /// The parameter types it binds, when it binds new ones.
    pub param_types: Option<Bytes>,
}

fn malformed(problem: &'static str) -> WireError {
    WireError::Malformed {
        packet: "COM_STMT_EXECUTE",
        problem,
    }
}

/// Where the new-params-bound flag of an execute of `params` parameters is.
fn bound_flag_at(params: u16) -> usize {
    10 + usize::from(params).div_ceil(8)
}

impl Execute {
    /// Reads an execute of a statement with `params` parameters.
    pub fn decode(payload: &Bytes, params: u16) -> Result<Execute, WireError> {
        let flags = *payload.get(5).ok_or_else(|| malformed("no flags"))?;
        if payload.len() < 10 {
            return Err(malformed("no iteration count"));
        }
        if params == 0 {
            return Ok(Execute {
                flags,
                param_types: None,
            });
        }
        let at = bound_flag_at(params);
        let bound = *payload
            .get(at)
            .ok_or_else(|| malformed("no new-params-bound flag"))?;
        let param_types = match bound {
            0 => None,
            _ => {
                let end = at + 1 + 2 * usize::from(params);
                if payload.len() < end {
                    return Err(malformed("no parameter types"));
                }
                Some(payload.slice(at + 1..end))
            }
        };
        Ok(Execute { flags, param_types })
    }
}

/// The execute with `types` bound, for a connection where the statement never saw them
/// (the client bound them on an earlier execute, on another connection).
pub fn execute_binding(payload: &[u8], params: u16, types: &[u8]) -> Result<BytesMut, WireError> {
    let at = bound_flag_at(params);
    if payload.get(at) != Some(&0) {
        return Err(malformed("no new-params-bound flag"));
    }
    let mut out = BytesMut::with_capacity(payload.len() + types.len());
    out.put_slice(&payload[..at]);
    out.put_u8(1);
    out.put_slice(types);
    out.put_slice(&payload[at + 1..]);
    Ok(out)
}

/// COM_CHANGE_USER: log in again, as another user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeUser {
    /// The user.
    pub user: Bytes,
    /// The authentication response (over the greeting's scramble).
    pub auth_response: Bytes,
    /// The database to start in.
    pub database: Option<Bytes>,
    /// The collation, when given.
    pub collation: Option<u16>,
}

impl ChangeUser {
    /// Decodes one sent under `capabilities`.
    pub fn decode(payload: Bytes, capabilities: u32) -> Result<ChangeUser, WireError> {
        let mut r = super::codec::Reader::new("COM_CHANGE_USER", payload);
        r.skip(1)?;
        let user = r.cstr()?;
        let auth_response = if capabilities & super::caps::SECURE_CONNECTION != 0 {
            let len = usize::from(r.u8()?);
            r.bytes(len)?
        } else {
            r.cstr()?
        };
        let database = Some(r.cstr_or_rest()).filter(|db| !db.is_empty());
        let collation = if r.is_empty() { None } else { Some(r.u16()?) };
        Ok(ChangeUser {
            user,
            auth_response,
            database,
            collation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_user_reads_its_fields() {
        let packet =
            Bytes::from_static(b"\x11app\x00\x03abcshop\x00\x08\x00mysql_native_password\x00");
        let change =
            ChangeUser::decode(packet, super::super::caps::SECURE_CONNECTION).expect("valid");
        assert_eq!(&change.user[..], b"app");
        assert_eq!(&change.auth_response[..], b"abc");
        assert_eq!(change.database.as_deref(), Some(&b"shop"[..]));
        assert_eq!(change.collation, Some(8));
        assert!(ChangeUser::decode(Bytes::from_static(b"\x11app"), 0).is_err());
    }

    #[test]
    fn execute_layout_and_rebinding() {
        let bound = Bytes::from_static(
            b"\x17\x07\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x08\x00\x03\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00",
        );
        assert_eq!(statement_id(&bound), Ok(7));
        let execute = Execute::decode(&bound, 2).expect("valid");
        let types = execute.param_types.expect("bound");
        assert_eq!(&types[..], b"\x08\x00\x03\x00");
        let unbound = Bytes::from_static(b"\x17\x07\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00");
        assert_eq!(
            Execute::decode(&unbound, 2).expect("valid").param_types,
            None
        );
        let rebound = execute_binding(&unbound, 2, &types).expect("valid");
        assert_eq!(&rebound[..], &bound[..]);
        assert_eq!(&with_statement_id(&bound, 9)[1..5], &[9, 0, 0, 0]);
        assert!(
            Execute::decode(
                &Bytes::from_static(b"\x17\x07\x00\x00\x00\x00\x01\x00\x00\x00"),
                2
            )
            .is_err()
        );
    }
}
