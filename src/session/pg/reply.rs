//! What the origin's replies do beyond being relayed: warpdrive's own cancel explained,
//! and a request's session effects settled at its ReadyForQuery (the pins it calls for,
//! statements DISCARD ALL or DEALLOCATE ALL dropped, settings followed).
//!
//! The session relays the frames ([`super::relay`] matches them to requests); this
//! module neither reads nor writes a socket.

use std::time::Duration;

use bytes::BytesMut;

use super::inflight::Finished;
use super::sqlstate::{ErrorResponse, sqlstate};
use super::statement::ClientStatements;
use crate::analyze::SessionEffect;
use crate::pool::pg::PgPooledConn;
use crate::session::error::{ClientError, ErrorKind};
use crate::session::settings::Settings;
use crate::wire::pg::Frame;
use crate::wire::pg::backend::{BackendMessage, tag as backend_tag};

/// When warpdrive cancelled a query for running longer than `max_query_duration`, the
/// origin's "canceling statement due to user request" is replaced by a message that says
/// why; any other frame is returned as it is.
pub(super) fn explain_own_cancel(frame: Frame, max_query_duration: Duration) -> Frame {
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

/// What a finished request leaves for the client's hold on its connection.
pub(super) struct Settled {
    /// Why the client must stay on its connection, if it must.
    pub(super) pins: Vec<String>,
    /// DISCARD ALL ran on the origin: the client's state is known again.
    pub(super) discarded: bool,
}

/// Settles the session effects of a request at its ReadyForQuery: the client's
/// statements and settings follow what ran on `conn`, and the pins it calls for are
/// returned.
pub(super) fn settle(
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
