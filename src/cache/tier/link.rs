//! The tier's connection to Redis, behind a circuit breaker: an operation runs only
//! while the link is up, within the read timeout; a dropped connection, or a run of
//! timeouts, takes the link down at once, so that a dead or silent Redis costs a query
//! nothing but a look at a lock until the supervisor ([`super::Tier`]) has connected
//! again, with backoff.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::Notify;

/// A connection to one Redis, or to a Redis Cluster (which routes each command, and
/// each pipeline, by the slot of its first key).
#[derive(Clone)]
pub enum Connection {
    /// One server.
    Single(MultiplexedConnection),
    /// A cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Consecutive timeouts after which Redis counts as gone.
const TIMEOUTS_TO_OPEN: u32 = 3;

/// Why an operation did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The link is down (the breaker is open): nothing was sent.
    #[error("Redis is unreachable; warpdrive reconnects in the background")]
    Unavailable,
    /// No answer within the read timeout.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The connection in use, and what takes it down.
pub struct Link {
    current: RwLock<Option<Connection>>,
    timeouts_in_a_row: AtomicU32,
    /// Told when the link goes down, so that the supervisor reconnects.
    broken: Arc<Notify>,
}

impl Link {
    /// A link, down until [`Link::up`].
    pub fn new() -> Link {
        Link {
            current: RwLock::new(None),
            timeouts_in_a_row: AtomicU32::new(0),
            broken: Arc::new(Notify::new()),
        }
    }

    /// What the supervisor waits on.
    pub fn broken(&self) -> Arc<Notify> {
        Arc::clone(&self.broken)
    }

    /// Operations use `connection` from now on.
    pub fn up(&self, connection: Connection) {
        self.timeouts_in_a_row.store(0, Ordering::Relaxed);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(connection);
    }

    /// Takes the link down: operations fail at once until it is up again. Returns
    /// whether it was up.
    pub fn down(&self) -> bool {
        self.current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
    }

    /// An operation found the link broken: down, and the supervisor told.
    fn broke(&self) {
        if self.down() {
            self.broken.notify_one();
        }
    }

    /// Whether operations are sent at all.
    pub fn is_up(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Runs `operation` on the connection within `timeout` (longer than the read timeout
    /// for a large value).
    pub async fn run<T, F>(
        &self,
        timeout: Duration,
        operation: impl FnOnce(Connection) -> F,
    ) -> Result<T, Failure>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let connection = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Failure::Unavailable)?;
        match tokio::time::timeout(timeout, operation(connection)).await {
            Ok(Ok(answer)) => {
                self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                Ok(answer)
            }
            Ok(Err(error)) => {
                if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
                    self.broke();
                }
                Err(Failure::Redis(error))
            }
            Err(_) => {
                if self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_TO_OPEN {
                    self.broke();
                }
                Err(Failure::Timeout(timeout))
            }
        }
    }
}
