//! When the origin connection goes (it failed, closed, or sent FATAL) or a request runs
//! past max_query_duration: every request in flight is answered, and a client whose
//! transaction or pinned state died is disconnected, as PostgreSQL itself would.

use bytes::BytesMut;

use super::Session;
use super::caching;
use super::relay::Relay;
use super::sqlstate::ErrorResponse;
use crate::conn::ConnError;
use crate::session::SessionError;
use crate::session::driver::Overdue;
use crate::session::error::{ClientError, ErrorKind};
use crate::wire::pg::backend::{ErrorFields, TransactionStatus};
use crate::wire::pg::encode;

impl Session {
    /// The origin connection failed or closed. Every request in flight gets an error and
    /// its ReadyForQuery; a client whose transaction or pinned state died with the
    /// connection is disconnected, as PostgreSQL itself would.
    pub(super) async fn origin_lost(&mut self, error: ConnError) -> Result<(), SessionError> {
        tracing::warn!(%error, pending = self.relay.pending_ready(), "origin connection lost");
        self.end_requests_in_flight(None, &error.to_string()).await
    }

    /// The origin sent a FATAL error (or an error out of turn) and is closing the
    /// connection. The first request in flight gets the origin's own error (as an ERROR,
    /// since the client's session goes on); the rest get warpdrive's.
    pub(super) async fn origin_closing(&mut self, fields: ErrorFields) -> Result<(), SessionError> {
        let reason = fields.message();
        tracing::warn!(%reason, pending = self.relay.pending_ready(), "origin is closing its connection");
        self.end_requests_in_flight(Some(fields), &reason).await
    }

    /// Ends what was in flight on a connection that is gone. With the origin's own error
    /// (`origin_error`), a client whose transaction or pinned state died gets it as it
    /// was sent, SQLSTATE and all (25P03 for an idle-in-transaction timeout, 57P01 for an
    /// administrator's shutdown), and is closed; otherwise the first request in flight
    /// gets it as an ERROR, since the client's session goes on.
    pub(super) async fn end_requests_in_flight(
        &mut self,
        origin_error: Option<ErrorFields>,
        reason: &str,
    ) -> Result<(), SessionError> {
        let pending_ready = self.relay.pending_ready();
        if let Some(checkout) = self.io.checkout() {
            checkout.discard();
        }
        let awaited_replies = self.relay.awaits_origin();
        // Asked before the release, which ends the pin with the hold.
        let pinned = self.io.pinned().is_some();
        self.release();
        self.relay = Relay::default();
        self.requests
            .abandon(&caching::composer(&self.ctx, &self.io.pool));
        if self.status != TransactionStatus::Idle || pinned {
            let fatal = ClientError::fatal(
                ErrorKind::OriginLost,
                format!("the origin connection was lost ({reason}); the open transaction or pinned session state is gone"),
            )
            .hint("reconnect and retry the transaction");
            match &origin_error {
                Some(fields) => {
                    encode::error_response_with_severity(&mut self.io.client.out, fields, "FATAL");
                }
                None => fatal.encode(&mut self.io.client.out),
            }
            self.io.client.flush().await?;
            return Err(SessionError::Refused(fatal));
        }
        let first_reply = origin_error.map(|fields| {
            let mut first = BytesMut::new();
            encode::error_response_with_severity(&mut first, &fields, "ERROR");
            first.freeze()
        });
        for index in 0..pending_ready {
            match (&first_reply, index) {
                (Some(first), 0) => self.io.client.out.extend_from_slice(first),
                _ => ClientError::origin_lost(reason).encode(&mut self.io.client.out),
            }
            encode::ready_for_query(&mut self.io.client.out, TransactionStatus::Idle);
        }
        if pending_ready == 0 && awaited_replies {
            // Messages sent on a Flush wait for replies that will not come: the error
            // answers them; the client's Sync then gets its ReadyForQuery from a new
            // connection.
            match first_reply {
                Some(first) => self.io.client.out.extend_from_slice(&first),
                None => ClientError::origin_lost(reason).encode(&mut self.io.client.out),
            }
        }
        self.io.client.flush().await?;
        Ok(())
    }

    /// max_query_duration passed: cancel at the origin; if the origin does not answer
    /// within a grace period, drop the connection.
    pub(super) async fn on_deadline(&mut self) -> Result<(), SessionError> {
        match self.io.overdue(self.relay.awaits_origin()) {
            Overdue::Nothing => Ok(()),
            Overdue::Cancelling => {
                tracing::warn!("query exceeded max_query_duration; cancelling it at the origin");
                Ok(())
            }
            Overdue::GiveUp => {
                self.origin_lost(ConnError::Io(std::io::Error::other(
                    "the query was cancelled for exceeding max_query_duration but the origin did not answer",
                )))
                .await
            }
        }
    }
}
