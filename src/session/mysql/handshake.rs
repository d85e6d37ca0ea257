//! The connection phase, warpdrive as the server: the greeting (the origin's version,
//! character set and status), TLS on the client's SSL request, and authentication with
//! caching_sha2_password (its fast path: warpdrive knows the password) or
//! mysql_native_password, switching the client to the configured plugin when it
//! answered with another.

use bytes::Bytes;
use rand::RngExt;

use super::Shared;
use super::errno::err_packet;
use crate::auth::mysql::{self as scramble, FAST_AUTH_SUCCESS};
use crate::config::ClientAuth;
use crate::conn::{Conn, ConnError};
use crate::pool::mysql::MysqlGreeting;
use crate::session::error::{ClientError, ErrorKind};
use crate::session::{SessionContext, SessionError};
use crate::wire::mysql::handshake::{AuthSwitch, Greeting, HandshakeResponse};
use crate::wire::mysql::{HEADER_LEN, MysqlFraming, Packet, caps, write_packet};

/// The capabilities warpdrive offers its clients (SSL besides, with a certificate).
pub const SERVER_CAPABILITIES: u32 = caps::SPOKEN | caps::FOUND_ROWS;

/// A client that logged in.
pub struct Admitted {
    /// Its connection.
    pub client: Conn<MysqlFraming>,
    /// The capabilities both sides have.
    pub capabilities: u32,
    /// Who it is.
    pub user: String,
    /// The database it asked for.
    pub database: Option<String>,
    /// Its collation (its character set).
    pub collation: u8,
    /// What the origin said of itself.
    pub greeting: MysqlGreeting,
    /// The sequence id of the OK that ends the handshake (or the ERR that refuses it).
    pub seq: u8,
}

/// A scramble of 20 printable bytes (no NUL: the greeting terminates it).
pub fn new_scramble() -> Bytes {
    let mut rng = rand::rng();
    (0..20)
        .map(|_| rng.random_range(0x21u8..0x7f))
        .collect::<Vec<u8>>()
        .into()
}

/// Sends `error` as the next packet and says the session ends with it.
pub async fn refuse(
    client: &mut Conn<MysqlFraming>,
    seq: u8,
    error: ClientError,
) -> Result<Option<Admitted>, SessionError> {
    let packet = err_packet(&error);
    let payload = match seq {
        0 => packet.encode_before_handshake(),
        _ => packet.encode(),
    };
    write_packet(&mut client.out, seq, &payload);
    let _ = client.flush().await;
    Err(SessionError::Refused(error))
}

async fn read(client: &mut Conn<MysqlFraming>) -> Result<Packet, SessionError> {
    match client.read_frame().await {
        Ok(Some(packet)) => Ok(packet),
        Ok(None) => Err(SessionError::ClientGone),
        Err(error) => Err(error.into()),
    }
}

fn access_denied(user: &str, with_password: bool) -> ClientError {
    let using = if with_password { "YES" } else { "NO" };
    ClientError::fatal(
        ErrorKind::InvalidPassword,
        format!("Access denied for user '{user}' (using password: {using})"),
    )
    .hint("check the user and password against the deployment's client.users")
}

/// Greets the client, negotiates TLS and authenticates it; `None` when it left before.
pub async fn admit(
    mut client: Conn<MysqlFraming>,
    ctx: &SessionContext<Shared>,
    connection_id: u32,
) -> Result<Option<Admitted>, SessionError> {
    let greeting = match ctx.protocol.pool_for(0).greeting().await {
        Ok(greeting) => greeting,
        Err(error) => {
            let error = ClientError::from_pool(&error, ClientError::from_origin);
            return refuse(&mut client, 0, error).await;
        }
    };
    let plugin = plugin_of(ctx);
    let mut offered = SERVER_CAPABILITIES;
    if ctx.tls.is_some() {
        offered |= caps::SSL;
    }
    let ours = Greeting {
        server_version: greeting.server_version.clone(),
        connection_id,
        scramble: new_scramble(),
        capabilities: offered,
        collation: greeting.collation,
        status: greeting.status,
        auth_plugin: Bytes::from_static(plugin),
    };
    write_packet(&mut client.out, 0, &ours.encode());
    client.flush().await?;
    let (packet, response) = match read_first_response(&mut client).await {
        Ok(read) => read,
        Err(Refusal::Gone) => return Ok(None),
        Err(Refusal::Invalid(seq, error)) => {
            return refuse(&mut client, seq, ClientError::protocol_violation(error)).await;
        }
    };
    let (mut client, packet, response) = if response.is_ssl_request() {
        let Some(acceptor) = &ctx.tls else {
            return refuse(
                &mut client,
                packet.next_seq(),
                ClientError::protocol_violation("SSL requested but not offered"),
            )
            .await;
        };
        let mut client =
            crate::session::accept_tls(client, acceptor, ctx.deployment.max_message_bytes).await?;
        match read_response(&mut client).await {
            Ok((packet, response)) => (client, packet, response),
            Err(Refusal::Gone) => return Ok(None),
            Err(Refusal::Invalid(seq, error)) => {
                return refuse(&mut client, seq, ClientError::protocol_violation(error)).await;
            }
        }
    } else {
        (client, packet, response)
    };
    let capabilities = response.capabilities & offered;
    let user = String::from_utf8_lossy(&response.user).into_owned();
    let proof = Proof {
        user: &user,
        plugin: response.auth_plugin.as_deref(),
        answer: response.auth_response.clone(),
        scramble: &ours.scramble,
    };
    let seq = match authenticate(&mut client, ctx, packet.next_seq(), proof).await? {
        Ok(seq) => seq,
        Err((seq, error)) => return refuse(&mut client, seq, error).await,
    };
    let database = response
        .database
        .as_ref()
        .map(|db| String::from_utf8_lossy(db).into_owned());
    if let Some(database) = &database
        && !ctx.deployment.allows_database(database)
    {
        let error = ClientError::fatal(
            ErrorKind::UnknownDatabase,
            format!("Access denied for user '{user}' to database '{database}'"),
        )
        .hint("this deployment's databases setting does not list it");
        return refuse(&mut client, seq, error).await;
    }
    Ok(Some(Admitted {
        client,
        capabilities,
        user,
        database,
        collation: response.collation,
        greeting,
        seq,
    }))
}

/// What a client sent to prove who it is.
pub struct Proof<'a> {
    /// The user it names.
    pub user: &'a str,
    /// The plugin its answer is for.
    pub plugin: Option<&'a [u8]>,
    /// Its answer.
    pub answer: Bytes,
    /// The scramble the answer is over.
    pub scramble: &'a Bytes,
}

/// The plugin clients of the deployment log in with.
fn plugin_of(ctx: &SessionContext<Shared>) -> &'static [u8] {
    match ctx.deployment.client_auth {
        ClientAuth::CachingSha2 | ClientAuth::ScramSha256 => scramble::CACHING_SHA2,
        _ => scramble::NATIVE,
    }
}

/// Checks a client's proof under the deployment's plugin, switching the client to it
/// (over the same scramble) when it answered for another: the sequence id to answer with
/// next, or the refusal to send with its sequence id.
pub async fn authenticate(
    client: &mut Conn<MysqlFraming>,
    ctx: &SessionContext<Shared>,
    mut seq: u8,
    proof: Proof<'_>,
) -> Result<Result<u8, (u8, ClientError)>, SessionError> {
    if ctx.deployment.client_auth == ClientAuth::Trust {
        return Ok(Ok(seq));
    }
    let plugin = plugin_of(ctx);
    let mut answer = proof.answer;
    if proof.plugin != Some(plugin) {
        let switch = AuthSwitch {
            plugin: Bytes::from_static(plugin),
            data: proof.scramble.clone(),
        };
        write_packet(&mut client.out, seq, &switch.encode());
        client.flush().await?;
        let reply = read(client).await?;
        seq = reply.next_seq();
        answer = reply.payload;
    }
    let password = ctx.protocol.passwords.get(proof.user);
    let proven = password.is_some_and(|password| {
        scramble::verify(plugin, password.as_bytes(), proof.scramble, &answer)
    });
    if !proven {
        return Ok(Err((seq, access_denied(proof.user, !answer.is_empty()))));
    }
    if plugin == scramble::CACHING_SHA2 {
        seq = write_packet(&mut client.out, seq, &[0x01, FAST_AUTH_SUCCESS]);
    }
    Ok(Ok(seq))
}

enum Refusal {
    Gone,
    Invalid(u8, String),
}

/// The largest first packet accepted (an SSL request or a handshake response).
const MAX_HANDSHAKE_RESPONSE: usize = 64 << 10;

/// Reads the client's first packet exactly: after an SSL request the client starts its
/// TLS handshake without waiting, and those bytes must stay in the socket for TLS.
async fn read_first_response(
    client: &mut Conn<MysqlFraming>,
) -> Result<(Packet, HandshakeResponse), Refusal> {
    let header = client
        .read_exact(HEADER_LEN)
        .await
        .map_err(|_| Refusal::Gone)?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if len > MAX_HANDSHAKE_RESPONSE {
        return Err(Refusal::Invalid(
            header[3].wrapping_add(1),
            format!("a first packet of {len} bytes; this port speaks the MySQL protocol"),
        ));
    }
    let payload = client.read_exact(len).await.map_err(|_| Refusal::Gone)?;
    let packet = Packet {
        seq: header[3],
        parts: 1,
        payload: payload.freeze(),
    };
    decode_response(packet)
}

fn decode_response(packet: Packet) -> Result<(Packet, HandshakeResponse), Refusal> {
    match HandshakeResponse::decode(packet.payload.clone()) {
        Ok(response) => Ok((packet, response)),
        Err(error) => Err(Refusal::Invalid(
            packet.next_seq(),
            format!("invalid handshake response: {error}; this port speaks the MySQL protocol"),
        )),
    }
}

async fn read_response(
    client: &mut Conn<MysqlFraming>,
) -> Result<(Packet, HandshakeResponse), Refusal> {
    let packet = match client.read_frame().await {
        Ok(Some(packet)) => packet,
        Ok(None) | Err(ConnError::TruncatedFrame) | Err(ConnError::Io(_)) => {
            return Err(Refusal::Gone);
        }
        Err(error) => {
            return Err(Refusal::Invalid(
                1,
                format!("{error}; this port speaks the MySQL protocol"),
            ));
        }
    };
    match HandshakeResponse::decode(packet.payload.clone()) {
        Ok(response) => Ok((packet, response)),
        Err(error) => Err(Refusal::Invalid(
            packet.next_seq(),
            format!("invalid handshake response: {error}; this port speaks the MySQL protocol"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrambles_hold_no_nul_and_differ() {
        let a = new_scramble();
        assert_eq!(a.len(), 20);
        assert!(!a.contains(&0));
        assert_ne!(a, new_scramble());
    }
}
