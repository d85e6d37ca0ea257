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

use super::extended::ClientStatement;
use super::sqlstate::{ORIGIN_INTERNAL_ERROR, sqlstate};
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
    Completed,
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
            Expect::Sync if self.copy_in => {}
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
                }
                _ => index += 1,
            }
        }
        self.copy_in = true;
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
                        events.push(Event::Completed);
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
                        events.push(Event::Completed);
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
mod tests {
    use super::*;
    use crate::wire::pg::{encode, split_frame};

    fn frames(write: impl FnOnce(&mut BytesMut)) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        write(&mut buf);
        let mut out = Vec::new();
        while let Some(frame) = split_frame(&mut buf, 1 << 20).expect("valid") {
            out.push(frame);
        }
        out
    }

    fn bytes(write: impl FnOnce(&mut BytesMut)) -> Bytes {
        let mut buf = BytesMut::new();
        write(&mut buf);
        buf.freeze()
    }

    /// Runs origin frames through the relay, returning what the client receives.
    fn run(relay: &mut Relay, origin: Vec<Frame>) -> (Vec<u8>, Vec<Event>) {
        let mut client = BytesMut::new();
        let mut events = Vec::new();
        relay.drain_synthetic(&mut client, &mut events);
        for frame in origin {
            if relay.on_origin(&frame, &mut events) == Delivery::Forward {
                client.extend_from_slice(frame.raw());
            }
            relay.drain_synthetic(&mut client, &mut events);
        }
        (client.to_vec(), events)
    }

    fn tags(stream: &[u8]) -> String {
        let mut buf = BytesMut::from(stream);
        let mut out = String::new();
        while let Some(frame) = split_frame(&mut buf, 1 << 20).expect("valid") {
            out.push(char::from(frame.tag()));
        }
        out
    }

    #[test]
    fn synthetic_parse_complete_lands_before_the_bind_reply() {
        let mut relay = Relay::default();
        relay.push(Expect::Synthetic(
            bytes(encode::parse_complete),
            OnError::Nothing,
        ));
        relay.push(Expect::Reply {
            count: 1,
            to_client: true,
            on_error: OnError::Nothing,
        });
        relay.push(Expect::Execute);
        relay.push(Expect::Sync);
        let origin = frames(|b| {
            encode::bind_complete(b);
            encode::command_complete(b, "SELECT 0");
            encode::ready_for_query(b, TransactionStatus::Idle);
        });
        let (client, events) = run(&mut relay, origin);
        assert_eq!(tags(&client), "12CZ");
        assert_eq!(
            events,
            vec![Event::Completed, Event::Ready(TransactionStatus::Idle)]
        );
        assert!(relay.is_idle());
    }

    #[test]
    fn replies_to_added_messages_are_dropped() {
        let mut relay = Relay::default();
        relay.push(Expect::Reply {
            count: 1,
            to_client: false,
            on_error: OnError::Nothing,
        });
        relay.push(Expect::Reply {
            count: 1,
            to_client: true,
            on_error: OnError::Nothing,
        });
        relay.push(Expect::Sync);
        let origin = frames(|b| {
            encode::parse_complete(b);
            encode::bind_complete(b);
            encode::ready_for_query(b, TransactionStatus::Idle);
        });
        assert_eq!(tags(&run(&mut relay, origin).0), "2Z");
    }

    #[test]
    fn messages_sent_after_an_error_before_their_sync_expect_nothing() {
        // A batch forwarded in parts (no Sync yet: a Flush, the size bound, drained
        // input): the origin reports an error for the first part, then skips every
        // message up to the Sync, including those sent after the error.
        let mut relay = Relay::default();
        let bind = || Expect::Reply {
            count: 1,
            to_client: true,
            on_error: OnError::Nothing,
        };
        relay.push(bind());
        relay.push(Expect::Execute);
        let (client, events) = run(
            &mut relay,
            frames(|b| {
                encode::bind_complete(b);
                encode::error_response(b, "ERROR", "57014", "canceling statement", None);
            }),
        );
        assert_eq!(tags(&client), "2E");
        assert_eq!(events, vec![Event::Failed]);
        // The rest of the batch arrives and is sent: the origin skips it.
        relay.push(bind());
        relay.push(Expect::Synthetic(
            bytes(encode::parse_complete),
            OnError::UnnamedReplay,
        ));
        relay.push(Expect::Execute);
        relay.push(Expect::Sync);
        relay.push(Expect::UntilReady);
        let (client, events) = run(
            &mut relay,
            frames(|b| {
                encode::ready_for_query(b, TransactionStatus::Idle);
                encode::command_complete(b, "DROP TABLE");
                encode::ready_for_query(b, TransactionStatus::Idle);
            }),
        );
        assert_eq!(tags(&client), "ZCZ");
        assert_eq!(
            events,
            vec![
                Event::Undo {
                    undo: OnError::UnnamedReplay,
                    skipped: true
                },
                Event::Ready(TransactionStatus::Idle),
                Event::Completed,
                Event::Ready(TransactionStatus::Idle),
            ]
        );
        assert!(relay.is_idle());
    }

    #[test]
    fn completed_statements_are_counted_up_to_an_error() {
        let mut relay = Relay::default();
        relay.push(Expect::UntilReady);
        let origin = frames(|b| {
            encode::command_complete(b, "SET");
            encode::command_complete(b, "BEGIN");
            encode::error_response(b, "ERROR", "22012", "division by zero", None);
            encode::ready_for_query(b, TransactionStatus::Failed);
        });
        let (_, events) = run(&mut relay, origin);
        assert_eq!(
            events,
            vec![
                Event::Completed,
                Event::Completed,
                Event::Failed,
                Event::Ready(TransactionStatus::Failed)
            ]
        );
    }

    #[test]
    fn an_error_skips_to_sync_including_synthetic_replies() {
        let mut relay = Relay::default();
        relay.push(Expect::Reply {
            count: 1,
            to_client: true,
            on_error: OnError::ParseFailed {
                origin_name: Bytes::from_static(b"wd_1"),
                client_name: Some(Bytes::from_static(b"s1")),
            },
        });
        relay.push(Expect::Synthetic(
            bytes(encode::close_complete),
            OnError::Nothing,
        ));
        relay.push(Expect::Execute);
        relay.push(Expect::Sync);
        let origin = frames(|b| {
            encode::error_response(b, "ERROR", "42601", "syntax error", None);
            encode::ready_for_query(b, TransactionStatus::Idle);
        });
        let (client, events) = run(&mut relay, origin);
        assert_eq!(tags(&client), "EZ");
        assert!(events.contains(&Event::Undo {
            undo: OnError::ParseFailed {
                origin_name: Bytes::from_static(b"wd_1"),
                client_name: Some(Bytes::from_static(b"s1")),
            },
            skipped: false,
        }));
    }

    #[test]
    fn messages_skipped_after_an_error_are_taken_back() {
        // Parse a, Bind, Execute (fails), Close of an evicted statement, Parse b, Close s.
        let mut relay = Relay::default();
        let parse_b = OnError::ParseFailed {
            origin_name: Bytes::from_static(b"wd_b"),
            client_name: Some(Bytes::from_static(b"b")),
        };
        let evicted = OnError::OriginClose {
            origin_name: Bytes::from_static(b"wd_old"),
        };
        let restore = OnError::Restore(Vec::new());
        for expect in [
            Expect::Reply {
                count: 1,
                to_client: true,
                on_error: OnError::Nothing,
            },
            Expect::Reply {
                count: 1,
                to_client: true,
                on_error: OnError::MaybeStale {
                    origin_name: Bytes::from_static(b"wd_a"),
                },
            },
            Expect::Execute,
            Expect::Reply {
                count: 1,
                to_client: false,
                on_error: evicted.clone(),
            },
            Expect::Reply {
                count: 1,
                to_client: true,
                on_error: parse_b.clone(),
            },
            Expect::Synthetic(bytes(encode::close_complete), restore.clone()),
            Expect::Sync,
        ] {
            relay.push(expect);
        }
        let origin = frames(|b| {
            encode::parse_complete(b);
            encode::bind_complete(b);
            encode::error_response(b, "ERROR", "22012", "division by zero", None);
            encode::ready_for_query(b, TransactionStatus::Idle);
        });
        let (client, events) = run(&mut relay, origin);
        assert_eq!(tags(&client), "12EZ");
        let undone: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Undo {
                    undo,
                    skipped: true,
                } => Some(undo.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(undone, vec![evicted, parse_b, restore]);
        assert!(relay.is_idle());
    }

    #[test]
    fn synthetic_errors_skip_the_rest_of_the_batch() {
        let mut relay = Relay::default();
        relay.push(Expect::SyntheticError(bytes(|b| {
            encode::error_response(b, "ERROR", "26000", "no such statement", None)
        })));
        relay.push(Expect::Execute);
        relay.push(Expect::Sync);
        let origin = frames(|b| encode::ready_for_query(b, TransactionStatus::Idle));
        assert_eq!(tags(&run(&mut relay, origin).0), "EZ");
    }

    #[test]
    fn stale_statements_are_reported() {
        let mut relay = Relay::default();
        relay.push(Expect::Reply {
            count: 1,
            to_client: true,
            on_error: OnError::MaybeStale {
                origin_name: Bytes::from_static(b"wd_2"),
            },
        });
        relay.push(Expect::Sync);
        let origin = frames(|b| {
            encode::error_response(
                b,
                "ERROR",
                "0A000",
                "cached plan must not change result type",
                None,
            );
            encode::ready_for_query(b, TransactionStatus::Idle);
        });
        let (_, events) = run(&mut relay, origin);
        assert!(events.contains(&Event::Stale {
            origin_name: Bytes::from_static(b"wd_2")
        }));
    }

    #[test]
    fn syncs_sent_during_copy_in_get_no_reply() {
        // tokio-postgres: Bind, Execute, Sync, then CopyData, CopyDone, Sync; then Close, Sync.
        let mut relay = Relay::default();
        relay.push(Expect::Reply {
            count: 1,
            to_client: true,
            on_error: OnError::Nothing,
        });
        relay.push(Expect::Execute);
        relay.push(Expect::Sync);
        let (client, _) = run(
            &mut relay,
            frames(|b| {
                encode::bind_complete(b);
                encode::message(b, tag::COPY_IN_RESPONSE, |body| {
                    body.extend_from_slice(&[0, 0, 0])
                });
            }),
        );
        assert_eq!(tags(&client), "2G");
        relay.push(Expect::CopyEnd);
        relay.push(Expect::Sync);
        relay.push(Expect::Synthetic(
            bytes(encode::close_complete),
            OnError::Nothing,
        ));
        relay.push(Expect::Sync);
        let (client, events) = run(
            &mut relay,
            frames(|b| {
                encode::command_complete(b, "COPY 3");
                encode::ready_for_query(b, TransactionStatus::Idle);
                encode::ready_for_query(b, TransactionStatus::Idle);
            }),
        );
        assert_eq!(tags(&client), "CZ3Z");
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Ready(_)))
                .count(),
            2
        );
        assert!(relay.is_idle());
    }

    #[test]
    fn copy_ended_before_the_copy_in_response_arrived() {
        let mut relay = Relay::default();
        relay.push(Expect::Reply {
            count: 1,
            to_client: true,
            on_error: OnError::Nothing,
        });
        relay.push(Expect::Execute);
        relay.push(Expect::Sync);
        relay.push(Expect::CopyEnd);
        relay.push(Expect::Sync);
        let (client, _) = run(
            &mut relay,
            frames(|b| {
                encode::bind_complete(b);
                encode::message(b, tag::COPY_IN_RESPONSE, |body| {
                    body.extend_from_slice(&[0, 0, 0])
                });
                encode::command_complete(b, "COPY 1");
                encode::ready_for_query(b, TransactionStatus::Idle);
            }),
        );
        assert_eq!(tags(&client), "2GCZ");
        assert!(relay.is_idle());
    }

    #[test]
    fn notices_pass_through_anywhere_and_pipelined_batches_stay_in_order() {
        let mut relay = Relay::default();
        for _ in 0..2 {
            relay.push(Expect::Reply {
                count: 1,
                to_client: true,
                on_error: OnError::Nothing,
            });
            relay.push(Expect::Execute);
            relay.push(Expect::Sync);
        }
        let origin = frames(|b| {
            encode::bind_complete(b);
            encode::error_response(b, "ERROR", "22012", "division by zero", None);
            encode::ready_for_query(b, TransactionStatus::Idle);
            encode::bind_complete(b);
            encode::parameter_status(b, "TimeZone", "UTC");
            encode::command_complete(b, "SELECT 1");
            encode::ready_for_query(b, TransactionStatus::Idle);
        });
        let (client, events) = run(&mut relay, origin);
        assert_eq!(tags(&client), "2EZ2SCZ");
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Ready(_)))
                .count(),
            2
        );
        assert!(relay.is_idle());
    }
}
