//! One PostgreSQL client's session after startup: each client message dispatched, each
//! origin reply relayed, and the hold on the origin connection taken and given back.
//!
//! The parts are their own types: [`super::extended::Batch`] and [`Planner`]
//! (extended-protocol batches), [`ClientStatements`] and [`Translator`] (statements and
//! portals), [`super::inflight::Requests`] (what is in flight), [`Relay`] (matching
//! replies to requests), [`Replies`] (what the origin's replies settle), [`Consult`] (the
//! cache), [`Lost`] (answers when the origin goes), [`crate::proxy::writes::PendingWrites`] (writes on their
//! way to invalidating the cache). The event loop, the hold and the deadline are
//! [`crate::session::driver`]'s; this type wires them together.

use bytes::Bytes;
use tokio::time::Instant;

use super::caching::{self, Consult};
use super::catalog::{self, CatalogView};
use super::extended::{self, BatchEnd, Decision, Planner};
use super::inflight::{Consulted, InFlight, Unsynced};
use super::internal::apply_settings;
use super::loss::Lost;
use super::relay::{Expect, Relay};
use super::reply::Replies;
use super::request::Request;
use super::sqlstate::{ErrorResponse, from_pool};
use super::statement::{ClientStatement, ClientStatements};
use super::translate::{StatementReader, Translator, let_go_of_databases};
use super::{INPUT_DRY, Session, release};
use crate::analyze::{Analysis, Dialect, Writes};
use crate::cache::CacheStatus;
use crate::cancel::CancelTarget;
use crate::conn::{ConnError, FLUSH_THRESHOLD};
use crate::pool::pg::PgOrigin;
use crate::proxy::writes::WriteSet;
use crate::proxy::{Composer, Situation};
use crate::session::SessionError;
use crate::session::driver::{CANCEL_GRACE, Driver, Flow, Frontend};
use crate::session::error::{ClientError, ErrorKind};
use crate::wire::pg::backend::{BackendMessage, ErrorFields, TransactionStatus, tag};
use crate::wire::pg::frontend::FrontendMessage;
use crate::wire::pg::{Frame, PgFraming, WireError, encode};

impl Frontend for Session {
    type Backend = PgOrigin;
    type Framing = PgFraming;

    fn driver(&mut self) -> &mut Driver<PgOrigin, PgFraming> {
        &mut self.io
    }

    fn between_transactions(&self) -> bool {
        self.status == TransactionStatus::Idle
            && !self.relay.awaits_origin()
            && self.batch.is_empty()
    }

    fn awaits_origin(&self) -> bool {
        self.relay.awaits_origin()
    }

    async fn say_shutting_down(&mut self) -> Result<(), SessionError> {
        ClientError::shutting_down().encode(&mut self.io.client.out);
        self.io.client.flush().await?;
        Ok(())
    }

    async fn on_client(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        let flow = self.on_message(frame).await?;
        self.io.set_timer(None);
        if flow == Flow::Continue && !self.batch.is_empty() {
            if self.batch.is_large() && !self.io.client.has_buffered_frame() {
                self.send_batch(BatchEnd::AsTheyAre).await?;
            } else {
                // Held without their Sync: they go to the origin as they are if the
                // client sends nothing more meanwhile.
                self.io.set_timer(Some(Instant::now() + INPUT_DRY));
            }
        }
        Ok(flow)
    }

    async fn on_client_failed(&mut self, error: ConnError) -> Result<(), SessionError> {
        match error {
            ConnError::Wire(error) => self.protocol_violation(error).await,
            error => Err(error.into()),
        }
    }

    async fn on_origin(
        &mut self,
        reply: Result<Option<Frame>, ConnError>,
    ) -> Result<(), SessionError> {
        let mut next = match reply {
            Ok(Some(frame)) => Some(frame),
            Ok(None) => return self.origin_lost(ConnError::TruncatedFrame).await,
            Err(error) => return self.origin_lost(error).await,
        };
        while let Some(frame) = next {
            if frame.tag() == tag::ERROR_RESPONSE
                && let Ok(BackendMessage::ErrorResponse(fields)) = BackendMessage::decode(&frame)
                && (fields.is_fatal() || !self.relay.awaits_origin())
            {
                // The origin is closing this connection (terminated backend, shutdown):
                // end the requests in flight now rather than send more to a dead peer.
                let reason = fields.message();
                tracing::warn!(%reason, pending = self.relay.pending_ready(), "origin is closing its connection");
                return self.end_requests_in_flight(Some(fields), &reason).await;
            }
            self.replies().relay(frame);
            if self.io.client.out.len() >= FLUSH_THRESHOLD {
                self.flush_client().await?;
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
        self.flush_client().await
    }

    async fn on_timer(&mut self) -> Result<(), SessionError> {
        match self.batch.is_empty() {
            true => Ok(()),
            false => self.send_batch(BatchEnd::AsTheyAre).await,
        }
    }

    async fn origin_lost(&mut self, error: ConnError) -> Result<(), SessionError> {
        tracing::warn!(%error, pending = self.relay.pending_ready(), "origin connection lost");
        self.end_requests_in_flight(None, &error.to_string()).await
    }
}

impl Session {
    async fn protocol_violation(&mut self, error: WireError) -> Result<(), SessionError> {
        ClientError::protocol_violation(&error).encode(&mut self.io.client.out);
        self.io.client.flush().await?;
        Err(SessionError::Protocol(error.to_string()))
    }

    /// Handles one client message.
    async fn on_message(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        let message = match FrontendMessage::decode(frame) {
            Ok(message) => message,
            Err(error) => {
                self.protocol_violation(error).await?;
                return Ok(Flow::Stop);
            }
        };
        match message {
            FrontendMessage::Query(query) => self.on_query(query.frame, &query.sql).await?,
            message @ (FrontendMessage::Parse(_)
            | FrontendMessage::Bind(_)
            | FrontendMessage::Describe(_)
            | FrontendMessage::Execute(_)
            | FrontendMessage::Close(_)) => {
                if self.batch.hold(message) {
                    self.send_batch(BatchEnd::AsTheyAre).await?;
                }
            }
            FrontendMessage::Sync(_) => self.send_batch(BatchEnd::Sync).await?,
            FrontendMessage::Flush(_) => self.send_batch(BatchEnd::Flush).await?,
            FrontendMessage::Terminate(_) => return Ok(Flow::Stop),
            FrontendMessage::CopyData(frame)
            | FrontendMessage::CopyDone(frame)
            | FrontendMessage::CopyFail(frame) => self.on_copy(frame).await?,
            FrontendMessage::FunctionCall(call) => {
                self.on_function_call(call.function, call.frame).await?
            }
            FrontendMessage::Password(_) => {
                self.protocol_violation(WireError::UnexpectedTag { tag: b'p' })
                    .await?;
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// COPY data from the client goes on to the origin as it comes.
    async fn on_copy(&mut self, frame: Frame) -> Result<(), SessionError> {
        let end = frame.tag() != b'd';
        if end {
            self.relay.push(Expect::CopyEnd);
        }
        if let Some(conn) = self.io.origin() {
            let out = &mut conn.origin.conn.out;
            out.extend_from_slice(frame.raw());
            if out.len() >= FLUSH_THRESHOLD || end {
                self.flush_origin().await?;
            }
        }
        Ok(())
    }

    async fn on_function_call(&mut self, function: u32, frame: Frame) -> Result<(), SessionError> {
        let received = std::time::Instant::now();
        let pin = match self.io.pinned() {
            Some(_) => None,
            None => self.catalog().function_call_pin(function, received).await,
        };
        if let Err(error) = self.connect().await {
            return self.answer_error(error).await;
        }
        self.send_to_origin(frame.raw());
        self.relay.push(Expect::UntilReady);
        let mut in_flight = InFlight::forwarded(CacheStatus::Uncacheable, frame.len(), received);
        if let Some(pin) = pin {
            in_flight.changes_session(pin);
        }
        // The function it runs is named by OID alone: it may write anything.
        in_flight.runs(&[Vec::new()], vec![WriteSet::Everything]);
        self.requests.push(in_flight);
        self.flush_origin().await?;
        self.io.arm_deadline();
        Ok(())
    }

    fn send_to_origin(&mut self, bytes: &[u8]) {
        if let Some(conn) = self.io.origin() {
            conn.origin.conn.out.extend_from_slice(bytes);
            conn.set_busy();
        }
    }

    /// Flushes warpdrive's writes to the origin, relaying the origin's replies that
    /// arrive meanwhile (a long pipeline fills both directions). A write failure is
    /// handled when the session next reads from the origin, which then fails too.
    async fn flush_origin(&mut self) -> Result<(), SessionError> {
        while let Some(conn) = self.io.origin() {
            match conn.origin.conn.flush_or_read().await {
                Ok(None) => break,
                Ok(Some(frame)) => self.on_origin(Ok(Some(frame))).await?,
                Err(ConnError::Io(error)) => {
                    tracing::debug!(%error, "writing to the origin failed");
                    break;
                }
                Err(error) => self.on_origin(Err(error)).await?,
            }
        }
        Ok(())
    }

    /// Answers with an error and, outside the extended protocol's error skipping, a
    /// ReadyForQuery, without involving the origin.
    async fn answer_error(&mut self, error: ClientError) -> Result<(), SessionError> {
        error.encode(&mut self.io.client.out);
        encode::ready_for_query(&mut self.io.client.out, self.status);
        self.io.client.flush().await?;
        Ok(())
    }

    /// Makes sure an origin connection is checked out and carries the client's settings.
    /// The inner error is for the client; the caller decides how to answer with it.
    async fn connect(&mut self) -> Result<(), ClientError> {
        let in_flight = self.relay.awaits_origin();
        let fresh = self.io.hold(in_flight).await.map_err(|error| {
            tracing::warn!(%error, "no origin connection for the client");
            from_pool(&error)
        })?;
        let Some(checkout) = self.io.checkout() else {
            return Err(ClientError::error(
                ErrorKind::Unavailable,
                "no origin connection",
            ));
        };
        if fresh {
            self.cancel.set_target(Some(CancelTarget::of(checkout)));
        }
        if let Err(error) = apply_settings(checkout.conn(), self.settings.current()).await {
            checkout.discard();
            release(&mut self.io, &self.cancel);
            return Err(error);
        }
        Ok(())
    }

    /// The origin's catalog as this session asks it: read on a pooled connection, waited
    /// for only when the session holds none (else it might wait for its own).
    fn catalog(&self) -> CatalogView<'_> {
        CatalogView {
            catalogs: &self.ctx.catalogs,
            database: &self.database,
            reader: crate::catalog::Reader {
                pool: &self.io.pool,
                wait: !self.io.holds(),
            },
            catalog_changing: self.catalog_changing,
        }
    }

    /// Why the code a statement runs may change this session, if it may (see
    /// [`catalog`]); a pinned session's state is unknown already.
    async fn user_code_pin(
        &mut self,
        analysis: &Analysis,
        text: Option<&[u8]>,
        received: std::time::Instant,
    ) -> Option<String> {
        self.catalog_changing |= catalog::changes_catalog(analysis);
        match self.io.pinned() {
            Some(_) => None,
            None => self.catalog().user_code_pin(analysis, text, received).await,
        }
    }

    /// The deployment's cache, as this session's requests see it.
    fn composer(&self) -> Composer<'_> {
        caching::composer(&self.ctx, &self.io.pool, &self.generations)
    }

    /// The cache, asked for the client's next request.
    fn consult(&self) -> Consult<'_> {
        Consult {
            ctx: &self.ctx,
            pool: &self.io.pool,
            database: &self.database,
            generations: &self.generations,
            settings: self.settings.current(),
            situation: Situation {
                txn: self.status.into(),
                pinned: self.io.pinned().is_some(),
                behind_others: self.relay.awaits_origin(),
            },
            catalog: self.catalog(),
        }
    }

    /// Ends a reply from the cache started at `reply_starts` in the client's buffer.
    async fn finish_hit(
        &mut self,
        reply_starts: usize,
        query_bytes: usize,
        started: std::time::Instant,
    ) -> Result<(), SessionError> {
        let composer = caching::composer(&self.ctx, &self.io.pool, &self.generations);
        caching::end_hit(
            &mut self.io.client.out,
            &composer,
            reply_starts,
            query_bytes,
            started,
        );
        self.io.client.flush().await?;
        Ok(())
    }

    async fn on_query(&mut self, frame: Frame, sql: &Bytes) -> Result<(), SessionError> {
        let started = std::time::Instant::now();
        if !self.batch.is_empty() {
            self.send_batch(BatchEnd::AsTheyAre).await?;
        }
        let literals = self
            .requests
            .string_literals(self.standard_conforming_strings);
        let analysis = self
            .ctx
            .analyzer
            .analyze_bytes(Dialect::Postgres, sql, literals);
        if ClientStatements::may_answer_locally(analysis.sole_effect()) {
            // Answered in turn: the replies to requests still in flight come first, and
            // they say whether a transaction is open or failed.
            self.settle_in_flight().await?;
            let pinned = self.io.pinned().is_some();
            let answered = self.statements.answer_locally(
                analysis.sole_effect(),
                self.status,
                pinned,
                &mut self.settings,
            );
            if let Some(tag) = answered {
                encode::command_complete(&mut self.io.client.out, tag);
                encode::ready_for_query(&mut self.io.client.out, self.status);
                self.ctx.metrics.record(
                    CacheStatus::NotAQuery,
                    frame.len(),
                    0,
                    started.elapsed(),
                    false,
                );
                self.io.client.flush().await?;
                return Ok(());
            }
        }
        let request = Request::Simple { sql: sql.clone() };
        let consulted = self
            .consult()
            .consult(&analysis, request, frame.len(), started)
            .await;
        let mut in_flight = match consulted {
            Consulted::Hit(entry, ()) => {
                let reply_starts = self.io.client.out.len();
                caching::write_simple_hit(&mut self.io.client.out, &entry);
                return self.finish_hit(reply_starts, frame.len(), started).await;
            }
            Consulted::Forward(in_flight) => *in_flight,
        };
        if let Some(pin) = self.user_code_pin(&analysis, Some(sql), started).await {
            in_flight.changes_session(pin);
        }
        let writes = self.catalog().write_sets(&analysis);
        if let Err(error) = self.connect().await {
            self.ctx
                .metrics
                .record(in_flight.status(), frame.len(), 0, started.elapsed(), true);
            return self.answer_error(error).await;
        }
        if let Some(mut translator) = self.translator(&[]) {
            translator.send_pending_closes();
        }
        let_go_of_databases(&self.ctx.protocol.pools, &analysis);
        self.send_to_origin(frame.raw());
        if let Some(conn) = self.io.origin() {
            // A simple query destroys the unnamed statement.
            conn.unnamed_statement = None;
        }
        self.relay.push(Expect::UntilReady);
        in_flight.runs(&analysis.statement_effects, writes);
        self.requests.push(in_flight);
        self.flush_origin().await?;
        self.io.arm_deadline();
        Ok(())
    }

    /// Reads the origin's replies until nothing of this client is in flight (bounded by
    /// max_query_duration and the cancel grace period).
    async fn settle_in_flight(&mut self) -> Result<(), SessionError> {
        let bound = self.io.pool.settings().max_query_duration + CANCEL_GRACE;
        while self.relay.awaits_origin() {
            let Some(conn) = self.io.origin() else {
                break;
            };
            let result = match tokio::time::timeout(bound, conn.origin.conn.read_frame()).await {
                Ok(result) => result,
                Err(_) => Err(ConnError::Io(std::io::Error::other(
                    "the origin did not answer within max_query_duration",
                ))),
            };
            self.on_origin(result).await?;
        }
        Ok(())
    }

    /// The client's next messages, as written for the connection it holds.
    fn translator<'a>(&'a mut self, writes: &'a [(Writes, WriteSet)]) -> Option<Translator<'a>> {
        let pinned = self.io.pinned().is_some();
        let conn = self.io.origin()?;
        Some(Translator {
            statements: &mut self.statements,
            conn,
            relay: &mut self.relay,
            requests: &mut self.requests,
            reader: StatementReader {
                analyzer: &self.ctx.analyzer,
                settings: self.settings.current(),
            },
            standard_conforming_strings: self.standard_conforming_strings,
            pinned,
            pools: &self.ctx.protocol.pools,
            writes,
        })
    }

    /// Sends the buffered extended-protocol messages, ended as `end` says.
    async fn send_batch(&mut self, end: BatchEnd) -> Result<(), SessionError> {
        let sync = end == BatchEnd::Sync;
        let started = std::time::Instant::now();
        let batch = self.batch.take();
        if batch.is_empty() && !sync {
            self.io.client.flush().await?;
            return Ok(());
        }
        let query_bytes: usize = batch.iter().map(|message| message.frame().len()).sum();
        let mut in_flight = if sync {
            match self.decide_batch(&batch, query_bytes, started).await {
                Consulted::Hit(entry, statement) => {
                    let reply_starts = self.io.client.out.len();
                    extended::answer_hit(
                        batch,
                        &entry,
                        *statement,
                        &mut self.statements,
                        &mut self.io.client.out,
                    );
                    return self.finish_hit(reply_starts, query_bytes, started).await;
                }
                Consulted::Forward(in_flight) => Some(*in_flight),
            }
        } else {
            // A Flush: the request goes on until the next Sync, which decides its status.
            let status = self.planner().flushed_status(&batch);
            self.requests.unsynced.sent(query_bytes, status);
            None
        };
        let mut resolved: Vec<(Writes, WriteSet)> = Vec::new();
        for (analysis, text) in self.planner().executed_statements(&batch) {
            if let Some(pin) = self
                .user_code_pin(&analysis, text.as_deref(), started)
                .await
            {
                match in_flight.as_mut() {
                    Some(in_flight) => in_flight.changes_session(pin),
                    None => self.requests.unsynced.pins.push(pin),
                }
            }
            let writes = analysis.writes();
            if !writes.is_nothing() && !resolved.iter().any(|(known, _)| *known == writes) {
                let set = self.catalog().write_set(&writes);
                resolved.push((writes, set));
            }
        }
        if let Err(error) = self.connect().await {
            if let Some(in_flight) = in_flight {
                let elapsed = started.elapsed();
                let status = in_flight.status();
                self.ctx
                    .metrics
                    .record(status, query_bytes, 0, elapsed, true);
            }
            // The error takes the place of the batch's replies, as an origin error would.
            error.encode(&mut self.io.client.out);
            if sync {
                self.requests.unsynced = Unsynced::default();
                encode::ready_for_query(&mut self.io.client.out, self.status);
            }
            self.io.client.flush().await?;
            return Ok(());
        }
        if let Some(mut translator) = self.translator(&resolved) {
            translator.send_pending_closes();
            // A message warpdrive raised an error for ends the batch: the origin would
            // skip the rest up to Sync, so it is not sent.
            for message in batch {
                if !translator.translate(message) {
                    break;
                }
            }
        }
        let mut buf = bytes::BytesMut::new();
        if sync {
            encode::sync(&mut buf);
            self.relay.push(Expect::Sync);
            if let Some(in_flight) = in_flight {
                self.requests.push(in_flight);
            }
            self.replies().merge_ignored_syncs();
        } else if end == BatchEnd::Flush {
            encode::flush(&mut buf);
        }
        self.send_to_origin(&buf);
        self.flush_origin().await?;
        self.replies().synthetic();
        self.io.client.flush().await?;
        self.io.arm_deadline();
        Ok(())
    }

    fn planner(&self) -> Planner<'_> {
        Planner {
            statements: &self.statements,
            reader: StatementReader {
                analyzer: &self.ctx.analyzer,
                settings: self.settings.current(),
            },
            literals: self
                .requests
                .string_literals(self.standard_conforming_strings),
            composer: self.composer(),
            txn: self.status.into(),
        }
    }

    /// The status of a batch ending with Sync, looked up in the cache when it may be
    /// served from there.
    async fn decide_batch(
        &mut self,
        batch: &[FrontendMessage],
        query_bytes: usize,
        started: std::time::Instant,
    ) -> Consulted<Box<ClientStatement>> {
        let query_bytes = query_bytes + self.requests.unsynced.query_bytes;
        match self.planner().decide(batch, &self.requests.unsynced) {
            Decision::Consult { statement, request } => {
                let consult = self.consult();
                match consult
                    .consult(&statement.analysis, request, query_bytes, started)
                    .await
                {
                    Consulted::Hit(entry, ()) => Consulted::Hit(entry, statement),
                    Consulted::Forward(in_flight) => Consulted::Forward(in_flight),
                }
            }
            Decision::Forward(status) => {
                Consulted::Forward(Box::new(InFlight::forwarded(status, query_bytes, started)))
            }
        }
    }

    /// The origin's replies, as this session relays them.
    fn replies(&mut self) -> Replies<'_> {
        Replies {
            ctx: &self.ctx,
            io: &mut self.io,
            cancel: &self.cancel,
            relay: &mut self.relay,
            requests: &mut self.requests,
            statements: &mut self.statements,
            settings: &mut self.settings,
            writes: &mut self.writes,
            generations: &self.generations,
            status: &mut self.status,
            standard_conforming_strings: &mut self.standard_conforming_strings,
            catalog_changing: &mut self.catalog_changing,
            database: &self.database,
            batch_waiting: !self.batch.is_empty(),
        }
    }

    /// The client left: writes still in flight may commit without anyone seeing their
    /// end, so they are marked (the connection they run on is closed, not reused).
    pub(super) async fn leave(&mut self) {
        if self.relay.awaits_origin() || self.requests.unsynced.sent {
            let in_flight = self.requests.writes_in_flight();
            self.writes
                .lost(&in_flight, self.ctx.marking(&self.generations));
        }
        if let Some(tier) = &self.ctx.tier {
            self.writes.publish(tier, &self.database).await;
        }
    }

    /// Ends what was in flight on a connection that is gone (see [`Lost`]); a client
    /// whose transaction or pinned state died with it is closed.
    async fn end_requests_in_flight(
        &mut self,
        origin_error: Option<ErrorFields>,
        reason: &str,
    ) -> Result<(), SessionError> {
        let lost = Lost {
            pending_ready: self.relay.pending_ready(),
            awaited_replies: self.relay.awaits_origin(),
            origin_error,
            reason,
        };
        let pinned = self.io.lose_origin();
        self.cancel.set_target(None);
        let in_flight = self.requests.writes_in_flight();
        self.writes
            .lost(&in_flight, self.ctx.marking(&self.generations));
        self.relay = Relay::default();
        self.requests.abandon(&caching::composer(
            &self.ctx,
            &self.io.pool,
            &self.generations,
        ));
        if self.status != TransactionStatus::Idle || pinned {
            let fatal = lost.end_session(&mut self.io.client.out);
            self.flush_client().await?;
            return Err(SessionError::Refused(fatal));
        }
        lost.answer_requests(&mut self.io.client.out);
        self.flush_client().await
    }

    /// Sends the client what is buffered for it, once the upstream tier knows of the
    /// writes those replies complete.
    async fn flush_client(&mut self) -> Result<(), SessionError> {
        if let Some(tier) = &self.ctx.tier {
            self.writes.publish(tier, &self.database).await;
        }
        self.io.client.flush().await?;
        Ok(())
    }
}
