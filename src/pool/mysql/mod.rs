//! The MySQL backend of the pool: origin connections ([`origin`]), the statements
//! prepared on each ([`statements`]), the session state each carries, and how a
//! connection is brought back to a known state (ROLLBACK, COM_PING, COM_QUIT).
//!
//! The current database is session state of a connection (COM_INIT_DB), applied on
//! checkout like the client's other settings, so a deployment needs one pool, and a
//! second for clients that ask for CLIENT_FOUND_ROWS: a capability fixed when a
//! connection opens, which changes what UPDATE reports.

pub mod origin;
pub mod statements;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use super::origin::OriginError;
use super::{Backend, Pool, PoolError, PoolSet, PooledConn};
use crate::config::{OriginUrl, PoolSettings};
use crate::conn::Conn;
use crate::metrics::PoolMetrics;
use crate::protocol::TxnStatus;
use crate::wire::mysql::command::code;
use crate::wire::mysql::response::Expect;
use crate::wire::mysql::{MysqlFraming, status, write_packet};
pub use origin::{ExchangeError, MysqlTarget, OriginLink, Outcome};
pub use statements::{OriginStatement, StatementCache};

/// A pool of MySQL origin connections.
pub type MysqlPool = Pool<MysqlOrigin>;
/// A deployment's MySQL pools: [`PLAIN`] and [`FOUND_ROWS`].
pub type MysqlPools = PoolSet<MysqlOrigin>;
/// The pool of clients without CLIENT_FOUND_ROWS (kept warm).
pub const PLAIN: &str = "";
/// The pool of clients with CLIENT_FOUND_ROWS.
pub const FOUND_ROWS: &str = "found_rows";
/// A pooled MySQL origin connection.
pub type MysqlPooledConn = PooledConn<MysqlOrigin>;
/// Why a MySQL checkout failed.
pub type MysqlPoolError = PoolError<OriginError>;

/// What a fresh connection of the origin looks like, learnt from the first one.
#[derive(Debug, Default)]
pub struct Baseline {
    /// Its session variables (lower-case name → value).
    pub variables: BTreeMap<String, String>,
    /// The origin's collations: id → (character set, collation).
    pub collations: BTreeMap<u8, (String, String)>,
}

/// What the origin says of itself, for the greeting warpdrive sends its clients.
#[derive(Clone, Debug)]
pub struct MysqlGreeting {
    /// The server version string.
    pub server_version: Bytes,
    /// The origin's capabilities.
    pub capabilities: u32,
    /// Its default collation.
    pub collation: u8,
    /// Its status flags, as its own greeting gave them.
    pub status: u16,
    /// What a fresh connection looks like.
    pub baseline: Arc<Baseline>,
}

/// The session state a connection carries, beyond a fresh one's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    /// The current database.
    pub database: Option<String>,
    /// Session variables that differ from the baseline (lower-case name → value).
    pub variables: BTreeMap<String, String>,
    /// Whether several statements per COM_QUERY are allowed (COM_SET_OPTION).
    pub multi_statements: bool,
}

/// One MySQL origin server.
#[derive(Debug)]
pub struct MysqlOrigin {
    /// Where and how to connect.
    pub target: Arc<MysqlTarget>,
    statements_per_connection: usize,
    baseline: OnceLock<Arc<Baseline>>,
    /// Its connections open with CLIENT_FOUND_ROWS.
    found_rows: bool,
}

impl fmt::Display for MysqlOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.target.url)
    }
}

/// An origin connection and what warpdrive tracks on it.
pub struct MysqlConn {
    /// The connection.
    pub link: OriginLink,
    /// Its session state.
    pub session: SessionState,
    /// Statements prepared on it.
    pub statements: StatementCache,
}

impl MysqlConn {
    /// The origin's id of this connection (its thread).
    pub fn thread_id(&self) -> u32 {
        self.link.greeting.connection_id
    }
}

/// The longest the pool waits for the origin to answer its own ROLLBACK or ping.
const INTERNAL_EXCHANGE: Duration = Duration::from_secs(5);

/// The transaction status the flags say.
pub fn txn_status(flags: u16) -> TxnStatus {
    match flags & status::IN_TRANS {
        0 => TxnStatus::Idle,
        _ => TxnStatus::InTransaction,
    }
}

impl MysqlOrigin {
    async fn baseline(&self, link: &mut OriginLink) -> Result<Arc<Baseline>, OriginError> {
        if let Some(known) = self.baseline.get() {
            return Ok(Arc::clone(known));
        }
        let unreadable = |error: ExchangeError| OriginError::NotMysql {
            address: self.target.address(),
            detail: format!(
                "warpdrive could not read its session variables and collations: {error}"
            ),
        };
        let baseline = Arc::new(Baseline {
            variables: origin::session_variables(link).await.map_err(unreadable)?,
            collations: origin::collations(link).await.map_err(unreadable)?,
        });
        Ok(Arc::clone(self.baseline.get_or_init(|| baseline)))
    }
}

impl Backend for MysqlOrigin {
    type Conn = MysqlConn;
    type Greeting = MysqlGreeting;
    type Error = OriginError;
    type Framing = MysqlFraming;

    async fn connect(&self) -> Result<(MysqlConn, MysqlGreeting), OriginError> {
        let database = Some(self.target.url.database.as_str()).filter(|db| !db.is_empty());
        let mut link = origin::connect(&self.target, database, self.found_rows).await?;
        let baseline = self.baseline(&mut link).await?;
        let greeting = MysqlGreeting {
            server_version: link.greeting.server_version.clone(),
            capabilities: link.greeting.capabilities,
            collation: link.greeting.collation,
            status: link.greeting.status,
            baseline,
        };
        let conn = MysqlConn {
            link,
            session: SessionState {
                database: database.map(str::to_owned),
                variables: BTreeMap::new(),
                multi_statements: true,
            },
            statements: StatementCache::new(self.statements_per_connection),
        };
        Ok((conn, greeting))
    }

    fn is_idle_and_open(conn: &mut MysqlConn) -> bool {
        conn.link.conn.is_idle_and_open()
    }

    async fn roll_back(conn: &mut MysqlConn) -> bool {
        let rolled =
            tokio::time::timeout(INTERNAL_EXCHANGE, conn.link.query("ROLLBACK", "ROLLBACK"));
        matches!(rolled.await, Ok(Ok(outcome)) if txn_status(outcome.status).is_idle())
    }

    async fn round_trip(conn: &mut MysqlConn) -> Option<TxnStatus> {
        let ping = conn.link.exchange("COM_PING", &[code::PING], Expect::Ok);
        match tokio::time::timeout(INTERNAL_EXCHANGE, ping).await {
            Ok(Ok(outcome)) => Some(txn_status(outcome.status)),
            _ => None,
        }
    }

    async fn healthy(conn: &mut MysqlConn) -> bool {
        matches!(Self::round_trip(conn).await, Some(TxnStatus::Idle))
    }

    async fn terminate(mut conn: MysqlConn) {
        write_packet(&mut conn.link.conn.out, 0, &[code::QUIT]);
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.link.conn.flush()).await;
    }

    fn io(conn: &mut MysqlConn) -> &mut Conn<MysqlFraming> {
        &mut conn.link.conn
    }

    /// `KILL QUERY <thread>`, on a connection of its own.
    fn cancel(&self, conn: &MysqlConn) -> impl Future<Output = ()> + Send + 'static {
        let target = Arc::clone(&self.target);
        let thread = conn.thread_id();
        async move {
            if let Err(error) = kill(&target, thread, true).await {
                tracing::warn!(%error, "KILL QUERY at the origin failed");
            }
        }
    }
}

/// Kills what thread `thread` of the origin runs (`query_only`), or the thread itself,
/// from a connection of its own.
pub async fn kill(target: &MysqlTarget, thread: u32, query_only: bool) -> Result<(), String> {
    let mut link = origin::connect(target, None, false)
        .await
        .map_err(|e| e.to_string())?;
    let what = if query_only { "QUERY" } else { "CONNECTION" };
    let killed = link.query("KILL", &format!("KILL {what} {thread}")).await;
    write_packet(&mut link.conn.out, 0, &[code::QUIT]);
    let _ = link.conn.flush().await;
    killed.map(|_| ()).map_err(|e| e.to_string())
}

/// The pools of a MySQL origin; builds the TLS client configuration once.
pub fn pools(
    url: OriginUrl,
    settings: PoolSettings,
    metrics: Arc<PoolMetrics>,
) -> Result<MysqlPools, crate::tls::TlsError> {
    let tls = crate::tls::client_config(url.ssl_mode, url.ssl_root_cert.as_deref())?;
    let target = Arc::new(MysqlTarget {
        url,
        tls,
        connect_timeout: settings.connect_timeout,
    });
    let statements_per_connection = settings.prepared_statements_per_connection;
    let for_kind = move |kind: &str| MysqlOrigin {
        target: Arc::clone(&target),
        statements_per_connection,
        baseline: OnceLock::new(),
        found_rows: kind == FOUND_ROWS,
    };
    Ok(PoolSet::new(PLAIN.to_owned(), for_kind, settings, metrics))
}
