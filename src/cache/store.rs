//! The in-process store: sharded, bounded in bytes, with single flight.
//!
//! [`Store::lookup`] answers with what the caller must do: serve a fresh entry; serve a
//! stale one and maybe refresh it (at most one refresh per key at a time); fetch it
//! (holding a [`FillGuard`], so that concurrent lookups of the same key wait instead of
//! stampeding the origin); or wait for the fetch in flight. Guards release their claim
//! when dropped, also when the task holding one is cancelled, and waiters then look up
//! again.
//!
//! Entries are weighted by their size and evicted by quick_cache's S3-FIFO policy when
//! the byte budget is reached (quick_cache rather than moka: faster hits and fills and a
//! better hit ratio under pressure, measured side by side in BENCHMARKS.md); an entry past max_age + stale_while_revalidate is dropped
//! when it is next looked up. quick_cache splits the budget evenly between its shards and
//! refuses an entry heavier than a shard, so the store uses no more shards than leave
//! room for the largest result it may be asked to keep.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::entry::{Entry, Freshness};
use super::invalidation::table_key;
use super::key::CacheKey;
use crate::clock::Clock;

#[derive(Clone)]
struct ByWeight;

impl quick_cache::Weighter<CacheKey, Arc<Entry>> for ByWeight {
    fn weight(&self, _key: &CacheKey, entry: &Arc<Entry>) -> u64 {
        entry.weight()
    }
}

#[derive(Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);

impl quick_cache::Lifecycle<CacheKey, Arc<Entry>> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: CacheKey, _entry: Arc<Entry>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

type Entries = quick_cache::sync::Cache<
    CacheKey,
    Arc<Entry>,
    ByWeight,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

/// Counters and gauges of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Entries held.
    pub entries: u64,
    /// Bytes held (entry weights).
    pub bytes: u64,
    /// Entries evicted to stay within the byte budget.
    pub evictions: u64,
    /// Entries dropped because a write reached what they read.
    pub invalidated: u64,
    /// Results not stored because a write reached what they read while their query ran.
    pub refused_fills: u64,
}

/// What to do after a lookup.
pub enum Lookup {
    /// Serve this entry.
    Fresh(Arc<Entry>),
    /// Serve this stale entry; with a guard, also refresh it in the background.
    Stale(Arc<Entry>, Option<RevalidationGuard>),
    /// Not cached: fetch it, then [`FillGuard::fill`].
    Miss(FillGuard),
    /// Another client is fetching it: wait for this, then look up again.
    Wait(watch::Receiver<()>),
}

/// When the store was last purged (cache clock): results requested before then are not
/// stored, as they may hold what the purge was for.
#[derive(Debug, Default)]
struct Purged {
    /// Everything.
    everything: Option<Duration>,
    /// Entries reading a table, by its last name part.
    tables: HashMap<String, Duration>,
}

impl Purged {
    /// Whether a result requested at `requested_at`, reading `tables` (and more, when
    /// `tables_unknown`), was requested before a purge that covers it.
    fn covers(&self, requested_at: Duration, tables: &[String], tables_unknown: bool) -> bool {
        let before = |purged: &Duration| requested_at <= *purged;
        self.everything.as_ref().is_some_and(before)
            || match tables_unknown {
                true => self.tables.values().any(before),
                false => tables
                    .iter()
                    .any(|table| self.tables.get(table_key(table)).is_some_and(before)),
            }
    }
}

/// The cache of one deployment.
pub struct Store {
    entries: Entries,
    evictions: Arc<AtomicU64>,
    invalidated: AtomicU64,
    refused_fills: AtomicU64,
    purged: Mutex<Purged>,
    flights: Mutex<HashMap<CacheKey, watch::Receiver<()>>>,
    revalidating: Mutex<HashSet<CacheKey>>,
    clock: Clock,
}

/// The number of shards for a store: enough to keep lock contention low (quick_cache's
/// default, four per core), few enough that each shard holds two of the largest entries.
/// A power of two, rounded down (quick_cache rounds up).
fn shard_count(capacity_bytes: u64, largest_entry_bytes: u64) -> usize {
    let parallel = std::thread::available_parallelism().map_or(4, std::num::NonZero::get) * 4;
    let fitting = capacity_bytes / largest_entry_bytes.saturating_mul(2).max(1);
    let shards = usize::try_from(fitting)
        .unwrap_or(usize::MAX)
        .clamp(1, parallel);
    1 << shards.ilog2()
}

impl Store {
    /// A store of at most `capacity_bytes`, for entries of up to `largest_entry_bytes`.
    pub fn new(capacity_bytes: u64, largest_entry_bytes: u64, clock: Clock) -> Arc<Store> {
        let evictions = CountEvictions::default();
        let estimated_items = usize::try_from(capacity_bytes / 4096)
            .unwrap_or(usize::MAX)
            .max(16);
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(estimated_items)
            .weight_capacity(capacity_bytes)
            .shards(shard_count(capacity_bytes, largest_entry_bytes))
            .build()
            .expect("both required options are set");
        let entries = Entries::with_options(
            options,
            ByWeight,
            quick_cache::DefaultHashBuilder::default(),
            evictions.clone(),
        );
        Arc::new(Store {
            entries,
            evictions: evictions.0,
            invalidated: AtomicU64::new(0),
            refused_fills: AtomicU64::new(0),
            purged: Mutex::new(Purged::default()),
            flights: Mutex::new(HashMap::new()),
            revalidating: Mutex::new(HashSet::new()),
            clock,
        })
    }

    /// The store's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Looks `key` up and says what to do.
    pub fn lookup(self: &Arc<Self>, key: CacheKey) -> Lookup {
        if let Some(found) = self.serve(key) {
            return found;
        }
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(&key) {
            return Lookup::Wait(flight.clone());
        }
        // Filled between the first look and the lock (a guard fills, then leaves the
        // flights): serve that rather than fetch again.
        if let Some(found) = self.serve(key) {
            return found;
        }
        let (done, flight) = watch::channel(());
        flights.insert(key, flight);
        Lookup::Miss(FillGuard {
            store: Arc::clone(self),
            key,
            _done: done,
        })
    }

    /// The entry under `key` if it may be served; an expired or invalidated one is
    /// dropped (only that one: a fresh entry stored meanwhile stays).
    fn serve(self: &Arc<Self>, key: CacheKey) -> Option<Lookup> {
        let entry = self.entries.get(&key)?;
        if !entry.is_current() {
            self.invalidate(key, &entry);
            return None;
        }
        match entry.freshness(self.clock.now()) {
            Freshness::Fresh => Some(Lookup::Fresh(entry)),
            Freshness::Stale => {
                let guard = self.claim_revalidation(key);
                Some(Lookup::Stale(entry, guard))
            }
            Freshness::Expired => {
                self.entries
                    .remove_if(&key, |held| Arc::ptr_eq(held, &entry));
                None
            }
        }
    }

    fn claim_revalidation(self: &Arc<Self>, key: CacheKey) -> Option<RevalidationGuard> {
        let mut revalidating = self.revalidating.lock().unwrap_or_else(|p| p.into_inner());
        revalidating.insert(key).then(|| RevalidationGuard {
            store: Arc::clone(self),
            key,
        })
    }

    /// Stores an entry outside single flight (a result fetched while the cache could
    /// not be consulted first). A result a write reached while its query ran is refused:
    /// false.
    pub fn insert(&self, key: CacheKey, entry: impl Into<Arc<Entry>>) -> bool {
        let entry = entry.into();
        if !entry.is_current() || self.purge_covers(&entry) {
            self.refused_fills.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.entries.insert(key, entry);
        true
    }

    /// Drops `entry` from under `key`, found out of date (by its write clock, or by the
    /// upstream tier), unless another entry took its place meanwhile.
    pub fn invalidate(&self, key: CacheKey, entry: &Arc<Entry>) {
        if self
            .entries
            .remove_if(&key, |held| Arc::ptr_eq(held, entry))
            .is_some()
        {
            self.invalidated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops every entry (`tables` is `None`), or those that read any of `tables` (by
    /// last name part, and those whose tables are not all known); results requested
    /// before now are not stored afterwards. Returns how many entries were dropped.
    pub fn purge(&self, tables: Option<&[String]>) -> u64 {
        let now = self.clock.now();
        let mut purged = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        match tables {
            None => purged.everything = Some(now),
            Some(tables) => {
                for table in tables {
                    purged.tables.insert(table_key(table).to_owned(), now);
                }
            }
        }
        let before = self.entries.len();
        match tables {
            None => self.entries.clear(),
            Some(_) => self.entries.retain(|_, entry| {
                !purged.covers(entry.stored_at, &entry.tables, entry.tables_unknown)
            }),
        }
        (before - self.entries.len()) as u64
    }

    fn purge_covers(&self, entry: &Entry) -> bool {
        let purged = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        purged.covers(entry.stored_at, &entry.tables, entry.tables_unknown)
    }

    /// Current numbers.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            entries: self.entries.len() as u64,
            bytes: self.entries.weight(),
            evictions: self.evictions.load(Ordering::Relaxed),
            invalidated: self.invalidated.load(Ordering::Relaxed),
            refused_fills: self.refused_fills.load(Ordering::Relaxed),
        }
    }
}

/// The right to fetch a key and store it. Waiters wake when it is dropped, filled or not.
pub struct FillGuard {
    store: Arc<Store>,
    key: CacheKey,
    _done: watch::Sender<()>,
}

impl FillGuard {
    /// The key being fetched.
    pub fn key(&self) -> CacheKey {
        self.key
    }

    /// Stores the fetched entry (unless a write reached it meanwhile: false) and
    /// releases the waiters.
    pub fn fill(self, entry: impl Into<Arc<Entry>>) -> bool {
        self.store.insert(self.key, entry)
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let mut flights = self.store.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.remove(&self.key);
    }
}

/// The right to refresh a stale key; released when dropped.
pub struct RevalidationGuard {
    store: Arc<Store>,
    key: CacheKey,
}

impl RevalidationGuard {
    /// The key being refreshed.
    pub fn key(&self) -> CacheKey {
        self.key
    }

    /// Stores the refreshed entry (unless a write reached it meanwhile: false).
    pub fn fill(self, entry: impl Into<Arc<Entry>>) -> bool {
        self.store.insert(self.key, entry)
    }
}

impl Drop for RevalidationGuard {
    fn drop(&mut self) {
        let mut revalidating = self
            .store
            .revalidating
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        revalidating.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::cache::entry::tests::FixedRefetch;
    use crate::clock::ManualClock;

    fn entry(store: &Store, rows: &'static [u8]) -> Entry {
        Entry {
            segments: vec![Bytes::from_static(rows)],
            stored_at: store.clock().now(),
            max_age: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(15),
            tables: Arc::from(vec!["t".to_owned()]),
            tables_unknown: false,
            validity: None,
            tier_stamp: None,
            refetch: Arc::new(FixedRefetch(Some(b"v2"))),
        }
    }

    #[test]
    fn purges_drop_by_table_or_everything_and_refuse_reads_requested_before() {
        let clock = ManualClock::new();
        let store = Store::new(1 << 20, 1 << 16, clock.clock());
        let reading = |tables: &[&str], tables_unknown: bool| Entry {
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            tables_unknown,
            ..entry(&store, b"v1")
        };
        let keys = [CacheKey([1; 32]), CacheKey([2; 32]), CacheKey([3; 32])];
        store.insert(keys[0], reading(&["shop.prices"], false));
        store.insert(keys[1], reading(&["stock"], false));
        store.insert(keys[2], reading(&[], true));
        let in_flight = reading(&["prices"], false);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            store.purge(Some(&["prices".to_owned()])),
            2,
            "prices and the unknown"
        );
        assert!(matches!(store.lookup(keys[1]), Lookup::Fresh(_)));
        assert!(
            !store.insert(keys[0], in_flight),
            "requested before the purge"
        );
        clock.advance(Duration::from_millis(1));
        assert!(store.insert(keys[0], reading(&["prices"], false)));
        assert_eq!(store.purge(None), 2);
        assert_eq!(store.stats().entries, 0);
    }

    #[test]
    fn a_write_drops_the_entries_it_reached_and_refuses_reads_it_overtook() {
        use crate::cache::{Generations, Validity, Written};
        let clock = ManualClock::new();
        let store = Store::new(1 << 20, 1 << 16, clock.clock());
        let writes = Arc::new(Generations::default());
        let read = |store: &Store| Entry {
            validity: Some(Validity::starting(&writes)),
            tier_stamp: None,
            ..entry(store, b"v1")
        };
        let Lookup::Miss(guard) = store.lookup(KEY) else {
            panic!("expected a miss")
        };
        assert!(guard.fill(read(&store)));
        assert!(matches!(store.lookup(KEY), Lookup::Fresh(_)));
        writes.invalidate(Written::Tables(&["public.t".to_owned()]));
        let Lookup::Miss(guard) = store.lookup(KEY) else {
            panic!("the invalidated entry was served")
        };
        assert_eq!(store.stats().invalidated, 1);
        // A read that started before a write and ends after it is not stored.
        let overtaken = read(&store);
        writes.invalidate(Written::Tables(&["t".to_owned()]));
        assert!(!guard.fill(overtaken));
        assert_eq!(store.stats().refused_fills, 1);
        assert!(matches!(store.lookup(KEY), Lookup::Miss(_)));
    }

    const KEY: CacheKey = CacheKey([7; 32]);

    #[test]
    fn miss_fill_fresh_stale_expired() {
        let manual = ManualClock::new();
        let store = Store::new(1 << 20, 1 << 10, manual.clock());
        let Lookup::Miss(guard) = store.lookup(KEY) else {
            panic!("empty store must miss")
        };
        guard.fill(entry(&store, b"v1"));
        assert!(matches!(store.lookup(KEY), Lookup::Fresh(e) if e.segments[0] == "v1"));
        manual.advance(Duration::from_secs(60));
        let Lookup::Stale(stale, Some(refresh)) = store.lookup(KEY) else {
            panic!("past max_age: stale with a refresh")
        };
        assert_eq!(stale.segments[0], "v1");
        // Only one refresh at a time.
        assert!(matches!(store.lookup(KEY), Lookup::Stale(_, None)));
        refresh.fill(entry(&store, b"v2"));
        assert!(matches!(store.lookup(KEY), Lookup::Fresh(e) if e.segments[0] == "v2"));
        manual.advance(Duration::from_secs(75));
        assert!(matches!(store.lookup(KEY), Lookup::Miss(_)));
    }

    #[test]
    fn failed_refresh_leaves_the_stale_entry_until_it_expires() {
        let manual = ManualClock::new();
        let store = Store::new(1 << 20, 1 << 10, manual.clock());
        let Lookup::Miss(guard) = store.lookup(KEY) else {
            panic!("miss")
        };
        guard.fill(entry(&store, b"v1"));
        manual.advance(Duration::from_secs(61));
        let Lookup::Stale(_, Some(refresh)) = store.lookup(KEY) else {
            panic!("stale")
        };
        drop(refresh);
        assert!(matches!(store.lookup(KEY), Lookup::Stale(e, Some(_)) if e.segments[0] == "v1"));
        manual.advance(Duration::from_secs(14));
        assert!(matches!(store.lookup(KEY), Lookup::Miss(_)));
    }

    #[tokio::test]
    async fn concurrent_misses_wait_for_the_first() {
        let store = Store::new(1 << 20, 1 << 10, ManualClock::new().clock());
        let Lookup::Miss(guard) = store.lookup(KEY) else {
            panic!("miss")
        };
        let Lookup::Wait(mut waiting) = store.lookup(KEY) else {
            panic!("second lookup must wait")
        };
        let waiter = tokio::spawn(async move { waiting.changed().await.is_err() });
        guard.fill(entry(&store, b"v1"));
        assert!(
            waiter.await.unwrap(),
            "the waiter wakes when the guard goes"
        );
        assert!(matches!(store.lookup(KEY), Lookup::Fresh(_)));
    }

    #[tokio::test]
    async fn an_abandoned_fetch_wakes_waiters_who_then_fetch() {
        let store = Store::new(1 << 20, 1 << 10, ManualClock::new().clock());
        let Lookup::Miss(guard) = store.lookup(KEY) else {
            panic!("miss")
        };
        let Lookup::Wait(mut waiting) = store.lookup(KEY) else {
            panic!("wait")
        };
        drop(guard);
        assert!(waiting.changed().await.is_err());
        assert!(matches!(store.lookup(KEY), Lookup::Miss(_)));
    }

    #[test]
    fn shards_leave_room_for_the_largest_entry() {
        assert_eq!(shard_count(256 << 20, 50 << 20), 2);
        assert_eq!(shard_count(1 << 20, 1 << 20), 1);
        assert!(shard_count(1 << 40, 1 << 10).is_power_of_two());
    }

    #[test]
    fn a_result_as_large_as_allowed_is_kept() {
        // The defaults: 256 MiB of cache, results of up to 50 MiB.
        let store = Store::new(256 << 20, 50 << 20, ManualClock::new().clock());
        let Lookup::Miss(guard) = store.lookup(KEY) else {
            panic!("miss")
        };
        let mut large = entry(&store, b"");
        large.segments = vec![Bytes::from(vec![0u8; 50 << 20])];
        guard.fill(large);
        assert!(matches!(store.lookup(KEY), Lookup::Fresh(_)));
        assert_eq!(store.stats().evictions, 0);
    }

    #[test]
    fn the_byte_budget_evicts() {
        let store = Store::new(64 * 1024, 1 << 10, ManualClock::new().clock());
        for i in 0..200u8 {
            let Lookup::Miss(guard) = store.lookup(CacheKey([i; 32])) else {
                panic!("miss")
            };
            let mut e = entry(&store, b"");
            e.segments = vec![Bytes::from(vec![0u8; 4096])];
            guard.fill(e);
        }
        let stats = store.stats();
        assert!(stats.bytes <= 64 * 1024, "{stats:?}");
        assert!(stats.evictions > 0, "{stats:?}");
        assert!(stats.entries < 200);
    }
}
