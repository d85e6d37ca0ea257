//! The one mapping of warpdrive's neutral error kinds to MySQL error numbers and
//! SQLSTATEs, and the ERR packet that carries them.

use bytes::Bytes;

use crate::session::error::{ClientError, ErrorKind};
use crate::wire::mysql::reply::ErrPacket;

/// The error number and SQLSTATE of a kind.
pub fn code(kind: ErrorKind) -> (u16, &'static [u8; 5]) {
    match kind {
        // CR_SERVER_LOST: what clients say when the server goes mid-query.
        ErrorKind::OriginLost => (2013, b"HY000"),
        // CR_CONN_HOST_ERROR
        ErrorKind::CannotConnect => (2003, b"HY000"),
        // ER_UNKNOWN_COM_ERROR
        ErrorKind::ProtocolViolation => (1047, b"08S01"),
        // ER_NOT_SUPPORTED_YET
        ErrorKind::NotSupported => (1235, b"42000"),
        // ER_ACCESS_DENIED_ERROR
        ErrorKind::InvalidAuthorization | ErrorKind::InvalidPassword => (1045, b"28000"),
        // ER_BAD_DB_ERROR
        ErrorKind::UnknownDatabase => (1049, b"42000"),
        // ER_UNKNOWN_STMT_HANDLER
        ErrorKind::DuplicateStatement | ErrorKind::UnknownStatement => (1243, b"HY000"),
        // ER_UNKNOWN_SYSTEM_VARIABLE
        ErrorKind::UnknownSetting => (1193, b"HY000"),
        // ER_NO_SUCH_THREAD
        ErrorKind::UnknownConnection => (1094, b"HY000"),
        // ER_WRONG_VALUE_FOR_VAR
        ErrorKind::InvalidValue => (1231, b"42000"),
        // ER_INCORRECT_GLOBAL_LOCAL_VAR
        ErrorKind::SettingFixed => (1238, b"HY000"),
        // ER_SPECIFIC_ACCESS_DENIED_ERROR
        ErrorKind::PermissionDenied => (1227, b"42000"),
        // ER_QUERY_INTERRUPTED
        ErrorKind::QueryCanceled => (1317, b"70100"),
        // ER_SERVER_SHUTDOWN
        ErrorKind::ShuttingDown => (1053, b"08S01"),
        // ER_CON_COUNT_ERROR: every origin connection busy.
        ErrorKind::Unavailable => (1040, b"08004"),
    }
}

/// The ERR packet of an error warpdrive reports; the hint follows the message, as
/// MySQL has no field of its own for it.
pub fn err_packet(error: &ClientError) -> ErrPacket {
    let (code, state) = code(error.kind);
    let message = match &error.hint {
        Some(hint) => format!("{} ({hint})", error.message),
        None => error.message.clone(),
    };
    ErrPacket {
        code,
        sql_state: *state,
        message: Bytes::from(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_mysqls() {
        assert_eq!(code(ErrorKind::InvalidPassword), (1045, b"28000"));
        assert_eq!(code(ErrorKind::Unavailable).0, 1040);
        let packet = err_packet(&ClientError::error(ErrorKind::Unavailable, "busy").hint("retry"));
        assert_eq!(&packet.message[..], b"busy (retry)");
        assert_eq!(&packet.sql_state, b"08004");
    }
}
