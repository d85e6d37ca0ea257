//! The composer: the only module that sees the analyzer's verdict, the cache and the
//! deployment's settings together, for any protocol.
//!
//! For one request it decides the cache status ([`policy`]), looks the key up, waits
//! (bounded) for another client's fetch of the same key, serves stale entries while
//! refreshing them ([`refresh`]), and turns a recorded reply into an entry when the
//! origin reports the request ended outside a transaction ([`flight`]). The protocol
//! supplies the key's parts, a recorder of its replies and a refetch; it never touches
//! the store. Byte layouts stay with the protocol.

pub mod flight;
pub mod policy;
mod refresh;
pub mod upstream;
pub mod writes;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::analyze::Analysis;
use crate::cache::tier::{Fetched, TierStamp};
use crate::cache::{
    CacheKey, CacheStatus, Entry, Freshness, Generations, Lookup, Recorded, Store, Validity,
};
use crate::config::CacheSettings;
use crate::metrics::DeploymentMetrics;
use crate::protocol::TxnStatus;
use flight::{Fill, Recording};
pub use flight::{Flight, Record, ToRecord};
pub use policy::{Decision, Policy, Source, decide};
pub use upstream::Upstream;

/// The longest a miss waits for another client's fetch of the same key before going to
/// the origin itself.
const COALESCE_WAIT: Duration = Duration::from_secs(5);

/// Where the client stands when a request arrives.
#[derive(Clone, Copy, Debug)]
pub struct Situation {
    /// The origin's last word on the client's transaction.
    pub txn: TxnStatus,
    /// The client is pinned to its origin connection: it may read its own temporary
    /// objects, or settings the key does not show.
    pub pinned: bool,
    /// Requests of the client are still in flight at the origin: they may open a
    /// transaction or change the settings the key is made of.
    pub behind_others: bool,
}

/// What the cache says about a request.
pub enum Consulted<R> {
    /// Answer with this entry.
    Hit(Arc<Entry>),
    /// Send it to the origin, tracked by this.
    Forward(Box<Flight<R>>),
}

/// One deployment's cache, as a request sees it.
pub struct Composer<'a> {
    /// The store.
    pub store: &'a Arc<Store>,
    /// The deployment's cache settings.
    pub settings: &'a CacheSettings,
    /// The deployment's counters.
    pub metrics: &'a Arc<DeploymentMetrics>,
    /// How long a background refresh may take.
    pub refresh_deadline: Duration,
    /// The write clock of the request's origin database, when the deployment
    /// invalidates on writes.
    pub generations: Option<&'a Arc<Generations>>,
    /// The upstream tier, when the deployment has one.
    pub upstream: Option<Upstream<'a>>,
}

impl Composer<'_> {
    /// Whether a request in this situation could be served from the cache at all (so
    /// that the protocol need not look further into it otherwise).
    pub fn may_cache(&self, situation: Situation) -> bool {
        self.settings.enabled
            && situation.txn.is_idle()
            && !situation.pinned
            && !situation.behind_others
    }

    /// The policy for a request that is looked up, or the status it is forwarded with.
    pub fn decide(&self, analysis: &Analysis, situation: Situation) -> Result<Policy, CacheStatus> {
        match decide(self.settings, analysis, !situation.txn.is_idle()).0 {
            Decision::Refuse(status) => Err(status),
            Decision::Cache(_) if situation.pinned => {
                self.metrics.pinned_bypasses.fetch_add(1, Ordering::Relaxed);
                Err(CacheStatus::Uncacheable)
            }
            // Forwarded, not looked up or stored: the key may not hold what it runs with.
            Decision::Cache(_) if situation.behind_others => Err(CacheStatus::Miss),
            Decision::Cache(policy) => Ok(policy),
        }
    }

    /// The status of a request forwarded without a lookup because the protocol cannot
    /// serve its shape from the cache: the policy's refusal, else `uncacheable`.
    pub fn forwarded_status(&self, analysis: &Analysis, txn: TxnStatus) -> CacheStatus {
        match decide(self.settings, analysis, !txn.is_idle()).0 {
            Decision::Refuse(status) => status,
            Decision::Cache(_) => CacheStatus::Uncacheable,
        }
    }

    /// Looks `key` up. A fresh entry is a hit; a stale one is a hit whose refresh starts
    /// in the background; while another client fetches the key, this waits (bounded) for
    /// its entry; on a miss the request is forwarded and recorded with what `to_record`
    /// gives.
    pub async fn lookup<R: Record>(
        &self,
        key: CacheKey,
        policy: Policy,
        query_bytes: usize,
        started: Instant,
        to_record: impl Fn() -> ToRecord<R>,
    ) -> Consulted<R> {
        let recorded = |fill: Fill, tier_stamp: Option<TierStamp>| {
            let ToRecord {
                recorder,
                tables,
                tables_unknown,
                refetch,
            } = to_record();
            Flight {
                recording: Some(Recording {
                    recorder,
                    fill,
                    requested_at: self.store.clock().now(),
                    policy,
                    source: Source {
                        tables,
                        tables_unknown,
                        validity: self.generations.map(Validity::starting),
                        tier_stamp,
                        refetch,
                    },
                }),
                ..Flight::forwarded(CacheStatus::Miss, query_bytes, started)
            }
        };
        let unrecorded = || Flight::forwarded(CacheStatus::Miss, query_bytes, started);
        let deadline = tokio::time::Instant::now() + COALESCE_WAIT;
        let mut waited = false;
        loop {
            let (entry, refresh) = match self.store.lookup(key) {
                Lookup::Fresh(entry) => (entry, None),
                Lookup::Stale(entry, refresh) => (entry, Some(refresh)),
                Lookup::Miss(guard) if waited => {
                    // The fetch waited for ended without an entry (too large, an error, a
                    // notice, its client gone): each waiter now asks the origin itself, at
                    // once and unrecorded, rather than one after another.
                    drop(guard);
                    return Consulted::Forward(Box::new(unrecorded()));
                }
                Lookup::Miss(guard) => {
                    let Some(upstream) = self.upstream else {
                        return Consulted::Forward(Box::new(recorded(Fill::Guard(guard), None)));
                    };
                    let validity = self.generations.map(Validity::starting);
                    let record = to_record();
                    let fetched = upstream
                        .tier
                        .fetch(
                            upstream.database,
                            key,
                            &record.tables,
                            record.tables_unknown,
                        )
                        .await;
                    let stamp = match fetched {
                        Fetched::Found(stored, stamp) => {
                            let now = self.store.clock().now();
                            let local = policy.entry(
                                Vec::new(),
                                true,
                                now,
                                Source {
                                    tables: record.tables,
                                    tables_unknown: record.tables_unknown,
                                    validity,
                                    tier_stamp: None,
                                    refetch: record.refetch,
                                },
                            );
                            let entry = upstream::from_stored(stored, stamp.clone(), now, local);
                            if entry.freshness(now) == Freshness::Expired {
                                Some(stamp)
                            } else {
                                let fresh = entry.freshness(now) == Freshness::Fresh;
                                let entry = Arc::new(entry);
                                if !guard.fill(Arc::clone(&entry)) {
                                    // A write here overtook it on its way.
                                    return Consulted::Forward(Box::new(unrecorded()));
                                }
                                if fresh {
                                    return Consulted::Hit(entry);
                                }
                                // Stale: served as the store serves it, refreshed.
                                continue;
                            }
                        }
                        Fetched::Missing(stamp) => Some(stamp),
                        Fetched::Unavailable => None,
                    };
                    return Consulted::Forward(Box::new(recorded(Fill::Guard(guard), stamp)));
                }
                Lookup::Wait(mut flight) => {
                    if !waited {
                        self.metrics.coalesced_waits.fetch_add(1, Ordering::Relaxed);
                        waited = true;
                    }
                    if tokio::time::timeout_at(deadline, flight.changed())
                        .await
                        .is_err()
                    {
                        return Consulted::Forward(Box::new(recorded(Fill::Key(key), None)));
                    }
                    continue;
                }
            };
            if let Some(upstream) = self.upstream.filter(|upstream| upstream.tier.strict()) {
                match upstream.confirms(&entry).await {
                    Some(true) => {}
                    Some(false) => {
                        // Another instance wrote what it read: look again (a miss now).
                        self.store.invalidate(key, &entry);
                        continue;
                    }
                    None => return Consulted::Forward(Box::new(unrecorded())),
                }
            }
            if let Some(refresh) = refresh {
                self.metrics.stale_served.fetch_add(1, Ordering::Relaxed);
                if let Some(refresh) = refresh {
                    refresh::spawn(
                        Arc::clone(self.store),
                        refresh,
                        Arc::clone(&entry),
                        policy,
                        self.refresh_deadline,
                        Arc::clone(self.metrics),
                        self.upstream
                            .map(|u| (Arc::clone(u.tier), u.database.to_owned())),
                    );
                }
            }
            return Consulted::Hit(entry);
        }
    }

    /// Counts a reply served from the cache, of `result_bytes`.
    pub fn served(&self, query_bytes: usize, result_bytes: usize, started: Instant) {
        self.metrics.record(
            CacheStatus::Hit,
            query_bytes,
            result_bytes,
            started.elapsed(),
            false,
        );
    }

    /// The origin reported the request ended, the client's transaction then `txn`: its
    /// result is stored if it is whole and was produced outside a transaction, and it is
    /// counted.
    pub fn finish<R: Record>(&self, flight: Flight<R>, txn: TxnStatus) {
        let mut status = flight.status;
        if let Some(recording) = flight.recording {
            match recording.recorder.finish() {
                Recorded::Complete { segments, has_rows } if !flight.failed && txn.is_idle() => {
                    let entry = recording.policy.entry(
                        segments,
                        has_rows,
                        recording.requested_at,
                        recording.source,
                    );
                    let entry = Arc::new(entry);
                    let (key, stored) = match recording.fill {
                        Fill::Guard(guard) => (guard.key(), guard.fill(Arc::clone(&entry))),
                        Fill::Key(key) => (key, self.store.insert(key, Arc::clone(&entry))),
                    };
                    // Not stored when a write overtook it (counted by the store).
                    if let (true, Some(upstream)) = (stored, self.upstream) {
                        upstream.store(key, &entry, self.store.clock().now());
                    }
                }
                Recorded::Oversized => status = CacheStatus::OversizedResult,
                _ => {}
            }
        }
        if status == CacheStatus::Miss && !txn.is_idle() {
            // Pipelined behind a BEGIN: it ran inside the transaction.
            status = CacheStatus::Transaction;
        }
        self.metrics.record(
            status,
            flight.query_bytes,
            flight.result_bytes,
            flight.started.elapsed(),
            flight.failed,
        );
    }

    /// Ends a request whose origin connection is gone: failed, not stored, counted.
    pub fn abandon<R: Record>(&self, mut flight: Flight<R>) {
        flight.fail();
        self.metrics.record(
            flight.status,
            flight.query_bytes,
            flight.result_bytes,
            flight.started.elapsed(),
            true,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::analyze::{Analyzer, AnalyzerOptions, Dialect};
    use crate::cache::{KeyBuilder, KeyScope, Refetch, RefetchFuture};
    use crate::clock::ManualClock;

    /// Records byte messages; `error` makes the reply unusable, more than `limit` bytes
    /// oversized.
    struct Bytewise {
        rows: BytesMut,
        limit: usize,
        unusable: bool,
    }

    impl Record for Bytewise {
        type Message = [u8];

        fn accept(&mut self, message: &[u8]) {
            self.unusable |= message == b"error";
            self.rows.extend_from_slice(message);
        }

        fn gave_up(&self) -> Option<Recorded> {
            match () {
                _ if self.rows.len() > self.limit => Some(Recorded::Oversized),
                _ if self.unusable => Some(Recorded::Unusable),
                _ => None,
            }
        }

        fn finish(self) -> Recorded {
            self.gave_up().unwrap_or(Recorded::Complete {
                has_rows: !self.rows.is_empty(),
                segments: vec![self.rows.freeze()],
            })
        }
    }

    /// Answers a refresh with `next`, counting calls; fails when `next` is empty.
    #[derive(Debug)]
    struct Scripted {
        next: &'static [u8],
        calls: AtomicUsize,
    }

    impl Refetch for Scripted {
        fn weight(&self) -> usize {
            0
        }

        fn fetch(&self) -> RefetchFuture<'_> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let next = self.next;
            Box::pin(async move {
                if next.is_empty() {
                    return Err("origin gone".into());
                }
                Ok(Recorded::Complete {
                    segments: vec![Bytes::from_static(next)],
                    has_rows: true,
                })
            })
        }
    }

    struct Fixture {
        clock: ManualClock,
        store: Arc<Store>,
        settings: CacheSettings,
        metrics: Arc<DeploymentMetrics>,
        refetch: Arc<Scripted>,
        generations: Arc<Generations>,
    }

    const IDLE: Situation = Situation {
        txn: TxnStatus::Idle,
        pinned: false,
        behind_others: false,
    };

    impl Fixture {
        fn new(refreshed: &'static [u8]) -> Fixture {
            let clock = ManualClock::new();
            let store = Store::new(1 << 20, 1 << 16, clock.clock());
            let metrics = Arc::new(DeploymentMetrics::new("d", Arc::clone(&store)));
            Fixture {
                clock,
                store,
                settings: CacheSettings::default(),
                metrics,
                refetch: Arc::new(Scripted {
                    next: refreshed,
                    calls: AtomicUsize::new(0),
                }),
                generations: Arc::new(Generations::default()),
            }
        }

        fn composer(&self) -> Composer<'_> {
            Composer {
                store: &self.store,
                settings: &self.settings,
                metrics: &self.metrics,
                refresh_deadline: Duration::from_secs(5),
                generations: Some(&self.generations),
                upstream: None,
            }
        }

        fn to_record(&self, limit: usize) -> impl Fn() -> ToRecord<Bytewise> + '_ {
            move || ToRecord {
                recorder: Bytewise {
                    rows: BytesMut::new(),
                    limit,
                    unusable: false,
                },
                tables: Arc::from(vec!["t".to_owned()]),
                tables_unknown: false,
                refetch: Arc::clone(&self.refetch) as Arc<dyn Refetch>,
            }
        }

        async fn consult(&self, key: CacheKey) -> Consulted<Bytewise> {
            self.composer()
                .lookup(key, policy(), 8, Instant::now(), self.to_record(1 << 10))
                .await
        }

        /// A miss answered by the origin with `rows`, ended with `txn`.
        async fn fill(&self, key: CacheKey, rows: &[&'static [u8]], txn: TxnStatus) {
            let Consulted::Forward(mut flight) = self.consult(key).await else {
                panic!("expected a miss")
            };
            assert!(flight.is_recording());
            for row in rows {
                flight.count(row.len());
                flight.record(row);
            }
            self.composer().finish(*flight, txn);
        }

        fn count(&self, status: CacheStatus) -> u64 {
            self.metrics.queries(status)
        }
    }

    #[tokio::test]
    async fn a_write_drops_the_reads_it_reached_and_overtakes_reads_in_flight() {
        let fixture = Fixture::new(b"v2");
        let written = ["public.t".to_owned()];
        fixture.fill(key("q"), &[b"v1"], TxnStatus::Idle).await;
        assert!(matches!(fixture.consult(key("q")).await, Consulted::Hit(_)));
        fixture
            .generations
            .invalidate(crate::cache::Written::Tables(&written));
        let Consulted::Forward(mut flight) = fixture.consult(key("q")).await else {
            panic!("an entry older than the write was served")
        };
        // The read started before the next write and ends after it: not stored.
        flight.record(b"v1");
        fixture
            .generations
            .invalidate(crate::cache::Written::Tables(&written));
        fixture.composer().finish(*flight, TxnStatus::Idle);
        let stats = fixture.store.stats();
        assert_eq!((stats.invalidated, stats.refused_fills), (1, 1));
        assert!(matches!(
            fixture.consult(key("q")).await,
            Consulted::Forward(_)
        ));
    }

    fn policy() -> Policy {
        Policy {
            max_age: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(15),
            empty_max_age: Duration::from_secs(5),
        }
    }

    fn key(text: &str) -> CacheKey {
        KeyBuilder::new(KeyScope {
            deployment: "d",
            database: "db",
            role: "r",
        })
        .part(1, text.as_bytes())
        .finish()
    }

    fn analysis(sql: &str) -> Analysis {
        Analyzer::with_builtin_rules(AnalyzerOptions::default()).analyze(Dialect::Postgres, sql)
    }

    fn hit_bytes(consulted: Consulted<Bytewise>) -> Bytes {
        match consulted {
            Consulted::Hit(entry) => entry.segments[0].clone(),
            Consulted::Forward(_) => panic!("expected a hit"),
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_miss_is_recorded_then_served_fresh_until_max_age() {
        let f = Fixture::new(b"v2");
        f.fill(key("q"), &[b"v1"], TxnStatus::Idle).await;
        assert_eq!(f.count(CacheStatus::Miss), 1);
        assert_eq!(hit_bytes(f.consult(key("q")).await), "v1");
        f.clock.advance(Duration::from_secs(59));
        assert_eq!(hit_bytes(f.consult(key("q")).await), "v1");
        assert_eq!(f.metrics.stale_served.load(Ordering::Relaxed), 0);
        assert_eq!(f.refetch.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_stale_entry_is_served_once_refreshed_in_the_background() {
        let f = Fixture::new(b"v2");
        f.fill(key("q"), &[b"v1"], TxnStatus::Idle).await;
        f.clock.advance(Duration::from_secs(61));
        assert_eq!(hit_bytes(f.consult(key("q")).await), "v1");
        assert_eq!(f.metrics.stale_served.load(Ordering::Relaxed), 1);
        settle().await;
        assert_eq!(f.refetch.calls.load(Ordering::SeqCst), 1);
        assert_eq!(f.metrics.revalidations_ok.load(Ordering::Relaxed), 1);
        assert_eq!(hit_bytes(f.consult(key("q")).await), "v2");
        // The refreshed entry's life starts at its refresh.
        f.clock.advance(Duration::from_secs(59));
        assert_eq!(hit_bytes(f.consult(key("q")).await), "v2");
        assert_eq!(f.refetch.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_stale_entry_until_it_expires() {
        let f = Fixture::new(b"");
        f.fill(key("q"), &[b"v1"], TxnStatus::Idle).await;
        f.clock.advance(Duration::from_secs(61));
        assert_eq!(hit_bytes(f.consult(key("q")).await), "v1");
        settle().await;
        assert_eq!(f.metrics.revalidations_failed.load(Ordering::Relaxed), 1);
        assert_eq!(hit_bytes(f.consult(key("q")).await), "v1");
        f.clock.advance(Duration::from_secs(14));
        assert!(matches!(f.consult(key("q")).await, Consulted::Forward(_)));
    }

    #[tokio::test]
    async fn an_empty_result_lives_for_empty_max_age() {
        let f = Fixture::new(b"v2");
        f.fill(key("q"), &[], TxnStatus::Idle).await;
        f.clock.advance(Duration::from_secs(4));
        assert!(matches!(f.consult(key("q")).await, Consulted::Hit(_)));
        // Past 5 s it is stale (swr is the deployment's), not fresh.
        f.clock.advance(Duration::from_secs(2));
        assert!(matches!(f.consult(key("q")).await, Consulted::Hit(_)));
        assert_eq!(f.metrics.stale_served.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn results_ending_inside_a_transaction_or_failed_are_not_stored() {
        let f = Fixture::new(b"v2");
        f.fill(key("q"), &[b"v1"], TxnStatus::InTransaction).await;
        assert_eq!(f.count(CacheStatus::Transaction), 1);
        let Consulted::Forward(mut flight) = f.consult(key("q")).await else {
            panic!("nothing was stored")
        };
        flight.record(b"v1");
        flight.fail();
        assert!(flight.failed());
        f.composer().finish(*flight, TxnStatus::Idle);
        assert!(matches!(f.consult(key("q")).await, Consulted::Forward(_)));
    }

    #[tokio::test]
    async fn a_recording_that_gives_up_releases_the_key_at_once() {
        let f = Fixture::new(b"v2");
        let Consulted::Forward(mut flight) = f.consult(key("q")).await else {
            panic!("miss")
        };
        flight.record(b"error");
        assert!(!flight.is_recording());
        // A second client is not made to wait for a result that will not be stored.
        let second = tokio::time::timeout(Duration::from_millis(100), f.consult(key("q")))
            .await
            .expect("no wait");
        assert!(matches!(second, Consulted::Forward(ref g) if g.is_recording()));
        f.composer().finish(*flight, TxnStatus::Idle);
        assert_eq!(f.count(CacheStatus::Miss), 1);
    }

    #[tokio::test]
    async fn an_oversized_result_is_counted_as_such() {
        let f = Fixture::new(b"v2");
        let Consulted::Forward(mut flight) = f
            .composer()
            .lookup(key("q"), policy(), 8, Instant::now(), f.to_record(4))
            .await
        else {
            panic!("miss")
        };
        flight.record(b"12345");
        assert_eq!(flight.status(), CacheStatus::OversizedResult);
        f.composer().finish(*flight, TxnStatus::Idle);
        assert_eq!(f.count(CacheStatus::OversizedResult), 1);
        assert!(matches!(f.consult(key("q")).await, Consulted::Forward(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn coalesced_misses_wait_for_the_first_fetch() {
        let f = Arc::new(Fixture::new(b"v2"));
        let Consulted::Forward(mut first) = f.consult(key("q")).await else {
            panic!("miss")
        };
        let waiter = {
            let f = Arc::clone(&f);
            tokio::spawn(async move { hit_bytes(f.consult(key("q")).await) })
        };
        settle().await;
        assert_eq!(f.metrics.coalesced_waits.load(Ordering::Relaxed), 1);
        first.record(b"v1");
        f.composer().finish(*first, TxnStatus::Idle);
        assert_eq!(waiter.await.expect("waiter"), "v1");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_go_to_the_origin_unrecorded_when_the_first_fetch_fails() {
        let f = Arc::new(Fixture::new(b"v2"));
        let Consulted::Forward(mut first) = f.consult(key("q")).await else {
            panic!("miss")
        };
        let waiter = {
            let f = Arc::clone(&f);
            tokio::spawn(async move {
                match f.consult(key("q")).await {
                    Consulted::Forward(flight) => flight.is_recording(),
                    Consulted::Hit(_) => panic!("nothing was stored"),
                }
            })
        };
        settle().await;
        first.fail();
        f.composer().finish(*first, TxnStatus::Idle);
        assert!(!waiter.await.expect("waiter"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_that_takes_too_long_leaves_the_waiter_to_record_its_own() {
        let f = Arc::new(Fixture::new(b"v2"));
        let Consulted::Forward(_first) = f.consult(key("q")).await else {
            panic!("miss")
        };
        let Consulted::Forward(mut second) = f.consult(key("q")).await else {
            panic!("the first fetch never ends")
        };
        assert!(second.is_recording());
        second.record(b"mine");
        f.composer().finish(*second, TxnStatus::Idle);
        assert_eq!(hit_bytes(f.consult(key("q")).await), "mine");
    }

    #[test]
    fn decisions_follow_the_situation() {
        let f = Fixture::new(b"v2");
        let read = analysis("SELECT * FROM t");
        let composer = f.composer();
        assert!(composer.decide(&read, IDLE).is_ok());
        assert!(composer.may_cache(IDLE));
        let in_txn = Situation {
            txn: TxnStatus::InTransaction,
            ..IDLE
        };
        assert_eq!(
            composer.decide(&read, in_txn),
            Err(CacheStatus::Transaction)
        );
        assert!(!composer.may_cache(in_txn));
        let pinned = Situation {
            pinned: true,
            ..IDLE
        };
        assert_eq!(
            composer.decide(&read, pinned),
            Err(CacheStatus::Uncacheable)
        );
        assert_eq!(f.metrics.pinned_bypasses.load(Ordering::Relaxed), 1);
        let behind = Situation {
            behind_others: true,
            ..IDLE
        };
        assert_eq!(composer.decide(&read, behind), Err(CacheStatus::Miss));
        // A write is refused for what it is, whatever the situation.
        let write = analysis("DELETE FROM t");
        assert_eq!(
            composer.decide(&write, pinned),
            Err(CacheStatus::Uncacheable)
        );
        assert_eq!(
            composer.forwarded_status(&write, TxnStatus::Failed),
            CacheStatus::Uncacheable
        );
        assert_eq!(
            composer.forwarded_status(&read, TxnStatus::Idle),
            CacheStatus::Uncacheable
        );
        assert_eq!(
            composer.forwarded_status(&read, TxnStatus::Failed),
            CacheStatus::Transaction
        );
    }

    #[tokio::test]
    async fn an_abandoned_request_is_counted_failed_and_not_stored() {
        let f = Fixture::new(b"v2");
        let Consulted::Forward(mut flight) = f.consult(key("q")).await else {
            panic!("miss")
        };
        flight.record(b"v1");
        f.composer().abandon(*flight);
        assert_eq!(f.count(CacheStatus::Miss), 1);
        assert!(matches!(f.consult(key("q")).await, Consulted::Forward(_)));
    }
}
