//! One MySQL origin connection: connect, negotiate TLS, authenticate
//! (mysql_native_password, caching_sha2_password with its fast path and its full
//! authentication over TLS, the auth switch), turn on session-state tracking; and the
//! exchanges warpdrive runs on it on its own behalf.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::auth::mysql::{
    self as scramble, FAST_AUTH_SUCCESS, PERFORM_FULL_AUTHENTICATION, REQUEST_PUBLIC_KEY,
};
use crate::config::{OriginUrl, SslMode};
use crate::conn::{Conn, ConnError, Stream};
use crate::pool::origin::{OriginError, dial};
use crate::wire::mysql::codec::Reader;
use crate::wire::mysql::command::code;
use crate::wire::mysql::handshake::{AuthSwitch, Greeting, HandshakeResponse};
use crate::wire::mysql::reply::{ErrPacket, OkPacket};
use crate::wire::mysql::response::{Expect, Part, Response};
use crate::wire::mysql::{MysqlFraming, Packet, caps, write_packet};

/// Largest packet accepted from an origin.
pub const MAX_ORIGIN_PACKET: usize = 1 << 30;

/// The capabilities an origin must have for warpdrive to multiplex clients over it.
const REQUIRED: u32 =
    caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::SESSION_TRACK | caps::TRANSACTIONS;

/// The collation warpdrive's origin connections start with: utf8mb4_general_ci.
pub const ORIGIN_COLLATION: u8 = 45;

/// Where and how to connect.
#[derive(Debug)]
pub struct MysqlTarget {
    /// The origin URL.
    pub url: OriginUrl,
    /// TLS client configuration, `None` for ssl-mode=DISABLED.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Connect + authenticate timeout.
    pub connect_timeout: Duration,
}

impl MysqlTarget {
    /// host:port, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.url.host, self.url.port)
    }
}

fn ssl_mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "ssl-mode=DISABLED",
        SslMode::Prefer => "ssl-mode=PREFERRED",
        SslMode::Require => "ssl-mode=REQUIRED",
        SslMode::VerifyCa => "ssl-mode=VERIFY_CA",
        SslMode::VerifyFull => "ssl-mode=VERIFY_IDENTITY",
    }
}

/// An open, authenticated origin connection.
pub struct OriginLink {
    /// The framed transport.
    pub conn: Conn<MysqlFraming>,
    /// The origin's greeting.
    pub greeting: Greeting,
    /// The capabilities both sides have.
    pub capabilities: u32,
    /// Status flags as of the last reply.
    pub status: u16,
}

/// What an exchange of warpdrive's own brought back.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The rows of a text result, as strings (`None` for NULL).
    pub rows: Vec<Vec<Option<Bytes>>>,
    /// The status flags the reply ended with.
    pub status: u16,
    /// What a prepare created.
    pub prepared: Option<crate::wire::mysql::reply::PrepareOk>,
}

/// Why an exchange of warpdrive's own failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The origin answered with an error.
    #[error("the origin refused {what}: {} (error {})", String::from_utf8_lossy(&.error.message), .error.code)]
    Refused {
        /// What warpdrive asked.
        what: &'static str,
        /// The origin's error.
        error: ErrPacket,
    },
    /// The connection failed or the origin broke the protocol.
    #[error("origin connection failed: {0}")]
    Conn(#[from] ConnError),
    /// The origin did not answer in time.
    #[error("the origin did not answer in time")]
    Timeout,
}

impl From<crate::wire::mysql::WireError> for ExchangeError {
    fn from(error: crate::wire::mysql::WireError) -> Self {
        ExchangeError::Conn(error.into())
    }
}

impl OriginLink {
    /// Sends one command of warpdrive's own and reads its whole reply.
    pub async fn exchange(
        &mut self,
        what: &'static str,
        command: &[u8],
        expect: Expect,
    ) -> Result<Outcome, ExchangeError> {
        write_packet(&mut self.conn.out, 0, command);
        self.conn.flush().await.map_err(ConnError::from)?;
        let mut response = Response::new(expect, self.capabilities);
        let mut outcome = Outcome::default();
        let mut error = None;
        while !response.is_done() {
            let packet = self.read().await?;
            match response.feed(&packet)? {
                Part::Ok(ok) => outcome.status = ok.status,
                Part::End(terminator) => outcome.status = terminator.status(),
                Part::Prepared(prepared) => outcome.prepared = Some(prepared),
                Part::Row => outcome.rows.push(text_row(packet.payload)?),
                Part::Err => error = Some(ErrPacket::decode(packet.payload)?),
                Part::LocalInfile => {
                    // Never asked for: answer with an empty file.
                    write_packet(&mut self.conn.out, packet.next_seq(), &[]);
                    self.conn.flush().await.map_err(ConnError::from)?;
                }
                _ => {}
            }
        }
        self.status = outcome.status;
        match error {
            Some(error) => Err(ExchangeError::Refused { what, error }),
            None => Ok(outcome),
        }
    }

    /// A simple query of warpdrive's own.
    pub async fn query(&mut self, what: &'static str, sql: &str) -> Result<Outcome, ExchangeError> {
        let mut command = BytesMut::with_capacity(1 + sql.len());
        command.put_u8(code::QUERY);
        command.put_slice(sql.as_bytes());
        self.exchange(what, &command, Expect::Results).await
    }

    async fn read(&mut self) -> Result<Packet, ConnError> {
        self.conn
            .read_frame()
            .await?
            .ok_or(ConnError::TruncatedFrame)
    }
}

/// A text-protocol row: length-encoded strings, 0xFB for NULL.
fn text_row(payload: Bytes) -> Result<Vec<Option<Bytes>>, crate::wire::mysql::WireError> {
    let mut r = Reader::new("row", payload);
    let mut row = Vec::new();
    while !r.is_empty() {
        row.push(match r.lenenc_or_null()? {
            None => None,
            Some(len) => Some(r.bytes(len as usize)?),
        });
    }
    Ok(row)
}

/// Connects, authenticates, and turns on session-state tracking; `found_rows` asks for
/// CLIENT_FOUND_ROWS (UPDATE counts matched rows, not changed ones).
pub async fn connect(
    target: &MysqlTarget,
    database: Option<&str>,
    found_rows: bool,
) -> Result<OriginLink, OriginError> {
    let connected = AtomicBool::new(false);
    let not_mysql = |detail: String| OriginError::NotMysql {
        address: target.address(),
        detail,
    };
    match tokio::time::timeout(
        target.connect_timeout,
        connect_inner(target, database, found_rows, &connected),
    )
    .await
    {
        Ok(Err(OriginError::Conn(ConnError::MysqlWire(error)))) => Err(not_mysql(format!(
            "it answered with something that is not a MySQL packet ({error})"
        ))),
        Ok(result) => result,
        Err(_) if connected.load(std::sync::atomic::Ordering::Relaxed) => Err(not_mysql(format!(
            "it accepted the connection but sent no MySQL greeting within connect_timeout ({:?})",
            target.connect_timeout
        ))),
        Err(_) => Err(OriginError::Timeout {
            address: target.address(),
            timeout: target.connect_timeout,
        }),
    }
}

async fn connect_inner(
    target: &MysqlTarget,
    database: Option<&str>,
    found_rows: bool,
    connected: &AtomicBool,
) -> Result<OriginLink, OriginError> {
    let tcp = dial(&target.url.host, target.url.port, connected).await?;
    let mut conn: Conn<MysqlFraming> = Conn::new(Stream::Plain(tcp), MAX_ORIGIN_PACKET);
    let first = conn.read_frame().await?.ok_or(ConnError::TruncatedFrame)?;
    if first.first() == Some(0xFF) {
        return Err(refusal(
            target,
            database,
            ErrPacket::decode(first.payload).map_err(ConnError::from)?,
        ));
    }
    let greeting = Greeting::decode(first.payload).map_err(ConnError::from)?;
    if greeting.capabilities & REQUIRED != REQUIRED {
        return Err(OriginError::NotMysql {
            address: target.address(),
            detail: "it lacks protocol 4.1, secure authentication, transactions or session-state tracking (MySQL 5.7 or MariaDB 10.2 and later have them)".to_owned(),
        });
    }
    let mut capabilities = caps::SPOKEN & greeting.capabilities;
    if found_rows {
        capabilities |= caps::FOUND_ROWS & greeting.capabilities;
    }
    if database.is_none() {
        capabilities &= !caps::CONNECT_WITH_DB;
    }
    let mut seq = first.seq.wrapping_add(1);
    let conn = match (&target.tls, greeting.capabilities & caps::SSL != 0) {
        (Some(tls), true) => {
            capabilities |= caps::SSL;
            let mut request = BytesMut::new();
            fixed_response(capabilities).encode_fixed(&mut request);
            seq = write_packet(&mut conn.out, seq, &request);
            conn.flush().await?;
            upgrade(conn, target, tls).await?
        }
        (Some(_), false) if target.url.ssl_mode != SslMode::Prefer => {
            return Err(OriginError::TlsUnsupported {
                address: target.address(),
                mode: ssl_mode_name(target.url.ssl_mode),
            });
        }
        _ => conn,
    };
    let mut link = OriginLink {
        conn,
        greeting,
        capabilities,
        status: 0,
    };
    authenticate(&mut link, target, database, seq).await?;
    link.query(
        "session-state tracking",
        "SET SESSION session_track_system_variables = '*', session_track_schema = ON, session_track_state_change = ON",
    )
    .await
    .map_err(|error| OriginError::NotMysql {
        address: target.address(),
        detail: format!("it refused to track session state, which warpdrive needs to pool connections ({error})"),
    })?;
    Ok(link)
}

fn fixed_response(capabilities: u32) -> HandshakeResponse {
    HandshakeResponse {
        capabilities,
        max_packet: MAX_ORIGIN_PACKET as u32,
        collation: ORIGIN_COLLATION,
        ..HandshakeResponse::default()
    }
}

async fn upgrade(
    conn: Conn<MysqlFraming>,
    target: &MysqlTarget,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Conn<MysqlFraming>, OriginError> {
    let address = target.address();
    let (stream, leftover) = conn.into_parts();
    let Stream::Plain(tcp) = stream else {
        unreachable!("the stream was created plain above")
    };
    if !leftover.is_empty() {
        return Err(OriginError::NotMysql {
            address,
            detail: "it sent bytes before the TLS handshake".to_owned(),
        });
    }
    let name =
        rustls::pki_types::ServerName::try_from(target.url.host.clone()).map_err(|error| {
            OriginError::Tls {
                address: address.clone(),
                source: std::io::Error::other(error.to_string()),
            }
        })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|source| OriginError::Tls { address, source })?;
    Ok(Conn::new(
        Stream::ClientTls(Box::new(stream)),
        MAX_ORIGIN_PACKET,
    ))
}

fn refusal(target: &MysqlTarget, database: Option<&str>, error: ErrPacket) -> OriginError {
    let message = String::from_utf8_lossy(&error.message).into_owned();
    match error.code {
        // ER_ACCESS_DENIED_ERROR
        1045 => OriginError::BadCredentials {
            user: target.url.user.clone(),
            message,
        },
        // ER_BAD_DB_ERROR
        1049 => OriginError::UnknownDatabase {
            database: database.unwrap_or_default().to_owned(),
        },
        code => OriginError::MysqlRefused { code, message },
    }
}

async fn authenticate(
    link: &mut OriginLink,
    target: &MysqlTarget,
    database: Option<&str>,
    seq: u8,
) -> Result<(), OriginError> {
    let password = target
        .url
        .password
        .as_deref()
        .unwrap_or_default()
        .as_bytes();
    let mut plugin = link.greeting.auth_plugin.clone();
    let scramble_data = &link.greeting.scramble;
    // What the password is masked with in the RSA exchange: the last scramble sent.
    let mut salt = scramble_data.clone();
    // An unknown default plugin: answer as native and let the server switch.
    if scramble::response(&plugin, password, scramble_data).is_none() {
        plugin = Bytes::from_static(scramble::NATIVE);
    }
    let response = HandshakeResponse {
        user: Bytes::from(target.url.user.clone()),
        auth_response: scramble::response(&plugin, password, scramble_data)
            .unwrap_or_default()
            .into(),
        database: database.map(|db| Bytes::from(db.to_owned())),
        auth_plugin: Some(plugin.clone()),
        attributes: Some(connect_attributes()),
        ..fixed_response(link.capabilities)
    };
    write_packet(&mut link.conn.out, seq, &response.encode());
    link.conn.flush().await?;
    loop {
        let packet = link.read().await?;
        let seq = packet.next_seq();
        match packet.first() {
            Some(0x00) => {
                let ok =
                    OkPacket::decode(packet.payload, link.capabilities).map_err(ConnError::from)?;
                link.status = ok.status;
                return Ok(());
            }
            Some(0xFF) => {
                return Err(refusal(
                    target,
                    database,
                    ErrPacket::decode(packet.payload).map_err(ConnError::from)?,
                ));
            }
            Some(0xFE) => {
                let switch = AuthSwitch::decode(packet.payload).map_err(ConnError::from)?;
                let Some(answer) = scramble::response(&switch.plugin, password, &switch.data)
                else {
                    return Err(OriginError::UnsupportedMysqlAuth(
                        String::from_utf8_lossy(&switch.plugin).into_owned(),
                    ));
                };
                plugin = switch.plugin;
                salt = switch.data;
                write_packet(&mut link.conn.out, seq, &answer);
                link.conn.flush().await?;
            }
            Some(0x01) if &plugin[..] == scramble::CACHING_SHA2 => {
                match packet.payload.get(1).copied() {
                    Some(FAST_AUTH_SUCCESS) => {}
                    Some(PERFORM_FULL_AUTHENTICATION) if link.conn.stream().is_tls() => {
                        let mut clear = password.to_vec();
                        clear.push(0);
                        write_packet(&mut link.conn.out, seq, &clear);
                        link.conn.flush().await?;
                    }
                    Some(PERFORM_FULL_AUTHENTICATION) => {
                        // No TLS: ask for the server's public key, send the password under it.
                        write_packet(&mut link.conn.out, seq, &[REQUEST_PUBLIC_KEY]);
                        link.conn.flush().await?;
                        let key = link.read().await?;
                        let encrypted = match key.payload.split_first() {
                            Some((0x01, pem)) => {
                                scramble::rsa_encrypted_password(password, &salt, pem)
                            }
                            _ => Err("the server sent no public key".to_owned()),
                        }
                        .map_err(OriginError::RsaExchange)?;
                        write_packet(&mut link.conn.out, key.next_seq(), &encrypted);
                        link.conn.flush().await?;
                    }
                    _ => {
                        return Err(OriginError::NotMysql {
                            address: target.address(),
                            detail: "an unknown caching_sha2_password message".to_owned(),
                        });
                    }
                }
            }
            _ => {
                return Err(OriginError::NotMysql {
                    address: target.address(),
                    detail: "an unexpected packet during authentication".to_owned(),
                });
            }
        }
    }
}

/// `program_name = warpdrive`, so that the origin's process list says who connected.
fn connect_attributes() -> Bytes {
    let mut out = BytesMut::new();
    for (key, value) in [("_client_name", "warpdrive"), ("program_name", "warpdrive")] {
        crate::wire::mysql::codec::put_lenenc_bytes(&mut out, key.as_bytes());
        crate::wire::mysql::codec::put_lenenc_bytes(&mut out, value.as_bytes());
    }
    out.freeze()
}

/// Reads a fresh connection's session variables (name → value), the baseline the
/// tracked changes of clients are compared with.
pub async fn session_variables(
    link: &mut OriginLink,
) -> Result<BTreeMap<String, String>, ExchangeError> {
    let outcome = link
        .query("SHOW SESSION VARIABLES", "SHOW SESSION VARIABLES")
        .await?;
    Ok(outcome
        .rows
        .into_iter()
        .filter_map(|row| match &row[..] {
            [Some(name), value] => Some((
                String::from_utf8_lossy(name).to_ascii_lowercase(),
                value
                    .as_deref()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
            )),
            _ => None,
        })
        .collect())
}

/// Reads the origin's collations: id → (character set, collation).
pub async fn collations(
    link: &mut OriginLink,
) -> Result<BTreeMap<u8, (String, String)>, ExchangeError> {
    let outcome = link
        .query(
            "the collations",
            "SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS",
        )
        .await?;
    let text = |value: &Option<Bytes>| {
        value
            .as_deref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Ok(outcome
        .rows
        .iter()
        .filter_map(|row| {
            let id: u8 = text(row.first()?)?.parse().ok()?;
            Some((id, (text(row.get(1)?)?, text(row.get(2)?)?)))
        })
        .collect())
}
