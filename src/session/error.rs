//! The errors warpdrive itself reports to a client, in neutral terms: a kind, a message
//! and a hint. Each protocol has one exhaustive mapping of the kinds to its own codes
//! (PostgreSQL's SQLSTATE in `session::pg::sqlstate`). Errors from the origin are never
//! rewritten: they pass through with all their fields.

use std::time::Duration;

use crate::pool::PoolError;
use crate::pool::origin::OriginError;

/// What went wrong, whatever the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The origin connection failed while a request was in flight.
    OriginLost,
    /// No origin connection could be opened.
    CannotConnect,
    /// The client sent something that is not the protocol.
    ProtocolViolation,
    /// The client asked for something warpdrive does not support.
    NotSupported,
    /// The client may not log in as it asked (unknown user, method, …).
    InvalidAuthorization,
    /// The client's password is wrong.
    InvalidPassword,
    /// The database does not exist (or the client may not use it).
    UnknownDatabase,
    /// A prepared statement of that name exists already.
    DuplicateStatement,
    /// No prepared statement of that name exists.
    UnknownStatement,
    /// An unknown setting.
    UnknownSetting,
    /// No connection has that id (KILL).
    UnknownConnection,
    /// A setting's value is invalid.
    InvalidValue,
    /// A setting that cannot change now.
    SettingFixed,
    /// The origin user may not do it.
    PermissionDenied,
    /// The request was cancelled.
    QueryCanceled,
    /// warpdrive is shutting down.
    ShuttingDown,
    /// warpdrive could not do its part: every connection busy, a setting that can no
    /// longer be restored.
    Unavailable,
}

/// Severity of an error warpdrive sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

/// An error warpdrive itself reports to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError {
    /// Whether the session goes on.
    pub severity: Severity,
    /// What went wrong.
    pub kind: ErrorKind,
    /// What happened.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl ClientError {
    /// An error; the session goes on.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> ClientError {
        ClientError {
            severity: Severity::Error,
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// A fatal error: the client's connection ends after it.
    pub fn fatal(kind: ErrorKind, message: impl Into<String>) -> ClientError {
        ClientError {
            severity: Severity::Fatal,
            ..ClientError::error(kind, message)
        }
    }

    /// With a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> ClientError {
        self.hint = Some(hint.into());
        self
    }

    /// A failed checkout; `origin` says why a connection could not be opened.
    pub fn from_pool<E>(error: &PoolError<E>, origin: impl FnOnce(&E) -> ClientError) -> ClientError
    where
        E: std::error::Error,
    {
        match error {
            PoolError::Timeout { waited } => {
                ClientError::error(ErrorKind::Unavailable, error.to_string())
                    .hint(busy_hint(*waited))
            }
            PoolError::Origin(cause) => origin(cause),
            PoolError::Closed => {
                ClientError::fatal(ErrorKind::ShuttingDown, "warpdrive is shutting down")
            }
        }
    }

    /// A failure to open an origin connection, whatever the protocol.
    pub fn from_origin(error: &OriginError) -> ClientError {
        let kind = match error {
            OriginError::UnknownDatabase { .. } => ErrorKind::UnknownDatabase,
            OriginError::Resolve { .. }
            | OriginError::Connect { .. }
            | OriginError::Timeout { .. }
            | OriginError::NotPostgres { .. }
            | OriginError::NotMysql { .. } => ErrorKind::CannotConnect,
            _ => ErrorKind::Unavailable,
        };
        ClientError::error(kind, format!("warpdrive could not open an origin connection: {error}"))
            .hint("check that the origin is up and that the origin URL's credentials are right (warpdrive validate)")
    }

    /// The server is shutting down and the client is between transactions.
    pub fn shutting_down() -> ClientError {
        ClientError::fatal(
            ErrorKind::ShuttingDown,
            "terminating connection: warpdrive is shutting down",
        )
        .hint("reconnect; another warpdrive instance or the restarted one will answer")
    }

    /// The client sent something that is not a valid message.
    pub fn protocol_violation(error: impl std::fmt::Display) -> ClientError {
        ClientError::fatal(
            ErrorKind::ProtocolViolation,
            format!("invalid message from client: {error}"),
        )
    }

    /// An origin connection that failed while a request was in flight.
    pub fn origin_lost(error: impl std::fmt::Display) -> ClientError {
        ClientError::error(
            ErrorKind::OriginLost,
            format!("the origin connection was lost while running this request: {error}"),
        )
        .hint("the request may or may not have been applied; warpdrive does not retry it. Check, then retry.")
    }
}

fn busy_hint(waited: Duration) -> String {
    format!(
        "all origin connections stayed busy for {:.1}s; retry, or raise pool.max_size or pool.acquire_timeout",
        waited.as_secs_f64()
    )
}
