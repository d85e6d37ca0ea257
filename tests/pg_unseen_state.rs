//! Session state that the query text alone does not show (DESIGN.md invariants 4 and 5):
//! strings read under the client's standard_conforming_strings, statements shared only
//! between clients whose settings PostgreSQL would read them with, and the implicit
//! transaction block of one request. Each test runs the same requests directly and
//! through warpdrive, with the cache on and one origin connection shared by the clients,
//! and compares what they see.

mod common;

use common::{Proxy, RawClient, TWO_SCHEMAS, TestDatabase, last_value as value};
use tokio_postgres::Client;
use warpdrive::wire::pg::encode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_in_one_query_string_undoes_what_came_before_it() {
    let db = TestDatabase::create("unseen_implicit").await;
    let direct = db.direct().await;
    direct.batch_execute(TWO_SCHEMAS).await.unwrap();
    let proxy = Proxy::start(common::cached_deployment(&db.name, 1)).await;
    let a = proxy.connect(&db.name).await;
    let others = proxy.connect(&db.name).await;
    let forms: [&[&str]; 5] = [
        &["SET search_path = s2; BEGIN; SET search_path = public; ROLLBACK"],
        &["SET search_path = s2; START TRANSACTION; SET search_path = public; ABORT"],
        &["SET search_path = s2; ROLLBACK"],
        // An error before COMMIT: the transaction fails, and its end undoes the SET.
        &[
            "SET search_path = s2; BEGIN; SELECT 1 / 0; COMMIT",
            "ROLLBACK",
        ],
        &[
            "SET search_path = s2; BEGIN; SELECT 1 / 0; COMMIT",
            "COMMIT",
        ],
    ];
    for form in forms {
        for client in [&direct, &a] {
            for sql in form {
                let _ = client.batch_execute(sql).await;
            }
        }
        let expected = value(&direct, "SELECT v FROM t2").await;
        assert_eq!(expected.as_deref(), Some("public"), "{form:?}");
        for _ in 0..2 {
            // Uncached and cached reads, by this client and another on the connection.
            assert_eq!(value(&a, "SELECT v FROM t2").await, expected, "{form:?}");
            assert_eq!(
                value(&a, "/* warpdrive: no-cache */ SELECT v FROM t2").await,
                expected
            );
            assert_eq!(value(&others, "SELECT v FROM t2").await, expected);
        }
        assert_eq!(
            value(&a, "SHOW search_path").await,
            value(&direct, "SHOW search_path").await
        );
    }
    // A COMMIT in the string keeps what came before it; what follows is a new block.
    for client in [&direct, &a] {
        client
            .batch_execute("SET search_path = s2; COMMIT; SET search_path = public; ROLLBACK")
            .await
            .unwrap();
    }
    assert_eq!(
        value(&direct, "SELECT v FROM t2").await.as_deref(),
        Some("s2")
    );
    assert_eq!(value(&a, "SELECT v FROM t2").await.as_deref(), Some("s2"));
    assert_eq!(
        value(&others, "SELECT v FROM t2").await.as_deref(),
        Some("public")
    );
    drop((a, others));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_before_sync_undoes_what_came_before_it() {
    let db = TestDatabase::create("unseen_sync").await;
    db.direct().await.batch_execute(TWO_SCHEMAS).await.unwrap();
    let mut deployment = common::trust_deployment(&db.name, 1);
    deployment.cache.enabled = true;
    let proxy = Proxy::start(deployment).await;
    let mut raw = RawClient::connect(proxy.addr, &db.name).await;
    // The messages up to Sync are one implicit transaction: its ROLLBACK undoes the SET.
    raw.send(|m| {
        common::parse_bind_execute(m, b"", b"SET search_path = s2");
        common::parse_bind_execute(m, b"", b"ROLLBACK");
        encode::sync(m);
    })
    .await;
    // PostgreSQL warns that no transaction is in progress, and rolls the block back.
    assert_eq!(raw.tags().await, "12C12NCZ");
    let other = proxy.connect(&db.name).await;
    assert_eq!(
        value(&other, "SELECT v FROM t2").await.as_deref(),
        Some("public")
    );
    raw.send(|m| encode::query(m, "SELECT v FROM t2")).await;
    let replies = raw.until_ready().await;
    let row = replies.iter().find(|(tag, _)| *tag == b'D').expect("a row");
    assert!(row.1.ends_with(b"public"), "{replies:?}");
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslashes_are_read_as_the_session_reads_them() {
    let db = TestDatabase::create("unseen_scs").await;
    let direct = db.direct().await;
    direct
        .batch_execute(&format!(
            "{TWO_SCHEMAS}
             CREATE TABLE calls (n int);
             CREATE FUNCTION logit(a int, b int) RETURNS int LANGUAGE plpgsql VOLATILE AS
               $$BEGIN INSERT INTO public.calls VALUES (a + b); RETURN a + b; END$$;"
        ))
        .await
        .unwrap();
    let proxy = Proxy::start(common::cached_deployment(&db.name, 1)).await;
    let a = proxy.connect(&db.name).await;
    a.batch_execute("SET standard_conforming_strings = off")
        .await
        .unwrap();
    // With standard_conforming_strings off, `\'` is a quote inside the first string:
    // this is three statements, and the second changes the search path.
    let hidden_set = r"SELECT 'x\' AS a, '; SET search_path = s2; SELECT 1 --'";
    a.simple_query(hidden_set).await.unwrap();
    assert_eq!(value(&a, "SHOW search_path").await.as_deref(), Some("s2"));
    assert_eq!(value(&a, "SELECT v FROM t2").await.as_deref(), Some("s2"));
    for _ in 0..3 {
        let fresh = proxy.connect(&db.name).await;
        assert_eq!(
            value(&fresh, "SELECT v FROM t2").await.as_deref(),
            Some("public")
        );
        assert_eq!(
            value(&fresh, "SHOW search_path").await.as_deref(),
            Some("\"$user\", public")
        );
    }
    // Calls hidden the same way run every time: three queries, three side effects.
    let hidden_calls = r"SELECT 'x\' AS a, ' || public.logit(1, 2)::text || random()::text --'";
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(value(&a, hidden_calls).await);
    }
    answers.dedup();
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(
        value(&direct, "SELECT count(*) FROM calls")
            .await
            .as_deref(),
        Some("3")
    );
    drop(a);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_pipelined_behind_a_change_of_string_reading_is_not_guessed() {
    let db = TestDatabase::create("unseen_scs_pipe").await;
    db.direct().await.batch_execute(TWO_SCHEMAS).await.unwrap();
    let mut deployment = common::trust_deployment(&db.name, 2);
    deployment.cache.enabled = true;
    let proxy = Proxy::start(deployment).await;
    let mut raw = RawClient::connect(proxy.addr, &db.name).await;
    // Sent before the SET's reply: warpdrive cannot know yet how the origin reads it.
    raw.send(|m| {
        encode::query(m, "SET standard_conforming_strings = off");
        encode::query(
            m,
            r"SELECT 'x\' AS a, '; SET search_path = s2; SELECT 1 --'",
        );
    })
    .await;
    raw.until_ready().await;
    raw.until_ready().await;
    assert_eq!(proxy.snapshot().pinned_sessions, 1);
    raw.send(|m| encode::query(m, "SELECT v FROM t2")).await;
    let replies = raw.until_ready().await;
    assert!(
        replies
            .iter()
            .any(|(tag, body)| *tag == b'D' && body.ends_with(b"s2"))
    );
    let other = proxy.connect(&db.name).await;
    assert_eq!(
        value(&other, "SELECT v FROM t2").await.as_deref(),
        Some("public")
    );
    proxy.stop().await;
    db.drop_now().await;
}

/// The one value of a row: a count or a text.
fn text_of(row: &tokio_postgres::Row) -> String {
    match row.try_get::<_, i64>(0) {
        Ok(count) => count.to_string(),
        Err(_) => row.get::<_, String>(0),
    }
}

async fn run_prepared(client: &Client, statement: &tokio_postgres::Statement) -> String {
    text_of(
        &client
            .query_one(statement, &[])
            .await
            .expect("prepared statement runs"),
    )
}

async fn run_unnamed(client: &Client, sql: &str) -> String {
    text_of(
        &client
            .query_typed(sql, &[])
            .await
            .expect("unnamed statement runs")[0],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_shared_only_under_the_settings_they_were_read_with() {
    let db = TestDatabase::create("unseen_parse").await;
    let direct = db.direct().await;
    direct
        .batch_execute("CREATE TABLE t (b int); INSERT INTO t VALUES (NULL), (1)")
        .await
        .unwrap();
    let proxy = Proxy::start(common::cached_deployment(&db.name, 1)).await;
    let cases = [
        (
            "SET transform_null_equals = on",
            "SELECT count(*) FROM t WHERE b = NULL",
            "0",
            "1",
        ),
        (
            "SET standard_conforming_strings = off",
            r"SELECT 'a\\b'::text",
            r"a\\b",
            r"a\b",
        ),
    ];
    for (setting, sql, plain, changed) in cases {
        let b = proxy.connect(&db.name).await;
        let a = proxy.connect(&db.name).await;
        a.batch_execute(setting).await.unwrap();
        // Named statements on the one origin connection: b prepares first, a prepares the
        // same text under its own setting, then b runs its statement for the first time.
        let b_statement = b.prepare(sql).await.unwrap();
        let a_statement = a.prepare(sql).await.unwrap();
        assert_eq!(run_prepared(&a, &a_statement).await, changed, "{sql}");
        assert_eq!(run_prepared(&b, &b_statement).await, plain, "{sql}");
        assert_eq!(run_prepared(&a, &a_statement).await, changed, "{sql}");
        // Unnamed statements, and the cache afterwards, for a fresh client.
        for _ in 0..2 {
            let fresh = proxy.connect(&db.name).await;
            assert_eq!(run_unnamed(&fresh, sql).await, plain, "{sql}");
            assert_eq!(run_unnamed(&a, sql).await, changed, "{sql}");
        }
    }
    proxy.stop().await;
    db.drop_now().await;
}
