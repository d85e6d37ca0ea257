//! The origin's replies: relayed to the client in turn, their events (a statement
//! completed, a request failed, ReadyForQuery) settling the session, statements undone
//! when the origin refused them, and the pin of a client whose state cannot move.

use bytes::BytesMut;

use super::Session;
use super::relay::{Delivery, Event, OnError};
use super::sqlstate::{ErrorResponse, sqlstate};
use super::{caching, inflight};
use crate::analyze::SessionEffect;
use crate::conn::{ConnError, FLUSH_THRESHOLD};
use crate::session::SessionError;
use crate::session::error::{ClientError, ErrorKind};
use crate::wire::pg::Frame;
use crate::wire::pg::backend::{BackendMessage, TransactionStatus, tag as backend_tag};

impl Session {
    /// Handles what the origin sent (or its failure).
    pub(super) async fn on_origin(
        &mut self,
        result: Result<Option<Frame>, ConnError>,
    ) -> Result<(), SessionError> {
        let mut next = match result {
            Ok(Some(frame)) => Some(frame),
            Ok(None) => return self.origin_lost(ConnError::TruncatedFrame).await,
            Err(error) => return self.origin_lost(error).await,
        };
        while let Some(frame) = next {
            if frame.tag() == backend_tag::ERROR_RESPONSE
                && let Ok(BackendMessage::ErrorResponse(fields)) = BackendMessage::decode(&frame)
                && (fields.is_fatal() || !self.relay.awaits_origin())
            {
                // The origin is closing this connection (terminated backend, shutdown):
                // end the requests in flight now rather than send more to a dead peer.
                return self.origin_closing(fields).await;
            }
            let frame = self.rewrite_cancel_error(frame);
            let mut events = Vec::new();
            if self.relay.on_origin(&frame, &mut events) == Delivery::Forward {
                self.io.client.out.extend_from_slice(frame.raw());
                self.requests.note_result(&frame);
            }
            if frame.tag() == backend_tag::PARAMETER_STATUS {
                self.note_parameter_status(&frame);
            }
            // The events of this reply first: a synthetic reply drained next belongs to
            // the request after it.
            for event in events.drain(..) {
                self.on_event(event);
            }
            self.relay
                .drain_synthetic(&mut self.io.client.out, &mut events);
            for event in events {
                self.on_event(event);
            }
            if self.io.client.out.len() >= FLUSH_THRESHOLD {
                self.io.client.flush().await?;
            }
            if !self.io.holds() {
                break;
            }
            next = match self.io.origin().map(|c| c.origin.conn.buffered_frame()) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => return self.origin_lost(error).await,
                None => None,
            };
        }
        self.io.client.flush().await?;
        Ok(())
    }

    /// When warpdrive cancelled a query for running too long, the origin's "canceling
    /// statement due to user request" is replaced by a message that says why.
    pub(super) fn rewrite_cancel_error(&self, frame: Frame) -> Frame {
        if !self.io.cancelled_overdue() || frame.tag() != backend_tag::ERROR_RESPONSE {
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
                        self.io.pool.settings().max_query_duration.as_secs()
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

    pub(super) fn on_event(&mut self, event: Event) {
        match event {
            Event::Failed => self.requests.note_failure(),
            Event::Completed => self.requests.note_completed(),
            Event::Undo { undo, skipped } => self.undo(undo, skipped),
            Event::Stale { origin_name } => {
                if let Some(checkout) = self.io.checkout() {
                    let conn = checkout.conn();
                    conn.statements.remove(&origin_name);
                    conn.stale_statements.push(origin_name);
                }
            }
            Event::Ready(status) => {
                let composer = caching::composer(&self.ctx, &self.io.pool);
                let finished = self.requests.finish(&composer, status.into());
                self.on_ready(status, finished);
            }
        }
    }

    /// Takes back what sending a message did, when the origin rejected or skipped it.
    pub(super) fn undo(&mut self, undo: OnError, skipped: bool) {
        let conn = self.io.origin();
        match undo {
            OnError::Nothing | OnError::MaybeStale { .. } => {}
            OnError::ParseFailed {
                origin_name,
                client_name,
            } => {
                if let Some(conn) = conn {
                    conn.statements.remove(&origin_name);
                }
                if let Some(name) = client_name
                    && self
                        .statements
                        .get(&name)
                        .is_some_and(|s| s.origin_name == origin_name)
                {
                    self.statements.remove(&name);
                }
            }
            OnError::UnnamedParse { previous } => {
                if let Some(conn) = conn {
                    conn.unnamed_statement = None;
                }
                // A failed Parse leaves no unnamed statement; a skipped one the old one.
                self.unnamed = if skipped { previous } else { None };
            }
            OnError::UnnamedReplay => {
                if let Some(conn) = conn {
                    conn.unnamed_statement = None;
                }
            }
            OnError::OriginClose { origin_name } => {
                if let Some(conn) = conn {
                    conn.stale_statements.push(origin_name);
                }
            }
            OnError::Restore(statements) => {
                for (name, statement) in statements {
                    if name.is_empty() {
                        self.unnamed = Some(statement);
                    } else {
                        self.statements.insert(name, statement);
                    }
                }
            }
        }
    }

    /// ReadyForQuery: settle the request's effects, and give the connection back when the
    /// client is idle.
    pub(super) fn on_ready(&mut self, status: TransactionStatus, finished: inflight::Finished) {
        self.status = status;
        let Some(checkout) = self.io.checkout() else {
            return;
        };
        let conn = checkout.conn();
        match self.relay.awaits_origin() {
            true => conn.set_busy(),
            false => conn.set_ready(status.into()),
        }
        let failed = finished.outcome.failed;
        let mut pins: Vec<&str> = Vec::new();
        let mut discarded = false;
        for effect in finished.effects.iter().flatten() {
            match effect {
                // Whatever the outcome: a failed request may still have taken a session
                // lock before its error, and the lock outlives the transaction.
                SessionEffect::Pin { feature } => pins.push(feature),
                SessionEffect::DiscardAll | SessionEffect::Deallocate { name: None } if !failed => {
                    // Ran on the origin (a pinned client, or the extended protocol): the
                    // connection's statements are gone, and so are the client's.
                    conn.statements.clear();
                    conn.unnamed_statement = None;
                    self.statements.clear();
                    if matches!(effect, SessionEffect::DiscardAll) {
                        self.unnamed = None;
                        discarded = true;
                    }
                }
                _ => {}
            }
        }
        let untracked = self
            .settings
            .settle(&finished.effects, finished.outcome, &mut conn.settings)
            .err()
            .map(|untracked| untracked.to_string());
        let pins: Vec<String> = pins
            .into_iter()
            .map(str::to_owned)
            .chain(finished.pins)
            .chain(untracked)
            .collect();
        if discarded && pins.is_empty() && status == TransactionStatus::Idle {
            self.unpin();
        }
        for feature in &pins {
            self.pin(feature);
        }
        if status == TransactionStatus::Idle && std::mem::take(&mut self.catalog_changing) {
            self.ctx.catalogs.note_changed(&self.database);
        }
        if self.relay.awaits_origin() {
            self.io.restart_deadline();
        } else if status == TransactionStatus::Idle
            && self.io.pinned().is_none()
            && self.batch.is_empty()
            && !self.requests.unsynced.sent
        {
            self.portals.clear();
            self.release();
        } else {
            self.io.settle_deadline();
        }
    }

    /// Keeps the client on its origin connection for the rest of its session; the
    /// connection is closed, not reused, when the client leaves.
    pub(super) fn pin(&mut self, feature: &str) {
        if self.io.pin(feature) {
            tracing::info!(%feature, "client pinned to its origin connection");
            self.ctx
                .metrics
                .pinned_sessions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// DISCARD ALL ran on the pinned connection: the session's state is known again
    /// (PostgreSQL's defaults and the startup settings), so the client is pooled again.
    /// The connection itself stays unusable for others and is closed when released: a
    /// reset connection can still differ from a new one (custom settings a function
    /// created read as empty rather than missing).
    pub(super) fn unpin(&mut self) {
        if let Some(feature) = self.io.unpin() {
            tracing::info!(%feature, "DISCARD ALL ended the pin; the client is pooled again");
        }
    }
}
