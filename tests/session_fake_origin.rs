//! The session, the pool and the cache against a scripted origin (no PostgreSQL): what a
//! client sees when the origin fails, drops, or hangs mid-request and mid-pipeline, when
//! the pool runs dry, and when a client vanishes inside a transaction.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::fake_origin::{Act, FakeOrigin, Seen};
use common::{Proxy, RawClient, eventually};
use warpdrive::wire::pg::encode;

/// The SQLSTATE of an ErrorResponse body.
fn code(body: &Bytes) -> String {
    body.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

/// The message of an ErrorResponse body.
fn message(body: &Bytes) -> String {
    body.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

fn tags(messages: &[(u8, Bytes)]) -> String {
    messages.iter().map(|(tag, _)| char::from(*tag)).collect()
}

fn error_of(messages: &[(u8, Bytes)]) -> &Bytes {
    &messages
        .iter()
        .find(|(tag, _)| *tag == b'E')
        .expect("an ErrorResponse")
        .1
}

fn scripted(sql: &str) -> Act {
    match sql {
        s if s.contains("crash") => Act::Drop,
        s if s.contains("fail") => Act::Fail("22012"),
        s if s.contains("slow") => Act::Hang,
        _ => Act::Row("1".to_owned()),
    }
}

/// The client gets one FATAL error with `expected` as its SQLSTATE, then the end.
async fn ends_with_fatal(client: &mut RawClient, expected: &str) {
    let (tag, body) = client.read_message().await;
    assert_eq!(tag, b'E');
    assert!(body.starts_with(b"SFATAL"), "{body:?}");
    assert_eq!(code(&body), expected);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut client.stream, &mut rest),
    )
    .await
    .expect("closed in time");
    assert!(closed.is_ok() && rest.is_empty(), "{rest:?}");
}

async fn query(client: &mut RawClient, sql: &str) -> Vec<(u8, Bytes)> {
    client.send(|m| encode::query(m, sql)).await;
    client.until_ready().await
}

#[tokio::test]
async fn simple_queries_are_relayed_as_the_origin_answers() {
    let origin = FakeOrigin::answering().await;
    let proxy = Proxy::start(origin.deployment(2)).await;
    let mut client = RawClient::connect(proxy.addr, "fake").await;
    let reply = query(&mut client, "SELECT 1").await;
    assert_eq!(tags(&reply), "TDCZ");
    assert_eq!(&reply[3].1[..], b"I");
    assert_eq!(origin.statements(), vec!["SELECT 1"]);
    proxy.stop().await;
}

#[tokio::test]
async fn an_origin_lost_mid_request_fails_it_and_the_next_runs_on_a_new_connection() {
    let origin = FakeOrigin::start(scripted).await;
    let proxy = Proxy::start(origin.deployment(2)).await;
    let mut client = RawClient::connect(proxy.addr, "fake").await;
    let reply = query(&mut client, "SELECT crash").await;
    assert_eq!(tags(&reply), "EZ");
    assert_eq!(code(error_of(&reply)), "08006");
    assert_eq!(tags(&query(&mut client, "SELECT 1").await), "TDCZ");
    let connections = origin
        .seen()
        .iter()
        .filter(|seen| matches!(seen, Seen::Connected(_)))
        .count();
    assert_eq!(connections, 2, "{:?}", origin.seen());
    proxy.stop().await;
}

#[tokio::test]
async fn an_origin_lost_inside_a_transaction_ends_the_client() {
    let origin = FakeOrigin::start(scripted).await;
    let proxy = Proxy::start(origin.deployment(2)).await;
    let mut client = RawClient::connect(proxy.addr, "fake").await;
    let begun = query(&mut client, "BEGIN").await;
    assert_eq!(&begun.last().expect("ready").1[..], b"T");
    client.send(|m| encode::query(m, "SELECT crash")).await;
    ends_with_fatal(&mut client, "08006").await;
    proxy.stop().await;
}

#[tokio::test]
async fn an_origin_lost_under_a_pinned_client_ends_it_rather_than_lose_its_state() {
    let origin = FakeOrigin::start(scripted).await;
    let proxy = Proxy::start(origin.deployment(2)).await;
    let mut client = RawClient::connect(proxy.addr, "fake").await;
    // LISTEN pins the client: its state lives on that one origin connection.
    query(&mut client, "LISTEN jobs").await;
    assert_eq!(proxy.snapshot().pinned_sessions, 1);
    client.send(|m| encode::query(m, "SELECT crash")).await;
    ends_with_fatal(&mut client, "08006").await;
    proxy.stop().await;
}

#[tokio::test]
async fn an_origin_lost_mid_pipeline_answers_every_request_in_flight() {
    let origin = FakeOrigin::start(scripted).await;
    let proxy = Proxy::start(origin.deployment(2)).await;
    let mut client = RawClient::connect(proxy.addr, "fake").await;
    client
        .send(|m| {
            encode::query(m, "SELECT 1");
            encode::query(m, "SELECT crash");
            encode::query(m, "SELECT 2");
        })
        .await;
    assert_eq!(client.tags().await, "TDCZ");
    for _ in 0..2 {
        let reply = client.until_ready().await;
        assert_eq!(tags(&reply), "EZ");
        assert_eq!(code(error_of(&reply)), "08006");
    }
    assert_eq!(tags(&query(&mut client, "SELECT 3").await), "TDCZ");
    proxy.stop().await;
}

#[tokio::test]
async fn an_origin_lost_after_a_flush_answers_the_messages_sent() {
    let origin = FakeOrigin::start(scripted).await;
    let proxy = Proxy::start(origin.deployment(2)).await;
    let mut client = RawClient::connect(proxy.addr, "fake").await;
    client
        .send(|m| {
            common::parse_bind_execute(m, b"", b"SELECT crash");
            encode::flush(m);
        })
        .await;
    let mut seen = String::new();
    let mut error = Bytes::new();
    while !seen.ends_with('E') {
        let (tag, body) = client.read_message().await;
        seen.push(char::from(tag));
        error = body;
    }
    assert_eq!(code(&error), "08006");
    client.send(encode::sync).await;
    assert_eq!(client.tags().await, "Z");
    assert_eq!(tags(&query(&mut client, "SELECT 1").await), "TDCZ");
    proxy.stop().await;
}

#[tokio::test]
async fn a_batch_with_an_error_in_the_middle_skips_to_its_sync() {
    let origin = FakeOrigin::start(scripted).await;
    let proxy = Proxy::start(origin.deployment(2)).await;
    let mut client = RawClient::connect(proxy.addr, "fake").await;
    client
        .send(|m| {
            common::parse_bind_execute(m, b"", b"SELECT 1");
            common::parse_bind_execute(m, b"", b"SELECT fail");
            common::parse_bind_execute(m, b"", b"SELECT 3");
            encode::sync(m);
        })
        .await;
    let reply = client.until_ready().await;
    assert_eq!(tags(&reply), "12DC12EZ");
    assert_eq!(code(error_of(&reply)), "22012");
    assert_eq!(origin.statements(), vec!["SELECT 1", "SELECT fail"]);
    proxy.stop().await;
}

#[tokio::test]
async fn pipelined_batches_with_an_error_in_the_middle_each_get_their_reply() {
    let origin = FakeOrigin::start(scripted).await;
    let proxy = Proxy::start(origin.deployment(2)).await;
    let mut client = RawClient::connect(proxy.addr, "fake").await;
    client
        .send(|m| {
            for sql in [&b"SELECT 1"[..], b"SELECT fail", b"SELECT 3"] {
                common::parse_bind_execute(m, b"", sql);
                encode::sync(m);
            }
        })
        .await;
    assert_eq!(client.tags().await, "12DCZ");
    assert_eq!(client.tags().await, "12EZ");
    assert_eq!(client.tags().await, "12DCZ");
    proxy.stop().await;
}

#[tokio::test]
async fn an_exhausted_pool_answers_after_acquire_timeout_and_recovers() {
    let origin = FakeOrigin::answering().await;
    let mut deployment = origin.deployment(1);
    deployment.pool.acquire_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(deployment).await;
    let mut holder = RawClient::connect(proxy.addr, "fake").await;
    query(&mut holder, "BEGIN").await;
    let mut waiter = RawClient::connect(proxy.addr, "fake").await;
    let started = std::time::Instant::now();
    let refused = query(&mut waiter, "SELECT 1").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(tags(&refused), "EZ");
    let error = error_of(&refused);
    assert_eq!(code(error), "58000");
    assert!(
        message(error).contains("Failed to acquire a connection"),
        "{error:?}"
    );
    query(&mut holder, "COMMIT").await;
    assert_eq!(tags(&query(&mut waiter, "SELECT 1").await), "TDCZ");
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_vanishing_mid_transaction_is_rolled_back_before_anyone_else_runs() {
    let origin = FakeOrigin::answering().await;
    let proxy = Proxy::start(origin.deployment(1)).await;
    let mut leaver = RawClient::connect(proxy.addr, "fake").await;
    query(&mut leaver, "BEGIN").await;
    query(&mut leaver, "SELECT 'half done'").await;
    drop(leaver);
    eventually("the rollback", || {
        origin.statements().contains(&"ROLLBACK".to_owned())
    })
    .await;
    let mut next = RawClient::connect(proxy.addr, "fake").await;
    let reply = query(&mut next, "SELECT 'next'").await;
    assert_eq!(tags(&reply), "TDCZ");
    assert_eq!(&reply[3].1[..], b"I");
    let seen = origin.seen();
    let rollback = seen
        .iter()
        .position(|s| matches!(s, Seen::Query(0, text) if text == "ROLLBACK"))
        .expect("rolled back on the same connection");
    let next_query = seen
        .iter()
        .position(|s| matches!(s, Seen::Query(0, text) if text == "SELECT 'next'"))
        .expect("the next client on the same connection");
    assert!(rollback < next_query, "{seen:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_query_past_max_query_duration_is_cancelled_and_says_why() {
    let origin = FakeOrigin::start(scripted).await;
    let mut deployment = origin.deployment(1);
    deployment.pool.max_query_duration = Duration::from_millis(300);
    let proxy = Proxy::start(deployment).await;
    let mut client = RawClient::connect(proxy.addr, "fake").await;
    let reply = query(&mut client, "SELECT slow").await;
    assert_eq!(tags(&reply), "EZ");
    let error = error_of(&reply);
    assert_eq!(code(error), "57014");
    assert!(message(error).contains("max_query_duration"), "{error:?}");
    assert!(
        origin.seen().contains(&Seen::Cancel(0)),
        "{:?}",
        origin.seen()
    );
    assert_eq!(tags(&query(&mut client, "SELECT 1").await), "TDCZ");
    proxy.stop().await;
}

#[tokio::test]
async fn hits_skip_the_origin_and_stale_entries_are_refreshed_on_the_clock() {
    let origin = FakeOrigin::answering().await;
    let mut deployment = origin.deployment(2);
    deployment.cache.enabled = true;
    let clock = warpdrive::clock::ManualClock::new();
    let proxy = Proxy::start_with_clock(deployment, clock.clock()).await;
    let mut client = RawClient::connect(proxy.addr, "fake").await;
    let sql = "SELECT 42";
    let first = query(&mut client, sql).await;
    assert_eq!(tags(&first), "TDCZ");
    eventually("the miss stored", || proxy.count("miss") == 1).await;
    let hit = query(&mut client, sql).await;
    assert_eq!(hit, first, "a hit is byte for byte the origin's answer");
    assert_eq!(proxy.count("hit"), 1);
    let runs = || origin.statements().iter().filter(|s| *s == sql).count();
    assert_eq!(runs(), 1);
    clock.advance(Duration::from_secs(61));
    assert_eq!(query(&mut client, sql).await, first);
    assert_eq!(proxy.count("hit"), 2);
    eventually("the background refresh", || runs() == 2).await;
    eventually("the refreshed entry", || {
        proxy.snapshot().revalidations_ok == 1
    })
    .await;
    clock.advance(Duration::from_secs(120));
    assert_eq!(query(&mut client, sql).await, first);
    assert_eq!(runs(), 3, "an expired entry is a miss");
    proxy.stop().await;
}

#[tokio::test]
async fn a_rollback_for_a_vanished_client_does_not_strand_anyones_unnamed_statement() {
    let origin = FakeOrigin::answering().await;
    let proxy = Proxy::start(origin.deployment(1)).await;
    let unnamed = |m: &mut bytes::BytesMut| {
        common::parse_bind_execute(m, b"", b"SELECT 1");
        encode::sync(m);
    };
    let mut stayer = RawClient::connect(proxy.addr, "fake").await;
    stayer.send(unnamed).await;
    assert_eq!(stayer.tags().await, "12DCZ");
    // Another client prepares the same unnamed statement on the same connection, inside
    // a transaction, and vanishes: warpdrive rolls back, which destroys it there.
    let mut leaver = RawClient::connect(proxy.addr, "fake").await;
    query(&mut leaver, "BEGIN").await;
    leaver.send(unnamed).await;
    assert_eq!(leaver.tags().await, "12DCZ");
    drop(leaver);
    eventually("the rollback", || {
        origin.statements().contains(&"ROLLBACK".to_owned())
    })
    .await;
    // The first client's unnamed statement is still its own.
    stayer
        .send(|m| {
            common::bind_execute(m, b"");
            encode::sync(m);
        })
        .await;
    assert_eq!(stayer.tags().await, "2DCZ");
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_vanishing_mid_query_never_hands_its_late_reply_to_the_next_client() {
    let origin = FakeOrigin::start(|sql| match sql {
        s if s.contains("slow") => Act::Hang,
        s => Act::Row(s.trim_start_matches("SELECT ").to_owned()),
    })
    .await;
    let proxy = Proxy::start(origin.deployment(1)).await;
    let mut leaver = RawClient::connect(proxy.addr, "fake").await;
    leaver.send(|m| encode::query(m, "SELECT slow")).await;
    eventually("the slow query at the origin", || {
        origin.statements().contains(&"SELECT slow".to_owned())
    })
    .await;
    drop(leaver);
    // The busy connection is closed, not handed on: the next client gets its own answer
    // on a new connection.
    let mut next = RawClient::connect(proxy.addr, "fake").await;
    let reply = query(&mut next, "SELECT 'mine'").await;
    assert_eq!(tags(&reply), "TDCZ");
    assert_eq!(&reply[1].1[6..], b"'mine'");
    assert!(
        origin.seen().contains(&Seen::Connected(1)),
        "{:?}",
        origin.seen()
    );
    proxy.stop().await;
}

/// The race read-your-writes must win: a read's origin query starts, a write to its
/// table completes through warpdrive, then the read's result arrives. It is relayed, but
/// not stored: the next read goes to the origin.
#[tokio::test]
async fn a_read_overtaken_by_a_write_is_not_stored() {
    let go = Arc::new(tokio::sync::Notify::new());
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let origin = FakeOrigin::start({
        let go = Arc::clone(&go);
        move |sql| match sql {
            s if s.starts_with("SELECT v FROM t")
                && first.swap(false, std::sync::atomic::Ordering::SeqCst) =>
            {
                Act::RowWhen(Arc::clone(&go), "old".to_owned())
            }
            _ => Act::Row("new".to_owned()),
        }
    })
    .await;
    let mut deployment = origin.deployment(4);
    deployment.cache.enabled = true;
    let proxy = Proxy::start(deployment).await;
    let mut reader = RawClient::connect(proxy.addr, "fake").await;
    let mut writer = RawClient::connect(proxy.addr, "fake").await;
    let read = "SELECT v FROM t";
    reader.send(|m| encode::query(m, read)).await;
    eventually("the read at the origin", || {
        origin.statements().iter().any(|s| s == read)
    })
    .await;
    assert_eq!(
        tags(&query(&mut writer, "UPDATE t SET v = 'new'").await),
        "TDCZ"
    );
    go.notify_one();
    let overtaken = reader.until_ready().await;
    assert_eq!(tags(&overtaken), "TDCZ", "the client still gets its answer");
    eventually("the result counted", || proxy.count("miss") >= 1).await;
    assert_eq!(proxy.snapshot().fills_refused, 1);
    query(&mut reader, read).await;
    let runs = origin.statements().iter().filter(|s| *s == read).count();
    assert_eq!(runs, 2, "the overtaken result was not served");
    assert_eq!(proxy.count("hit"), 0);
    proxy.stop().await;
}

/// A client that vanishes while its write runs: nobody sees the write end, and it may
/// commit, so the reads of its table are invalidated all the same.
#[tokio::test]
async fn a_write_whose_client_vanished_still_invalidates() {
    let origin = FakeOrigin::start(|sql| match sql {
        s if s.contains("slow") => Act::Hang,
        _ => Act::Row("1".to_owned()),
    })
    .await;
    let mut deployment = origin.deployment(4);
    deployment.cache.enabled = true;
    let proxy = Proxy::start(deployment).await;
    let mut reader = RawClient::connect(proxy.addr, "fake").await;
    let read = "SELECT v FROM t";
    query(&mut reader, read).await;
    query(&mut reader, read).await;
    assert_eq!(proxy.count("hit"), 1);
    let mut writer = RawClient::connect(proxy.addr, "fake").await;
    writer
        .send(|m| encode::query(m, "UPDATE t SET v = 2 /* slow */"))
        .await;
    eventually("the write at the origin", || {
        origin.statements().iter().any(|s| s.contains("slow"))
    })
    .await;
    drop(writer);
    eventually("the vanished write counted", || {
        proxy.snapshot().invalidations_write == 1
    })
    .await;
    query(&mut reader, read).await;
    assert_eq!(proxy.count("hit"), 1, "the read went to the origin again");
    proxy.stop().await;
}

/// The origin connection lost while a write runs: the write may have committed, so the
/// reads of its table are invalidated, and the writer gets the error.
#[tokio::test]
async fn a_write_lost_with_its_connection_still_invalidates() {
    let origin = FakeOrigin::start(scripted).await;
    let mut deployment = origin.deployment(4);
    deployment.cache.enabled = true;
    let proxy = Proxy::start(deployment).await;
    let mut client = RawClient::connect(proxy.addr, "fake").await;
    let read = "SELECT v FROM t";
    query(&mut client, read).await;
    query(&mut client, read).await;
    assert_eq!(proxy.count("hit"), 1);
    let lost = query(&mut client, "UPDATE t SET v = 2 /* crash */").await;
    assert_eq!(tags(&lost), "EZ");
    assert_eq!(proxy.snapshot().invalidations_write, 1);
    query(&mut client, read).await;
    assert_eq!(proxy.count("hit"), 1, "the read went to the origin again");
    proxy.stop().await;
}
