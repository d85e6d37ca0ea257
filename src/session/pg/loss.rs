//! The answers owed when the origin connection goes (it failed, closed, or sent FATAL)
//! with requests in flight: every request gets an error and its ReadyForQuery, and a
//! client whose transaction or pinned state died is disconnected, as PostgreSQL itself
//! would.
//!
//! The session gives the connection up ([`crate::session::driver::Driver::lose_origin`]);
//! this module only writes the replies.

use bytes::BytesMut;

use super::sqlstate::ErrorResponse;
use crate::session::error::{ClientError, ErrorKind};
use crate::wire::pg::backend::{ErrorFields, TransactionStatus};
use crate::wire::pg::encode;

/// What was in flight on a connection that is gone.
pub(super) struct Lost<'a> {
    /// ReadyForQuery messages the client was owed.
    pub(super) pending_ready: usize,
    /// Whether replies were awaited at all (messages sent on a Flush owe no
    /// ReadyForQuery).
    pub(super) awaited_replies: bool,
    /// The origin's own error, when it sent one before closing.
    pub(super) origin_error: Option<ErrorFields>,
    /// Why, for warpdrive's own errors.
    pub(super) reason: &'a str,
}

impl Lost<'_> {
    /// The client's transaction or pinned state died with the connection: writes the
    /// FATAL error (the origin's own, SQLSTATE and all, when it sent one: 25P03 for an
    /// idle-in-transaction timeout, 57P01 for an administrator's shutdown), and returns
    /// warpdrive's account of it.
    pub(super) fn end_session(&self, out: &mut BytesMut) -> ClientError {
        let fatal = ClientError::fatal(
            ErrorKind::OriginLost,
            format!(
                "the origin connection was lost ({}); the open transaction or pinned session state is gone",
                self.reason
            ),
        )
        .hint("reconnect and retry the transaction");
        match &self.origin_error {
            Some(fields) => encode::error_response_with_severity(out, fields, "FATAL"),
            None => fatal.encode(out),
        }
        fatal
    }

    /// The client's session goes on: the first request in flight gets the origin's own
    /// error as an ERROR (or warpdrive's), the rest warpdrive's, each with its
    /// ReadyForQuery.
    pub(super) fn answer_requests(&self, out: &mut BytesMut) {
        let first_reply = self.origin_error.as_ref().map(|fields| {
            let mut first = BytesMut::new();
            encode::error_response_with_severity(&mut first, fields, "ERROR");
            first.freeze()
        });
        for index in 0..self.pending_ready {
            match (&first_reply, index) {
                (Some(first), 0) => out.extend_from_slice(first),
                _ => ClientError::origin_lost(self.reason).encode(out),
            }
            encode::ready_for_query(out, TransactionStatus::Idle);
        }
        if self.pending_ready == 0 && self.awaited_replies {
            // Messages sent on a Flush wait for replies that will not come: the error
            // answers them; the client's Sync then gets its ReadyForQuery from a new
            // connection.
            match first_reply {
                Some(first) => out.extend_from_slice(&first),
                None => ClientError::origin_lost(self.reason).encode(out),
            }
        }
    }
}
