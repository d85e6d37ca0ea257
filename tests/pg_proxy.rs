//! The PostgreSQL proxy through tokio-postgres, against the real PostgreSQL on
//! 127.0.0.1:5432. Each test creates its own database.

mod common;

use std::time::Duration;

use common::{Proxy, TestDatabase};
use tokio_postgres::SimpleQueryMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries() {
    let db = TestDatabase::create("queries").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let client = proxy.connect(&db.name).await;
    client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'one'), (2, 'two')")
        .await
        .unwrap();
    let rows = client
        .simple_query("SELECT name FROM items ORDER BY id")
        .await
        .unwrap();
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["one", "two"]);
    let row = client
        .query_one("SELECT name FROM items WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "two");
    let statement = client
        .prepare("SELECT id FROM items WHERE name = $1")
        .await
        .unwrap();
    for (name, id) in [("one", 1i32), ("two", 2)] {
        let row = client.query_one(&statement, &[&name]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), id);
    }
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_follow_the_client_across_connections() {
    let db = TestDatabase::create("stmts").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let setup = proxy.connect(&db.name).await;
    setup
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 10)")
        .await
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..5 {
        let client = proxy.connect(&db.name).await;
        let statement = client
            .prepare("SELECT count(*) FROM t WHERE v <= $1")
            .await
            .unwrap();
        clients.push(std::sync::Arc::new((client, statement)));
    }
    // Many rounds with concurrent clients on a pool of 2: every client's statement lands on
    // connections that did not prepare it for that client.
    for round in 0..20i32 {
        let tasks = clients.iter().map(|pair| {
            let pair = std::sync::Arc::clone(pair);
            tokio::spawn(async move {
                let limit = round % 10 + 1;
                pair.0
                    .query_one(&pair.1, &[&limit])
                    .await
                    .map(|row| row.get::<_, i64>(0))
            })
        });
        for (i, result) in futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .enumerate()
        {
            let count = result
                .unwrap()
                .unwrap_or_else(|e| panic!("client {i} round {round}: {e}"));
            assert_eq!(count, i64::from(round % 10 + 1));
        }
    }
    drop(clients);
    drop(setup);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_replayed_where_missing_and_names_never_collide() {
    use warpdrive::wire::pg::encode;
    let db = TestDatabase::create("replay").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 2)).await;
    let holder = proxy.connect(&db.name).await;
    let other = proxy.connect(&db.name).await;
    let mut a = common::RawClient::connect(proxy.addr, &db.name).await;
    // holder keeps connection X busy, so a's statement is prepared on Y only.
    holder.batch_execute("BEGIN").await.unwrap();
    a.send(|m| {
        encode::parse(m, b"s1", b"SELECT 'from a'", &[]);
        encode::sync(m);
    })
    .await;
    assert_eq!(a.tags().await, "1Z");
    // other takes Y; X comes free: a's Execute can only run on X, which lacks s1.
    other.batch_execute("BEGIN").await.unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
    a.send(|m| {
        common::bind_execute(m, b"s1");
        encode::sync(m);
    })
    .await;
    let replies = a.until_ready().await;
    let row = replies.iter().find(|(tag, _)| *tag == b'D').expect("a row");
    assert!(row.1.ends_with(b"from a"), "{replies:?}");
    other.batch_execute("COMMIT").await.unwrap();
    // Another client's s1 is another statement, on the same connections.
    let mut b = common::RawClient::connect(proxy.addr, &db.name).await;
    b.send(|m| {
        encode::parse(m, b"s1", b"SELECT 'from b'", &[]);
        encode::sync(m);
    })
    .await;
    assert_eq!(b.tags().await, "1Z");
    for (use_a, expected) in [
        (true, &b"from a"[..]),
        (false, b"from b"),
        (true, b"from a"),
    ] {
        let client = if use_a { &mut a } else { &mut b };
        client
            .send(|m| {
                common::bind_execute(m, b"s1");
                encode::sync(m);
            })
            .await;
        let replies = client.until_ready().await;
        let row = replies.iter().find(|(tag, _)| *tag == b'D').expect("a row");
        assert!(row.1.ends_with(expected), "{replies:?}");
    }
    drop((holder, other));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_and_survive_errors() {
    let db = TestDatabase::create("tx").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let mut client = proxy.connect(&db.name).await;
    client
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    let error = tx.execute("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
    );
    let aborted = tx
        .execute("INSERT INTO t VALUES (4)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        aborted.code(),
        Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
    );
    tx.rollback().await.unwrap();
    let values: Vec<i32> = client
        .query("SELECT v FROM t ORDER BY v", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(values, [1]);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_bytea_text_and_unicode() {
    let db = TestDatabase::create("large").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let client = proxy.connect(&db.name).await;
    let rows = client
        .query(
            "SELECT g, md5(g::text) FROM generate_series(1, 100000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 100_000);
    assert_eq!(rows[99_999].get::<_, i32>(0), 100_000);
    let bytes: Vec<u8> = (0..=255).collect();
    let text = "héllo wörld ✓ 日本語 🚀";
    client
        .batch_execute("CREATE TABLE blobs (b bytea, t text)")
        .await
        .unwrap();
    client
        .execute("INSERT INTO blobs VALUES ($1, $2)", &[&bytes, &text])
        .await
        .unwrap();
    // Binary format (extended protocol).
    let row = client
        .query_one("SELECT b, t FROM blobs", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), bytes);
    assert_eq!(row.get::<_, &str>(1), text);
    // Text format (simple protocol).
    let messages = client
        .simple_query("SELECT encode(b, 'hex'), t FROM blobs")
        .await
        .unwrap();
    let SimpleQueryMessage::Row(row) = &messages[1] else {
        panic!("expected a row: {messages:?}")
    };
    assert_eq!(row.get(0).unwrap().len(), 512);
    assert_eq!(row.get(1), Some(text));
    // bytea's own text output, with the origin's bytea_output.
    let messages = client.simple_query("SELECT b FROM blobs").await.unwrap();
    let SimpleQueryMessage::Row(row) = &messages[1] else {
        panic!("expected a row: {messages:?}")
    };
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(row.get(0), Some(format!("\\x{hex}").as_str()));
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

/// A pipeline of large requests with large replies fills the socket buffers both ways:
/// warpdrive must read the origin's replies while it writes the next requests, as libpq
/// does, or the origin and warpdrive wait for each other forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_pipelines_of_large_messages_do_not_jam() {
    let db = TestDatabase::create("jam").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let client = proxy.connect(&db.name).await;
    let big = "x".repeat(16 << 20);
    let statement = client.prepare("SELECT $1::text").await.unwrap();
    let parameter: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&big];
    let queries = (0..4).map(|_| client.query_one(&statement, &parameter));
    let rows = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures_util::future::join_all(queries),
    )
    .await
    .expect("the pipeline finished");
    for row in rows {
        assert_eq!(row.unwrap().get::<_, &str>(0).len(), big.len());
    }
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    use futures_util::SinkExt;
    use futures_util::TryStreamExt;
    let db = TestDatabase::create("copy").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let client = proxy.connect(&db.name).await;
    client
        .batch_execute("CREATE TABLE c (a int, b text)")
        .await
        .unwrap();
    let sink = client.copy_in("COPY c FROM STDIN").await.unwrap();
    let mut sink = Box::pin(sink);
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!("{i}\trow {i}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let copied = sink.as_mut().finish().await.unwrap();
    assert_eq!(copied, 5000);
    let stream = client
        .copy_out("COPY (SELECT * FROM c ORDER BY a) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = chunks.concat();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 5000);
    assert!(text.starts_with("0\trow 0\n"));
    // The session goes on normally after COPY.
    let count: i64 = client
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 5000);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_sleep() {
    let db = TestDatabase::create("cancel").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let client = proxy.connect(&db.name).await;
    let token = client.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(10)").await;
        (result.map(|_| ()), client)
    });
    common::until_running(&db.name, "SELECT pg_sleep(10)").await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (result, client) = sleeper.await.unwrap();
    let error = result.unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancelled in {:?}",
        started.elapsed()
    );
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}
