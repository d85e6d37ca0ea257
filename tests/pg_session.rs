//! Session state across pooled connections (DESIGN.md invariant 5): settings follow
//! transactions, savepoints and failures as PostgreSQL's do; what warpdrive cannot follow
//! pins the client; statement bookkeeping survives errors and pipelining. Each test
//! interleaves a second client on the same origin connection, so that a mistake in what
//! warpdrive believes a connection holds shows up in what the clients see.

mod common;

use common::{Proxy, RawClient, TestDatabase};
use tokio_postgres::{Client, SimpleQueryMessage};
use warpdrive::wire::pg::encode;

async fn show(client: &Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.expect("query");
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

/// Another client uses the (only) origin connection and leaves its own time zone on it.
async fn interleave(other: &Client) {
    other
        .batch_execute("SET TimeZone = 'America/Lima'")
        .await
        .expect("other client's SET");
    assert_eq!(show(other, "SHOW TimeZone").await, "America/Lima");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_rollbacks_savepoints_and_failed_commits() {
    let db = TestDatabase::create("sess_tx").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let a = proxy.connect(&db.name).await;
    let b = proxy.connect(&db.name).await;
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();

    // One query string: the SET inside is rolled back with its transaction.
    a.batch_execute("BEGIN; SET TimeZone = 'UTC'; ROLLBACK")
        .await
        .unwrap();
    interleave(&b).await;
    assert_eq!(show(&a, "SHOW TimeZone").await, "Asia/Tokyo");

    // A rollback to a savepoint undoes only what followed it.
    for sql in [
        "BEGIN",
        "SET TimeZone = 'Europe/Paris'",
        "SAVEPOINT s",
        "SET TimeZone = 'Europe/Berlin'",
        "ROLLBACK TO SAVEPOINT s",
        "COMMIT",
    ] {
        a.batch_execute(sql).await.unwrap();
    }
    interleave(&b).await;
    assert_eq!(show(&a, "SHOW TimeZone").await, "Europe/Paris");

    // COMMIT of a failed transaction is a rollback.
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("SET TimeZone = 'Europe/Rome'")
        .await
        .unwrap();
    assert!(a.batch_execute("SELECT 1 / 0").await.is_err());
    a.batch_execute("COMMIT").await.unwrap();
    interleave(&b).await;
    assert_eq!(show(&a, "SHOW TimeZone").await, "Europe/Paris");

    // COMMIT AND CHAIN keeps what it committed when the chained transaction rolls back.
    a.batch_execute("BEGIN; SET TimeZone = 'Africa/Cairo'; COMMIT AND CHAIN")
        .await
        .unwrap();
    a.batch_execute("SET TimeZone = 'Asia/Kolkata'; ROLLBACK")
        .await
        .unwrap();
    interleave(&b).await;
    assert_eq!(show(&a, "SHOW TimeZone").await, "Africa/Cairo");
    drop((a, b));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_all_keeps_the_role_and_it_never_reaches_another_client() {
    let db = TestDatabase::create("sess_role").await;
    let role = format!("{}_reader", db.name);
    let direct = db.direct().await;
    direct
        .batch_execute(&format!("CREATE ROLE {role}; GRANT {role} TO postgres"))
        .await
        .unwrap();
    let proxy = Proxy::for_database(&db, 1).await;
    let a = proxy.connect(&db.name).await;
    let b = proxy.connect(&db.name).await;
    a.batch_execute(&format!("SET ROLE {role}")).await.unwrap();
    a.batch_execute("SET search_path TO nowhere; RESET ALL")
        .await
        .unwrap();
    // As in PostgreSQL: RESET ALL resets search_path, not the role.
    assert_eq!(show(&a, "SELECT current_user").await, role);
    assert_eq!(show(&a, "SHOW search_path").await, "\"$user\", public");
    assert_eq!(show(&b, "SELECT current_user").await, "postgres");
    assert_eq!(show(&a, "SELECT current_user").await, role);
    a.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(show(&a, "SELECT current_user").await, "postgres");
    drop((a, b));
    proxy.stop().await;
    direct
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_settle_their_own_settings() {
    let db = TestDatabase::create("sess_pipe").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let a = proxy.connect(&db.name).await;
    let b = proxy.connect(&db.name).await;
    // Sent back to back: the first fails, the second's SET still counts.
    let (failed, set) = tokio::join!(
        a.simple_query("SELECT 1 / 0"),
        a.simple_query("SET search_path TO first_then_set"),
    );
    assert!(failed.is_err());
    set.unwrap();
    b.batch_execute("SET search_path TO other_client")
        .await
        .unwrap();
    assert_eq!(show(&a, "SHOW search_path").await, "first_then_set");
    // The other order: the SET that fails does not count.
    let (set, failed) = tokio::join!(
        a.simple_query("SET search_path TO second"),
        a.simple_query("SET statement_timeout TO 'not a duration'"),
    );
    set.unwrap();
    assert!(failed.is_err());
    b.batch_execute("SET statement_timeout TO '7s'")
        .await
        .unwrap();
    assert_eq!(show(&a, "SHOW search_path").await, "second");
    assert_eq!(show(&a, "SHOW statement_timeout").await, "0");
    drop((a, b));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lock_taken_before_an_error_pins_the_client() {
    let db = TestDatabase::create("sess_lock").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let a = proxy.connect(&db.name).await;
    assert!(
        a.simple_query("SELECT pg_advisory_lock(4242); SELECT 1 / 0")
            .await
            .is_err()
    );
    // The lock outlived the failed statement: it stays with a, never with b.
    let b = proxy.connect(&db.name).await;
    assert_eq!(show(&b, "SELECT pg_try_advisory_lock(4242)").await, "f");
    assert_eq!(show(&a, "SELECT pg_advisory_unlock(4242)").await, "t");
    drop((a, b));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_skipped_after_an_error_are_forgotten() {
    let db = TestDatabase::create("sess_skip").await;
    let mut deployment = common::trust_deployment(&db.name, 1);
    // One statement per connection: every new one evicts the last.
    deployment.pool.prepared_statements_per_connection = 1;
    let proxy = Proxy::start(deployment).await;
    let mut raw = RawClient::connect(proxy.addr, &db.name).await;
    // The Bind fails (PostgreSQL folds 1 / 0 when it plans): the origin skips the rest,
    // the Parse of c and warpdrive's Close of the evicted a, so c is not prepared there
    // and a still is.
    raw.send(|m| {
        common::parse_bind_execute(m, b"a", b"SELECT 1 / 0");
        encode::parse(m, b"c", b"SELECT 3", &[]);
        encode::sync(m);
    })
    .await;
    assert_eq!(raw.tags().await, "1EZ");
    raw.send(|m| {
        common::parse_bind_execute(m, b"c", b"SELECT 3");
        encode::sync(m);
    })
    .await;
    assert_eq!(raw.tags().await, "12DCZ");
    // Another client on the same connection prepares a's text under its own name.
    let mut other = RawClient::connect(proxy.addr, &db.name).await;
    other
        .send(|m| {
            encode::parse(m, b"mine", b"SELECT 1 / 0", &[]);
            encode::sync(m);
        })
        .await;
    assert_eq!(other.tags().await, "1Z");
    // A Close skipped after an error keeps the client's statement, as in PostgreSQL
    // (the origin refuses the Bind: c takes no parameter).
    raw.send(|m| {
        encode::bind(m, b"", b"c", &[], &[Some(b"1")], &[]);
        encode::close(m, warpdrive::wire::pg::frontend::Target::Statement, b"c");
        encode::sync(m);
    })
    .await;
    assert_eq!(raw.tags().await, "EZ");
    raw.send(|m| {
        common::bind_execute(m, b"c");
        encode::sync(m);
    })
    .await;
    assert_eq!(raw.tags().await, "2DCZ");
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_is_answered_in_turn_in_both_protocols() {
    let db = TestDatabase::create("sess_dealloc").await;
    let proxy = Proxy::start(common::trust_deployment(&db.name, 1)).await;
    let mut raw = RawClient::connect(proxy.addr, &db.name).await;
    raw.send(|m| {
        encode::parse(m, b"s1", b"SELECT 1", &[]);
        encode::parse(m, b"s2", b"SELECT 2", &[]);
        encode::sync(m);
    })
    .await;
    assert_eq!(raw.tags().await, "11Z");
    // psycopg in pipeline mode: DEALLOCATE through the extended protocol.
    raw.send(|m| {
        common::parse_bind_execute(m, b"", b"DEALLOCATE s1");
        encode::sync(m);
    })
    .await;
    let replies = raw.until_ready().await;
    let tags: String = replies.iter().map(|(t, _)| char::from(*t)).collect();
    assert_eq!(tags, "12CZ");
    assert!(replies[2].1.starts_with(b"DEALLOCATE\0"), "{replies:?}");
    raw.send(|m| {
        encode::bind(m, b"", b"s1", &[], &[], &[]);
        encode::sync(m);
    })
    .await;
    let replies = raw.until_ready().await;
    assert!(
        String::from_utf8_lossy(&replies[0].1).contains("26000"),
        "{replies:?}"
    );
    // Pipelined behind a slow query, the answer waits its turn.
    raw.send(|m| {
        encode::query(m, "SELECT pg_sleep(0.2)");
        encode::query(m, "DEALLOCATE ALL");
    })
    .await;
    assert_eq!(raw.tags().await, "TDCZ");
    assert_eq!(raw.tags().await, "CZ");
    raw.send(|m| {
        encode::bind(m, b"", b"s2", &[], &[], &[]);
        encode::sync(m);
    })
    .await;
    assert_eq!(raw.tags().await, "EZ");
    // In a failed transaction the origin refuses it, as PostgreSQL does.
    raw.send(|m| encode::query(m, "BEGIN; SELECT 1 / 0")).await;
    raw.until_ready().await;
    raw.send(|m| encode::query(m, "DEALLOCATE ALL")).await;
    let replies = raw.until_ready().await;
    assert!(
        String::from_utf8_lossy(&replies[0].1).contains("25P02"),
        "{replies:?}"
    );
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_with_their_own_search_path_share_a_connection() {
    let db = TestDatabase::create("sess_tenant").await;
    db.direct()
        .await
        .batch_execute(
            "CREATE SCHEMA t1; CREATE TABLE t1.items (a int); INSERT INTO t1.items VALUES (1);
             CREATE SCHEMA t2; CREATE TABLE t2.items (a int, b text); INSERT INTO t2.items VALUES (2, 'two');",
        )
        .await
        .unwrap();
    let proxy = Proxy::for_database(&db, 1).await;
    let one = proxy.connect(&db.name).await;
    let two = proxy.connect(&db.name).await;
    one.batch_execute("SET search_path TO t1").await.unwrap();
    two.batch_execute("SET search_path TO t2").await.unwrap();
    let first = one.prepare("SELECT * FROM items").await.unwrap();
    let second = two.prepare("SELECT * FROM items").await.unwrap();
    for _ in 0..3 {
        let rows = one.query(&first, &[]).await.unwrap();
        assert_eq!((rows[0].len(), rows[0].get::<_, i32>(0)), (1, 1));
        let rows = two.query(&second, &[]).await.unwrap();
        assert_eq!((rows[0].len(), rows[0].get::<_, i32>(0)), (2, 2));
    }
    drop((one, two));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_database_is_dropped_even_when_its_test_panics() {
    let (named, name) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let db = TestDatabase::create("guard").await;
        let _ = named.send(db.name.clone());
        panic!("a failing test");
    });
    assert!(test.await.is_err());
    let name = name.await.expect("the database was created");
    let left = common::admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .expect("count")
        .get::<_, i64>(0);
    assert_eq!(left, 0, "{name} was left behind");
}
