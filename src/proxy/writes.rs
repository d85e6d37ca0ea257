//! Writes on their way to the write clock ([`crate::cache::Generations`]), for any
//! protocol: a write completes when its statement does, outside a transaction block, or
//! at the COMMIT that ends its block; a ROLLBACK drops it, and a failed statement never
//! completes.
//!
//! A write completed outside a block is marked at once, before its reply reaches the
//! client (so the writer's next read is fresh), and again when the origin reports the
//! client idle: PostgreSQL's extended protocol commits at Sync, after the statement's
//! CommandComplete, and a read that started in between must not count as newer than the
//! write. Marking more than needed costs misses, never a wrong answer; so every doubt
//! (a connection lost with writes in flight, a transaction that failed) marks.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use crate::analyze::catalog::Reach;
use crate::analyze::{SessionEffect, TransactionControl};
use crate::cache::tier::Tier;
use crate::cache::{Generations, Written};
use crate::metrics::DeploymentMetrics;
use crate::protocol::TxnStatus;

/// What a statement writes, as far as cached reads are concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WriteSet {
    /// Nothing a read can see.
    #[default]
    Nothing,
    /// These relations.
    Tables(BTreeSet<String>),
    /// Anything in its database.
    Everything,
}

impl From<Reach> for WriteSet {
    fn from(reach: Reach) -> WriteSet {
        match reach {
            Reach::Nothing => WriteSet::Nothing,
            Reach::Tables(tables) => WriteSet::Tables(tables),
            Reach::Everything(_) => WriteSet::Everything,
        }
    }
}

impl WriteSet {
    /// Adds what `other` writes.
    pub fn add(&mut self, other: &WriteSet) {
        match (&mut *self, other) {
            (_, WriteSet::Nothing) | (WriteSet::Everything, _) => {}
            (_, WriteSet::Everything) => *self = WriteSet::Everything,
            (WriteSet::Nothing, tables) => *self = tables.clone(),
            (WriteSet::Tables(mine), WriteSet::Tables(theirs)) => {
                mine.extend(theirs.iter().cloned())
            }
        }
    }

    /// Marks it on `generations`, counted on `metrics`.
    fn mark(&self, generations: &Generations, metrics: &DeploymentMetrics) {
        match self {
            WriteSet::Nothing => {}
            WriteSet::Tables(tables) => {
                let tables: Vec<String> = tables.iter().cloned().collect();
                generations.invalidate(Written::Tables(&tables));
                metrics.invalidations_write.fetch_add(1, Ordering::Relaxed);
            }
            WriteSet::Everything => {
                generations.invalidate(Written::Everything);
                metrics
                    .invalidations_unknown_write
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// How a completed statement moves the client's transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// It does not.
    None,
    /// BEGIN: a block opens.
    Begin,
    /// COMMIT: the block ends; `committed` unless the origin rolled it back (a failed
    /// transaction); `chain` opens the next at once.
    Commit {
        /// The origin reported a commit.
        committed: bool,
        /// AND CHAIN.
        chain: bool,
    },
    /// ROLLBACK (of the whole transaction).
    Rollback {
        /// AND CHAIN.
        chain: bool,
    },
}

impl Control {
    /// How a statement with these effects moves the client's transaction.
    pub fn of(effects: &[SessionEffect], rolled_back: bool) -> Control {
        effects
            .iter()
            .find_map(|effect| match effect {
                SessionEffect::Transaction(TransactionControl::Begin) => Some(Control::Begin),
                SessionEffect::Transaction(TransactionControl::Commit) => Some(Control::Commit {
                    committed: !rolled_back,
                    chain: false,
                }),
                SessionEffect::Transaction(TransactionControl::CommitAndChain) => {
                    Some(Control::Commit {
                        committed: !rolled_back,
                        chain: true,
                    })
                }
                SessionEffect::Transaction(TransactionControl::Rollback) => {
                    Some(Control::Rollback { chain: false })
                }
                SessionEffect::Transaction(TransactionControl::RollbackAndChain) => {
                    Some(Control::Rollback { chain: true })
                }
                _ => None,
            })
            .unwrap_or(Control::None)
    }
}

/// The client's writes not yet known to be committed, and those marked here that the
/// upstream tier has not been told of.
#[derive(Debug, Default)]
pub struct PendingWrites {
    uncommitted: WriteSet,
    in_block: bool,
    /// Whether there is a tier to tell.
    publishes: bool,
    unpublished: WriteSet,
}

/// Where writes are marked.
#[derive(Clone, Copy)]
pub struct Marking<'a> {
    /// The origin database's clock.
    pub generations: &'a Generations,
    /// The counters of the deployment the writes went through.
    pub metrics: &'a DeploymentMetrics,
}

impl PendingWrites {
    /// Writes of a client whose deployment has an upstream tier, which is told of each.
    pub fn published() -> PendingWrites {
        PendingWrites {
            publishes: true,
            ..PendingWrites::default()
        }
    }

    /// Marks `writes` here, and keeps them for the tier.
    fn mark(&mut self, writes: &WriteSet, marking: Marking<'_>) {
        writes.mark(marking.generations, marking.metrics);
        if self.publishes {
            self.unpublished.add(writes);
        }
    }

    /// Tells the tier of what was marked here since last time: called before the
    /// replies that completed those writes reach the client, so that a read the client
    /// then sends to another instance finds the generations moved.
    pub async fn publish(&mut self, tier: &Tier, database: &str) {
        match std::mem::take(&mut self.unpublished) {
            WriteSet::Nothing => {}
            WriteSet::Tables(tables) => {
                let tables: Vec<String> = tables.into_iter().collect();
                tier.mark(database, Written::Tables(&tables)).await;
            }
            WriteSet::Everything => tier.mark(database, Written::Everything).await,
        }
    }

    /// A statement completed: what it wrote, and how it moves the transaction.
    pub fn completed(&mut self, control: Control, writes: &WriteSet, marking: Marking<'_>) {
        match control {
            Control::None => {
                if !self.in_block {
                    self.mark(writes, marking);
                }
                self.uncommitted.add(writes);
            }
            Control::Begin => self.in_block = true,
            Control::Commit { committed, chain } => {
                let ended = std::mem::take(&mut self.uncommitted);
                if committed {
                    self.mark(&ended, marking);
                }
                self.in_block = chain;
            }
            Control::Rollback { chain } => {
                self.uncommitted = WriteSet::Nothing;
                self.in_block = chain;
            }
        }
    }

    /// The origin reported the client's transaction status: once idle, whatever is
    /// still pending committed (implicitly) or rolled back, and is marked either way.
    pub fn ready(&mut self, txn: TxnStatus, marking: Marking<'_>) {
        self.in_block = !txn.is_idle();
        if txn.is_idle() {
            let ended = std::mem::take(&mut self.uncommitted);
            self.mark(&ended, marking);
        }
    }

    /// The origin connection is gone with `in_flight` written by requests whose end
    /// nobody saw: they may have committed, so they are marked with what is pending.
    pub fn lost(&mut self, in_flight: &WriteSet, marking: Marking<'_>) {
        let mut doubtful = std::mem::take(&mut self.uncommitted);
        doubtful.add(in_flight);
        self.mark(&doubtful, marking);
        self.in_block = false;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::Store;
    use crate::clock::ManualClock;

    struct Fixture {
        generations: Generations,
        metrics: DeploymentMetrics,
    }

    impl Fixture {
        fn new() -> Fixture {
            let clock = ManualClock::new();
            let store = Store::new(1 << 20, 1 << 16, clock.clock());
            Fixture {
                generations: Generations::default(),
                metrics: DeploymentMetrics::new(
                    "d",
                    crate::protocol::Protocol::Postgres,
                    Arc::clone(&store),
                ),
            }
        }

        fn marking(&self) -> Marking<'_> {
            Marking {
                generations: &self.generations,
                metrics: &self.metrics,
            }
        }

        /// Whether a read of `table` that started now survives `run`.
        fn survives(&self, run: impl FnOnce(Marking<'_>)) -> bool {
            let stamp = self.generations.stamp();
            run(self.marking());
            self.generations
                .is_current(stamp, &["public.prices".to_owned()], false)
        }
    }

    fn prices() -> WriteSet {
        WriteSet::Tables(BTreeSet::from(["public.prices".to_owned()]))
    }

    #[test]
    fn a_write_outside_a_block_is_marked_at_once_and_again_when_idle() {
        let fixture = Fixture::new();
        let mut pending = PendingWrites::default();
        assert!(!fixture.survives(|m| pending.completed(Control::None, &prices(), m)));
        // A read started after the statement completed but before the commit (Sync).
        assert!(!fixture.survives(|m| pending.ready(TxnStatus::Idle, m)));
        assert!(fixture.survives(|m| pending.ready(TxnStatus::Idle, m)));
    }

    #[test]
    fn inside_a_block_writes_wait_for_commit_and_rollback_drops_them() {
        let fixture = Fixture::new();
        let mut pending = PendingWrites::default();
        assert!(fixture.survives(|m| {
            pending.completed(Control::Begin, &WriteSet::Nothing, m);
            pending.completed(Control::None, &prices(), m);
            pending.ready(TxnStatus::InTransaction, m);
        }));
        let commit = Control::Commit {
            committed: true,
            chain: false,
        };
        assert!(!fixture.survives(|m| pending.completed(commit, &WriteSet::Nothing, m)));
        assert!(fixture.survives(|m| {
            pending.ready(TxnStatus::InTransaction, m);
            pending.completed(Control::None, &prices(), m);
            pending.completed(Control::Rollback { chain: false }, &WriteSet::Nothing, m);
            pending.ready(TxnStatus::Idle, m);
        }));
        // A COMMIT the origin turned into a rollback (the transaction had failed).
        assert!(fixture.survives(|m| {
            pending.completed(Control::Begin, &WriteSet::Nothing, m);
            pending.completed(Control::None, &prices(), m);
            let failed = Control::Commit {
                committed: false,
                chain: false,
            };
            pending.completed(failed, &WriteSet::Nothing, m);
            pending.ready(TxnStatus::Idle, m);
        }));
    }

    #[test]
    fn a_lost_connection_marks_what_may_have_committed() {
        let fixture = Fixture::new();
        let mut pending = PendingWrites::default();
        assert!(!fixture.survives(|m| pending.lost(&prices(), m)));
        assert!(!fixture.survives(|m| pending.lost(&WriteSet::Everything, m)));
        assert_eq!(
            fixture.metrics.invalidations_write.load(Ordering::Relaxed),
            1
        );
    }
}
