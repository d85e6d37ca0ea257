//! The L2 tier: results shared, through Redis, by every instance that names the same
//! upstream and prefix, and the write generations through which those instances learn
//! of each other's writes.
//!
//! In Redis, for each origin database (all under one hash tag, so that a pipeline for a
//! database goes to one node):
//! - `{prefix:db}:1:e:<key>`: an entry ([`format::StoredEntry`]), with a TTL of its
//!   remaining life;
//! - `{prefix}:1:databases`: the databases whose entries were stored, for purges;
//! - `{prefix:db}:1:g:<table>`, `…:all`, `…:any`: generation counters, without a TTL
//!   (Redis must not evict them: `maxmemory-policy` `noeviction` or `volatile-*`). A
//!   write increments those of its tables (or `all`) and `any`, then publishes a
//!   [`format::Notice`] on `prefix:1:notices`.
//!
//! An entry carries the generations of what it read as they were when its query
//! started ([`TierStamp`]); it is served only while they are unchanged, so an entry
//! written before a write is never served after it. Other instances drop their own
//! (L1) entries when the notice arrives; one that loses its subscription drops them
//! all, and again once subscribed anew, since it may have missed notices in between.
//!
//! Nothing here reaches a client: every operation is bounded by the read timeout, and
//! fails at once while Redis is down ([`link`]). Writes whose generations could not be
//! incremented are remembered, and their databases' `all` incremented once Redis
//! answers again.

pub mod format;
mod link;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;

use super::invalidation::{Clocks, Written, table_key};
use super::key::CacheKey;
use crate::metrics::Histogram;
use format::{FORMAT, Notice, StoredEntry};
pub use link::Failure;
use link::Link;

/// The shortest and longest wait before connecting again.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How often a live link is checked when nothing else is sent.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long connecting, subscribing or a heartbeat may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one log line per this long about the tier's failures.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// When an instance checks Redis before serving its own copy of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Never: other instances' writes reach it when their notice does.
    #[default]
    Fast,
    /// On every hit: one round trip compares the generations of what it read.
    Strict,
}

/// A deployment's upstream.
#[derive(Clone, PartialEq, Eq)]
pub struct TierSettings {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Namespace of every key and channel.
    pub prefix: String,
    /// How long a lookup waits for Redis before going to the origin.
    pub timeout: Duration,
    /// Fast or strict.
    pub consistency: Consistency,
    /// CA certificates (PEM) that a `rediss://` server's certificate is checked
    /// against, instead of the system's.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for TierSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierSettings")
            .field("url", &redacted(&self.url))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("consistency", &self.consistency)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The generations, in Redis, of what a result read, when its query started: each
/// table's (by last name part, in order), then `all`, then `any`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierStamp(pub Arc<[u64]>);

impl From<Vec<u64>> for TierStamp {
    fn from(generations: Vec<u64>) -> TierStamp {
        TierStamp(generations.into())
    }
}

impl TierStamp {
    /// Whether an entry stamped `self` is current by `now` (both for the same tables).
    pub fn is_current(&self, now: &TierStamp, tables_unknown: bool) -> bool {
        unchanged(&self.0, &now.0, tables_unknown)
    }
}

/// Whether generations `then` are those of `now`; `any` (the last) counts only for a
/// result whose tables are not all known.
fn unchanged(then: &[u64], now: &[u64], tables_unknown: bool) -> bool {
    let compared = match tables_unknown {
        true => then.len(),
        false => then.len().saturating_sub(1),
    };
    then.len() == now.len() && then[..compared] == now[..compared]
}

/// What a lookup in the tier found.
#[derive(Debug)]
pub enum Fetched {
    /// A current entry, and the generations it was checked against.
    Found(StoredEntry, TierStamp),
    /// No current entry; the generations to stamp the origin's result with.
    Missing(TierStamp),
    /// Redis did not answer.
    Unavailable,
}

/// The tier's counters.
#[derive(Debug, Default)]
pub struct TierStats {
    /// Lookups that found a current entry.
    pub hits: AtomicU64,
    /// Lookups that found none.
    pub misses: AtomicU64,
    /// Operations that failed (Redis errors, dropped connections).
    pub errors: AtomicU64,
    /// Operations that got no answer within the timeout.
    pub timeouts: AtomicU64,
    /// Operations not sent because Redis was down.
    pub skipped: AtomicU64,
    /// Bytes of entries read.
    pub bytes_read: AtomicU64,
    /// Bytes of entries written.
    pub bytes_written: AtomicU64,
    /// Values that were corrupt, foreign or of another format (counted as misses too).
    pub refused_values: AtomicU64,
    /// Other instances' writes heard of.
    pub invalidations_remote: AtomicU64,
    /// Other instances' purges heard of.
    pub invalidations_purge: AtomicU64,
    /// Times the instance dropped its entries for a lost or renewed subscription.
    pub invalidations_resubscribe: AtomicU64,
    /// Connections (and subscriptions) made to Redis.
    pub connects: AtomicU64,
    /// From a remote write's notice being sent to its arrival here.
    pub propagation: Histogram,
}

/// Time since the Unix epoch.
pub fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A deployment's connection to its upstream.
pub struct Tier {
    settings: TierSettings,
    client: redis::Client,
    link: Link,
    clocks: Arc<Clocks>,
    stats: TierStats,
    /// Databases written while Redis could not be told.
    dirty: Mutex<BTreeSet<String>>,
    /// Databases looked up: those whose entries this instance may hold.
    databases: Mutex<BTreeSet<String>>,
    last_log: Mutex<Option<Instant>>,
}

/// Why the tier cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The URL is not one the Redis client takes.
    #[error(
        "cache upstream {url:?} is not a Redis URL warpdrive can use ({reason}); write redis://HOST:PORT/DB or rediss://HOST:PORT/DB"
    )]
    Url {
        /// The URL, without its password.
        url: String,
        /// Why.
        reason: String,
    },
    /// The CA file named by `upstream_ca` cannot be read.
    #[error("cannot read the cache upstream's CA file {path}: {source}; check upstream_ca")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Tier {
    /// Starts the tier of `settings`: it connects in the background (lookups go to the
    /// origin until it has), and marks remote writes on `clocks`.
    pub fn start(settings: TierSettings, clocks: Arc<Clocks>) -> Result<Arc<Tier>, TierError> {
        let refused = |reason: String| TierError::Url {
            url: redacted(&settings.url),
            reason,
        };
        if !(settings.url.starts_with("redis://") || settings.url.starts_with("rediss://")) {
            return Err(refused("the scheme is neither redis nor rediss".to_owned()));
        }
        let client = match &settings.ca_file {
            None => redis::Client::open(settings.url.as_str()),
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|source| TierError::Ca {
                    path: path.clone(),
                    source,
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(settings.url.as_str(), certificates)
            }
        }
        .map_err(|e| refused(e.to_string()))?;
        let tier = Arc::new(Tier {
            link: Link::new(settings.timeout),
            settings,
            client,
            clocks,
            stats: TierStats::default(),
            dirty: Mutex::default(),
            databases: Mutex::default(),
            last_log: Mutex::new(None),
        });
        tokio::spawn(supervise(Arc::downgrade(&tier), tier.link.broken()));
        Ok(tier)
    }

    /// Its counters.
    pub fn stats(&self) -> &TierStats {
        &self.stats
    }

    /// Whether hits are checked against Redis.
    pub fn strict(&self) -> bool {
        self.settings.consistency == Consistency::Strict
    }

    /// Whether Redis is reachable now.
    pub fn is_up(&self) -> bool {
        self.link.is_up()
    }

    /// Looks `key` up, with the generations of `tables` (and more, when
    /// `tables_unknown`), in one round trip.
    pub async fn fetch(
        &self,
        database: &str,
        key: CacheKey,
        tables: &[String],
        tables_unknown: bool,
    ) -> Fetched {
        self.note_database(database);
        let keys = self.keys(database);
        let stamp_keys = keys.stamp(tables);
        let entry_key = keys.entry(key);
        let answer = self
            .run(|mut connection| async move {
                redis::pipe()
                    .get(&entry_key)
                    .mget(&stamp_keys)
                    .query_async::<(Option<Vec<u8>>, Vec<Option<u64>>)>(&mut connection)
                    .await
            })
            .await;
        let Some((value, generations)) = answer else {
            return Fetched::Unavailable;
        };
        let now = TierStamp(
            generations
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
        );
        let Some(value) = value else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return Fetched::Missing(now);
        };
        self.stats
            .bytes_read
            .fetch_add(value.len() as u64, Ordering::Relaxed);
        match format::decode_entry(&value) {
            Ok(entry)
                if entry.tables == tables
                    && entry.tables_unknown == tables_unknown
                    && unchanged(&entry.generations, &now.0, tables_unknown) =>
            {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Fetched::Found(entry, now)
            }
            Ok(_) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                Fetched::Missing(now)
            }
            Err(error) => {
                self.stats.refused_values.fetch_add(1, Ordering::Relaxed);
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                self.log_failure(&format!("a cached value in Redis was refused: {error}"));
                Fetched::Missing(now)
            }
        }
    }

    fn note_database(&self, database: &str) {
        let mut databases = self.databases.lock().unwrap_or_else(|p| p.into_inner());
        if !databases.contains(database) {
            databases.insert(database.to_owned());
        }
    }

    /// The generations of `tables` now; `None` when Redis does not answer.
    pub async fn stamp(&self, database: &str, tables: &[String]) -> Option<TierStamp> {
        let stamp_keys = self.keys(database).stamp(tables);
        self.run(|mut connection| async move {
            redis::cmd("MGET")
                .arg(&stamp_keys)
                .query_async::<Vec<Option<u64>>>(&mut connection)
                .await
        })
        .await
        .map(|generations| {
            TierStamp(
                generations
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect(),
            )
        })
    }

    /// Stores `entry` under `key`, in the background, for the `ttl` it has left.
    pub fn store(
        self: &Arc<Self>,
        database: &str,
        key: CacheKey,
        entry: StoredEntry,
        ttl: Duration,
    ) {
        if ttl.is_zero() || !self.link.is_up() {
            return;
        }
        let entry_key = self.keys(database).entry(key);
        let (databases_key, database) = (self.databases_key(), database.to_owned());
        let tier = Arc::clone(self);
        tokio::spawn(async move {
            let value = format::encode(&entry);
            let size = value.len() as u64;
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let stored = tier
                .run(|mut connection| async move {
                    redis::pipe()
                        .cmd("SET")
                        .arg(&entry_key)
                        .arg(value)
                        .arg("PX")
                        .arg(ttl_ms)
                        .ignore()
                        .sadd(&databases_key, &database)
                        .ignore()
                        .query_async::<()>(&mut connection)
                        .await
                })
                .await;
            if stored.is_some() {
                tier.stats.bytes_written.fetch_add(size, Ordering::Relaxed);
            }
        });
    }

    /// A write through this instance completed: its generations are incremented and
    /// the other instances told. When Redis does not answer, the database is
    /// remembered, and everything in it invalidated once Redis answers again.
    pub async fn mark(&self, database: &str, written: Written<'_>) {
        let owed: BTreeSet<String> =
            std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.add_mark(&mut pipe, database, written, false);
        for other in owed.iter().filter(|other| *other != database) {
            self.add_mark(&mut pipe, other, Written::Everything, false);
        }
        let sent = self
            .run(|mut connection| async move { pipe.query_async::<()>(&mut connection).await })
            .await;
        if sent.is_none() {
            let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
            dirty.extend(owed);
            dirty.insert(database.to_owned());
        }
    }

    /// An operator's purge of `tables` (everything, for `None`): the entries in Redis
    /// that read them are no longer served, and the other instances drop theirs, for
    /// every database any instance stored entries of. False when Redis did not answer.
    pub async fn purge(&self, tables: Option<&[String]>) -> bool {
        let databases_key = self.databases_key();
        let listed = self
            .run(|mut connection| async move {
                redis::cmd("SMEMBERS")
                    .arg(&databases_key)
                    .query_async::<Vec<String>>(&mut connection)
                    .await
            })
            .await;
        let Some(mut databases) = listed else {
            return false;
        };
        databases.extend(
            self.databases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        databases.sort();
        databases.dedup();
        let written = match tables {
            Some(tables) => Written::Tables(tables),
            None => Written::Everything,
        };
        let mut pipe = redis::pipe();
        for database in &databases {
            self.add_mark(&mut pipe, database, written, true);
        }
        self.run(|mut connection| async move { pipe.query_async::<()>(&mut connection).await })
            .await
            .is_some()
    }

    fn add_mark(
        &self,
        pipe: &mut redis::Pipeline,
        database: &str,
        written: Written<'_>,
        purge: bool,
    ) {
        let keys = self.keys(database);
        let tables = match written {
            Written::Tables(tables) => {
                let names: BTreeSet<&str> = tables.iter().map(|t| table_key(t)).collect();
                for name in &names {
                    pipe.incr(keys.generation(name), 1).ignore();
                }
                Some(names.into_iter().map(str::to_owned).collect())
            }
            Written::Everything => {
                pipe.incr(keys.all(), 1).ignore();
                None
            }
        };
        pipe.incr(keys.any(), 1).ignore();
        let notice = Notice {
            format: FORMAT,
            sender: self.clocks.instance(),
            database: database.to_owned(),
            tables,
            purge,
            sent_at_us: u64::try_from(wall_clock().as_micros()).unwrap_or(u64::MAX),
        };
        pipe.publish(self.channel(), format::encode(&notice))
            .ignore();
    }

    /// Runs one operation, counting its failure; `None` when it gave no answer.
    async fn run<T, F>(&self, operation: impl FnOnce(MultiplexedConnection) -> F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match self.link.run(operation).await {
            Ok(answer) => Some(answer),
            Err(failure) => {
                let counter = match &failure {
                    Failure::Unavailable => &self.stats.skipped,
                    Failure::Timeout(_) => &self.stats.timeouts,
                    Failure::Redis(_) => &self.stats.errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if !matches!(failure, Failure::Unavailable) {
                    self.log_failure(&failure.to_string());
                }
                None
            }
        }
    }

    /// Logs a failure, at most once per [`LOG_INTERVAL`] (the counters count them all).
    fn log_failure(&self, what: &str) {
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= LOG_INTERVAL) {
            *last = Some(Instant::now());
            tracing::warn!(upstream = %redacted(&self.settings.url), "cache upstream: {what}; queries go on without it (further failures are counted, and logged at most every 10 s)");
        }
    }

    fn keys(&self, database: &str) -> Keys {
        Keys(format!("{{{}:{database}}}:{FORMAT}", self.settings.prefix))
    }

    /// The set of databases whose entries are in Redis (for purges).
    fn databases_key(&self) -> String {
        format!("{{{}}}:{FORMAT}:databases", self.settings.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:{FORMAT}:notices", self.settings.prefix)
    }

    /// Another instance's notice arrived.
    fn heard(&self, payload: &[u8]) {
        let notice = match format::decode_notice(payload) {
            Ok(notice) => notice,
            Err(error) => {
                self.stats.refused_values.fetch_add(1, Ordering::Relaxed);
                self.log_failure(&format!("a notice of a write was refused: {error}"));
                return;
            }
        };
        if notice.sender == self.clocks.instance() {
            return;
        }
        let generations = self.clocks.of(&notice.database);
        match &notice.tables {
            Some(tables) => generations.invalidate(Written::Tables(tables)),
            None => generations.invalidate(Written::Everything),
        }
        let counter = match notice.purge {
            true => &self.stats.invalidations_purge,
            false => &self.stats.invalidations_remote,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let sent = Duration::from_micros(notice.sent_at_us);
        self.stats
            .propagation
            .observe(wall_clock().saturating_sub(sent));
    }

    /// The subscription is lost, or new: notices may have been missed, so nothing held
    /// before now is served.
    fn forget_everything(&self, counted: bool) {
        let databases = self.databases.lock().unwrap_or_else(|p| p.into_inner());
        for database in databases.iter() {
            self.clocks.of(database).invalidate(Written::Everything);
        }
        if counted {
            self.stats
                .invalidations_resubscribe
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connects and subscribes; then settles what is owed from while Redis was away.
    async fn connect(
        &self,
    ) -> Result<
        (
            MultiplexedConnection,
            redis::aio::PubSubSink,
            redis::aio::PubSubStream,
        ),
        String,
    > {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let connecting = async {
            let connection = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
            sink.subscribe(self.channel()).await?;
            Ok::<_, redis::RedisError>((connection, sink, stream))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
            Ok(Ok(connected)) => Ok(connected),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", CONNECT_TIMEOUT * 2)),
        }
    }
}

/// Names of one database's keys.
struct Keys(String);

impl Keys {
    fn entry(&self, key: CacheKey) -> String {
        let mut name = format!("{}:e:", self.0);
        for byte in key.0 {
            name.push_str(&format!("{byte:02x}"));
        }
        name
    }

    fn generation(&self, table: &str) -> String {
        format!("{}:g:{table}", self.0)
    }

    fn all(&self) -> String {
        format!("{}:all", self.0)
    }

    fn any(&self) -> String {
        format!("{}:any", self.0)
    }

    /// The keys of a [`TierStamp`] for a result that read `tables`.
    fn stamp(&self, tables: &[String]) -> Vec<String> {
        let names: BTreeSet<&str> = tables.iter().map(|t| table_key(t)).collect();
        let mut keys: Vec<String> = names
            .into_iter()
            .map(|name| self.generation(name))
            .collect();
        keys.push(self.all());
        keys.push(self.any());
        keys
    }
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Keeps the tier connected and subscribed while it lives: connects with backoff,
/// listens to notices, checks the link every [`HEARTBEAT`], and starts again when the
/// link or the subscription drops.
async fn supervise(tier: Weak<Tier>, broken: Arc<tokio::sync::Notify>) {
    let mut backoff = BACKOFF.0;
    let mut first = true;
    loop {
        let Some(live) = tier.upgrade() else { return };
        match live.connect().await {
            Ok((connection, sink, stream)) => {
                live.stats.connects.fetch_add(1, Ordering::Relaxed);
                // Subscribed first, then forgotten: no notice falls in between.
                live.forget_everything(!first);
                live.link.up(connection);
                let owed = live
                    .dirty
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_first();
                if let Some(database) = owed {
                    live.mark(&database, Written::Everything).await;
                }
                if !first {
                    tracing::info!(upstream = %redacted(&live.settings.url), "cache upstream reachable again");
                }
                first = false;
                backoff = BACKOFF.0;
                drop(live);
                listen(&tier, &broken, sink, stream).await;
                let Some(live) = tier.upgrade() else { return };
                let _was_up = live.link.down();
                live.forget_everything(true);
                live.log_failure("the connection (or the subscription to other instances' writes) was lost; this instance's cached results were dropped");
            }
            Err(error) => {
                live.log_failure(&format!("connecting failed: {error}"));
                drop(live);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Hears notices until the subscription or the link drops, or the tier is gone.
async fn listen(
    tier: &Weak<Tier>,
    broken: &tokio::sync::Notify,
    mut sink: redis::aio::PubSubSink,
    mut stream: redis::aio::PubSubStream,
) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => {
                let (Some(message), Some(live)) = (message, tier.upgrade()) else { return };
                live.heard(message.get_payload_bytes());
            }
            _ = heartbeat.tick() => {
                if tier.strong_count() == 0 {
                    return;
                }
                let ping = tokio::time::timeout(CONNECT_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return;
                }
            }
            _ = broken.notified() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_compares_any_only_for_results_of_unknown_tables() {
        let stamped = TierStamp::from(vec![1, 0, 4]);
        assert!(stamped.is_current(&TierStamp::from(vec![1, 0, 5]), false));
        assert!(!stamped.is_current(&TierStamp::from(vec![1, 0, 5]), true));
        assert!(!stamped.is_current(&TierStamp::from(vec![2, 0, 5]), false));
        assert!(!stamped.is_current(&TierStamp::from(vec![1, 1, 4]), false));
        assert!(!stamped.is_current(&TierStamp::from(vec![1, 0]), false));
    }

    #[test]
    fn keys_of_a_database_share_one_hash_tag() {
        let keys = Keys(format!("{{{}:{}}}:{FORMAT}", "wd", "shop"));
        let stamp = keys.stamp(&[
            "public.prices".to_owned(),
            "prices".to_owned(),
            "stock".to_owned(),
        ]);
        assert_eq!(
            stamp,
            [
                "{wd:shop}:1:g:prices",
                "{wd:shop}:1:g:stock",
                "{wd:shop}:1:all",
                "{wd:shop}:1:any"
            ]
        );
        assert!(
            keys.entry(CacheKey([0xab; 32]))
                .starts_with("{wd:shop}:1:e:abab")
        );
    }

    #[test]
    fn passwords_are_not_shown() {
        let settings = TierSettings {
            url: "rediss://user:secret@r:6380/0".to_owned(),
            prefix: "p".to_owned(),
            timeout: Duration::from_millis(20),
            consistency: Consistency::Fast,
            ca_file: None,
        };
        assert!(!format!("{settings:?}").contains("secret"));
        assert_eq!(
            redacted("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1/0"), "redis://127.0.0.1/0");
    }
}
