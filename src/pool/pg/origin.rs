//! One origin connection: connect, negotiate TLS, start up, authenticate.
//!
//! The failure of each step is its own [`OriginError`] variant, so that `warpdrive
//! validate` and the errors clients see can say precisely what went wrong (bad host
//! name, refused, TLS unsupported, bad credentials, unknown database).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::md5::md5_response;
use crate::auth::scram::{ClientExchange, MECHANISM, ScramError};
use crate::config::{OriginUrl, SslMode};
use crate::conn::{Conn, ConnError, Stream};
pub use crate::pool::origin::{OriginError, dial};
use crate::wire::pg::Frame;
use crate::wire::pg::backend::{
    Authentication, BackendMessage, ErrorFields, TransactionStatus, tag,
};
use crate::wire::pg::encode;

/// Largest frame accepted from an origin (PostgreSQL's own limit is 1 GiB).
pub const MAX_ORIGIN_FRAME: usize = 1 << 30;

/// Where and how to connect: one origin server, one database.
#[derive(Clone, Debug)]
pub struct OriginTarget {
    /// The origin URL (host, port, user, password, TLS mode).
    pub url: OriginUrl,
    /// The database on that server.
    pub database: String,
    /// TLS client configuration, `None` for sslmode=disable.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Connect + authenticate timeout.
    pub connect_timeout: Duration,
}

impl OriginTarget {
    /// host:port, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.url.host, self.url.port)
    }
}

fn ssl_mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "sslmode=disable",
        SslMode::Prefer => "sslmode=prefer",
        SslMode::Require => "sslmode=require",
        SslMode::VerifyCa => "sslmode=verify-ca",
        SslMode::VerifyFull => "sslmode=verify-full",
    }
}

/// An open, authenticated origin connection, ready for queries.
pub struct OriginConn {
    /// The framed transport.
    pub conn: Conn,
    /// BackendKeyData: process id.
    pub process_id: i32,
    /// BackendKeyData: secret key.
    pub secret_key: Bytes,
    /// ParameterStatus values reported at startup, in order.
    pub parameters: Vec<(Bytes, Bytes)>,
    /// When it was opened.
    pub opened: Instant,
}

/// Sends what is written to `conn` and reads the origin's replies up to ReadyForQuery,
/// handing every other message to `each`: the transaction status the origin then
/// reported. The one loop for every exchange warpdrive runs on its own.
pub async fn read_until_ready(
    conn: &mut Conn,
    mut each: impl FnMut(Frame) -> Result<(), ConnError>,
) -> Result<TransactionStatus, ConnError> {
    conn.flush().await?;
    loop {
        let frame = conn.read_frame().await?.ok_or(ConnError::TruncatedFrame)?;
        if frame.tag() != tag::READY_FOR_QUERY {
            each(frame)?;
            continue;
        }
        return match BackendMessage::decode(&frame)? {
            BackendMessage::ReadyForQuery(status) => Ok(status),
            _ => Err(ConnError::TruncatedFrame),
        };
    }
}

/// Opens the TCP connection and negotiates TLS per sslmode; `connected` is set once the
/// TCP connection is open (so that a timeout after it can say the server stayed silent).
pub async fn open_stream(
    target: &OriginTarget,
    connected: &AtomicBool,
) -> Result<Stream, OriginError> {
    let address = target.address();
    let tcp = dial(&target.url.host, target.url.port, connected).await?;
    let Some(tls) = &target.tls else {
        return Ok(Stream::Plain(tcp));
    };
    let mut conn: Conn = Conn::new(Stream::Plain(tcp), MAX_ORIGIN_FRAME);
    encode::ssl_request(&mut conn.out);
    conn.flush().await?;
    let answer = conn.read_byte().await?;
    let (stream, leftover) = conn.into_parts();
    let Stream::Plain(tcp) = stream else {
        unreachable!("the stream was created plain above")
    };
    match answer {
        b'S' if leftover.is_empty() => {
            let name = rustls::pki_types::ServerName::try_from(target.url.host.clone()).map_err(
                |error| OriginError::Tls {
                    address: address.clone(),
                    source: std::io::Error::other(error.to_string()),
                },
            )?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|source| OriginError::Tls { address, source })?;
            Ok(Stream::ClientTls(Box::new(tls)))
        }
        b'N' if target.url.ssl_mode == SslMode::Prefer => Ok(Stream::Plain(tcp)),
        b'N' => Err(OriginError::TlsUnsupported {
            address,
            mode: ssl_mode_name(target.url.ssl_mode),
        }),
        other => Err(OriginError::NotPostgres {
            address,
            detail: format!(
                "it answered warpdrive's SSLRequest with {:?}, where PostgreSQL answers S or N",
                char::from(other)
            ),
        }),
    }
}

/// Connects, authenticates and waits for the first ReadyForQuery.
pub async fn connect(target: &OriginTarget) -> Result<OriginConn, OriginError> {
    let connected = AtomicBool::new(false);
    let not_postgres = |detail: String| OriginError::NotPostgres {
        address: target.address(),
        detail,
    };
    match tokio::time::timeout(target.connect_timeout, connect_inner(target, &connected)).await {
        Ok(Err(OriginError::Conn(ConnError::Wire(error)))) => Err(not_postgres(format!(
            "it answered with something that is not a PostgreSQL message ({error})"
        ))),
        Ok(result) => result,
        Err(_) if connected.load(Ordering::Relaxed) => Err(not_postgres(format!(
            "it accepted the connection but gave no PostgreSQL answer within connect_timeout ({:?})",
            target.connect_timeout
        ))),
        Err(_) => Err(OriginError::Timeout {
            address: target.address(),
            timeout: target.connect_timeout,
        }),
    }
}

async fn connect_inner(
    target: &OriginTarget,
    connected: &AtomicBool,
) -> Result<OriginConn, OriginError> {
    let stream = open_stream(target, connected).await?;
    let mut conn: Conn = Conn::new(stream, MAX_ORIGIN_FRAME);
    encode::startup_message(
        &mut conn.out,
        &[
            ("user", &target.url.user),
            ("database", &target.database),
            ("application_name", "warpdrive"),
            ("client_encoding", "UTF8"),
        ],
    );
    conn.flush().await?;
    authenticate(&mut conn, target).await?;
    let mut process_id = 0;
    let mut secret_key = Bytes::new();
    let mut parameters = Vec::new();
    loop {
        let frame = conn.read_frame().await?.ok_or(ConnError::TruncatedFrame)?;
        match BackendMessage::decode(&frame).map_err(ConnError::from)? {
            BackendMessage::BackendKeyData {
                process_id: pid,
                secret_key: key,
            } => {
                process_id = pid;
                secret_key = key;
            }
            BackendMessage::ParameterStatus { name, value } => parameters.push((name, value)),
            BackendMessage::ReadyForQuery(TransactionStatus::Idle) => break,
            BackendMessage::ErrorResponse(fields) => return Err(startup_error(target, fields)),
            _ => {}
        }
    }
    Ok(OriginConn {
        conn,
        process_id,
        secret_key,
        parameters,
        opened: Instant::now(),
    })
}

fn startup_error(target: &OriginTarget, fields: ErrorFields) -> OriginError {
    match fields.code() {
        b"28P01" | b"28000" => OriginError::BadCredentials {
            user: target.url.user.clone(),
            message: fields.message(),
        },
        b"3D000" => OriginError::UnknownDatabase {
            database: target.database.clone(),
        },
        _ => OriginError::Refused(fields),
    }
}

async fn next_authentication(
    conn: &mut Conn,
    target: &OriginTarget,
) -> Result<Authentication, OriginError> {
    let frame = conn.read_frame().await?.ok_or(ConnError::TruncatedFrame)?;
    match BackendMessage::decode(&frame).map_err(ConnError::from)? {
        BackendMessage::Authentication(request) => Ok(request),
        BackendMessage::ErrorResponse(fields) => Err(startup_error(target, fields)),
        _ => Err(OriginError::Conn(ConnError::Io(std::io::Error::other(
            "origin sent an unexpected message during authentication",
        )))),
    }
}

async fn authenticate(conn: &mut Conn, target: &OriginTarget) -> Result<(), OriginError> {
    let password = || {
        target
            .url
            .password
            .as_deref()
            .ok_or(OriginError::NoPassword)
    };
    match next_authentication(conn, target).await? {
        Authentication::Ok => return Ok(()),
        Authentication::CleartextPassword => {
            encode::password_message(&mut conn.out, password()?.as_bytes());
        }
        Authentication::Md5Password { salt } => {
            let response = md5_response(&target.url.user, password()?, salt);
            encode::password_message(&mut conn.out, response.as_bytes());
        }
        Authentication::Sasl { mechanisms } => {
            if !mechanisms.iter().any(|m| &m[..] == MECHANISM.as_bytes()) {
                return Err(OriginError::UnsupportedAuth(10));
            }
            let (mut exchange, first) = ClientExchange::new(password()?);
            encode::sasl_initial_response(&mut conn.out, MECHANISM, first.as_bytes());
            conn.flush().await?;
            let Authentication::SaslContinue(server_first) =
                next_authentication(conn, target).await?
            else {
                return Err(ScramError::Malformed("expected AuthenticationSASLContinue").into());
            };
            let client_final = exchange.respond(&server_first)?;
            encode::sasl_response(&mut conn.out, client_final.as_bytes());
            conn.flush().await?;
            let Authentication::SaslFinal(server_final) = next_authentication(conn, target).await?
            else {
                return Err(ScramError::Malformed("expected AuthenticationSASLFinal").into());
            };
            exchange.verify(&server_final)?;
        }
        Authentication::Unsupported(code) => return Err(OriginError::UnsupportedAuth(code)),
        Authentication::SaslContinue(_) | Authentication::SaslFinal(_) => {
            return Err(ScramError::Malformed("SASL message before AuthenticationSASL").into());
        }
    }
    conn.flush().await?;
    match next_authentication(conn, target).await? {
        Authentication::Ok => Ok(()),
        _ => Err(OriginError::Conn(ConnError::Io(std::io::Error::other(
            "origin did not accept the authentication exchange",
        )))),
    }
}

/// Sends a CancelRequest for a backend, on a connection of its own (as libpq does).
pub async fn cancel(
    target: &OriginTarget,
    process_id: i32,
    secret_key: &[u8],
) -> Result<(), OriginError> {
    let connected = AtomicBool::new(false);
    let stream = tokio::time::timeout(target.connect_timeout, open_stream(target, &connected))
        .await
        .map_err(|_| OriginError::Timeout {
            address: target.address(),
            timeout: target.connect_timeout,
        })??;
    let mut conn: Conn = Conn::new(stream, MAX_ORIGIN_FRAME);
    encode::cancel_request(&mut conn.out, process_id, secret_key);
    conn.flush().await?;
    // The server closes the connection once it has read the request.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_frame()).await;
    Ok(())
}
