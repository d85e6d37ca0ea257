//! What every protocol's origin connection has in common: why one could not be opened
//! ([`OriginError`], one variant per cause, so that `warpdrive validate` and the errors
//! clients see say precisely what went wrong), and the TCP connection itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::auth::scram::ScramError;
use crate::conn::ConnError;
use crate::wire::pg::backend::ErrorFields;

/// Why an origin connection could not be opened or was lost.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// DNS lookup failed.
    #[error("cannot resolve origin host {host:?}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        source: std::io::Error,
    },
    /// TCP connect failed.
    #[error("cannot connect to origin {address}: {source}")]
    Connect {
        /// host:port.
        address: String,
        /// Why (refused, unreachable, …).
        source: std::io::Error,
    },
    /// Connecting and authenticating took longer than connect_timeout.
    #[error("connecting to origin {address} timed out after {timeout:?}")]
    Timeout {
        /// host:port.
        address: String,
        /// The limit.
        timeout: Duration,
    },
    /// Something listens at the address, but it does not speak MySQL.
    #[error("the server at {address} does not speak the MySQL protocol: {detail}")]
    NotMysql {
        /// host:port.
        address: String,
        /// What it did instead.
        detail: String,
    },
    /// A MySQL origin refused the connection with an ERR packet.
    #[error("the origin refused the connection: {message} (error {code})")]
    MysqlRefused {
        /// The error number.
        code: u16,
        /// The origin's message.
        message: String,
    },
    /// A MySQL origin asks for an authentication plugin warpdrive does not speak.
    #[error(
        "the origin asks for the authentication plugin {0:?}; warpdrive speaks mysql_native_password and caching_sha2_password"
    )]
    UnsupportedMysqlAuth(String),
    /// caching_sha2_password's full authentication without TLS failed at the RSA
    /// exchange.
    #[error(
        "caching_sha2_password's full authentication without TLS failed: {0}; use ssl-mode=REQUIRED (or better)"
    )]
    RsaExchange(String),
    /// Something listens at the address, but it does not speak PostgreSQL.
    #[error("the server at {address} does not speak PostgreSQL: {detail}")]
    NotPostgres {
        /// host:port.
        address: String,
        /// What it did instead.
        detail: String,
    },
    /// The origin does not offer TLS but the TLS mode requires it.
    #[error("the origin at {address} does not support TLS, but {mode} requires it")]
    TlsUnsupported {
        /// host:port.
        address: String,
        /// The sslmode.
        mode: &'static str,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with origin {address} failed: {source}")]
    Tls {
        /// host:port.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The origin refused the credentials.
    #[error("the origin refused the credentials of user {user:?}: {message}")]
    BadCredentials {
        /// The origin user.
        user: String,
        /// The origin's message.
        message: String,
    },
    /// The database does not exist on the origin.
    #[error("database {database:?} does not exist on the origin")]
    UnknownDatabase {
        /// The database.
        database: String,
    },
    /// The origin asks for an authentication method warpdrive does not implement.
    #[error(
        "the origin asks for an unsupported authentication method (code {0}); use scram-sha-256, md5 or password"
    )]
    UnsupportedAuth(i32),
    /// The origin asks for a password but the origin URL has none.
    #[error("the origin asks for a password but the origin URL has none")]
    NoPassword,
    /// SCRAM failed.
    #[error("SCRAM authentication with the origin failed: {0}")]
    Scram(#[from] ScramError),
    /// The origin sent an error during startup.
    #[error("the origin refused the connection: {}", .0.message())]
    Refused(ErrorFields),
    /// The origin broke the protocol or the connection dropped.
    #[error("origin connection failed: {0}")]
    Conn(#[from] ConnError),
}

impl From<std::io::Error> for OriginError {
    fn from(error: std::io::Error) -> Self {
        OriginError::Conn(ConnError::Io(error))
    }
}

/// Resolves `host` and connects to the first address that answers, without Nagle;
/// `connected` is set once it is open (so that a timeout after it can say the server
/// stayed silent).
pub async fn dial(host: &str, port: u16, connected: &AtomicBool) -> Result<TcpStream, OriginError> {
    let addresses: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| OriginError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut last_error = None;
    for candidate in addresses {
        match TcpStream::connect(candidate).await {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                connected.store(true, Ordering::Relaxed);
                return Ok(tcp);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(OriginError::Connect {
        address: format!("{host}:{port}"),
        source: last_error.unwrap_or_else(|| std::io::Error::other("no address found")),
    })
}
