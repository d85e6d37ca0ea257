//! A request on its way through the origin: its status, the bytes counted for metrics,
//! and, on a miss, the recording of its reply that becomes an entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::policy::{Policy, Source};
use crate::cache::tier::FlightLock;
use crate::cache::{CacheKey, CacheStatus, FillGuard, Recorded, Refetch};

/// Records an origin reply for the cache as it is forwarded to the client; each protocol
/// has its own.
pub trait Record {
    /// One message of a reply.
    type Message: ?Sized;
    /// Takes one message the client was sent.
    fn accept(&mut self, message: &Self::Message);
    /// Whether the recording gave up: nothing more it is fed can make it storable.
    fn gave_up(&self) -> Option<Recorded>;
    /// How the recording ended.
    fn finish(self) -> Recorded;
}

/// What the protocol supplies to record a miss.
pub struct ToRecord<R> {
    /// The recorder of the reply.
    pub recorder: R,
    /// The relations the request reads.
    pub tables: Arc<[String]>,
    /// It runs code whose reads warpdrive does not know (see
    /// [`crate::analyze::Analysis::reads_unknown_tables`]).
    pub tables_unknown: bool,
    /// How to run the request again.
    pub refetch: Arc<dyn Refetch>,
}

/// Where a recorded result goes.
pub(super) enum Fill {
    /// The single-flight claim on the key.
    Guard(FillGuard),
    /// Straight into the store (the claim was someone else's, and it took too long).
    Key(CacheKey),
}

/// A reply being recorded.
pub(super) struct Recording<R> {
    pub(super) recorder: R,
    pub(super) fill: Fill,
    /// When the request was sent (cache clock): the result is as old as that, however
    /// long the origin took, so its lifetime starts there.
    pub(super) requested_at: Duration,
    pub(super) policy: Policy,
    pub(super) source: Source,
    /// This instance fetches the key for every instance sharing the tier.
    pub(super) lock: Option<FlightLock>,
}

/// A request sent to the origin, until the origin reports it ended.
pub struct Flight<R> {
    pub(super) status: CacheStatus,
    pub(super) query_bytes: usize,
    pub(super) result_bytes: usize,
    pub(super) started: Instant,
    pub(super) failed: bool,
    pub(super) recording: Option<Recording<R>>,
}

impl<R: Record> Flight<R> {
    /// A request forwarded with this status and not recorded.
    pub fn forwarded(status: CacheStatus, query_bytes: usize, started: Instant) -> Flight<R> {
        Flight {
            status,
            query_bytes,
            result_bytes: 0,
            started,
            failed: false,
            recording: None,
        }
    }

    /// Its status so far.
    pub fn status(&self) -> CacheStatus {
        self.status
    }

    /// Whether the origin (or warpdrive) reported an error for it.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Whether its reply is being recorded.
    #[cfg(test)]
    pub(crate) fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Its result must not be stored: a cacheable request takes `status` instead.
    pub fn not_stored(&mut self, status: CacheStatus) {
        if self.recording.take().is_some() || self.status == CacheStatus::Miss {
            self.status = status;
        }
    }

    /// Counts bytes of its reply sent to the client.
    pub fn count(&mut self, bytes: usize) {
        self.result_bytes += bytes;
    }

    /// Records a result message of its reply. A recording that gives up lets go of its
    /// single-flight claim at once: clients waiting for it need not wait for the rest of
    /// a result that will not be stored.
    pub fn record(&mut self, message: &R::Message) {
        let Some(recording) = self.recording.as_mut() else {
            return;
        };
        recording.recorder.accept(message);
        if let Some(outcome) = recording.recorder.gave_up() {
            if outcome == Recorded::Oversized {
                self.status = CacheStatus::OversizedResult;
            }
            self.recording = None;
        }
    }

    /// The origin (or warpdrive) reported an error for it: it is never stored.
    pub fn fail(&mut self) {
        self.failed = true;
        self.recording = None;
    }
}
