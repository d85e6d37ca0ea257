//! The query-result cache against the real PostgreSQL: freshness on a manual clock,
//! every status, byte identity of hits, named statements, single flight.

mod common;

use std::time::Duration;

use common::{Proxy, RawClient, TestDatabase};
use warpdrive::clock::ManualClock;
use warpdrive::wire::pg::encode;
use warpdrive::wire::pg::frontend::Target;

/// max_age, stale_while_revalidate and expiry, on a clock the test moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_then_stale_with_one_revalidation_then_expired() {
    let db = TestDatabase::create("fresh").await;
    let direct = db.direct().await;
    direct
        .batch_execute("CREATE TABLE v (n int); INSERT INTO v VALUES (1)")
        .await
        .unwrap();
    let manual = ManualClock::new();
    let proxy =
        Proxy::start_with_clock(common::cached_deployment(&db.name, 2), manual.clock()).await;
    let client = proxy.connect(&db.name).await;
    let read =
        || async { common::row_value(&client.simple_query("SELECT n FROM v").await.unwrap()) };

    assert_eq!(read().await, "1");
    assert_eq!(proxy.count("miss"), 1);
    direct.batch_execute("UPDATE v SET n = 2").await.unwrap();
    manual.advance(Duration::from_secs(59));
    assert_eq!(
        read().await,
        "1",
        "within max_age the cached value is served"
    );
    assert_eq!(proxy.count("hit"), 1);

    manual.advance(Duration::from_secs(2));
    assert_eq!(
        read().await,
        "1",
        "within stale_while_revalidate the stale value is served"
    );
    // More reads while (or after) the one revalidation runs: stale or refreshed, never more
    // than one revalidation.
    for _ in 0..5 {
        let seen = read().await;
        assert!(seen == "1" || seen == "2", "{seen}");
    }
    common::eventually("the revalidation", || {
        proxy.snapshot().revalidations_ok == 1
    })
    .await;
    let snapshot = proxy.snapshot();
    assert_eq!(
        snapshot.revalidations_ok + snapshot.revalidations_failed,
        1,
        "exactly one revalidation"
    );
    assert!(snapshot.stale_served >= 1);
    assert_eq!(
        read().await,
        "2",
        "after the revalidation the new value is served"
    );

    direct.batch_execute("UPDATE v SET n = 3").await.unwrap();
    manual.advance(Duration::from_secs(60 + 15));
    assert_eq!(read().await, "3", "past max_age + swr it is a miss");
    assert_eq!(proxy.count("miss"), 2);
    drop((client, direct));
    proxy.stop().await;
    db.drop_now().await;
}

/// Every status is reached and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_is_reached_and_counted() {
    let db = TestDatabase::create("statuses").await;
    let mut deployment = common::cached_deployment(&db.name, 2);
    deployment.cache.max_result_bytes = 4096;
    deployment
        .cache
        .rules
        .push(common::caching_off_for("private"));
    let proxy = Proxy::start(deployment).await;
    let client = proxy.connect(&db.name).await;
    client
        .batch_execute(
            "CREATE TABLE t (n int); INSERT INTO t VALUES (1); CREATE TABLE private (n int)",
        )
        .await
        .unwrap();
    let before = |status: &str| proxy.count(status);
    let cases: Vec<(&str, String)> = vec![
        ("miss", "SELECT n FROM t".into()),
        ("hit", "SELECT n FROM t".into()),
        ("uncacheable", "UPDATE t SET n = n".into()),
        ("multiplestatements", "SELECT 1; SELECT 2".into()),
        ("notaquery", "SET search_path TO public".into()),
        ("volatile", "SELECT random()".into()),
        ("parseerror", "SELECT n::text COLLATE \"C\" FROM t".into()),
        ("disabled", "SELECT n FROM private".into()),
        (
            "disabled",
            "/* warpdrive: no-cache */ SELECT n FROM t".into(),
        ),
        ("oversizedresult", "SELECT repeat('x', 10000)".into()),
        (
            "oversizedquery",
            format!("SELECT '{}'", "x".repeat(1_100_000)),
        ),
    ];
    for (status, sql) in cases {
        let counted = before(status);
        client
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"));
        assert_eq!(
            proxy.count(status),
            counted + 1,
            "{status} for {}",
            &sql[..sql.len().min(60)]
        );
    }
    let counted = before("transaction");
    client.batch_execute("BEGIN").await.unwrap();
    client.simple_query("SELECT n FROM t").await.unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(proxy.count("transaction"), counted + 1);
    drop(client);
    proxy.stop().await;

    let mut off = common::cached_deployment(&db.name, 1);
    off.cache.enabled = false;
    let proxy = Proxy::start(off).await;
    let client = proxy.connect(&db.name).await;
    client.simple_query("SELECT n FROM t").await.unwrap();
    client.simple_query("UPDATE t SET n = n").await.unwrap();
    assert_eq!(proxy.count("disabled"), 2);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

/// What a client receives on a hit equals what it received on the miss, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_byte_identical_to_misses() {
    let db = TestDatabase::create("bytes").await;
    let mut deployment = common::cached_deployment(&db.name, 1);
    deployment.client_auth = warpdrive::config::ClientAuth::Trust;
    let proxy = Proxy::start(deployment).await;
    let setup = db.direct().await;
    setup
        .batch_execute(
            "CREATE TABLE items (id int, name text, price numeric, tags text[], data bytea, at timestamptz);
             INSERT INTO items SELECT g, 'item ' || g || ' ✓', g * 1.5, ARRAY['a', 'b'], '\\x00ff'::bytea, '2024-01-01'::timestamptz + g * interval '1 hour'
             FROM generate_series(1, 50) g",
        )
        .await
        .unwrap();
    let mut raw = RawClient::connect(proxy.addr, &db.name).await;
    let simple = [
        "SELECT * FROM items ORDER BY id",
        "SELECT count(*), sum(price) FROM items",
        "SELECT name FROM items WHERE id > 100",
    ];
    for sql in simple {
        let mut replies = Vec::new();
        for _ in 0..2 {
            raw.send(|b| encode::query(b, sql)).await;
            replies.push(raw.until_ready().await);
        }
        assert_eq!(replies[0], replies[1], "{sql}");
    }
    let hits = proxy.count("hit");
    assert_eq!(hits, 3);
    // Extended protocol, text and binary results, with and without Describe.
    for (result_format, describe) in [(0i16, true), (1, true), (1, false), (0, false)] {
        let mut replies = Vec::new();
        for _ in 0..2 {
            raw.send(|b| {
                encode::parse(
                    b,
                    b"",
                    b"SELECT id, name, price, tags, data FROM items WHERE id <= $1 ORDER BY id",
                    &[23],
                );
                encode::bind(b, b"", b"", &[0], &[Some(b"7")], &[result_format]);
                if describe {
                    encode::describe(b, Target::Portal, b"");
                }
                encode::execute(b, b"", 0);
                encode::sync(b);
            })
            .await;
            replies.push(raw.until_ready().await);
        }
        assert_eq!(
            replies[0], replies[1],
            "format {result_format}, describe {describe}"
        );
    }
    assert_eq!(proxy.count("hit"), hits + 4);
    // Named statement described, then executed repeatedly.
    raw.send(|b| {
        encode::parse(b, b"s1", b"SELECT name FROM items WHERE id = $1", &[23]);
        encode::describe(b, Target::Statement, b"s1");
        encode::sync(b);
    })
    .await;
    raw.until_ready().await;
    let mut replies = Vec::new();
    for _ in 0..2 {
        raw.send(|b| {
            encode::bind(b, b"", b"s1", &[0], &[Some(b"3")], &[]);
            encode::describe(b, Target::Statement, b"s1");
            encode::execute(b, b"", 0);
            encode::sync(b);
        })
        .await;
        replies.push(raw.until_ready().await);
    }
    assert_eq!(replies[0], replies[1]);
    assert!(
        replies[1].iter().any(|(tag, _)| *tag == b't'),
        "ParameterDescription replayed"
    );
    drop(setup);
    proxy.stop().await;
    db.drop_now().await;
}

/// psql prints the same thing on a miss and on a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_sees_the_same_output_on_hit_and_miss() {
    let db = TestDatabase::create("psqlhit").await;
    db.direct()
        .await
        .batch_execute("CREATE TABLE t (a int, b text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20) g")
        .await
        .unwrap();
    let proxy = Proxy::start(common::cached_deployment(&db.name, 1)).await;
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let sql = ["SELECT * FROM t ORDER BY a"];
        let (ok, output) = common::psql(proxy.addr.port(), &db.name, &sql, "disable").await;
        assert!(ok, "{output}");
        outputs.push(output);
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!((proxy.count("miss"), proxy.count("hit")), (1, 1));
    proxy.stop().await;
    db.drop_now().await;
}

/// Several clients prepare the same statement; repeated parameters hit, new ones miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_hit_exactly_for_repeated_parameters() {
    let db = TestDatabase::create("named").await;
    db.direct()
        .await
        .batch_execute("CREATE TABLE users (id int PRIMARY KEY, name text); INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 10) g")
        .await
        .unwrap();
    let proxy = Proxy::start(common::cached_deployment(&db.name, 2)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = proxy.connect(&db.name).await;
        let statement = client
            .prepare("SELECT name FROM users WHERE id = $1")
            .await
            .unwrap();
        clients.push((client, statement));
    }
    let mut expected_hits = 0;
    let mut seen = std::collections::HashSet::new();
    for round in 0..4 {
        for (client, statement) in &clients {
            for id in [1i32, 2, 3 + round] {
                let name: String = client.query_one(statement, &[&id]).await.unwrap().get(0);
                assert_eq!(name, format!("user {id}"));
                if !seen.insert(id) {
                    expected_hits += 1;
                }
            }
        }
    }
    assert_eq!(proxy.count("hit"), expected_hits);
    assert_eq!(proxy.count("miss"), seen.len() as u64);
    drop(clients);
    proxy.stop().await;
    db.drop_now().await;
}

/// 100 clients send the same slow, uncached query at once: one origin execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_reaches_the_origin_once() {
    let db = TestDatabase::create("stampede").await;
    let proxy = Proxy::start(common::cached_deployment(&db.name, 5)).await;
    let url = proxy.url(&db.name);
    let mut clients = Vec::new();
    for _ in 0..100 {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        clients.push(client);
    }
    let started = std::time::Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(async move {
                let rows = client
                    .simple_query(
                        "SELECT count(*) FROM generate_series(1, 3000000) AS g WHERE g % 7 = 0",
                    )
                    .await
                    .unwrap();
                common::row_value(&rows)
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), "428571");
    }
    let elapsed = started.elapsed();
    assert_eq!(proxy.count("miss"), 1, "one request reached the origin");
    assert_eq!(proxy.count("hit"), 99);
    assert!(
        proxy.snapshot().coalesced_waits >= 90,
        "{:?}",
        proxy.snapshot()
    );
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    proxy.stop().await;
    db.drop_now().await;
}

/// Statement names are not part of the key: the same text under different names shares
/// an entry; the same name for different text never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_names_do_not_split_or_mix_entries() {
    let db = TestDatabase::create("names").await;
    let mut deployment = common::cached_deployment(&db.name, 2);
    deployment.client_auth = warpdrive::config::ClientAuth::Trust;
    let proxy = Proxy::start(deployment).await;
    let mut a = RawClient::connect(proxy.addr, &db.name).await;
    let mut b = RawClient::connect(proxy.addr, &db.name).await;
    let run = |name: &'static [u8], sql: &'static [u8]| {
        move |m: &mut bytes::BytesMut| {
            encode::parse(m, name, sql, &[]);
            encode::bind(m, b"", name, &[], &[], &[]);
            encode::execute(m, b"", 0);
            encode::sync(m);
        }
    };
    a.send(run(b"alpha", b"SELECT 'first'::text")).await;
    let first = a.until_ready().await;
    b.send(run(b"beta", b"SELECT 'first'::text")).await;
    let shared = b.until_ready().await;
    assert_eq!(proxy.count("hit"), 1, "same text, other name: a hit");
    assert_eq!(first, shared);
    b.send(|m| encode::close(m, Target::Statement, b"beta"))
        .await;
    b.send(run(b"alpha", b"SELECT 'second'::text")).await;
    let replies = b.until_ready().await;
    let row = replies.iter().find(|(tag, _)| *tag == b'D').expect("a row");
    assert!(row.1.ends_with(b"second"), "{replies:?}");
    assert_eq!(proxy.count("hit"), 1, "same name, other text: not a hit");
    proxy.stop().await;
    db.drop_now().await;
}

/// Typed values decoded by tokio-postgres (binary format) are the same on miss and hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_decodes_the_same_values_on_hit_and_miss() {
    let db = TestDatabase::create("typed").await;
    let proxy = Proxy::start(common::cached_deployment(&db.name, 1)).await;
    let client = proxy.connect(&db.name).await;
    let sql = "SELECT 42::int4, 7::int8, 1.5::float8, 'héllo'::text, '\\x0102'::bytea, true, ARRAY[1, 2]::int4[], NULL::text";
    let mut decoded = Vec::new();
    for _ in 0..2 {
        let row = client.query_one(sql, &[]).await.unwrap();
        decoded.push(format!(
            "{:?}",
            (
                row.get::<_, i32>(0),
                row.get::<_, i64>(1),
                row.get::<_, f64>(2),
                row.get::<_, String>(3),
                row.get::<_, Vec<u8>>(4),
                row.get::<_, bool>(5),
                row.get::<_, Vec<i32>>(6),
                row.get::<_, Option<String>>(7),
            )
        ));
    }
    assert_eq!(decoded[0], decoded[1]);
    assert_eq!(proxy.count("hit"), 1);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

/// A client pinned by a temporary table never shares cached reads: its `users` is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_sessions_bypass_the_cache() {
    let db = TestDatabase::create("pinned").await;
    db.direct()
        .await
        .batch_execute("CREATE TABLE users (name text); INSERT INTO users VALUES ('real')")
        .await
        .unwrap();
    let proxy = Proxy::start(common::cached_deployment(&db.name, 2)).await;
    let shadowing = proxy.connect(&db.name).await;
    shadowing
        .batch_execute(
            "CREATE TEMP TABLE users (name text); INSERT INTO users VALUES ('temporary')",
        )
        .await
        .unwrap();
    let other = proxy.connect(&db.name).await;
    for _ in 0..2 {
        assert_eq!(
            common::row_value(&other.simple_query("SELECT name FROM users").await.unwrap()),
            "real"
        );
        assert_eq!(
            common::row_value(
                &shadowing
                    .simple_query("SELECT name FROM users")
                    .await
                    .unwrap()
            ),
            "temporary"
        );
    }
    assert!(proxy.count("uncacheable") >= 2);
    assert_eq!(proxy.snapshot().pinned_sessions, 1);
    assert_eq!((proxy.count("miss"), proxy.count("hit")), (1, 1));
    drop((shadowing, other));
    proxy.stop().await;
    db.drop_now().await;
}

/// A query pipelined behind a SET runs with the new setting: it is not stored under the
/// key of the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_not_stored_under_stale_settings() {
    let db = TestDatabase::create("pipeset").await;
    db.direct()
        .await
        .batch_execute(
            "CREATE TABLE t (v text); INSERT INTO t VALUES ('public');
             CREATE SCHEMA other; CREATE TABLE other.t (v text); INSERT INTO other.t VALUES ('other')",
        )
        .await
        .unwrap();
    let proxy = Proxy::start(common::cached_deployment(&db.name, 2)).await;
    let switcher = proxy.connect(&db.name).await;
    let statement = switcher.prepare("SELECT v FROM t").await.unwrap();
    let (set, read) = tokio::join!(
        switcher.batch_execute("SET search_path TO other"),
        switcher.query_one(&statement, &[])
    );
    set.unwrap();
    let _ = read;
    let plain = proxy.connect(&db.name).await;
    let statement = plain.prepare("SELECT v FROM t").await.unwrap();
    let seen: String = plain.query_one(&statement, &[]).await.unwrap().get(0);
    assert_eq!(seen, "public");
    drop((switcher, plain));
    proxy.stop().await;
    db.drop_now().await;
}
