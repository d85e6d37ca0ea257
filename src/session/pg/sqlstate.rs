//! The one mapping of warpdrive's error kinds to SQLSTATE (PostgreSQL appendix A), and
//! their ErrorResponse.

use bytes::BytesMut;

use crate::pool::pg::PgPoolError;
use crate::session::error::{ClientError, ErrorKind, Severity};
use crate::wire::pg::encode;

/// The SQLSTATE of a kind.
pub fn sqlstate(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::OriginLost => "08006",
        ErrorKind::CannotConnect => "08001",
        ErrorKind::ProtocolViolation => "08P01",
        ErrorKind::NotSupported => "0A000",
        ErrorKind::InvalidAuthorization => "28000",
        ErrorKind::InvalidPassword => "28P01",
        ErrorKind::UnknownDatabase => "3D000",
        ErrorKind::DuplicateStatement => "42P05",
        ErrorKind::UnknownStatement => "26000",
        ErrorKind::UnknownSetting | ErrorKind::UnknownConnection => "42704",
        ErrorKind::InvalidValue => "22023",
        ErrorKind::SettingFixed => "55P02",
        ErrorKind::PermissionDenied => "42501",
        ErrorKind::QueryCanceled => "57014",
        ErrorKind::ShuttingDown => "57P01",
        ErrorKind::Unavailable => "58000",
    }
}

/// The kind of the origin's refusal of a setting, when its SQLSTATE is about the
/// setting (unknown, invalid, fixed, not allowed).
pub fn setting_refusal(code: &[u8]) -> Option<ErrorKind> {
    [
        ErrorKind::UnknownSetting,
        ErrorKind::InvalidValue,
        ErrorKind::SettingFixed,
        ErrorKind::PermissionDenied,
    ]
    .into_iter()
    .find(|kind| sqlstate(*kind).as_bytes() == code)
}

/// internal_error, as the origin reports some failures warpdrive recognises.
pub const ORIGIN_INTERNAL_ERROR: &[u8] = b"XX000";

/// The ErrorResponse of a client error.
pub trait ErrorResponse {
    /// Appends it to `buf`.
    fn encode(&self, buf: &mut BytesMut);
}

impl ErrorResponse for ClientError {
    fn encode(&self, buf: &mut BytesMut) {
        let severity = match self.severity {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        encode::error_response(
            buf,
            severity,
            sqlstate(self.kind),
            &self.message,
            self.hint.as_deref(),
        );
    }
}

/// A failed checkout of a PostgreSQL origin connection.
pub fn from_pool(error: &PgPoolError) -> ClientError {
    ClientError::from_pool(error, ClientError::from_origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_postgresqls() {
        assert_eq!(sqlstate(ErrorKind::OriginLost), "08006");
        assert_eq!(sqlstate(ErrorKind::ShuttingDown), "57P01");
        assert_eq!(setting_refusal(b"42501"), Some(ErrorKind::PermissionDenied));
        assert_eq!(setting_refusal(b"57014"), None);
        let mut buf = BytesMut::new();
        ClientError::fatal(ErrorKind::InvalidPassword, "no")
            .hint("retry")
            .encode(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains("SFATAL") && text.contains("C28P01") && text.contains("Hretry"));
    }
}
