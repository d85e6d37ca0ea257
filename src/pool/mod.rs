//! Origin connection pools, one per (deployment, database), in transaction mode.
//!
//! A [`Pool`] keeps up to `max_size` origin connections: idle ones in a LIFO list, the
//! rest checked out. [`Pool::checkout`] waits at most `acquire_timeout` for a free slot
//! (a semaphore permit), takes the most recently used idle connection that is still open,
//! or opens a new one. The [`Checkout`] guard gives the connection back when dropped:
//! returned as is when it is idle, rolled back first when a transaction is open, closed
//! when its state is unknown or it carries session state that must not leak.
//!
//! A maintenance task keeps `min_idle` connections ready, closes idle connections above
//! that after `idle_timeout`, and drops connections the origin closed (a terminated
//! backend sends a FATAL error and hangs up; the idle check sees it). A pool for another
//! database than the origin URL's keeps connections ready only while clients use it:
//! otherwise they close after `idle_timeout`, so that warpdrive does not hold a database
//! open (DROP DATABASE refuses while any session is connected) or retry a database that
//! is gone.
//!
//! The pool never holds more than `max_size` connections. Slack beyond that, as seen
//! by the origin: one short-lived connection per CancelRequest in flight.

pub mod origin;
pub mod statements;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::PoolSettings;
use crate::metrics::PoolMetrics;
use crate::wire::pg::backend::TransactionStatus;
use crate::wire::pg::encode;
pub use origin::{OriginConn, OriginError, OriginTarget, read_until_ready};
pub use statements::StatementCache;

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection stayed busy for the whole acquire timeout.
    #[error("Failed to acquire a connection from the pool.")]
    Timeout {
        /// How long the client waited.
        waited: Duration,
    },
    /// A new connection could not be opened.
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// warpdrive is shutting down.
    #[error("warpdrive is shutting down")]
    Closed,
}

/// Where a pooled connection stands in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// ReadyForQuery received with this status and nothing in flight.
    Ready(TransactionStatus),
    /// Messages are in flight: the state is only known when their replies are read.
    Busy,
}

/// An origin connection with what warpdrive tracks about it.
pub struct PooledConn {
    /// The connection.
    pub origin: OriginConn,
    /// Protocol state.
    pub state: ConnState,
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
    /// Whether the connection may serve another client after this one: false once a
    /// client left session state on it (LISTEN, temporary tables, SQL PREPARE, …).
    pub reusable: bool,
    last_used: Instant,
    /// When the empty-query health check last succeeded (or the connection was used).
    last_checked: Instant,
}

impl PooledConn {
    fn new(origin: OriginConn, statement_capacity: usize) -> PooledConn {
        PooledConn {
            origin,
            state: ConnState::Ready(TransactionStatus::Idle),
            settings: BTreeMap::new(),
            statements: StatementCache::new(statement_capacity),
            unnamed_statement: None,
            stale_statements: Vec::new(),
            reusable: true,
            last_used: Instant::now(),
            last_checked: Instant::now(),
        }
    }
}

/// ParameterStatus (name, value) pairs as an origin reported them.
pub type ServerParameters = Arc<Vec<(Bytes, Bytes)>>;

struct Inner {
    target: Arc<OriginTarget>,
    settings: PoolSettings,
    /// Keep `min_idle` connections even while no client uses the pool (the origin URL's
    /// own database).
    keep_warm: bool,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<PooledConn>>,
    baseline: Mutex<Option<ServerParameters>>,
    metrics: Arc<PoolMetrics>,
}

/// A pool of connections to one origin database.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// A pool; starts its maintenance task (which needs a Tokio runtime). It counts into
    /// `metrics` (shared by the deployment's pools).
    pub fn new(
        target: OriginTarget,
        settings: PoolSettings,
        keep_warm: bool,
        metrics: Arc<PoolMetrics>,
    ) -> Pool {
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(settings.max_size)),
            target: Arc::new(target),
            settings,
            keep_warm,
            idle: Mutex::new(Vec::new()),
            baseline: Mutex::new(None),
            metrics,
        });
        tokio::spawn(maintain(Arc::downgrade(&inner)));
        Pool { inner }
    }

    /// The origin this pool connects to.
    pub fn target(&self) -> &Arc<OriginTarget> {
        &self.inner.target
    }

    /// The pool's settings.
    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// The ParameterStatus values an origin connection reports at startup (opening one
    /// if none was opened yet).
    pub async fn baseline_parameters(&self) -> Result<ServerParameters, PoolError> {
        if let Some(known) = self.known_baseline() {
            return Ok(known);
        }
        let checkout = self.checkout().await?;
        drop(checkout);
        self.known_baseline().ok_or(PoolError::Closed)
    }

    fn known_baseline(&self) -> Option<ServerParameters> {
        self.inner.baseline.lock().ok().and_then(|b| b.clone())
    }

    /// Checks out a connection only if one is free right now (idle, or room to open one);
    /// `None` without waiting otherwise.
    pub async fn checkout_if_free(&self) -> Option<Result<Checkout, PoolError>> {
        let permit = Arc::clone(&self.inner.permits).try_acquire_owned().ok()?;
        Some(self.checkout_with(permit).await)
    }

    async fn checkout_with(&self, permit: OwnedSemaphorePermit) -> Result<Checkout, PoolError> {
        let conn = match self.inner.take_idle() {
            Some(conn) => conn,
            None => self.inner.open().await?,
        };
        Ok(Checkout {
            conn: Some(conn),
            permit: Some(permit),
            pool: Arc::clone(&self.inner),
        })
    }

    /// Checks out a connection, waiting at most `acquire_timeout` for one to be free.
    pub async fn checkout(&self) -> Result<Checkout, PoolError> {
        let permit = match Arc::clone(&self.inner.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(PoolError::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let started = Instant::now();
                tokio::time::timeout(
                    self.inner.settings.acquire_timeout,
                    Arc::clone(&self.inner.permits).acquire_owned(),
                )
                .await
                .map_err(|_| {
                    self.inner
                        .metrics
                        .acquire_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    PoolError::Timeout {
                        waited: started.elapsed(),
                    }
                })?
                .map_err(|_| PoolError::Closed)?
            }
        };
        self.checkout_with(permit).await
    }
}

impl Inner {
    /// Closes every idle connection.
    fn close_idle(self: &Arc<Self>) {
        let idle: Vec<PooledConn> = match self.idle.lock() {
            Ok(mut idle) => idle.drain(..).collect(),
            Err(_) => return,
        };
        for conn in idle {
            self.close(conn);
        }
    }

    fn take_idle(&self) -> Option<PooledConn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut conn) = idle.pop() {
            if conn.origin.conn.is_idle_and_open() {
                return Some(conn);
            }
            self.note_closed();
        }
        None
    }

    async fn open(&self) -> Result<PooledConn, OriginError> {
        self.metrics.open.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match origin::connect(&self.target).await {
            Ok(origin) => {
                self.metrics.connect_latency.observe(started.elapsed());
                self.metrics.opened.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut baseline) = self.baseline.lock()
                    && baseline.is_none()
                {
                    *baseline = Some(Arc::new(origin.parameters.clone()));
                }
                Ok(PooledConn::new(
                    origin,
                    self.settings.prepared_statements_per_connection,
                ))
            }
            Err(error) => {
                self.metrics.open.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(origin = %self.target.url, database = %self.target.database, %error, "cannot open origin connection");
                Err(error)
            }
        }
    }

    fn note_closed(&self) {
        self.metrics.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.closed.fetch_add(1, Ordering::Relaxed);
    }

    fn give_back(&self, mut conn: PooledConn) {
        conn.last_used = Instant::now();
        conn.last_checked = conn.last_used;
        self.put_idle(conn);
    }

    /// Puts a connection in the idle list without counting it as used.
    fn put_idle(&self, conn: PooledConn) {
        match self.idle.lock() {
            Ok(mut idle) => idle.push(conn),
            Err(_) => self.note_closed(),
        }
    }

    /// Closes a connection politely (Terminate), in the background.
    fn close(self: &Arc<Self>, mut conn: PooledConn) {
        self.note_closed();
        tokio::spawn(async move {
            encode::terminate(&mut conn.origin.conn.out);
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.origin.conn.flush()).await;
        });
    }
}

/// A checked-out connection. Dropping it returns the connection to the pool, rolling
/// back an open transaction first, or closes it when its state is unknown.
pub struct Checkout {
    conn: Option<PooledConn>,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Inner>,
}

impl Checkout {
    /// The connection.
    pub fn conn(&mut self) -> &mut PooledConn {
        self.conn
            .as_mut()
            .expect("a checkout holds its connection until dropped")
    }

    /// The origin this connection belongs to.
    pub fn target(&self) -> &Arc<OriginTarget> {
        &self.pool.target
    }

    /// Waits until a CancelRequest warpdrive sent for this connection (`cancel`, the task
    /// sending it, which ends when the origin has read it) can no longer cancel a query
    /// sent afterwards: the task ends, then one round trip (the empty query) lets the
    /// backend take in the interrupt while it waits for a command, where it is ignored.
    /// A connection that does not answer is discarded.
    pub async fn settle_cancel(&mut self, cancel: tokio::task::JoinHandle<()>) {
        let _ = tokio::time::timeout(CANCEL_DELIVERY, cancel).await;
        let conn = self.conn();
        if !matches!(conn.state, ConnState::Ready(_)) || !round_trip(conn).await {
            self.discard();
        }
    }

    /// Marks the connection as unusable: it is closed instead of returned.
    pub fn discard(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.reusable = false;
            conn.state = ConnState::Busy;
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        match conn.state {
            ConnState::Ready(TransactionStatus::Idle) if conn.reusable => {
                self.pool.give_back(conn);
                drop(permit);
            }
            ConnState::Ready(_) if conn.reusable => {
                let pool = Arc::clone(&self.pool);
                tokio::spawn(async move {
                    let _permit = permit;
                    match roll_back(conn).await {
                        Some(conn) => pool.give_back(conn),
                        None => pool.note_closed(),
                    }
                });
            }
            _ => {
                self.pool.close(conn);
                drop(permit);
            }
        }
    }
}

/// Rolls back the open transaction a client left behind; `None` if that failed and the
/// connection must be closed.
async fn roll_back(mut conn: PooledConn) -> Option<PooledConn> {
    let io = &mut conn.origin.conn;
    encode::query(&mut io.out, "ROLLBACK");
    let settled = tokio::time::timeout(INTERNAL_EXCHANGE, read_until_ready(io, |_| Ok(())))
        .await
        .ok()?
        .ok()?;
    (settled == TransactionStatus::Idle).then(|| {
        conn.state = ConnState::Ready(TransactionStatus::Idle);
        conn
    })
}

/// How long a CancelRequest may take to reach the origin.
const CANCEL_DELIVERY: Duration = Duration::from_secs(10);

/// The longest the pool waits for the origin to answer its own rollback or empty query.
const INTERNAL_EXCHANGE: Duration = Duration::from_secs(5);

/// Runs the empty query `;` and reads up to its ReadyForQuery, whatever the transaction
/// status or an error (a cancel landing on it); false when the origin did not answer in
/// time.
async fn round_trip(conn: &mut PooledConn) -> bool {
    conn.unnamed_statement = None;
    let io = &mut conn.origin.conn;
    encode::query(&mut io.out, ";");
    match tokio::time::timeout(INTERNAL_EXCHANGE, read_until_ready(io, |_| Ok(()))).await {
        Ok(Ok(status)) => {
            conn.state = ConnState::Ready(status);
            true
        }
        _ => false,
    }
}

/// Runs the empty query `;`; true when the origin answered without an error and
/// ReadyForQuery 'I' in time.
async fn healthy(conn: &mut PooledConn) -> bool {
    let io = &mut conn.origin.conn;
    encode::query(&mut io.out, ";");
    let mut failed = false;
    let check = read_until_ready(io, |frame| {
        failed |= frame.tag() == crate::wire::pg::backend::tag::ERROR_RESPONSE;
        Ok(())
    });
    let status = tokio::time::timeout(INTERNAL_EXCHANGE, check).await;
    matches!(status, Ok(Ok(TransactionStatus::Idle))) && !failed
}

/// Keeps `min_idle` connections ready, closes surplus idle ones after `idle_timeout`,
/// drops idle connections the origin closed, and health-checks the ones idle for a
/// while with the empty query. Stops when the pool is dropped.
async fn maintain(pool: Weak<Inner>) {
    const TICK: Duration = Duration::from_secs(1);
    loop {
        tokio::time::sleep(TICK).await;
        let Some(pool) = pool.upgrade() else { return };
        // Held by its PoolSet and by this task; anything more is a client (a session, a
        // checkout, a revalidation).
        let in_use = Arc::strong_count(&pool) > 2;
        let min_idle = if pool.keep_warm || in_use {
            pool.settings.min_idle
        } else {
            0
        };
        let mut due_for_check = Vec::new();
        let expired: Vec<PooledConn> = {
            let Ok(mut idle) = pool.idle.lock() else {
                return;
            };
            let mut kept = Vec::with_capacity(idle.len());
            let mut expired = Vec::new();
            let surplus_allowed = idle.len().saturating_sub(min_idle);
            let mut surplus_closed = 0;
            // Oldest first: the list is LIFO, so the front has waited longest.
            for mut conn in idle.drain(..) {
                if !conn.origin.conn.is_idle_and_open() {
                    pool.note_closed();
                } else if surplus_closed < surplus_allowed
                    && conn.last_used.elapsed() >= pool.settings.idle_timeout
                {
                    surplus_closed += 1;
                    expired.push(conn);
                } else if conn.last_checked.elapsed() >= pool.settings.health_check_interval {
                    due_for_check.push(conn);
                } else {
                    kept.push(conn);
                }
            }
            *idle = kept;
            expired
        };
        for conn in expired {
            pool.close(conn);
        }
        for mut conn in due_for_check {
            if healthy(&mut conn).await {
                conn.last_checked = Instant::now();
                pool.put_idle(conn);
            } else {
                tracing::info!(origin = %pool.target.url, "an idle origin connection failed its health check; replacing it");
                pool.close(conn);
            }
        }
        let missing = min_idle.saturating_sub(pool.idle.lock().map(|i| i.len()).unwrap_or(0));
        for _ in 0..missing {
            let Ok(permit) = Arc::clone(&pool.permits).try_acquire_owned() else {
                break;
            };
            match pool.open().await {
                Ok(conn) => pool.give_back(conn),
                Err(_) => break,
            }
            drop(permit);
        }
    }
}

/// The pools of one deployment: one per database, created on first use.
pub struct PoolSet {
    url: crate::config::OriginUrl,
    metrics: Arc<PoolMetrics>,
    tls: Option<Arc<rustls::ClientConfig>>,
    settings: PoolSettings,
    pools: Mutex<std::collections::HashMap<String, Pool>>,
}

impl PoolSet {
    /// Pools for an origin; builds the TLS client configuration once.
    pub fn new(
        url: crate::config::OriginUrl,
        settings: PoolSettings,
        metrics: Arc<PoolMetrics>,
    ) -> Result<PoolSet, crate::tls::TlsError> {
        let tls = crate::tls::client_config(url.ssl_mode, url.ssl_root_cert.as_deref())?;
        Ok(PoolSet {
            url,
            metrics,
            tls,
            settings,
            pools: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The pool for `database`, created (and warming up) on first use.
    pub fn get(&self, database: &str) -> Pool {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pools
            .entry(database.to_owned())
            .or_insert_with(|| {
                Pool::new(
                    OriginTarget {
                        url: self.url.clone(),
                        database: database.to_owned(),
                        tls: self.tls.clone(),
                        connect_timeout: self.settings.connect_timeout,
                    },
                    self.settings.clone(),
                    database == self.url.database,
                    Arc::clone(&self.metrics),
                )
            })
            .clone()
    }

    /// Closes the idle connections to `database`, for a statement that needs nobody
    /// connected to it (DROP DATABASE, ALTER DATABASE, CREATE DATABASE … TEMPLATE).
    pub fn close_idle(&self, database: &str) {
        let pool = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(database)
            .cloned();
        if let Some(pool) = pool {
            pool.inner.close_idle();
        }
    }

    /// Every pool created so far, by database.
    pub fn all(&self) -> Vec<(String, Pool)> {
        let pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pools
            .iter()
            .map(|(name, pool)| (name.clone(), pool.clone()))
            .collect()
    }
}
