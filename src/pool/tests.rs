//! Unit tests of the generic pool, against a scripted backend (no sockets).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use super::*;
use crate::conn::{Conn, ConnError, Stream};
use crate::wire::Framing;

/// The scripted origin's framing: it never sends anything.
struct Silent;

impl Framing for Silent {
    type Frame = ();
    type Error = ConnError;

    fn split(_: &mut bytes::BytesMut, _: usize) -> Result<Option<()>, ConnError> {
        Ok(None)
    }

    fn holds_whole(_: &[u8]) -> bool {
        false
    }
}

/// What the scripted origin did, shared with the test.
#[derive(Default)]
struct Journal {
    opened: AtomicUsize,
    rolled_back: AtomicUsize,
    round_trips: AtomicUsize,
    terminated: AtomicUsize,
    refuse_connects: AtomicBool,
    rollback_fails: AtomicBool,
    silent: AtomicBool,
}

/// An origin that answers as the journal says, without a socket.
struct Scripted(Arc<Journal>);

impl fmt::Display for Scripted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scripted origin")
    }
}

struct FakeConn {
    id: usize,
    closed_by_origin: Arc<AtomicBool>,
    journal: Arc<Journal>,
    /// Never used by the pool itself: the session relays over it.
    io: Conn<Silent>,
}

#[derive(Debug, thiserror::Error)]
#[error("the scripted origin refuses")]
struct Refused;

impl Backend for Scripted {
    type Conn = FakeConn;
    type Greeting = &'static str;
    type Error = Refused;
    type Framing = Silent;

    async fn connect(&self) -> Result<(FakeConn, &'static str), Refused> {
        if self.0.refuse_connects.load(Ordering::SeqCst) {
            return Err(Refused);
        }
        let id = self.0.opened.fetch_add(1, Ordering::SeqCst);
        let (ours, _theirs) = tokio::io::duplex(64);
        let conn = FakeConn {
            id,
            closed_by_origin: Arc::new(AtomicBool::new(false)),
            journal: Arc::clone(&self.0),
            io: Conn::new(Stream::Other(Box::new(ours)), 1 << 10),
        };
        Ok((conn, "server_version 15"))
    }

    fn is_idle_and_open(conn: &mut FakeConn) -> bool {
        !conn.closed_by_origin.load(Ordering::SeqCst)
    }

    async fn roll_back(conn: &mut FakeConn) -> bool {
        conn.journal.rolled_back.fetch_add(1, Ordering::SeqCst);
        !conn.journal.rollback_fails.load(Ordering::SeqCst)
    }

    async fn round_trip(conn: &mut FakeConn) -> Option<TxnStatus> {
        conn.journal.round_trips.fetch_add(1, Ordering::SeqCst);
        (!conn.journal.silent.load(Ordering::SeqCst)).then_some(TxnStatus::Idle)
    }

    async fn healthy(conn: &mut FakeConn) -> bool {
        !conn.journal.silent.load(Ordering::SeqCst)
    }

    async fn terminate(conn: FakeConn) {
        conn.journal.terminated.fetch_add(1, Ordering::SeqCst);
    }

    fn io(conn: &mut FakeConn) -> &mut Conn<Silent> {
        &mut conn.io
    }

    fn cancel(&self, _: &FakeConn) -> impl Future<Output = ()> + Send + 'static {
        std::future::ready(())
    }
}

fn pool(max_size: usize) -> (Pool<Scripted>, Arc<Journal>, Arc<PoolMetrics>) {
    let journal = Arc::new(Journal::default());
    let metrics = Arc::new(PoolMetrics::default());
    let settings = PoolSettings {
        min_idle: 0,
        max_size,
        acquire_timeout: Duration::from_millis(200),
        ..PoolSettings::default()
    };
    let pool = Pool::new(
        Scripted(Arc::clone(&journal)),
        settings,
        false,
        Arc::clone(&metrics),
    );
    (pool, journal, metrics)
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn count(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

#[tokio::test]
async fn an_idle_connection_is_reused_most_recent_first() {
    let (pool, journal, _) = pool(3);
    let mut a = pool.checkout().await.expect("a");
    let mut b = pool.checkout().await.expect("b");
    let (a_id, b_id) = (a.conn().id, b.conn().id);
    drop(a);
    drop(b);
    assert_eq!(pool.checkout().await.expect("c").conn().id, b_id);
    let mut again = pool.checkout().await.expect("d");
    assert_eq!(again.conn().id, b_id);
    let mut other = pool.checkout().await.expect("e");
    assert_eq!(other.conn().id, a_id);
    assert_eq!(count(&journal.opened), 2);
}

#[tokio::test]
async fn an_exhausted_pool_times_out_and_counts_it() {
    let (pool, _, metrics) = pool(1);
    let held = pool.checkout().await.expect("the only connection");
    let Err(PoolError::Timeout { waited }) = pool.checkout().await else {
        panic!("the pool is exhausted")
    };
    assert!(waited >= Duration::from_millis(200));
    assert_eq!(metrics.acquire_timeouts.load(Ordering::SeqCst), 1);
    assert!(pool.checkout_if_free().await.is_none());
    drop(held);
    assert!(pool.checkout_if_free().await.is_some());
}

#[tokio::test]
async fn a_waiting_checkout_gets_the_connection_given_back() {
    let (pool, journal, _) = pool(1);
    let held = pool.checkout().await.expect("the only connection");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout().await.map(|mut c| c.conn().id) })
    };
    settle().await;
    drop(held);
    assert_eq!(waiter.await.expect("task").expect("checkout"), 0);
    assert_eq!(count(&journal.opened), 1);
}

#[tokio::test]
async fn a_transaction_left_open_is_rolled_back_before_reuse() {
    let (pool, journal, _) = pool(1);
    let mut checkout = pool.checkout().await.expect("checkout");
    checkout.conn().set_ready(TxnStatus::InTransaction);
    drop(checkout);
    let mut next = pool.checkout().await.expect("after the rollback");
    assert_eq!(count(&journal.rolled_back), 1);
    assert_eq!(next.conn().state(), ConnState::Ready(TxnStatus::Idle));
    assert_eq!(next.conn().id, 0);
}

#[tokio::test]
async fn a_failed_rollback_closes_the_connection() {
    let (pool, journal, metrics) = pool(1);
    journal.rollback_fails.store(true, Ordering::SeqCst);
    let mut checkout = pool.checkout().await.expect("checkout");
    checkout.conn().set_ready(TxnStatus::Failed);
    drop(checkout);
    let mut next = pool.checkout().await.expect("a new connection");
    assert_eq!(next.conn().id, 1);
    assert_eq!(metrics.closed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn busy_kept_or_discarded_connections_are_closed_not_reused() {
    let (pool, journal, _) = pool(1);
    let mut busy = pool.checkout().await.expect("checkout");
    busy.conn().set_busy();
    drop(busy);
    let mut kept = pool.checkout().await.expect("checkout");
    assert_eq!(kept.conn().id, 1);
    kept.conn().keep_from_others();
    drop(kept);
    let mut discarded = pool.checkout().await.expect("checkout");
    assert_eq!(discarded.conn().id, 2);
    discarded.discard();
    drop(discarded);
    assert_eq!(pool.checkout().await.expect("checkout").conn().id, 3);
    settle().await;
    assert_eq!(count(&journal.terminated), 3);
}

#[tokio::test]
async fn a_connection_the_origin_closed_while_idle_is_not_handed_out() {
    let (pool, _, metrics) = pool(2);
    let mut checkout = pool.checkout().await.expect("checkout");
    let closed = Arc::clone(&checkout.conn().closed_by_origin);
    drop(checkout);
    closed.store(true, Ordering::SeqCst);
    assert_eq!(pool.checkout().await.expect("checkout").conn().id, 1);
    assert_eq!(metrics.closed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_connect_is_the_origins_error_and_frees_its_slot() {
    let (pool, journal, metrics) = pool(1);
    journal.refuse_connects.store(true, Ordering::SeqCst);
    assert!(matches!(
        pool.checkout().await,
        Err(PoolError::Origin(Refused))
    ));
    assert_eq!(metrics.open.load(Ordering::SeqCst), 0);
    journal.refuse_connects.store(false, Ordering::SeqCst);
    assert!(pool.checkout().await.is_ok());
    assert_eq!(pool.greeting().await.expect("known"), "server_version 15");
}

#[tokio::test]
async fn settling_a_cancel_keeps_a_connection_that_answers() {
    let (pool, journal, _) = pool(1);
    let mut checkout = pool.checkout().await.expect("checkout");
    checkout.settle_cancel(tokio::spawn(async {})).await;
    assert_eq!(count(&journal.round_trips), 1);
    drop(checkout);
    assert_eq!(pool.checkout().await.expect("reused").conn().id, 0);
    journal.silent.store(true, Ordering::SeqCst);
    let mut checkout = pool.checkout().await.expect("checkout");
    checkout.settle_cancel(tokio::spawn(async {})).await;
    drop(checkout);
    assert_eq!(pool.checkout().await.expect("new").conn().id, 1);
}

#[tokio::test(start_paused = true)]
async fn maintenance_closes_surplus_idle_connections_and_failed_checks() {
    let journal = Arc::new(Journal::default());
    let metrics = Arc::new(PoolMetrics::default());
    let settings = PoolSettings {
        min_idle: 1,
        max_size: 4,
        idle_timeout: Duration::from_secs(5),
        health_check_interval: Duration::from_secs(3),
        ..PoolSettings::default()
    };
    let pool = Pool::new(
        Scripted(Arc::clone(&journal)),
        settings,
        true,
        Arc::clone(&metrics),
    );
    // Kept warm: min_idle is opened without any client.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&journal.opened), 1);
    let a = pool.checkout().await.expect("a");
    let b = pool.checkout().await.expect("b");
    drop(a);
    drop(b);
    assert_eq!(metrics.open.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(metrics.open.load(Ordering::SeqCst), 1, "surplus closed");
    journal.silent.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(count(&journal.terminated) >= 2, "failed check replaced");
}
