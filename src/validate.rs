//! `warpdrive validate`: connects to each deployment's origin as the pool would, runs
//! the empty query, and names the one cause of a failure.
//!
//! Each cause has a stable name that scripts can match (`--json`), and a hint that says
//! what to change. Databases checked: the origin URL's, and each one of `databases`.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, Deployment};
use crate::conn::ConnError;
use crate::pool::mysql::MysqlTarget;
use crate::pool::pg::{OriginError, OriginTarget, origin, read_until_ready};
use crate::protocol::Protocol;
use crate::wire::mysql::command::code;
use crate::wire::mysql::response::Expect;
use crate::wire::mysql::write_packet;
use crate::wire::pg::backend::{BackendMessage, TransactionStatus, tag};
use crate::wire::pg::encode;

/// Why an origin could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The host name does not resolve.
    HostNotFound,
    /// The host is unreachable, or connecting timed out.
    HostUnreachable,
    /// Nothing listens on the port.
    ConnectionRefused,
    /// The origin does not offer TLS, and the sslmode requires it.
    TlsUnsupported,
    /// The origin's certificate failed verification.
    CertificateInvalid,
    /// The TLS handshake failed for another reason, or the TLS settings are unusable.
    TlsFailed,
    /// The origin refused the user or the password, or needs a password the URL lacks.
    BadCredentials,
    /// The origin asks for an authentication method warpdrive does not speak.
    UnsupportedAuthentication,
    /// The database does not exist.
    DatabaseNotFound,
    /// The user may not connect to the database.
    PermissionDenied,
    /// The origin refused the connection for another reason (too many clients, …).
    OriginRefused,
    /// Connected, but the test query failed.
    TestQueryFailed,
    /// The connection broke, or the origin did not speak the protocol.
    ProtocolError,
}

impl Cause {
    /// Its stable name.
    pub fn name(self) -> &'static str {
        match self {
            Cause::HostNotFound => "host_not_found",
            Cause::HostUnreachable => "host_unreachable",
            Cause::ConnectionRefused => "connection_refused",
            Cause::TlsUnsupported => "tls_unsupported",
            Cause::CertificateInvalid => "certificate_invalid",
            Cause::TlsFailed => "tls_failed",
            Cause::BadCredentials => "bad_credentials",
            Cause::UnsupportedAuthentication => "unsupported_authentication",
            Cause::DatabaseNotFound => "database_not_found",
            Cause::PermissionDenied => "permission_denied",
            Cause::OriginRefused => "origin_refused",
            Cause::TestQueryFailed => "test_query_failed",
            Cause::ProtocolError => "protocol_error",
        }
    }

    /// What to change, before an origin of `protocol`.
    pub fn hint_for(self, protocol: Protocol) -> &'static str {
        match (protocol, self) {
            (Protocol::Mysql, Cause::TlsUnsupported) => {
                "enable TLS on the origin, or lower ssl-mode in the origin URL (PREFERRED, DISABLED)"
            }
            (Protocol::Mysql, Cause::CertificateInvalid) => {
                "give the CA that signed the origin's certificate with ssl-ca=FILE, or use ssl-mode=REQUIRED (no verification)"
            }
            (Protocol::Mysql, Cause::TlsFailed) => "check ssl-mode and ssl-ca in the origin URL",
            (Protocol::Mysql, Cause::UnsupportedAuthentication) => {
                "give the origin user mysql_native_password or caching_sha2_password (ALTER USER … IDENTIFIED WITH …), or use TLS"
            }
            (Protocol::Mysql, Cause::PermissionDenied) => {
                "GRANT the origin URL's user access to the database"
            }
            (Protocol::Mysql, Cause::ProtocolError) => {
                "check that the origin URL points at a MySQL or MariaDB server (5.7 / 10.2 or later)"
            }
            (_, cause) => cause.hint(),
        }
    }

    /// What to change.
    pub fn hint(self) -> &'static str {
        match self {
            Cause::HostNotFound => "check the host name in the origin URL",
            Cause::HostUnreachable => {
                "check that the origin is up and that no firewall is in the way (or raise pool.connect_timeout)"
            }
            Cause::ConnectionRefused => {
                "check the port in the origin URL and that the origin is listening on it"
            }
            Cause::TlsUnsupported => {
                "enable TLS on the origin, or lower sslmode in the origin URL (prefer, disable)"
            }
            Cause::CertificateInvalid => {
                "give the CA that signed the origin's certificate with sslrootcert=FILE, or use sslmode=require (no verification)"
            }
            Cause::TlsFailed => "check sslmode and sslrootcert in the origin URL",
            Cause::BadCredentials => "check the user and password in the origin URL",
            Cause::UnsupportedAuthentication => {
                "make the origin ask for scram-sha-256, md5 or password (pg_hba.conf)"
            }
            Cause::DatabaseNotFound => "check the database in the origin URL (or in databases)",
            Cause::PermissionDenied => "GRANT CONNECT ON DATABASE … TO the origin URL's user",
            Cause::OriginRefused => "read the origin's message; it may be out of connection slots",
            Cause::TestQueryFailed => "read the origin's message; check the user's privileges",
            Cause::ProtocolError => "check that the origin URL points at a PostgreSQL server",
        }
    }
}

/// Why one check failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The cause.
    pub cause: Cause,
    /// What happened, in detail.
    pub message: String,
    /// What to change.
    pub hint: &'static str,
}

impl Failure {
    fn new(cause: Cause, message: String) -> Failure {
        Failure {
            cause,
            message,
            hint: cause.hint(),
        }
    }
}

/// The check of one origin database.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// The deployment.
    pub deployment: String,
    /// The protocol its origin speaks.
    pub protocol: &'static str,
    /// The origin, without its password.
    pub origin: String,
    /// The database.
    pub database: String,
    /// How long connecting and the test query took, when they worked.
    pub elapsed_ms: Option<u64>,
    /// Why it failed, when it did.
    pub failure: Option<Failure>,
}

impl Check {
    /// One line for people.
    pub fn to_text(&self) -> String {
        let what = format!(
            "{}: {} database {:?}",
            self.deployment, self.origin, self.database
        );
        match &self.failure {
            None => format!("ok      {what} ({} ms)", self.elapsed_ms.unwrap_or(0)),
            Some(failure) => format!(
                "FAILED  {what}: {}: {}\n        hint: {}",
                failure.cause.name(),
                failure.message,
                failure.hint
            ),
        }
    }
}

/// Checks every origin database of every deployment, one after another.
pub async fn validate(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    for deployment in &config.deployments {
        let mut databases = vec![deployment.origin.database.clone()];
        for database in deployment.databases.iter().flatten() {
            if !databases.contains(database) {
                databases.push(database.clone());
            }
        }
        for database in databases {
            checks.push(check(deployment, database).await);
        }
    }
    checks
}

async fn check(deployment: &Deployment, database: String) -> Check {
    let started = Instant::now();
    let protocol = deployment.origin.protocol;
    let outcome = connect_and_query(deployment, &database)
        .await
        .map_err(|failure| Failure {
            hint: failure.cause.hint_for(protocol),
            ..failure
        });
    Check {
        deployment: deployment.name.clone(),
        protocol: protocol.name(),
        origin: deployment.origin.to_string(),
        database,
        elapsed_ms: outcome
            .is_ok()
            .then(|| started.elapsed().as_millis() as u64),
        failure: outcome.err(),
    }
}

async fn connect_and_query(deployment: &Deployment, database: &str) -> Result<(), Failure> {
    match deployment.origin.protocol {
        Protocol::Postgres => connect_and_query_postgres(deployment, database).await,
        Protocol::Mysql => connect_and_ping_mysql(deployment, database).await,
    }
}

/// A MySQL origin: connect and authenticate as the pool would, then COM_PING.
async fn connect_and_ping_mysql(deployment: &Deployment, database: &str) -> Result<(), Failure> {
    let url = &deployment.origin;
    let tls = crate::tls::client_config(url.ssl_mode, url.ssl_root_cert.as_deref())
        .map_err(|error| Failure::new(Cause::TlsFailed, error.to_string()))?;
    let target = MysqlTarget {
        url: url.clone(),
        tls,
        connect_timeout: deployment.pool.connect_timeout,
    };
    let database = Some(database).filter(|db| !db.is_empty());
    let mut link = crate::pool::mysql::origin::connect(&target, database, false)
        .await
        .map_err(|error| Failure::new(cause_of(&error), error.to_string()))?;
    let ping = link.exchange("COM_PING", &[code::PING], Expect::Ok);
    match tokio::time::timeout(TEST_QUERY_TIMEOUT, ping).await {
        Err(_) => Err(Failure::new(
            Cause::TestQueryFailed,
            format!(
                "the origin did not answer COM_PING within {}s",
                TEST_QUERY_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(error)) => Err(Failure::new(
            Cause::TestQueryFailed,
            format!("COM_PING failed: {error}"),
        )),
        Ok(Ok(_)) => {
            write_packet(&mut link.conn.out, 0, &[code::QUIT]);
            let _ = link.conn.flush().await;
            Ok(())
        }
    }
}

/// A PostgreSQL origin: connect and start up as the pool would, then the empty query.
async fn connect_and_query_postgres(
    deployment: &Deployment,
    database: &str,
) -> Result<(), Failure> {
    let url = &deployment.origin;
    let tls = crate::tls::client_config(url.ssl_mode, url.ssl_root_cert.as_deref())
        .map_err(|error| Failure::new(Cause::TlsFailed, error.to_string()))?;
    let target = OriginTarget {
        url: url.clone(),
        database: database.to_owned(),
        tls,
        connect_timeout: deployment.pool.connect_timeout,
    };
    let mut conn = origin::connect(&target)
        .await
        .map_err(|error| Failure::new(cause_of(&error), error.to_string()))?;
    encode::query(&mut conn.conn.out, ";");
    let mut refusal = None;
    let exchange = read_until_ready(&mut conn.conn, |frame| {
        if frame.tag() == tag::ERROR_RESPONSE
            && let Ok(BackendMessage::ErrorResponse(fields)) = BackendMessage::decode(&frame)
        {
            refusal = Some(fields.message());
        }
        Ok(())
    });
    let status = tokio::time::timeout(TEST_QUERY_TIMEOUT, exchange).await;
    let failed = |message: String| Failure::new(Cause::TestQueryFailed, message);
    match status {
        Err(_) => Err(failed(format!(
            "the origin did not answer the empty query within {}s",
            TEST_QUERY_TIMEOUT.as_secs()
        ))),
        Ok(Err(error)) => Err(Failure::new(Cause::ProtocolError, error.to_string())),
        Ok(Ok(_)) if refusal.is_some() => Err(failed(format!(
            "the empty query failed: {}",
            refusal.unwrap_or_default()
        ))),
        Ok(Ok(TransactionStatus::Idle)) => {
            encode::terminate(&mut conn.conn.out);
            let _ = conn.conn.flush().await;
            Ok(())
        }
        Ok(Ok(_)) => Err(failed(
            "the origin left a transaction open after the empty query".to_owned(),
        )),
    }
}

/// The longest the test query may take.
const TEST_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The cause of a connection failure.
pub fn cause_of(error: &OriginError) -> Cause {
    match error {
        OriginError::Resolve { .. } => Cause::HostNotFound,
        OriginError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            Cause::ConnectionRefused
        }
        OriginError::Connect { .. } | OriginError::Timeout { .. } => Cause::HostUnreachable,
        OriginError::TlsUnsupported { .. } => Cause::TlsUnsupported,
        OriginError::Tls { source, .. } if is_certificate_error(source) => {
            Cause::CertificateInvalid
        }
        OriginError::Tls { .. } => Cause::TlsFailed,
        OriginError::BadCredentials { .. } | OriginError::NoPassword | OriginError::Scram(_) => {
            Cause::BadCredentials
        }
        OriginError::UnsupportedAuth(_)
        | OriginError::UnsupportedMysqlAuth(_)
        | OriginError::RsaExchange(_) => Cause::UnsupportedAuthentication,
        OriginError::UnknownDatabase { .. } => Cause::DatabaseNotFound,
        OriginError::Refused(fields) if fields.code() == b"42501" => Cause::PermissionDenied,
        OriginError::Refused(_) => Cause::OriginRefused,
        // ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR
        OriginError::MysqlRefused {
            code: 1044 | 1142, ..
        } => Cause::PermissionDenied,
        OriginError::MysqlRefused { .. } => Cause::OriginRefused,
        OriginError::Conn(ConnError::Io(source)) if is_certificate_error(source) => {
            Cause::CertificateInvalid
        }
        OriginError::Conn(_) | OriginError::NotPostgres { .. } | OriginError::NotMysql { .. } => {
            Cause::ProtocolError
        }
    }
}

fn is_certificate_error(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| {
            matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_a_distinct_stable_name() {
        let all = [
            Cause::HostNotFound,
            Cause::HostUnreachable,
            Cause::ConnectionRefused,
            Cause::TlsUnsupported,
            Cause::CertificateInvalid,
            Cause::TlsFailed,
            Cause::BadCredentials,
            Cause::UnsupportedAuthentication,
            Cause::DatabaseNotFound,
            Cause::PermissionDenied,
            Cause::OriginRefused,
            Cause::TestQueryFailed,
            Cause::ProtocolError,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), all.len());
        for cause in all {
            let json = serde_json::to_string(&cause).expect("json");
            assert_eq!(json, format!("\"{}\"", cause.name()));
        }
    }

    #[test]
    fn connection_errors_map_to_their_cause() {
        let refused = OriginError::Connect {
            address: "h:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(cause_of(&refused), Cause::ConnectionRefused);
        let unreachable = OriginError::Connect {
            address: "h:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::HostUnreachable),
        };
        assert_eq!(cause_of(&unreachable), Cause::HostUnreachable);
        let certificate = OriginError::Tls {
            address: "h:1".into(),
            source: std::io::Error::other(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        assert_eq!(cause_of(&certificate), Cause::CertificateInvalid);
        assert_eq!(cause_of(&OriginError::NoPassword), Cause::BadCredentials);
    }
}
