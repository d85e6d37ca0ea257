//! The origin's replies to one client: each frame relayed (or absorbed) as
//! [`super::relay`] matches it to a request, warpdrive's own cancel explained, and what a
//! frame ends settled: a statement completed (its writes marked), a message undone, a
//! statement gone stale, and at ReadyForQuery the request's effects (pins, statements
//! DISCARD ALL or DEALLOCATE ALL dropped, settings followed) and the hold on the
//! connection.
//!
//! [`Replies`] borrows the session's parts for one frame, as
//! [`super::translate::Translator`] does for one batch the other way; it writes to the
//! client's buffer only (the session reads and flushes).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::caching::composer;
use super::inflight::{Finished, Requests};
use super::relay::{Delivery, Event, Relay};
use super::release;
use super::sqlstate::{ErrorResponse, sqlstate};
use super::statement::ClientStatements;
use crate::analyze::SessionEffect;
use crate::cache::Generations;
use crate::cancel::CancelHandle;
use crate::pool::pg::{PgOrigin, PgPooledConn};
use crate::proxy::writes::PendingWrites;
use crate::session::SessionContext;
use crate::session::driver::Driver;
use crate::session::error::{ClientError, ErrorKind};
use crate::session::settings::{STANDARD_CONFORMING_STRINGS, Settings};
use crate::wire::pg::backend::{BackendMessage, TransactionStatus, tag as backend_tag};
use crate::wire::pg::{Frame, PgFraming};

/// When warpdrive cancelled a query for running longer than `max_query_duration`, the
/// origin's "canceling statement due to user request" is replaced by a message that says
/// why; any other frame is returned as it is.
fn explain_own_cancel(frame: Frame, max_query_duration: Duration) -> Frame {
    if frame.tag() != backend_tag::ERROR_RESPONSE {
        return frame;
    }
    match BackendMessage::decode(&frame) {
        Ok(BackendMessage::ErrorResponse(fields))
            if fields.code() == sqlstate(ErrorKind::QueryCanceled).as_bytes() =>
        {
            let mut buf = BytesMut::new();
            ClientError::error(
                ErrorKind::QueryCanceled,
                format!(
                    "canceling statement: it ran longer than max_query_duration ({}s), so warpdrive cancelled it at the origin",
                    max_query_duration.as_secs()
                ),
            )
            .hint("optimise the query, or raise pool.max_query_duration")
            .encode(&mut buf);
            crate::wire::pg::split_frame(&mut buf, usize::MAX)
                .ok()
                .flatten()
                .unwrap_or(frame)
        }
        _ => frame,
    }
}

/// The session's parts, as the origin's replies move them.
pub(super) struct Replies<'a> {
    pub(super) ctx: &'a SessionContext,
    pub(super) io: &'a mut Driver<PgOrigin, PgFraming>,
    pub(super) cancel: &'a CancelHandle,
    pub(super) relay: &'a mut Relay,
    pub(super) requests: &'a mut Requests,
    pub(super) statements: &'a mut ClientStatements,
    pub(super) settings: &'a mut Settings,
    pub(super) writes: &'a mut PendingWrites,
    pub(super) generations: &'a Arc<Generations>,
    /// The transaction status as the client last saw it.
    pub(super) status: &'a mut TransactionStatus,
    /// `standard_conforming_strings` as the origin last reported it.
    pub(super) standard_conforming_strings: &'a mut bool,
    /// DDL went to the origin in the current transaction.
    pub(super) catalog_changing: &'a mut bool,
    /// The origin database.
    pub(super) database: &'a str,
    /// Extended-protocol messages wait for their Sync: the connection stays held.
    pub(super) batch_waiting: bool,
}

impl Replies<'_> {
    /// Relays one origin frame to the client (or absorbs it) and settles what it ends.
    pub(super) fn relay(&mut self, frame: Frame) {
        let frame = match self.io.cancelled_overdue() {
            true => explain_own_cancel(frame, self.io.pool.settings().max_query_duration),
            false => frame,
        };
        let mut events = Vec::new();
        if self.relay.on_origin(&frame, &mut events) == Delivery::Forward {
            self.io.client.out.extend_from_slice(frame.raw());
            self.requests.note_result(&frame);
        }
        self.merge_ignored_syncs();
        if frame.tag() == backend_tag::PARAMETER_STATUS {
            self.note_parameter_status(&frame);
        }
        // The events of this reply first: a synthetic reply drained next belongs to the
        // request after it.
        for event in events {
            self.on_event(event);
        }
        self.synthetic();
    }

    /// Writes the replies warpdrive answers itself that are next in turn, and settles
    /// what they end.
    pub(super) fn synthetic(&mut self) {
        let mut events = Vec::new();
        self.relay
            .drain_synthetic(&mut self.io.client.out, &mut events);
        for event in events {
            self.on_event(event);
        }
    }

    /// Requests whose Sync the server ignored (COPY FROM STDIN ran) end with the next.
    pub(super) fn merge_ignored_syncs(&mut self) {
        for _ in 0..self.relay.take_ignored_syncs() {
            self.requests.sync_ignored();
        }
    }

    /// Follows the origin's reports of `standard_conforming_strings`.
    fn note_parameter_status(&mut self, frame: &Frame) {
        if let Ok(BackendMessage::ParameterStatus { name, value }) = BackendMessage::decode(frame)
            && &name[..] == STANDARD_CONFORMING_STRINGS.as_bytes()
        {
            *self.standard_conforming_strings = &value[..] == b"on";
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Failed => self.requests.note_failure(),
            Event::Completed { rolled_back } => {
                let (control, written) = self.requests.note_completed(rolled_back);
                let marking = self.ctx.marking(self.generations);
                self.writes.completed(control, &written, marking);
            }
            Event::Undo { undo, skipped } => self.statements.undo(undo, skipped, self.io.origin()),
            Event::Stale { origin_name } => {
                if let Some(conn) = self.io.origin() {
                    conn.statements.remove(&origin_name);
                    conn.stale_statements.push(origin_name);
                }
            }
            Event::Ready(status) => self.on_ready(status),
        }
    }

    /// ReadyForQuery ended the request at the front: settle it, pin the client if it
    /// must stay, and give the connection back when the client is idle.
    fn on_ready(&mut self, status: TransactionStatus) {
        let composer = composer(self.ctx, &self.io.pool, self.generations);
        let finished = self.requests.finish(&composer, status.into());
        let marking = self.ctx.marking(self.generations);
        self.writes.ready(status.into(), marking);
        *self.status = status;
        let awaits_origin = self.relay.awaits_origin();
        let Some(conn) = self.io.origin() else {
            return;
        };
        match awaits_origin {
            true => conn.set_busy(),
            false => conn.set_ready(status.into()),
        }
        let settled = settle(finished, conn, self.statements, self.settings);
        let idle = status == TransactionStatus::Idle;
        if settled.discarded && settled.pins.is_empty() && idle {
            // DISCARD ALL ran on the pinned connection: PostgreSQL's defaults and the
            // startup settings are the session's state again.
            self.io.unpin();
        }
        for feature in &settled.pins {
            self.io.pin(feature, &self.ctx.metrics);
        }
        if idle && std::mem::take(self.catalog_changing) {
            self.ctx.catalogs.note_changed(self.database);
        }
        if awaits_origin {
            self.io.restart_deadline();
        } else if idle
            && self.io.pinned().is_none()
            && !self.batch_waiting
            && !self.requests.unsynced.sent
        {
            self.statements.close_portals();
            release(self.io, self.cancel);
        } else {
            self.io.settle_deadline();
        }
    }
}

/// What a finished request leaves for the client's hold on its connection.
struct Settled {
    /// Why the client must stay on its connection, if it must.
    pub(super) pins: Vec<String>,
    /// DISCARD ALL ran on the origin: the client's state is known again.
    pub(super) discarded: bool,
}

/// Settles the session effects of a request at its ReadyForQuery: the client's
/// statements and settings follow what ran on `conn`, and the pins it calls for are
/// returned.
fn settle(
    finished: Finished,
    conn: &mut PgPooledConn,
    statements: &mut ClientStatements,
    settings: &mut Settings,
) -> Settled {
    let failed = finished.outcome.failed;
    let mut pins: Vec<String> = Vec::new();
    let mut discarded = false;
    for effect in finished.effects.iter().flatten() {
        match effect {
            // Whatever the outcome: a failed request may still have taken a session lock
            // before its error, and the lock outlives the transaction.
            SessionEffect::Pin { feature } => pins.push(feature.clone()),
            SessionEffect::DiscardAll | SessionEffect::Deallocate { name: None } if !failed => {
                let discard_all = matches!(effect, SessionEffect::DiscardAll);
                statements.dropped_on_origin(discard_all, conn);
                discarded |= discard_all;
            }
            _ => {}
        }
    }
    let untracked = settings
        .settle(&finished.effects, finished.outcome, &mut conn.settings)
        .err()
        .map(|untracked| untracked.to_string());
    pins.extend(finished.pins);
    pins.extend(untracked);
    Settled { pins, discarded }
}
