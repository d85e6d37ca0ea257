//! The origin's replies: relayed to the client, their session-state reports taken in,
//! and, once a reply ends, what it leaves the client holding.

use super::cache::record;
use super::{InFlight, Session};
use crate::conn::{ConnError, FLUSH_THRESHOLD};
use crate::pool::mysql::MysqlOrigin;
use crate::pool::mysql::{OriginStatement, txn_status};
use crate::session::SessionError;
use crate::session::driver::{Driver, Flow, Frontend};
use crate::session::error::{ClientError, ErrorKind};
use crate::session::mysql::errno::err_packet;
use crate::session::mysql::state;
use crate::wire::mysql::reply::OkPacket;
use crate::wire::mysql::response::{Part, Terminator};
use crate::wire::mysql::{MysqlFraming, Packet, status, write_packet};

/// Why a client is pinned when the origin reports state changes it does not detail.
const UNDETAILED: &str = "session state changed where warpdrive cannot see it (a stored routine, trigger, user variable or temporary table)";

impl Session {
    /// One packet of the reply in flight.
    async fn on_reply(&mut self, packet: Packet) -> Result<(), SessionError> {
        let Some(mut in_flight) = self.in_flight.take() else {
            // Nothing was asked: the origin is closing the connection (KILL, shutdown).
            return self.origin_lost(ConnError::TruncatedFrame).await;
        };
        let before = self.io.client.out.len();
        let part = match in_flight.relay.relay(&packet, &mut self.io.client.out) {
            Ok(part) => part,
            Err(error) => {
                self.in_flight = Some(in_flight);
                return self.origin_lost(ConnError::MysqlWire(error)).await;
            }
        };
        let written = &self.io.client.out[before..];
        record(&self.ctx.metrics, &mut in_flight, &part, written);
        if in_flight.statement && matches!(part, Part::Ok(_) | Part::End(_) | Part::Err) {
            self.statement_completed(&mut in_flight, matches!(part, Part::Err));
        }
        match &part {
            Part::Ok(ok) | Part::End(Terminator::Ok(ok)) => self.take_in(ok, &mut in_flight),
            Part::Prepared(prepared) => {
                if let Some(id) = in_flight.prepares
                    && let Some(statement) = self.statements.get_mut(id)
                {
                    statement.params = prepared.params;
                    let key = statement.key.clone();
                    let origin = OriginStatement {
                        id: prepared.statement_id,
                    };
                    self.remember(key, origin);
                }
            }
            Part::Err => {
                if let Some(id) = in_flight.prepares.take() {
                    self.statements.remove(id);
                }
                in_flight.init_db = None;
            }
            Part::LocalInfile => {
                in_flight.origin_seq = packet.next_seq();
                if in_flight.relay.refuses_infile() {
                    // An empty file: the origin loads nothing and answers.
                    let conn = self.conn();
                    write_packet(&mut conn.link.conn.out, in_flight.origin_seq, &[]);
                    if let Err(error) = conn.link.conn.flush().await {
                        self.in_flight = Some(in_flight);
                        return self.origin_lost(ConnError::Io(error)).await;
                    }
                }
            }
            _ => {}
        }
        if in_flight.relay.is_done() {
            return self.finish(in_flight).await;
        }
        self.in_flight = Some(in_flight);
        if self.io.client.out.len() >= FLUSH_THRESHOLD || matches!(part, Part::LocalInfile) {
            self.publish_writes().await;
            self.io.client.flush().await?;
        }
        Ok(())
    }

    /// An OK's report: the statement wrote (for LAST_INSERT_ID), and the session state
    /// it changed.
    fn take_in(&mut self, ok: &OkPacket, in_flight: &mut InFlight) {
        in_flight.wrote |= ok.last_insert_id > 0 || ok.affected_rows > 0;
        let changes = match ok.state_changes() {
            Ok(changes) => changes,
            Err(error) => {
                tracing::warn!(%error, "unreadable session state from the origin");
                in_flight.pins.get_or_insert_with(|| UNDETAILED.to_owned());
                return;
            }
        };
        if changes.is_empty() {
            return;
        }
        let baseline = std::sync::Arc::clone(&self.baseline);
        let mut client = std::mem::take(&mut self.state);
        let adopted = state::adopt(&changes, &baseline, &mut client, &mut self.conn().session);
        self.state = client;
        if let Some(why) = adopted.pins {
            in_flight.pins.get_or_insert(why);
        }
        if adopted.undetailed && !in_flight.explained {
            in_flight.pins.get_or_insert_with(|| UNDETAILED.to_owned());
        }
    }

    /// The reply ended: what the client now holds, then the commands that waited.
    async fn finish(&mut self, mut in_flight: InFlight) -> Result<(), SessionError> {
        let status = in_flight.relay.status;
        self.request_ended(&mut in_flight, status).await;
        self.status = status;
        let conn = self.conn();
        conn.link.status = status;
        conn.set_ready(txn_status(status));
        self.io.settle_deadline();
        if let Some(database) = in_flight.init_db {
            self.state.database = Some(database.clone());
            self.conn().session.database = Some(database);
        }
        if let Some((id, cursor)) = in_flight.executes
            && let Some(statement) = self.statements.get_mut(id)
        {
            statement.cursor_open = cursor && status & status::CURSOR_EXISTS != 0;
        }
        if let Some(id) = in_flight.fetches
            && let Some(statement) = self.statements.get_mut(id)
            && status & status::LAST_ROW_SENT != 0
        {
            statement.cursor_open = false;
        }
        if in_flight.statement {
            self.stay = self.stay.saturating_sub(1);
            if in_flight.wrote {
                self.stay = self.stay.max(self.io.pool.settings().stay_after_write);
            }
            if in_flight.keeps_for_next {
                self.stay = self.stay.max(1);
            }
            let timeout = self.io.pool.settings().stay_after_write_timeout;
            let until = (self.stay > 0).then(|| tokio::time::Instant::now() + timeout);
            self.io.set_timer(until);
        }
        if let Some(why) = &in_flight.pins {
            self.io.pin(why, &self.ctx.metrics);
        }
        if in_flight.unlocks
            && matches!(
                self.io.pinned(),
                Some("LOCK TABLES" | "FLUSH TABLES WITH READ LOCK")
            )
        {
            self.io.unpin();
        }
        self.io.client.flush().await?;
        self.maybe_release();
        while self.in_flight.is_none()
            && let Some(next) = self.queued.pop_front()
        {
            if Box::pin(self.command(next)).await? == Flow::Stop {
                return Err(SessionError::ClientGone);
            }
        }
        Ok(())
    }

    /// The origin connection failed: the reply in flight gets an error; a pinned client's
    /// state went with it, so its session ends.
    pub(super) async fn origin_lost(&mut self, error: ConnError) -> Result<(), SessionError> {
        tracing::info!(%error, "the origin connection was lost");
        let pinned = self.lose_connection();
        if let Some(mut in_flight) = self.in_flight.take() {
            self.request_lost(&mut in_flight).await;
            let seq = in_flight.relay.client_seq();
            let error = if self.io.cancelled_overdue() {
                ClientError::error(
                    ErrorKind::QueryCanceled,
                    "the query ran longer than max_query_duration and was cancelled",
                )
            } else {
                ClientError::origin_lost(&error)
            };
            write_packet(&mut self.io.client.out, seq, &err_packet(&error).encode());
            self.io.client.flush().await?;
        }
        if pinned {
            return Err(SessionError::Refused(ClientError::fatal(
                ErrorKind::OriginLost,
                "the origin connection this session was pinned to was lost, and its session state with it",
            )));
        }
        Ok(())
    }

    /// Sends a packet of the client's file on to the origin.
    async fn pass_infile(&mut self, packet: Packet) -> Result<(), SessionError> {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return Ok(());
        };
        in_flight.relay.client_sent();
        let seq = in_flight.origin_seq;
        in_flight.origin_seq = seq.wrapping_add(packet.parts);
        let conn = self.conn();
        write_packet(&mut conn.link.conn.out, seq, &packet.payload);
        if let Err(error) = conn.link.conn.flush().await {
            return self.origin_lost(ConnError::Io(error)).await;
        }
        Ok(())
    }
}

impl Frontend for Session {
    type Backend = MysqlOrigin;
    type Framing = MysqlFraming;

    fn driver(&mut self) -> &mut Driver<MysqlOrigin, MysqlFraming> {
        &mut self.io
    }

    fn between_transactions(&self) -> bool {
        self.in_flight.is_none() && !self.io.holds()
    }

    fn awaits_origin(&self) -> bool {
        self.in_flight.is_some()
    }

    async fn say_shutting_down(&mut self) -> Result<(), SessionError> {
        let error = ClientError::shutting_down();
        self.reply_error(0, &error).await
    }

    async fn on_client(&mut self, packet: Packet) -> Result<Flow, SessionError> {
        match &self.in_flight {
            Some(in_flight)
                if in_flight.relay.awaits_infile() && !in_flight.relay.refuses_infile() =>
            {
                self.pass_infile(packet).await?;
                Ok(Flow::Continue)
            }
            Some(_) => {
                self.queued.push_back(packet);
                Ok(Flow::Continue)
            }
            None => self.command(packet).await,
        }
    }

    async fn on_client_failed(&mut self, error: ConnError) -> Result<(), SessionError> {
        match error {
            ConnError::MysqlWire(error) => {
                let error = ClientError::protocol_violation(error);
                self.reply_error(0, &error).await?;
                Err(SessionError::Refused(error))
            }
            error => Err(error.into()),
        }
    }

    async fn on_origin(
        &mut self,
        reply: Result<Option<Packet>, ConnError>,
    ) -> Result<(), SessionError> {
        match reply {
            Ok(Some(packet)) => self.on_reply(packet).await,
            Ok(None) => self.origin_lost(ConnError::TruncatedFrame).await,
            Err(error) => self.origin_lost(error).await,
        }
    }

    /// The client stayed idle on its connection after a write for
    /// stay_after_write_timeout: it lets go of it.
    async fn on_timer(&mut self) -> Result<(), SessionError> {
        if self.in_flight.is_none() {
            self.stay = 0;
            self.maybe_release();
        }
        Ok(())
    }

    async fn origin_lost(&mut self, error: ConnError) -> Result<(), SessionError> {
        Session::origin_lost(self, error).await
    }
}
