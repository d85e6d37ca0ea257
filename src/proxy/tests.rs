//! The composer on a manual clock: hits, misses, stale serves, coalescing, refusals.

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
        let metrics = Arc::new(DeploymentMetrics::new(
            "d",
            crate::protocol::Protocol::Postgres,
            Arc::clone(&store),
        ));
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
