//! The PostgreSQL backend of the pool: origin connections ([`origin`]), the statements
//! warpdrive prepared on each ([`statements`]), and how a connection is brought back to
//! a known state (ROLLBACK, the empty query, Terminate).

pub mod origin;
pub mod statements;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Backend, Pool, PoolError, PoolSet, PooledConn};
use crate::config::{OriginUrl, PoolSettings};
use crate::conn::Conn;
use crate::metrics::PoolMetrics;
use crate::protocol::TxnStatus;
use crate::wire::pg::backend::{TransactionStatus, tag};
use crate::wire::pg::{PgFraming, encode};
pub use origin::{OriginConn, OriginError, OriginTarget, read_until_ready};
pub use statements::StatementCache;

/// A pool of PostgreSQL origin connections.
pub type PgPool = Pool<PgOrigin>;
/// A deployment's PostgreSQL pools, one per database.
pub type PgPoolSet = PoolSet<PgOrigin>;
/// A pooled PostgreSQL origin connection.
pub type PgPooledConn = PooledConn<PgOrigin>;
/// Why a PostgreSQL checkout failed.
pub type PgPoolError = PoolError<OriginError>;

/// ParameterStatus (name, value) pairs as an origin reported them.
pub type ServerParameters = Arc<Vec<(Bytes, Bytes)>>;

/// One PostgreSQL origin database.
#[derive(Debug)]
pub struct PgOrigin {
    /// Where and how to connect.
    pub target: Arc<OriginTarget>,
    /// Statements kept prepared per connection.
    statements_per_connection: usize,
}

impl fmt::Display for PgOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} database {}", self.target.url, self.target.database)
    }
}

/// An origin connection and what warpdrive tracks on it.
pub struct PgConn {
    /// The connection.
    pub origin: OriginConn,
    /// Session settings applied on top of the connection's startup values
    /// (name → `SET` value SQL).
    pub settings: BTreeMap<String, String>,
    /// Statements prepared on this connection by warpdrive.
    pub statements: StatementCache,
    /// Identity of the unnamed statement currently prepared here, if known.
    pub unnamed_statement: Option<[u8; 32]>,
    /// Statements that went stale (DDL changed them) and must be closed on the origin
    /// before they are prepared again.
    pub stale_statements: Vec<Bytes>,
}

impl PgConn {
    /// Writes a simple query of warpdrive's own, to be sent with the next flush, and
    /// forgets the unnamed statement, which a simple query destroys on the origin.
    pub fn write_query(&mut self, sql: &[u8]) {
        self.unnamed_statement = None;
        encode::query_raw(&mut self.origin.conn.out, sql);
    }
}

/// The longest the pool waits for the origin to answer its own rollback or empty query.
const INTERNAL_EXCHANGE: Duration = Duration::from_secs(5);

impl Backend for PgOrigin {
    type Conn = PgConn;
    type Greeting = ServerParameters;
    type Error = OriginError;
    type Framing = PgFraming;

    async fn connect(&self) -> Result<(PgConn, ServerParameters), OriginError> {
        let origin = origin::connect(&self.target).await?;
        let greeting = Arc::new(origin.parameters.clone());
        let conn = PgConn {
            origin,
            settings: BTreeMap::new(),
            statements: StatementCache::new(self.statements_per_connection),
            unnamed_statement: None,
            stale_statements: Vec::new(),
        };
        Ok((conn, greeting))
    }

    fn is_idle_and_open(conn: &mut PgConn) -> bool {
        conn.origin.conn.is_idle_and_open()
    }

    async fn roll_back(conn: &mut PgConn) -> bool {
        conn.write_query(b"ROLLBACK");
        let io = &mut conn.origin.conn;
        let settled = tokio::time::timeout(INTERNAL_EXCHANGE, read_until_ready(io, |_| Ok(())));
        matches!(settled.await, Ok(Ok(TransactionStatus::Idle)))
    }

    /// The empty query `;`, read up to its ReadyForQuery whatever the status or an error
    /// (a cancel landing on it).
    async fn round_trip(conn: &mut PgConn) -> Option<TxnStatus> {
        conn.write_query(b";");
        let io = &mut conn.origin.conn;
        let answered = tokio::time::timeout(INTERNAL_EXCHANGE, read_until_ready(io, |_| Ok(())));
        match answered.await {
            Ok(Ok(status)) => Some(status.into()),
            _ => None,
        }
    }

    async fn healthy(conn: &mut PgConn) -> bool {
        conn.write_query(b";");
        let io = &mut conn.origin.conn;
        let mut failed = false;
        let check = read_until_ready(io, |frame| {
            failed |= frame.tag() == tag::ERROR_RESPONSE;
            Ok(())
        });
        let status = tokio::time::timeout(INTERNAL_EXCHANGE, check).await;
        matches!(status, Ok(Ok(TransactionStatus::Idle))) && !failed
    }

    async fn terminate(mut conn: PgConn) {
        encode::terminate(&mut conn.origin.conn.out);
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.origin.conn.flush()).await;
    }

    fn io(conn: &mut PgConn) -> &mut Conn {
        &mut conn.origin.conn
    }

    /// A CancelRequest with the backend's key, on a connection of its own.
    fn cancel(&self, conn: &PgConn) -> impl Future<Output = ()> + Send + 'static {
        let target = Arc::clone(&self.target);
        let process_id = conn.origin.process_id;
        let secret_key = conn.origin.secret_key.clone();
        async move {
            if let Err(error) = origin::cancel(&target, process_id, &secret_key).await {
                tracing::warn!(%error, "cancel request to the origin failed");
            }
        }
    }
}

/// The pools of a PostgreSQL origin; builds the TLS client configuration once.
pub fn pools(
    url: OriginUrl,
    settings: PoolSettings,
    metrics: Arc<PoolMetrics>,
) -> Result<PgPoolSet, crate::tls::TlsError> {
    let tls = crate::tls::client_config(url.ssl_mode, url.ssl_root_cert.as_deref())?;
    let connect_timeout = settings.connect_timeout;
    let statements_per_connection = settings.prepared_statements_per_connection;
    let home = url.database.clone();
    let for_database = move |database: &str| PgOrigin {
        target: Arc::new(OriginTarget {
            url: url.clone(),
            database: database.to_owned(),
            tls: tls.clone(),
            connect_timeout,
        }),
        statements_per_connection,
    };
    Ok(PoolSet::new(home, for_database, settings, metrics))
}
