//! What the session tracks of each request at the origin until its ReadyForQuery (its
//! way through the cache, its session effects, what completed), and of messages sent
//! before their Sync, which belong to the request the Sync ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::recorder::Recorder;
use crate::analyze::{SessionEffect, StringLiterals};
use crate::cache::{CacheStatus, Entry};
use crate::protocol::TxnStatus;
use crate::proxy::writes::{Control, WriteSet};
use crate::proxy::{Composer, Flight};
use crate::session::settings::{Outcome, STANDARD_CONFORMING_STRINGS};
use crate::wire::pg::Frame;
use crate::wire::pg::backend::tag;

/// The client's requests at the origin, one per ReadyForQuery owed, in order, and the
/// messages sent before a Sync not sent yet.
#[derive(Default)]
pub(super) struct Requests {
    queue: VecDeque<InFlight>,
    /// Extended-protocol messages sent without their Sync yet.
    pub(super) unsynced: Unsynced,
    /// Requests yet to be sent that belong to the last one: the server ignored its Sync.
    merge_next: usize,
}

impl Requests {
    /// A request sent: it takes in the messages sent before its Sync.
    pub(super) fn push(&mut self, mut request: InFlight) {
        request.absorb(std::mem::take(&mut self.unsynced));
        match self.queue.back_mut() {
            Some(last) if self.merge_next > 0 => {
                self.merge_next -= 1;
                last.merge(request);
            }
            _ => self.queue.push_back(request),
        }
    }

    /// The server ignored the Sync that ended the request at the front (COPY FROM STDIN
    /// was running, so no ReadyForQuery answers it): the request goes on with the one
    /// after it, whose ReadyForQuery ends both.
    pub(super) fn sync_ignored(&mut self) {
        match self.queue.len() {
            0 | 1 => self.merge_next += 1,
            _ => {
                if let Some(next) = self.queue.remove(1)
                    && let Some(front) = self.queue.front_mut()
                {
                    front.merge(next);
                }
            }
        }
    }

    /// Whether anything in flight, or sent before a Sync, may change the setting `name`.
    fn may_change_setting(&self, name: &str) -> bool {
        self.queue
            .iter()
            .any(|request| request.may_change_setting(name))
            || !self.unsynced.pins.is_empty()
            || self
                .unsynced
                .effects
                .iter()
                .flatten()
                .any(|effect| effect.may_change_setting(name))
    }

    /// How the origin will read string literals in the next text the client sends: as it
    /// last reported (`standard`), unless something in flight may change that.
    pub(super) fn string_literals(&self, standard: bool) -> StringLiterals {
        match (
            self.may_change_setting(STANDARD_CONFORMING_STRINGS),
            standard,
        ) {
            (true, _) => StringLiterals::Unknown,
            (false, true) => StringLiterals::Standard,
            (false, false) => StringLiterals::BackslashEscapes,
        }
    }

    /// Counts a result message sent to the client, and records it if its request is
    /// being recorded.
    pub(super) fn note_result(&mut self, frame: &Frame) {
        if let Some(request) = self.queue.front_mut() {
            request.flight.count(frame.len());
            if frame.tag() != tag::READY_FOR_QUERY {
                request.flight.record(frame);
            }
        }
    }

    /// The origin (or warpdrive) reported an error for the request at the front, or for
    /// messages sent before a Sync not sent yet. A failed request is never stored.
    pub(super) fn note_failure(&mut self) {
        match self.queue.front_mut() {
            Some(request) => request.flight.fail(),
            None => self.unsynced.failed = true,
        }
    }

    /// A statement of the request at the front (or of messages sent before a Sync not
    /// sent yet) completed; `rolled_back` when the origin's tag said ROLLBACK (a COMMIT
    /// of a failed transaction). Returns how it moves the transaction and what it wrote.
    pub(super) fn note_completed(&mut self, rolled_back: bool) -> (Control, WriteSet) {
        let (effects, writes, completed) = match self.queue.front_mut() {
            Some(request) => (&request.effects, &request.writes, &mut request.completed),
            None => (
                &self.unsynced.effects,
                &self.unsynced.writes,
                &mut self.unsynced.completed,
            ),
        };
        let index = *completed;
        *completed += 1;
        let control = effects
            .get(index)
            .map_or(Control::None, |effects| Control::of(effects, rolled_back));
        // Text warpdrive did not read has one list for all its statements.
        let written = writes
            .get(index)
            .or(writes.last())
            .cloned()
            .unwrap_or_default();
        (control, written)
    }

    /// What everything in flight writes (the connection is gone before their end).
    pub(super) fn writes_in_flight(&self) -> WriteSet {
        let mut all = WriteSet::Nothing;
        for written in self
            .queue
            .iter()
            .flat_map(|request| &request.writes)
            .chain(&self.unsynced.writes)
        {
            all.add(written);
        }
        all
    }

    /// ReadyForQuery ended the request at the front, the client's transaction then
    /// `txn`: the composer stores its result if it can, and counts it.
    pub(super) fn finish(&mut self, composer: &Composer<'_>, txn: TxnStatus) -> Finished {
        let Some(request) = self.queue.pop_front() else {
            return Finished {
                effects: Vec::new(),
                pins: Vec::new(),
                outcome: Outcome {
                    failed: false,
                    completed: 0,
                    in_transaction: !txn.is_idle(),
                },
            };
        };
        let failed = request.flight.failed();
        composer.finish(request.flight, txn);
        Finished {
            effects: request.effects,
            pins: request.pins,
            outcome: Outcome {
                failed,
                completed: request.completed,
                in_transaction: !txn.is_idle(),
            },
        }
    }

    /// Ends everything in flight as failed (the origin connection is gone).
    pub(super) fn abandon(&mut self, composer: &Composer<'_>) {
        while let Some(request) = self.queue.pop_front() {
            composer.abandon(request.flight);
        }
        self.unsynced = Unsynced::default();
    }
}

/// Extended-protocol messages already sent to the origin without their Sync (after a
/// Flush, or beyond the batch bound): they belong to the request the next Sync ends.
#[derive(Debug, Default)]
pub(super) struct Unsynced {
    /// Whether any were sent.
    pub(super) sent: bool,
    /// Their size.
    pub(super) query_bytes: usize,
    /// The status of what they executed, when they executed something.
    pub(super) status: Option<CacheStatus>,
    /// Session effects of what they executed, one list per Execute, in order.
    pub(super) effects: Vec<Vec<SessionEffect>>,
    /// What each Execute writes, in order.
    pub(super) writes: Vec<WriteSet>,
    /// Executes that completed.
    pub(super) completed: usize,
    /// Why code they ran may have changed the session.
    pub(super) pins: Vec<String>,
    /// Whether the origin (or warpdrive) reported an error for them.
    pub(super) failed: bool,
}

impl Unsynced {
    /// Messages of `query_bytes` went to the origin before their Sync; `status` is
    /// theirs when they execute something (the first such status stays).
    pub(super) fn sent(&mut self, query_bytes: usize, status: Option<CacheStatus>) {
        self.sent = true;
        self.query_bytes += query_bytes;
        if self.status.is_none() {
            self.status = status;
        }
    }
}

/// A request sent to the origin, until its ReadyForQuery.
pub(super) struct InFlight {
    /// Its way through the cache and the counters.
    flight: Flight<Recorder>,
    /// What its statements do to the session, one list per statement in order; settled
    /// at ReadyForQuery.
    effects: Vec<Vec<SessionEffect>>,
    /// What its statements write, one per statement in order.
    writes: Vec<WriteSet>,
    /// Statements completed so far.
    completed: usize,
    /// Why code it runs may change the session (the catalog's judgement): each pins the
    /// client at its end.
    pins: Vec<String>,
}

/// What a request did, once its ReadyForQuery arrived.
pub(super) struct Finished {
    /// Its session effects, one list per statement in order.
    pub(super) effects: Vec<Vec<SessionEffect>>,
    /// Why code it ran may have changed the session.
    pub(super) pins: Vec<String>,
    /// What the origin said of it.
    pub(super) outcome: Outcome,
}

impl InFlight {
    /// Its status so far.
    pub(super) fn status(&self) -> CacheStatus {
        self.flight.status()
    }

    /// A request that is forwarded with this status and not recorded.
    pub(super) fn forwarded(status: CacheStatus, query_bytes: usize, started: Instant) -> InFlight {
        InFlight::tracking(Flight::forwarded(status, query_bytes, started))
    }

    /// A request on its way, as the cache sent it.
    pub(super) fn tracking(flight: Flight<Recorder>) -> InFlight {
        InFlight {
            flight,
            effects: Vec::new(),
            writes: Vec::new(),
            completed: 0,
            pins: Vec::new(),
        }
    }

    /// Code the request runs may change the session: the client is pinned at its end,
    /// and its result, which may depend on that change, is not stored (a cacheable
    /// request becomes `volatile`).
    pub(super) fn changes_session(&mut self, why: String) {
        self.pins.push(why);
        self.flight.not_stored(CacheStatus::Volatile);
    }

    /// Whether this request may change the setting `name` (code it runs may change any).
    fn may_change_setting(&self, name: &str) -> bool {
        !self.pins.is_empty()
            || self
                .effects
                .iter()
                .flatten()
                .any(|effect| effect.may_change_setting(name))
    }

    /// Adds the statements this request runs, by their effects and what they write.
    pub(super) fn runs(&mut self, effects: &[Vec<SessionEffect>], writes: Vec<WriteSet>) {
        self.effects.extend(effects.iter().cloned());
        self.writes.extend(writes);
    }

    /// Takes in a later request that ends with this one (its status and counts are
    /// this one's; what it runs counts for this one).
    fn merge(&mut self, later: InFlight) {
        if later.flight.failed() {
            self.flight.fail();
        }
        self.effects.extend(later.effects);
        self.writes.extend(later.writes);
        self.completed += later.completed;
        self.pins.extend(later.pins);
    }

    /// Takes in the messages of this request sent before its Sync.
    fn absorb(&mut self, unsynced: Unsynced) {
        if unsynced.failed {
            self.flight.fail();
        }
        self.completed += unsynced.completed;
        self.pins.extend(unsynced.pins);
        let mut effects = unsynced.effects;
        effects.append(&mut self.effects);
        self.effects = effects;
        let mut writes = unsynced.writes;
        writes.append(&mut self.writes);
        self.writes = writes;
    }
}

/// What the cache says about a request.
pub(super) enum Consulted<T = ()> {
    /// Answer with this entry (and what the caller needs to).
    Hit(Arc<Entry>, T),
    /// Send it to the origin, tracked by this.
    Forward(Box<InFlight>),
}
