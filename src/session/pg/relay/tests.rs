//! Unit tests of the relay: which request each origin reply answers.

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
        vec![
            Event::Completed { rolled_back: false },
            Event::Ready(TransactionStatus::Idle)
        ]
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
            Event::Completed { rolled_back: false },
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
            Event::Completed { rolled_back: false },
            Event::Completed { rolled_back: false },
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
    assert_eq!(relay.take_ignored_syncs(), 1, "the Sync before the data");
    relay.push(Expect::CopyEnd);
    relay.push(Expect::Sync);
    assert_eq!(relay.take_ignored_syncs(), 0);
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
    assert_eq!(relay.take_ignored_syncs(), 1);
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
