//! SQLSTATE codes warpdrive uses, and the one place where its own failures become
//! ErrorResponse messages for a client. Errors from the origin are never rewritten here:
//! they pass through with all their fields.

use bytes::BytesMut;

use crate::pool::pg::{OriginError, PgPoolError as PoolError};
use crate::wire::pg::encode;

/// SQLSTATE codes (PostgreSQL appendix A).
pub mod sqlstate {
    /// connection_failure.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// sqlclient_unable_to_establish_sqlconnection.
    pub const UNABLE_TO_CONNECT: &str = "08001";
    /// protocol_violation.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// feature_not_supported.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// invalid_authorization_specification.
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// invalid_password.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// invalid_catalog_name (unknown database).
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    /// duplicate_prepared_statement.
    pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
    /// invalid_sql_statement_name (unknown prepared statement).
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    /// too_many_connections.
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// query_canceled.
    pub const QUERY_CANCELED: &str = "57014";
    /// admin_shutdown.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// system_error: warpdrive's own faults.
    pub const SYSTEM_ERROR: &str = "58000";
    /// undefined_object (an unknown setting).
    pub const UNDEFINED_OBJECT: &str = "42704";
    /// invalid_parameter_value.
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    /// cant_change_runtime_param (a setting fixed at server start).
    pub const CANT_CHANGE_RUNTIME_PARAM: &str = "55P02";
    /// insufficient_privilege.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// internal_error.
    pub const INTERNAL_ERROR: &str = "XX000";
}

/// Severity of an error warpdrive sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error warpdrive itself reports to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError {
    /// ERROR or FATAL.
    pub severity: Severity,
    /// SQLSTATE.
    pub code: &'static str,
    /// What happened.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl ClientError {
    /// An ERROR.
    pub fn error(code: &'static str, message: impl Into<String>) -> ClientError {
        ClientError {
            severity: Severity::Error,
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// A FATAL error: the client's connection ends after it.
    pub fn fatal(code: &'static str, message: impl Into<String>) -> ClientError {
        ClientError {
            severity: Severity::Fatal,
            ..ClientError::error(code, message)
        }
    }

    /// With a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> ClientError {
        self.hint = Some(hint.into());
        self
    }

    /// Appends the ErrorResponse.
    pub fn encode(&self, buf: &mut BytesMut) {
        encode::error_response(
            buf,
            self.severity.name(),
            self.code,
            &self.message,
            self.hint.as_deref(),
        );
    }

    /// A failed checkout.
    pub fn from_pool(error: &PoolError) -> ClientError {
        match error {
            PoolError::Timeout { waited } => ClientError::error(sqlstate::SYSTEM_ERROR, error.to_string()).hint(format!(
                "all origin connections stayed busy for {:.1}s; retry, or raise pool.max_size or pool.acquire_timeout",
                waited.as_secs_f64()
            )),
            PoolError::Origin(origin) => ClientError::from_origin(origin),
            PoolError::Closed => ClientError::fatal(sqlstate::ADMIN_SHUTDOWN, "warpdrive is shutting down"),
        }
    }

    /// A failure to open an origin connection.
    pub fn from_origin(error: &OriginError) -> ClientError {
        let code = match error {
            OriginError::UnknownDatabase { .. } => sqlstate::INVALID_CATALOG_NAME,
            OriginError::Resolve { .. }
            | OriginError::Connect { .. }
            | OriginError::Timeout { .. } => sqlstate::UNABLE_TO_CONNECT,
            _ => sqlstate::SYSTEM_ERROR,
        };
        ClientError::error(code, format!("warpdrive could not open an origin connection: {error}"))
            .hint("check that the origin is up and that the origin URL's credentials are right (warpdrive validate)")
    }

    /// An origin connection that failed while a request was in flight.
    pub fn origin_lost(error: impl std::fmt::Display) -> ClientError {
        ClientError::error(
            sqlstate::CONNECTION_FAILURE,
            format!("the origin connection was lost while running this request: {error}"),
        )
        .hint("the request may or may not have been applied; warpdrive does not retry it. Check, then retry.")
    }
}
