//! Matching origin replies to the client's messages.
//!
//! The session sends the origin a translated version of what the client sent: some
//! messages are added (a Parse replayed on a connection that lacks the statement, a Close
//! for an evicted statement), some are answered by warpdrive itself (a Parse of a
//! statement the connection already has, a Close of a client's statement). [`Relay`]
//! keeps one [`Expect`] per message in flight, in order, and decides for each origin
//! message whether the client sees it; replies warpdrive owes the client are emitted at
//! the right place in the stream. It follows PostgreSQL's error rule: after an error in
//! the extended protocol the server skips everything up to the next Sync, and so do the
//! replies warpdrive would have synthesised for those messages. Bookkeeping done when a
//! message was sent (a statement registered, a Close answered) is taken back when the
//! origin rejects or skips that message: each expectation carries its [`OnError`].
//!
//! Pure state: no I/O, so it is tested message by message.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::sqlstate::{ORIGIN_INTERNAL_ERROR, sqlstate};
use super::statement::ClientStatement;
use crate::session::error::ErrorKind;
use crate::wire::pg::Frame;
use crate::wire::pg::backend::{BackendMessage, ErrorFields, TransactionStatus, tag};

/// What the client should get for one message sent to the origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A message with a fixed number of replies (Parse, Bind, Close, Describe).
    Reply {
        /// Replies still expected.
        count: u8,
        /// Whether the client sent this message (false: warpdrive added it, and its
        /// replies are dropped).
        to_client: bool,
        /// What warpdrive must take back when it fails or is skipped.
        on_error: OnError,
    },
    /// Execute: rows until CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// Sync: up to and including ReadyForQuery.
    Sync,
    /// Simple Query or FunctionCall: everything up to and including ReadyForQuery.
    UntilReady,
    /// A reply warpdrive gives the client itself, at this point in the stream, and what to
    /// take back if an earlier error makes the origin skip this point.
    Synthetic(Bytes, OnError),
    /// An error warpdrive raises itself for a message it did not send; like an origin
    /// error, it makes the rest of the batch up to Sync skipped.
    SyntheticError(Bytes),
    /// The client ended a COPY FROM STDIN (CopyDone or CopyFail); no reply of its own.
    CopyEnd,
}

/// Bookkeeping to take back when a message fails at the origin, or is skipped there
/// after an earlier error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Nothing.
    Nothing,
    /// A Parse of a named statement: it is not prepared on the connection, and a client
    /// name registered for it must be released.
    ParseFailed {
        /// Origin-side statement name.
        origin_name: Bytes,
        /// Client-side name, when the client sent this Parse.
        client_name: Option<Bytes>,
    },
    /// The client's Parse of its unnamed statement: the connection's unnamed statement
    /// is unknown; the client has none (failed) or keeps its previous one (skipped).
    UnnamedParse {
        /// The client's unnamed statement before this Parse.
        previous: Option<ClientStatement>,
    },
    /// A Parse of the unnamed statement replayed by warpdrive: the connection's unnamed
    /// statement is unknown.
    UnnamedReplay,
    /// A Close of a statement on the origin (evicted, stale, or about to be prepared
    /// again): if it did not happen, the statement must be closed later.
    OriginClose {
        /// Origin-side statement name.
        origin_name: Bytes,
    },
    /// A statement operation answered by warpdrive (Close, DEALLOCATE): the client's
    /// statements it removed come back (an empty name is the unnamed statement).
    Restore(Vec<(Bytes, ClientStatement)>),
    /// A Bind or Describe of a prepared statement: if it failed because the statement
    /// went stale (DDL changed its result type), it must be dropped and prepared again.
    /// Nothing to take back when skipped.
    MaybeStale {
        /// Origin-side statement name.
        origin_name: Bytes,
    },
}

/// What the session must act on after an origin message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// ReadyForQuery: the batch up to this Sync is complete.
    Ready(TransactionStatus),
    /// A message failed or was skipped: take back what sending it did.
    Undo {
        /// What to take back.
        undo: OnError,
        /// Skipped after an earlier error (false: it failed itself).
        skipped: bool,
    },
    /// A prepared statement went stale on this connection.
    Stale {
        /// Origin-side statement name.
        origin_name: Bytes,
    },
    /// The origin reported an error.
    Failed,
    /// A statement of the client's completed (CommandComplete, EmptyQueryResponse, or
    /// PortalSuspended for an Execute with a row limit).
    Completed {
        /// Its tag was ROLLBACK: a COMMIT the origin turned into a rollback.
        rolled_back: bool,
    },
}

/// The completion a CommandComplete (or EmptyQueryResponse, PortalSuspended) reports.
fn completed(frame: &Frame) -> Event {
    Event::Completed {
        rolled_back: &frame.raw()[..] == b"C\0\0\0\x0dROLLBACK\0",
    }
}

/// Whether the client gets an origin message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Forward it as received.
    Forward,
    /// Drop it.
    Drop,
}

/// The replies owed to the client, in order.
#[derive(Debug, Default)]
pub struct Relay {
    queue: VecDeque<Expect>,
    /// The origin is in COPY FROM STDIN mode and the client has not ended it yet: a
    /// Sync sent now is ignored by the server (protocol docs, "COPY Operations").
    copy_in: bool,
    /// An error came before the Sync that ends its batch was sent: the origin skips
    /// every message up to that Sync, those sent from now on too, and so must the
    /// expectations (a batch sent in parts: after a Flush, at the size bound, when the
    /// client's input ran dry).
    skipping: bool,
    /// What pushing expectations while skipping took back, for the next drain.
    skipped: Vec<Event>,
    /// Syncs the server ignores (sent during COPY FROM STDIN), not yet taken.
    ignored_syncs: usize,
}

fn is_stale_statement_error(fields: &ErrorFields) -> bool {
    let message = fields.message();
    let code = fields.code();
    (code == sqlstate(ErrorKind::NotSupported).as_bytes()
        && message.contains("cached plan must not change result type"))
        || (code == ORIGIN_INTERNAL_ERROR && message.contains("cache lookup failed for type"))
}

impl Relay {
    /// Adds the expectation for the next message sent (or answered by warpdrive).
    pub fn push(&mut self, expect: Expect) {
        if self.skipping {
            match expect {
                Expect::Sync => self.skipping = false,
                Expect::Reply { on_error, .. } | Expect::Synthetic(_, on_error) => {
                    if !matches!(on_error, OnError::Nothing | OnError::MaybeStale { .. }) {
                        self.skipped.push(Event::Undo {
                            undo: on_error,
                            skipped: true,
                        });
                    }
                    return;
                }
                Expect::Execute | Expect::SyntheticError(_) => return,
                Expect::UntilReady | Expect::CopyEnd => {}
            }
        }
        match expect {
            Expect::Sync if self.copy_in => self.ignored_syncs += 1,
            Expect::CopyEnd if self.copy_in => self.copy_in = false,
            expect => self.queue.push_back(expect),
        }
    }

    /// COPY FROM STDIN started: Syncs the client sent since the Execute and before ending
    /// the copy are ignored by the server, so no ReadyForQuery will answer them.
    fn start_copy_in(&mut self) {
        let mut index = 1;
        while index < self.queue.len() {
            match self.queue[index] {
                Expect::CopyEnd => {
                    self.queue.remove(index);
                    return;
                }
                Expect::Sync => {
                    self.queue.remove(index);
                    self.ignored_syncs += 1;
                }
                _ => index += 1,
            }
        }
        self.copy_in = true;
    }

    /// How many Syncs the server ignored since last asked: each request they ended
    /// goes on until the next Sync the server answers.
    pub fn take_ignored_syncs(&mut self) -> usize {
        std::mem::take(&mut self.ignored_syncs)
    }

    /// Whether any reply is still owed.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether replies from the origin are still expected (not just synthetic ones).
    pub fn awaits_origin(&self) -> bool {
        self.queue.iter().any(|e| {
            !matches!(
                e,
                Expect::Synthetic(..) | Expect::SyntheticError(_) | Expect::CopyEnd
            )
        })
    }

    /// Number of ReadyForQuery messages the client still waits for.
    pub fn pending_ready(&self) -> usize {
        self.queue
            .iter()
            .filter(|e| matches!(e, Expect::Sync | Expect::UntilReady))
            .count()
    }

    /// Writes the synthetic replies at the front of the queue; a synthetic error among
    /// them is reported as [`Event::Failed`].
    pub fn drain_synthetic(&mut self, out: &mut BytesMut, events: &mut Vec<Event>) {
        events.append(&mut self.skipped);
        while let Some(front) = self.queue.front() {
            match front {
                Expect::Synthetic(bytes, _) => out.extend_from_slice(bytes),
                Expect::CopyEnd => {}
                Expect::SyntheticError(bytes) => {
                    out.extend_from_slice(bytes);
                    self.queue.pop_front();
                    events.push(Event::Failed);
                    self.skip_to_sync(events);
                    continue;
                }
                _ => break,
            }
            self.queue.pop_front();
        }
    }

    /// Drops expectations up to the next Sync: the origin skips those messages after an
    /// error, and so does warpdrive, taking back what sending them did. When that Sync
    /// is not sent yet, what is sent until it is skipped as well.
    fn skip_to_sync(&mut self, events: &mut Vec<Event>) {
        while let Some(front) = self.queue.front() {
            if matches!(front, Expect::Sync | Expect::UntilReady) {
                return;
            }
            if let Some(Expect::Reply { on_error: undo, .. } | Expect::Synthetic(_, undo)) =
                self.queue.pop_front()
                && !matches!(undo, OnError::Nothing | OnError::MaybeStale { .. })
            {
                events.push(Event::Undo {
                    undo,
                    skipped: true,
                });
            }
        }
        self.skipping = true;
    }

    /// Decides the fate of one origin message and reports what the session must learn.
    pub fn on_origin(&mut self, frame: &Frame, events: &mut Vec<Event>) -> Delivery {
        let message_tag = frame.tag();
        if matches!(
            message_tag,
            tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS | tag::NOTIFICATION_RESPONSE
        ) {
            return Delivery::Forward;
        }
        let Some(front) = self.queue.front_mut() else {
            // Nothing owed: an origin message out of turn (e.g. a FATAL error before the
            // server closes). The client sees it; the session decides the rest.
            if message_tag == tag::ERROR_RESPONSE {
                events.push(Event::Failed);
            }
            return Delivery::Forward;
        };
        match front {
            Expect::Reply {
                count,
                to_client,
                on_error,
            } => {
                if message_tag == tag::ERROR_RESPONSE {
                    let on_error = std::mem::replace(on_error, OnError::Nothing);
                    self.queue.pop_front();
                    events.push(Event::Failed);
                    match on_error {
                        OnError::Nothing => {}
                        OnError::MaybeStale { origin_name } => {
                            if let Ok(BackendMessage::ErrorResponse(fields)) =
                                BackendMessage::decode(frame)
                                && is_stale_statement_error(&fields)
                            {
                                events.push(Event::Stale { origin_name });
                            }
                        }
                        undo => events.push(Event::Undo {
                            undo,
                            skipped: false,
                        }),
                    }
                    self.skip_to_sync(events);
                    return Delivery::Forward;
                }
                let delivery = if *to_client {
                    Delivery::Forward
                } else {
                    Delivery::Drop
                };
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.queue.pop_front();
                }
                delivery
            }
            Expect::Execute => {
                match message_tag {
                    tag::ERROR_RESPONSE => {
                        self.queue.pop_front();
                        events.push(Event::Failed);
                        self.skip_to_sync(events);
                    }
                    tag::COMMAND_COMPLETE | tag::EMPTY_QUERY_RESPONSE | tag::PORTAL_SUSPENDED => {
                        self.queue.pop_front();
                        events.push(completed(frame));
                    }
                    tag::COPY_IN_RESPONSE => self.start_copy_in(),
                    _ => {}
                }
                Delivery::Forward
            }
            Expect::Sync | Expect::UntilReady => {
                let until_ready = matches!(front, Expect::UntilReady);
                match message_tag {
                    tag::READY_FOR_QUERY => {
                        self.queue.pop_front();
                        if let Ok(BackendMessage::ReadyForQuery(status)) =
                            BackendMessage::decode(frame)
                        {
                            events.push(Event::Ready(status));
                        }
                    }
                    tag::ERROR_RESPONSE => events.push(Event::Failed),
                    tag::COMMAND_COMPLETE | tag::EMPTY_QUERY_RESPONSE if until_ready => {
                        events.push(completed(frame));
                    }
                    tag::COPY_IN_RESPONSE => self.start_copy_in(),
                    _ => {}
                }
                Delivery::Forward
            }
            Expect::Synthetic(..) | Expect::SyntheticError(_) | Expect::CopyEnd => {
                // drain_synthetic runs before every origin message; reaching here means
                // the origin replied to something warpdrive answered itself.
                Delivery::Drop
            }
        }
    }
}

#[cfg(test)]
mod tests;
