//! The start of a client connection: TLS and GSS negotiation, CancelRequest, the
//! StartupMessage, authentication, and the greeting (ParameterStatus, BackendKeyData,
//! ReadyForQuery) a real server sends.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rand::RngExt;

use super::sqlstate::{ErrorResponse, from_pool};
use crate::auth::md5::verify_md5;
use crate::auth::scram::{MECHANISM, ServerExchange};
use crate::config::ClientAuth;
use crate::conn::{Conn, ConnError};
use crate::pool::pg::PgPool as Pool;
use crate::session::error::{ClientError, ErrorKind};
use crate::session::settings::{
    STANDARD_CONFORMING_STRINGS, SettingMap, parse_options, set_config_statement,
};
use crate::session::{SessionContext, SessionError};
use crate::wire::pg::WireError;
use crate::wire::pg::backend::TransactionStatus;
use crate::wire::pg::encode;
use crate::wire::pg::frontend::FrontendMessage;
use crate::wire::pg::startup::{StartupMessage, StartupPacket};

/// A client that passed startup and authentication.
pub struct Admitted {
    /// The connection, TLS or not.
    pub client: Conn,
    /// The user it logged in as.
    pub user: String,
    /// The database it asked for.
    pub database: String,
    /// Its startup settings.
    pub settings: SettingMap,
    /// Whether the origin reported `standard_conforming_strings` on for it.
    pub standard_conforming_strings: bool,
    /// The pool serving that database.
    pub pool: Pool,
}

/// Reads the first packets until a StartupMessage; answers SSL/GSS requests and
/// forwards CancelRequests. `Ok(None)`: the connection ended without a session.
async fn opening(
    mut client: Conn,
    ctx: &SessionContext,
) -> Result<Option<(Conn, StartupMessage)>, SessionError> {
    // As PostgreSQL: one SSL negotiation, and a GSS one only before SSL or after SSL was
    // refused; any other repeats as an unsupported protocol.
    let (mut ssl_done, mut gss_done) = (false, false);
    loop {
        let packet = match client.read_startup().await {
            Ok(Some(packet)) => packet,
            Ok(None) => return Ok(None),
            Err(ConnError::Wire(
                error @ (WireError::BadLength { .. } | WireError::TooLarge { .. }),
            )) => {
                // As PostgreSQL does with an invalid length (garbage, an HTTP request, a
                // Terminate before startup): log it and close without a word.
                tracing::info!(%error, "invalid length of startup packet; connection closed");
                ctx.metrics
                    .invalid_startup_packets
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(None);
            }
            Err(ConnError::Wire(error)) => {
                // A startup packet of a valid length that is not the protocol: say so.
                let refusal = ClientError::fatal(
                    ErrorKind::ProtocolViolation,
                    format!("invalid startup packet: {error}"),
                )
                .hint("this port speaks the PostgreSQL protocol");
                refusal.encode(&mut client.out);
                let _ = client.flush().await;
                return Err(SessionError::Refused(refusal));
            }
            Err(error) => return Err(error.into()),
        };
        let repeated = match packet {
            StartupPacket::SslRequest if ssl_done => Some((1234, 5679)),
            StartupPacket::GssEncRequest if gss_done => Some((1234, 5680)),
            _ => None,
        };
        if let Some((major, minor)) = repeated {
            let refusal = ClientError::fatal(
                ErrorKind::NotSupported,
                format!(
                    "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
                ),
            );
            refusal.encode(&mut client.out);
            let _ = client.flush().await;
            return Err(SessionError::Refused(refusal));
        }
        match packet {
            StartupPacket::SslRequest => match &ctx.tls {
                Some(acceptor) if !client.stream().is_tls() => {
                    (ssl_done, gss_done) = (true, true);
                    client.send(b"S").await?;
                    client = crate::session::accept_tls(
                        client,
                        acceptor,
                        ctx.deployment.max_message_bytes,
                    )
                    .await?;
                }
                _ => {
                    ssl_done = true;
                    client.send(b"N").await?;
                }
            },
            StartupPacket::GssEncRequest => {
                gss_done = true;
                client.send(b"N").await?;
            }
            StartupPacket::Cancel(request) => {
                if let Some(target) = ctx.cancels.target(&request) {
                    tracing::info!(
                        process_id = request.process_id,
                        "forwarding cancel request to the origin"
                    );
                    if let Err(error) = crate::pool::pg::origin::cancel(
                        &target.origin,
                        target.process_id,
                        &target.secret_key,
                    )
                    .await
                    {
                        tracing::warn!(%error, "cancel request to the origin failed");
                    }
                }
                return Ok(None);
            }
            StartupPacket::Startup(message) => return Ok(Some((client, message))),
        }
    }
}

/// Sends a FATAL error and ends the connection with it.
async fn refuse(client: &mut Conn, error: ClientError) -> Result<Option<Admitted>, SessionError> {
    error.encode(&mut client.out);
    client.flush().await?;
    Err(SessionError::Refused(error))
}

/// Runs startup and authentication. `Ok(None)` when the connection was only a cancel
/// request or closed early.
pub async fn admit(
    client: Conn,
    ctx: &Arc<SessionContext>,
) -> Result<Option<Admitted>, SessionError> {
    let Some((mut client, startup)) = opening(client, ctx).await? else {
        return Ok(None);
    };
    let protocol_options: Vec<&str> = startup
        .parameters
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with("_pq_."))
        .collect();
    if startup.minor_version > 0 || !protocol_options.is_empty() {
        // warpdrive speaks protocol 3.0, as PostgreSQL before 18 does.
        encode::negotiate_protocol_version(&mut client.out, 3, 0, &protocol_options);
    }
    let Some(user) = startup.parameter("user").map(str::to_owned) else {
        return refuse(
            &mut client,
            ClientError::fatal(
                ErrorKind::InvalidAuthorization,
                "no PostgreSQL user name specified in startup packet",
            ),
        )
        .await;
    };
    match startup.parameter("replication").map(replication) {
        None | Some(Ok(false)) => {}
        Some(Ok(true)) => {
            return refuse(
                &mut client,
                ClientError::fatal(
                    ErrorKind::NotSupported,
                    "replication connections are not supported by warpdrive",
                )
                .hint("connect replication clients to the origin directly"),
            )
            .await;
        }
        Some(Err(value)) => {
            return refuse(
                &mut client,
                ClientError::fatal(
                    ErrorKind::InvalidValue,
                    format!("invalid value for parameter \"replication\": \"{value}\""),
                )
                .hint("Valid values are: \"false\", 0, \"true\", 1, \"database\"."),
            )
            .await;
        }
    }
    let database = startup
        .parameter("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();
    if !ctx.deployment.allows_database(&database) {
        return refuse(
            &mut client,
            ClientError::fatal(
                ErrorKind::UnknownDatabase,
                format!("database \"{database}\" is not served by this warpdrive deployment"),
            )
            .hint(format!(
                "allowed databases: {}",
                ctx.deployment
                    .databases
                    .as_deref()
                    .unwrap_or_default()
                    .join(", ")
            )),
        )
        .await;
    }
    let settings = match startup_settings(&startup) {
        Ok(settings) => settings,
        Err(problem) => {
            return refuse(
                &mut client,
                ClientError::fatal(ErrorKind::NotSupported, problem),
            )
            .await;
        }
    };
    if let Err(error) = authenticate(&mut client, ctx, &user).await? {
        return refuse(&mut client, error).await;
    }
    encode::authentication_ok(&mut client.out);
    let pool = ctx.protocol.pools.get(&database);
    let (reported, notices) = match greeting_parameters(ctx, &pool, &database, &settings).await {
        Ok(greeting) => greeting,
        Err(mut error) => {
            error.severity = crate::session::error::Severity::Fatal;
            return refuse(&mut client, error).await;
        }
    };
    ctx.catalogs.prefetch(&pool);
    let standard_conforming_strings = reported
        .iter()
        .find(|(name, _)| &name[..] == STANDARD_CONFORMING_STRINGS.as_bytes())
        .is_none_or(|(_, value)| &value[..] == b"on");
    for notice in notices {
        client.out.extend_from_slice(&notice);
    }
    for (name, value) in reported {
        encode::parameter_status_bytes(&mut client.out, &name, &value);
    }
    Ok(Some(Admitted {
        client,
        user,
        database,
        settings,
        standard_conforming_strings,
        pool,
    }))
}

/// Whether the `replication` startup parameter asks for a replication connection, read
/// as PostgreSQL reads it: `database`, or a boolean; `Err` with the value otherwise.
fn replication(value: &str) -> Result<bool, &str> {
    if value == "database" {
        return Ok(true);
    }
    parse_bool(value).ok_or(value)
}

/// A boolean as PostgreSQL's `parse_bool` reads it: any prefix of `true`, `false`, `yes`,
/// `no` (case-insensitive), `on`, `off` (at least two letters), `1`, `0`.
fn parse_bool(value: &str) -> Option<bool> {
    let lower = value.to_ascii_lowercase();
    let prefix_of = |word: &str, least: usize| lower.len() >= least && word.starts_with(&lower);
    match () {
        _ if lower == "1" => Some(true),
        _ if lower == "0" => Some(false),
        _ if prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) => Some(true),
        _ if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) => Some(false),
        _ => None,
    }
}

/// Startup parameters that are settings: everything but the connection's identity,
/// with `options` expanded.
fn startup_settings(startup: &StartupMessage) -> Result<SettingMap, String> {
    let mut settings = SettingMap::new();
    for (name, value) in &startup.parameters {
        match name.as_str() {
            "user" | "database" | "replication" => {}
            name if name.starts_with("_pq_.") => {}
            "options" => {
                for (name, value) in parse_options(value)? {
                    let statement = set_config_statement(&name, &value);
                    settings.insert(name, statement);
                }
            }
            name => {
                let name = name.to_lowercase();
                let statement = set_config_statement(&name, value);
                settings.insert(name, statement);
            }
        }
    }
    // Origin connections carry warpdrive's own name; a client that gave none has the
    // empty one, as PostgreSQL would give it.
    settings
        .entry("application_name".to_owned())
        .or_insert_with(|| set_config_statement("application_name", ""));
    Ok(settings)
}

/// The ParameterStatus values to greet the client with (the origin's, with the values
/// this client's startup settings have there), and the notices the origin sent about
/// those settings. Each distinct setting is tried on the origin once; an invalid one is
/// refused with the origin's own message.
async fn greeting_parameters(
    ctx: &SessionContext,
    pool: &Pool,
    database: &str,
    settings: &SettingMap,
) -> Result<(Vec<(Bytes, Bytes)>, Vec<Bytes>), ClientError> {
    let baseline = pool.greeting().await.map_err(|error| from_pool(&error))?;
    let mut reported: Vec<(Bytes, Bytes)> = baseline
        .iter()
        .map(|(name, value)| {
            // What a server reports when the client did not set application_name.
            if &name[..] == b"application_name" {
                (name.clone(), Bytes::new())
            } else {
                (name.clone(), value.clone())
            }
        })
        .collect();
    let mut notices = Vec::new();
    for (name, value) in settings {
        let tried = ctx
            .protocol
            .tried
            .try_setting(pool, database, name, value)
            .await?;
        notices.extend(tried.notices.iter().cloned());
        for (report_name, report_value) in &tried.reports {
            match reported
                .iter_mut()
                .find(|(known, _)| known.eq_ignore_ascii_case(report_name))
            {
                Some(entry) => entry.1 = report_value.clone(),
                None => reported.push((report_name.clone(), report_value.clone())),
            }
        }
        // The value in force, whether the origin re-announced it or not (it announces
        // only changes, and the connection tried may already have held it).
        if let Some(value) = &tried.value
            && let Some(entry) = reported
                .iter_mut()
                .find(|(known, _)| known.eq_ignore_ascii_case(name.as_bytes()))
        {
            entry.1 = value.clone();
        }
    }
    Ok((reported, notices))
}

/// Checks the client's credentials. The outer error is I/O; the inner one is a refusal.
async fn authenticate(
    client: &mut Conn,
    ctx: &SessionContext,
    user: &str,
) -> Result<Result<(), ClientError>, SessionError> {
    let failed = || {
        Err(ClientError::fatal(
            ErrorKind::InvalidPassword,
            format!("password authentication failed for user \"{user}\""),
        ))
    };
    let known = ctx.deployment.users.iter().find(|u| u.name == user);
    match ctx.deployment.client_auth {
        ClientAuth::Trust => {
            if known.is_none() {
                return Ok(Err(ClientError::fatal(
                    ErrorKind::InvalidAuthorization,
                    format!("role \"{user}\" is not configured for this warpdrive deployment"),
                )));
            }
            Ok(Ok(()))
        }
        ClientAuth::Md5 | ClientAuth::MysqlNative => {
            let mut salt = [0u8; 4];
            rand::rng().fill(&mut salt[..]);
            encode::authentication_md5(&mut client.out, salt);
            client.flush().await?;
            let response = read_password(client).await?;
            let response = response.strip_suffix(b"\0").unwrap_or(&response);
            match known {
                Some(known) if verify_md5(user, &known.password, salt, response) => Ok(Ok(())),
                _ => Ok(failed()),
            }
        }
        ClientAuth::ScramSha256 | ClientAuth::CachingSha2 => {
            encode::authentication_sasl(&mut client.out, &[MECHANISM]);
            client.flush().await?;
            let initial = read_password(client).await?;
            let Some(client_first) = sasl_initial_data(&initial) else {
                return Err(SessionError::Protocol(
                    "malformed SASLInitialResponse".into(),
                ));
            };
            // An unknown user still goes through the exchange, with a throwaway secret, so
            // that a client cannot tell unknown users from wrong passwords.
            let secret = match known.and_then(|u| ctx.protocol.secrets.get(&u.name)) {
                Some(secret) => secret.clone(),
                None => crate::auth::scram::ScramSecret::mock(&ctx.protocol.mock_secret, user),
            };
            let (exchange, server_first) = match ServerExchange::start(&secret, client_first) {
                Ok(started) => started,
                Err(error) => {
                    return Ok(Err(ClientError::fatal(
                        ErrorKind::InvalidAuthorization,
                        error.to_string(),
                    )));
                }
            };
            encode::authentication_sasl_continue(&mut client.out, server_first.as_bytes());
            client.flush().await?;
            let client_final = read_password(client).await?;
            match exchange.finish(&client_final) {
                Ok(server_final) if known.is_some() => {
                    encode::authentication_sasl_final(&mut client.out, server_final.as_bytes());
                    Ok(Ok(()))
                }
                _ => Ok(failed()),
            }
        }
    }
}

/// The body of the next message, which must be a password-type message.
async fn read_password(client: &mut Conn) -> Result<Bytes, SessionError> {
    match client.read_frame().await? {
        Some(frame) => match FrontendMessage::decode(frame.clone()) {
            Ok(FrontendMessage::Password(frame)) => Ok(frame.body()),
            _ => {
                let refusal = ClientError::fatal(
                    ErrorKind::ProtocolViolation,
                    format!(
                        "expected password response, got message type {}",
                        frame.tag()
                    ),
                );
                refusal.encode(&mut client.out);
                client.flush().await?;
                Err(SessionError::Refused(refusal))
            }
        },
        None => Err(SessionError::ClientGone),
    }
}

/// The client-first-message inside a SASLInitialResponse body.
fn sasl_initial_data(body: &[u8]) -> Option<&[u8]> {
    let nul = body.iter().position(|&b| b == 0)?;
    if &body[..nul] != MECHANISM.as_bytes() {
        return None;
    }
    let rest = body.get(nul + 1..)?;
    let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let data = rest.get(4..)?;
    (usize::try_from(len).ok()? == data.len()).then_some(data)
}

/// Greets an admitted client: BackendKeyData and ReadyForQuery.
pub fn finish_greeting(out: &mut BytesMut, process_id: i32, secret_key: &[u8]) {
    encode::backend_key_data(out, process_id, secret_key);
    encode::ready_for_query(out, TransactionStatus::Idle);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_and_replication_read_as_postgresql_reads_them() {
        for no in ["no", "n", "false", "f", "FALSE", "off", "of", "0"] {
            assert_eq!(replication(no), Ok(false), "{no}");
        }
        for yes in ["yes", "y", "true", "t", "on", "1", "database"] {
            assert_eq!(replication(yes), Ok(true), "{yes}");
        }
        for bad in ["o", "maybe", "2", ""] {
            assert_eq!(replication(bad), Err(bad), "{bad}");
        }
    }
}
