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
//!
//! Generic over the protocol: a [`Backend`] opens connections and brings them back to a
//! known state; the PostgreSQL one is in [`pg`]. Nothing here reads a message.

pub mod backend;
pub mod mysql;
pub mod origin;
pub mod pg;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
// Tokio's clock, so that maintenance can be tested on paused time.
use tokio::time::Instant;

use crate::config::PoolSettings;
use crate::metrics::PoolMetrics;
use crate::protocol::TxnStatus;
pub use backend::Backend;

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E> {
    /// Every connection stayed busy for the whole acquire timeout.
    #[error("Failed to acquire a connection from the pool.")]
    Timeout {
        /// How long the client waited.
        waited: Duration,
    },
    /// A new connection could not be opened.
    #[error(transparent)]
    Origin(E),
    /// warpdrive is shutting down.
    #[error("warpdrive is shutting down")]
    Closed,
}

/// Where a pooled connection stands in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// The origin said the last request ended, with this status, and nothing is in flight.
    Ready(TxnStatus),
    /// Messages are in flight: the state is only known when their replies are read.
    Busy,
}

/// An origin connection with what the pool tracks about it.
pub struct PooledConn<B: Backend> {
    conn: B::Conn,
    state: ConnState,
    reusable: bool,
    last_used: Instant,
    /// When the health check last succeeded (or the connection was used).
    last_checked: Instant,
}

impl<B: Backend> PooledConn<B> {
    fn new(conn: B::Conn) -> PooledConn<B> {
        PooledConn {
            conn,
            state: ConnState::Ready(TxnStatus::Idle),
            reusable: true,
            last_used: Instant::now(),
            last_checked: Instant::now(),
        }
    }

    /// Where it stands.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// Messages were sent: it counts as busy until the origin's answer is read, so that
    /// it is closed, not reused, if that is abandoned.
    pub fn set_busy(&mut self) {
        self.state = ConnState::Busy;
    }

    /// The origin said its requests ended, with this status.
    pub fn set_ready(&mut self, status: TxnStatus) {
        self.state = ConnState::Ready(status);
    }

    /// A client left session state on it (LISTEN, temporary tables, SQL PREPARE, …): it
    /// is closed, not returned, when the checkout ends.
    pub fn keep_from_others(&mut self) {
        self.reusable = false;
    }
}

/// The protocol's connection, as bb8 and deadpool hand out theirs.
impl<B: Backend> std::ops::Deref for PooledConn<B> {
    type Target = B::Conn;

    fn deref(&self) -> &B::Conn {
        &self.conn
    }
}

impl<B: Backend> std::ops::DerefMut for PooledConn<B> {
    fn deref_mut(&mut self) -> &mut B::Conn {
        &mut self.conn
    }
}

struct Inner<B: Backend> {
    target: Arc<B>,
    settings: PoolSettings,
    /// Keep `min_idle` connections even while no client uses the pool (the origin URL's
    /// own database).
    keep_warm: bool,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<PooledConn<B>>>,
    greeting: Mutex<Option<B::Greeting>>,
    metrics: Arc<PoolMetrics>,
}

/// A pool of connections to one origin database.
pub struct Pool<B: Backend> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Pool {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: Backend> Pool<B> {
    /// A pool; starts its maintenance task (which needs a Tokio runtime). It counts into
    /// `metrics` (shared by the deployment's pools).
    pub fn new(
        target: B,
        settings: PoolSettings,
        keep_warm: bool,
        metrics: Arc<PoolMetrics>,
    ) -> Pool<B> {
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(settings.max_size)),
            target: Arc::new(target),
            settings,
            keep_warm,
            idle: Mutex::new(Vec::new()),
            greeting: Mutex::new(None),
            metrics,
        });
        tokio::spawn(maintain(Arc::downgrade(&inner)));
        Pool { inner }
    }

    /// The origin this pool connects to.
    pub fn target(&self) -> &Arc<B> {
        &self.inner.target
    }

    /// The pool's settings.
    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// What the origin says about itself when a connection opens (opening one if none was
    /// opened yet).
    pub async fn greeting(&self) -> Result<B::Greeting, PoolError<B::Error>> {
        if let Some(known) = self.known_greeting() {
            return Ok(known);
        }
        let checkout = self.checkout().await?;
        drop(checkout);
        self.known_greeting().ok_or(PoolError::Closed)
    }

    fn known_greeting(&self) -> Option<B::Greeting> {
        self.inner.greeting.lock().ok().and_then(|g| g.clone())
    }

    /// Checks out a connection only if one is free right now (idle, or room to open one);
    /// `None` without waiting otherwise.
    pub async fn checkout_if_free(&self) -> Option<Result<Checkout<B>, PoolError<B::Error>>> {
        let permit = Arc::clone(&self.inner.permits).try_acquire_owned().ok()?;
        Some(self.checkout_with(permit).await)
    }

    async fn checkout_with(
        &self,
        permit: OwnedSemaphorePermit,
    ) -> Result<Checkout<B>, PoolError<B::Error>> {
        let conn = match self.inner.take_idle() {
            Some(conn) => conn,
            None => self.inner.open().await.map_err(PoolError::Origin)?,
        };
        Ok(Checkout {
            conn: Some(conn),
            permit: Some(permit),
            pool: Arc::clone(&self.inner),
        })
    }

    /// Checks out a connection, waiting at most `acquire_timeout` for one to be free.
    pub async fn checkout(&self) -> Result<Checkout<B>, PoolError<B::Error>> {
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

    /// Closes every idle connection.
    fn close_idle(&self) {
        let idle: Vec<PooledConn<B>> = match self.inner.idle.lock() {
            Ok(mut idle) => idle.drain(..).collect(),
            Err(_) => return,
        };
        for conn in idle {
            self.inner.close(conn);
        }
    }
}

impl<B: Backend> Inner<B> {
    fn take_idle(&self) -> Option<PooledConn<B>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut conn) = idle.pop() {
            if B::is_idle_and_open(&mut conn.conn) {
                return Some(conn);
            }
            self.note_closed();
        }
        None
    }

    async fn open(&self) -> Result<PooledConn<B>, B::Error> {
        self.metrics.open.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match self.target.connect().await {
            Ok((conn, greeting)) => {
                self.metrics.connect_latency.observe(started.elapsed());
                self.metrics.opened.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut known) = self.greeting.lock()
                    && known.is_none()
                {
                    *known = Some(greeting);
                }
                Ok(PooledConn::new(conn))
            }
            Err(error) => {
                self.metrics.open.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(origin = %self.target, %error, "cannot open origin connection");
                Err(error)
            }
        }
    }

    fn note_closed(&self) {
        self.metrics.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.closed.fetch_add(1, Ordering::Relaxed);
    }

    fn give_back(&self, mut conn: PooledConn<B>) {
        conn.last_used = Instant::now();
        conn.last_checked = conn.last_used;
        self.put_idle(conn);
    }

    /// Puts a connection in the idle list without counting it as used.
    fn put_idle(&self, conn: PooledConn<B>) {
        match self.idle.lock() {
            Ok(mut idle) => idle.push(conn),
            Err(_) => self.note_closed(),
        }
    }

    /// Closes a connection politely, in the background.
    fn close(&self, conn: PooledConn<B>) {
        self.note_closed();
        tokio::spawn(B::terminate(conn.conn));
    }
}

/// A checked-out connection. Dropping it returns the connection to the pool, rolling
/// back an open transaction first, or closes it when its state is unknown.
pub struct Checkout<B: Backend> {
    conn: Option<PooledConn<B>>,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Inner<B>>,
}

impl<B: Backend> Checkout<B> {
    /// The connection.
    pub fn conn(&mut self) -> &mut PooledConn<B> {
        self.conn
            .as_mut()
            .expect("a checkout holds its connection until dropped")
    }

    /// The origin this connection belongs to.
    pub fn target(&self) -> &Arc<B> {
        &self.pool.target
    }

    /// Waits until a cancel warpdrive sent for this connection (`cancel`, the task sending
    /// it, which ends when the origin has read it) can no longer cancel a query sent
    /// afterwards: the task ends, then one round trip lets the origin take in the
    /// interrupt while it waits for a command, where it is ignored. A connection that
    /// does not answer is discarded.
    pub async fn settle_cancel(&mut self, cancel: tokio::task::JoinHandle<()>) {
        let _ = tokio::time::timeout(CANCEL_DELIVERY, cancel).await;
        let conn = self.conn();
        let answered = match conn.state {
            ConnState::Ready(_) => B::round_trip(&mut conn.conn).await,
            ConnState::Busy => None,
        };
        match answered {
            Some(status) => conn.state = ConnState::Ready(status),
            None => self.discard(),
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

impl<B: Backend> Drop for Checkout<B> {
    fn drop(&mut self) {
        let (Some(mut conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        match conn.state {
            ConnState::Ready(TxnStatus::Idle) if conn.reusable => {
                self.pool.give_back(conn);
                drop(permit);
            }
            ConnState::Ready(_) if conn.reusable => {
                let pool = Arc::clone(&self.pool);
                tokio::spawn(async move {
                    let _permit = permit;
                    if B::roll_back(&mut conn.conn).await {
                        conn.state = ConnState::Ready(TxnStatus::Idle);
                        pool.give_back(conn);
                    } else {
                        pool.close(conn);
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

/// How long a cancel may take to reach the origin.
const CANCEL_DELIVERY: Duration = Duration::from_secs(10);

/// Keeps `min_idle` connections ready, closes surplus idle ones after `idle_timeout`,
/// drops idle connections the origin closed, and health-checks the ones idle for a
/// while with the empty query. Stops when the pool is dropped.
async fn maintain<B: Backend>(pool: Weak<Inner<B>>) {
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
        let expired: Vec<PooledConn<B>> = {
            let Ok(mut idle) = pool.idle.lock() else {
                return;
            };
            let mut kept = Vec::with_capacity(idle.len());
            let mut expired = Vec::new();
            let surplus_allowed = idle.len().saturating_sub(min_idle);
            let mut surplus_closed = 0;
            // Oldest first: the list is LIFO, so the front has waited longest.
            for mut conn in idle.drain(..) {
                if !B::is_idle_and_open(&mut conn.conn) {
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
            if B::healthy(&mut conn.conn).await {
                conn.last_checked = Instant::now();
                pool.put_idle(conn);
            } else {
                tracing::info!(origin = %pool.target, "an idle origin connection failed its health check; replacing it");
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
pub struct PoolSet<B: Backend> {
    /// The origin URL's own database, whose pool is kept warm.
    home: String,
    for_database: Box<dyn Fn(&str) -> B + Send + Sync>,
    metrics: Arc<PoolMetrics>,
    settings: PoolSettings,
    pools: Mutex<HashMap<String, Pool<B>>>,
}

impl<B: Backend> PoolSet<B> {
    /// Pools of connections to `for_database(name)`, `home` kept warm.
    pub fn new(
        home: String,
        for_database: impl Fn(&str) -> B + Send + Sync + 'static,
        settings: PoolSettings,
        metrics: Arc<PoolMetrics>,
    ) -> PoolSet<B> {
        PoolSet {
            home,
            for_database: Box::new(for_database),
            metrics,
            settings,
            pools: Mutex::new(HashMap::new()),
        }
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pool<B>>> {
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pool for `database`, created (and warming up) on first use.
    pub fn get(&self, database: &str) -> Pool<B> {
        self.pools()
            .entry(database.to_owned())
            .or_insert_with(|| {
                Pool::new(
                    (self.for_database)(database),
                    self.settings.clone(),
                    database == self.home,
                    Arc::clone(&self.metrics),
                )
            })
            .clone()
    }

    /// Closes the idle connections to `database`, for a statement that needs nobody
    /// connected to it (DROP DATABASE, ALTER DATABASE, CREATE DATABASE … TEMPLATE).
    pub fn close_idle(&self, database: &str) {
        let pool = self.pools().get(database).cloned();
        if let Some(pool) = pool {
            pool.close_idle();
        }
    }

    /// Every pool created so far, by database.
    pub fn all(&self) -> Vec<(String, Pool<B>)> {
        self.pools()
            .iter()
            .map(|(name, pool)| (name.clone(), pool.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
