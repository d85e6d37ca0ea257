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
//!   [`format::Notice`] on `{prefix:db}:1:notices` (instances subscribe to the
//!   pattern `{prefix:*}:1:notices`).
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

mod flight;
pub mod format;
mod keys;
mod link;
mod servers;
mod supervisor;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::invalidation::{Clocks, Written, table_key};
use super::key::CacheKey;
use crate::metrics::Histogram;
pub use flight::{Claim, FlightLock};
use format::{FORMAT, Notice, StoredEntry};
use keys::Keys;
pub use link::Failure;
use link::{Connection, Link};
use servers::{CONNECT_TIMEOUT, Connected, Servers, redacted};
pub use servers::{TierError, is_redis_url};

/// A lookup reads this much of an entry with the generations; a larger entry takes a
/// second round trip, with a timeout for its size.
const HEAD_BYTES: usize = 256 << 10;
/// The rate a large value is expected to move at, for its timeout.
const BULK_BYTES_PER_SECOND: f64 = 50e6;
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
    /// Whether instances missing one key together send one origin query.
    pub single_flight: bool,
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
            .field("single_flight", &self.single_flight)
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
    /// Misses that waited for another instance's fetch of the same key.
    pub flight_waits: AtomicU64,
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
    servers: Servers,
    link: Link,
    clocks: Arc<Clocks>,
    stats: TierStats,
    /// Databases written while Redis could not be told.
    owed: Owed,
    /// Databases looked up: those whose entries this instance may hold.
    databases: Mutex<BTreeSet<String>>,
    /// Databases listed in Redis as holding entries.
    registered: Mutex<BTreeSet<String>>,
    last_log: Mutex<Option<Instant>>,
}

impl Tier {
    /// Starts the tier of `settings`: it connects in the background (lookups go to the
    /// origin until it has), and marks remote writes on `clocks`.
    pub fn start(settings: TierSettings, clocks: Arc<Clocks>) -> Result<Arc<Tier>, TierError> {
        let servers = Servers::open(&settings.url, settings.ca_file.as_ref())?;
        let tier = Arc::new(Tier {
            link: Link::new(),
            settings,
            servers,
            clocks,
            stats: TierStats::default(),
            owed: Owed::default(),
            databases: Mutex::default(),
            registered: Mutex::default(),
            last_log: Mutex::new(None),
        });
        tokio::spawn(supervisor::supervise(
            Arc::downgrade(&tier),
            tier.link.broken(),
        ));
        Ok(tier)
    }

    /// Its counters.
    pub fn stats(&self) -> &TierStats {
        &self.stats
    }

    /// Whether misses take a lock across instances.
    pub fn single_flight(&self) -> bool {
        self.settings.single_flight
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
        if !self.heard_all_writes(database).await {
            return Fetched::Unavailable;
        }
        let keys = self.keys(database);
        let stamp_keys = keys.stamp(tables);
        let entry_key = keys.entry(key);
        let head_key = entry_key.clone();
        let answer = self
            .run(|mut connection| async move {
                redis::pipe()
                    .getrange(&head_key, 0, HEAD_BYTES as isize - 1)
                    .strlen(&head_key)
                    .mget(&stamp_keys)
                    .query_async::<(Vec<u8>, usize, Vec<Option<u64>>)>(&mut connection)
                    .await
            })
            .await;
        let Some((head, size, generations)) = answer else {
            return Fetched::Unavailable;
        };
        let now = TierStamp(
            generations
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
        );
        let value = match size {
            0 => None,
            size if size <= HEAD_BYTES => Some(head),
            size => self.read_whole(entry_key, size).await,
        };
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

    /// A value larger than [`HEAD_BYTES`], read within a time for its size; `None`
    /// when it could not be.
    async fn read_whole(&self, entry_key: String, size: usize) -> Option<Vec<u8>> {
        self.run_within(self.bulk_timeout(size), |mut connection| async move {
            redis::cmd("GET")
                .arg(&entry_key)
                .query_async::<Option<Vec<u8>>>(&mut connection)
                .await
        })
        .await
        .flatten()
    }

    /// The read timeout, and the time to move `bytes` at [`BULK_BYTES_PER_SECOND`].
    fn bulk_timeout(&self, bytes: usize) -> Duration {
        let transfer = Duration::from_secs_f64(bytes as f64 / BULK_BYTES_PER_SECOND);
        self.settings.timeout + transfer
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

    /// Stores `entry` under `key`, in the background, for the `ttl` it has left; then
    /// releases `lock`.
    pub fn store(
        self: &Arc<Self>,
        database: &str,
        key: CacheKey,
        entry: StoredEntry,
        ttl: Duration,
        lock: Option<FlightLock>,
    ) {
        if ttl.is_zero() || !self.link.is_up() {
            return;
        }
        let entry_key = self.keys(database).entry(key);
        let database = database.to_owned();
        let tier = Arc::clone(self);
        tokio::spawn(async move {
            let value = format::encode(&entry);
            let size = value.len() as u64;
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let stored = tier
                .run_within(
                    tier.bulk_timeout(value.len()),
                    |mut connection| async move {
                        redis::cmd("SET")
                            .arg(&entry_key)
                            .arg(value)
                            .arg("PX")
                            .arg(ttl_ms)
                            .query_async::<()>(&mut connection)
                            .await
                    },
                )
                .await;
            // Released once the entry is there for the instances waiting on it.
            drop(lock);
            if stored.is_some() {
                tier.register(&database).await;
            }
            if stored.is_some() {
                tier.stats.bytes_written.fetch_add(size, Ordering::Relaxed);
            }
        });
    }

    /// Lists `database` among those whose entries are in Redis (once per process; the
    /// set lives in a slot of its own, so it is not pipelined with the entry).
    async fn register(&self, database: &str) {
        let registered = || self.registered.lock().unwrap_or_else(|p| p.into_inner());
        if registered().contains(database) {
            return;
        }
        let databases_key = self.databases_key();
        let added = self
            .run(|mut connection| async move {
                redis::cmd("SADD")
                    .arg(&databases_key)
                    .arg(database)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
        if added.is_some() {
            registered().insert(database.to_owned());
        }
    }

    /// A write through this instance completed: its generations are incremented and
    /// the other instances told. When Redis does not answer, the database is
    /// remembered, and everything in it invalidated once Redis answers again (at the
    /// next write, reconnection or lookup of that database).
    pub async fn mark(&self, database: &str, written: Written<'_>) {
        let owed = self.owed.all();
        // An earlier write Redis did not hear of is covered with this one.
        let (written, seen) = match owed.get(database) {
            Some(&seen) => (Written::Everything, Some(seen)),
            None => (written, None),
        };
        match self.announce(database, written, false).await {
            true => seen
                .into_iter()
                .for_each(|seen| self.owed.settle(database, seen)),
            false => self.owed.owe(database),
        }
        // One round trip per database: on a cluster each lives in its own slot.
        for (other, seen) in owed.into_iter().filter(|(other, _)| other != database) {
            if self.announce(&other, Written::Everything, false).await {
                self.owed.settle(&other, seen);
            }
        }
    }

    /// Whether Redis may be asked for `database`'s entries: not while a write of this
    /// instance to it is unheard of there (an entry stored before the write would look
    /// current), unless announcing it now succeeds.
    async fn heard_all_writes(&self, database: &str) -> bool {
        let Some(seen) = self.owed.of(database) else {
            return true;
        };
        if !self.announce(database, Written::Everything, false).await {
            return false;
        }
        self.owed.settle(database, seen);
        true
    }

    /// A database with writes Redis has not heard of, if any.
    pub(super) fn first_owed(&self) -> Option<String> {
        self.owed.all().into_keys().next()
    }

    /// Increments the generations `written` reaches in `database` and publishes the
    /// notice, atomically; whether Redis answered.
    async fn announce(&self, database: &str, written: Written<'_>, purge: bool) -> bool {
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.add_mark(&mut pipe, database, written, purge);
        self.run(|mut connection| async move { pipe.query_async::<()>(&mut connection).await })
            .await
            .is_some()
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
        let mut told = true;
        for database in &databases {
            told &= self.announce(database, written, true).await;
        }
        told
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
        pipe.publish(keys.notices(), format::encode(&notice))
            .ignore();
    }

    /// Runs one operation within the read timeout, counting its failure; `None` when it
    /// gave no answer.
    async fn run<T, F>(&self, operation: impl FnOnce(Connection) -> F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        self.run_within(self.settings.timeout, operation).await
    }

    /// [`Tier::run`] within `timeout`.
    async fn run_within<T, F>(
        &self,
        timeout: Duration,
        operation: impl FnOnce(Connection) -> F,
    ) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match self.link.run(timeout, operation).await {
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

    /// The pattern of every database's notice channel.
    fn notices(&self) -> String {
        format!("{{{}:*}}:{FORMAT}:notices", self.settings.prefix)
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

    /// Connects and subscribes to the notices.
    async fn connect(&self) -> Result<Connected, String> {
        let pattern = self.notices();
        let connecting = self.servers.connect(&pattern);
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
            Ok(Ok(connected)) => Ok(connected),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", CONNECT_TIMEOUT * 2)),
        }
    }
}

/// Databases written while Redis could not be told, each with a count of the writes
/// owed, so that an announcement settles only what was owed when it was sent (a write
/// that fails meanwhile stays owed).
#[derive(Default)]
struct Owed(Mutex<BTreeMap<String, u64>>);

impl Owed {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn all(&self) -> BTreeMap<String, u64> {
        self.lock().clone()
    }

    fn of(&self, database: &str) -> Option<u64> {
        self.lock().get(database).copied()
    }

    fn owe(&self, database: &str) {
        *self.lock().entry(database.to_owned()).or_default() += 1;
    }

    fn settle(&self, database: &str, seen: u64) {
        let mut owed = self.lock();
        if owed.get(database) == Some(&seen) {
            owed.remove(database);
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
    fn passwords_are_not_shown() {
        let settings = TierSettings {
            url: "rediss://user:secret@r:6380/0".to_owned(),
            prefix: "p".to_owned(),
            timeout: Duration::from_millis(20),
            consistency: Consistency::Fast,
            single_flight: false,
            ca_file: None,
        };
        assert!(!format!("{settings:?}").contains("secret"));
    }
}
