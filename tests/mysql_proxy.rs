//! warpdrive in front of MariaDB, through mysql_async: the text and binary protocols,
//! prepared statements over a pool, transactions, the current database, multi-statement
//! queries, large results and column types.

mod common;

use common::mysql::{MysqlDatabase, RawMysql, mysql_deployment};
use common::{Proxy, small_pool};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use warpdrive::wire::mysql::response::Expect;

async fn proxy_for(database: &MysqlDatabase, max_size: usize) -> Proxy {
    Proxy::start(mysql_deployment(&database.name, small_pool(max_size))).await
}

#[tokio::test]
async fn text_and_binary_protocol_answer_as_the_origin_does() {
    let db = MysqlDatabase::create("proto").await;
    let proxy = proxy_for(&db, 2).await;
    let mut conn = proxy.mysql(&db.name).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20), note TEXT NULL)")
        .await
        .expect("create");
    conn.query_drop("INSERT INTO t VALUES (1, 'one', NULL), (2, 'two', 'x')")
        .await
        .expect("insert");
    let text: Vec<(i32, String, Option<String>)> = conn
        .query("SELECT id, name, note FROM t ORDER BY id")
        .await
        .expect("text query");
    assert_eq!(
        text,
        vec![(1, "one".into(), None), (2, "two".into(), Some("x".into()))]
    );
    let binary: Vec<(i32, String, Option<String>)> = conn
        .exec(
            "SELECT id, name, note FROM t WHERE id >= ? ORDER BY id",
            (1,),
        )
        .await
        .expect("binary query");
    assert_eq!(binary, text);
    let none: Vec<i32> = conn
        .exec("SELECT id FROM t WHERE id = ?", (99,))
        .await
        .expect("empty");
    assert!(none.is_empty());
    let error = conn
        .query_drop("SELECT * FROM missing")
        .await
        .expect_err("no table");
    assert!(error.to_string().contains("missing"), "{error}");
    let after: Option<i32> = conn
        .query_first("SELECT 7")
        .await
        .expect("goes on after an error");
    assert_eq!(after, Some(7));
    drop(conn);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn prepared_statements_move_between_pooled_connections() {
    let db = MysqlDatabase::create("stmts").await;
    let proxy = proxy_for(&db, 2).await;
    let mut setup = proxy.mysql(&db.name).await;
    setup
        .query_drop("CREATE TABLE kv (k INT PRIMARY KEY, v INT); INSERT INTO kv VALUES (1, 10), (2, 20), (3, 30)")
        .await
        .expect("setup");
    drop(setup);
    let mut clients = Vec::new();
    for client in 0..8 {
        let opts = proxy.mysql_opts(Some(&db.name));
        clients.push(tokio::spawn(async move {
            let mut conn = Conn::new(opts).await.expect("connect");
            let statement = conn
                .prep("SELECT v FROM kv WHERE k = ?")
                .await
                .expect("prepare");
            for round in 0..30 {
                let k = (client + round) % 3 + 1;
                let v: Option<i32> = conn.exec_first(&statement, (k,)).await.expect("execute");
                assert_eq!(v, Some(k * 10));
            }
            conn.close(statement).await.expect("close");
            // The cached statement of a closed one is prepared again.
            let again: Option<i32> = conn
                .exec_first("SELECT v FROM kv WHERE k = ?", (2,))
                .await
                .expect("again");
            assert_eq!(again, Some(20));
            conn.disconnect().await.expect("disconnect");
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn transactions_commit_roll_back_and_survive_errors() {
    let db = MysqlDatabase::create("txn").await;
    let proxy = proxy_for(&db, 2).await;
    let mut conn = proxy.mysql(&db.name).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .expect("create");
    conn.query_drop("BEGIN").await.expect("begin");
    conn.query_drop("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    let duplicate = conn.query_drop("INSERT INTO t VALUES (1)").await;
    assert!(duplicate.is_err(), "a duplicate key fails");
    conn.query_drop("INSERT INTO t VALUES (2)")
        .await
        .expect("the transaction goes on");
    conn.query_drop("COMMIT").await.expect("commit");
    conn.query_drop("START TRANSACTION").await.expect("begin");
    conn.query_drop("INSERT INTO t VALUES (3)")
        .await
        .expect("insert");
    conn.query_drop("ROLLBACK").await.expect("rollback");
    let mut other = proxy.mysql(&db.name).await;
    let ids: Vec<i32> = other
        .query("SELECT id FROM t ORDER BY id")
        .await
        .expect("read");
    assert_eq!(ids, vec![1, 2]);
    // autocommit off keeps the connection until COMMIT, like a transaction.
    conn.query_drop("SET autocommit = 0")
        .await
        .expect("autocommit off");
    conn.query_drop("INSERT INTO t VALUES (4)")
        .await
        .expect("insert");
    let unseen: Vec<i32> = other
        .query("SELECT id FROM t WHERE id = 4")
        .await
        .expect("read");
    assert!(unseen.is_empty(), "not committed yet");
    conn.query_drop("COMMIT").await.expect("commit");
    let seen: Vec<i32> = other
        .query("SELECT id FROM t WHERE id = 4")
        .await
        .expect("read");
    assert_eq!(seen, vec![4]);
    conn.query_drop("SET autocommit = 1")
        .await
        .expect("autocommit on");
    let autocommit: Option<i32> = other
        .query_first("SELECT @@autocommit")
        .await
        .expect("read");
    assert_eq!(
        autocommit,
        Some(1),
        "another client never sees autocommit off"
    );
    drop((conn, other));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn use_and_init_db_are_followed_by_unqualified_names() {
    let db = MysqlDatabase::create("use_a").await;
    let other_db = MysqlDatabase::create("use_b").await;
    let proxy = proxy_for(&db, 1).await;
    let mut direct = other_db.direct().await;
    direct
        .query_drop("CREATE TABLE only_b (x INT); INSERT INTO only_b VALUES (42)")
        .await
        .expect("setup");
    let mut conn = proxy.mysql(&db.name).await;
    conn.query_drop(format!("USE {}", other_db.name))
        .await
        .expect("use");
    let x: Option<i32> = conn
        .query_first("SELECT x FROM only_b")
        .await
        .expect("unqualified after USE");
    assert_eq!(x, Some(42));
    // The one connection of the pool serves a client of the first database meanwhile.
    let mut first = proxy.mysql(&db.name).await;
    let current: Option<String> = first.query_first("SELECT DATABASE()").await.expect("read");
    assert_eq!(current.as_deref(), Some(db.name.as_str()));
    let x: Option<i32> = conn
        .query_first("SELECT x FROM only_b")
        .await
        .expect("still the other database");
    assert_eq!(x, Some(42));
    drop((conn, first, direct));
    // COM_INIT_DB, which mysql_async never sends.
    let mut raw = RawMysql::login(proxy.addr, Some(&db.name), 0).await;
    let mut init_db = vec![0x02];
    init_db.extend_from_slice(other_db.name.as_bytes());
    assert_eq!(
        raw.command(&init_db).await.first(),
        Some(0x00),
        "COM_INIT_DB succeeds"
    );
    let reply = raw
        .reply(b"\x03SELECT x FROM only_b", Expect::Results)
        .await;
    assert_eq!(
        &reply[0].payload[..],
        b"\x01",
        "one column: the unqualified name resolved"
    );
    assert_eq!(&reply[reply.len() - 2].payload[..], b"\x0242", "its row");
    let missing = raw.command(b"\x02wd_no_such_database").await;
    assert_eq!(
        missing.first(),
        Some(0xFF),
        "an unknown database is refused"
    );
    assert_eq!(
        u16::from_le_bytes([missing.payload[1], missing.payload[2]]),
        1049
    );
    proxy.stop().await;
    other_db.drop_now().await;
    db.drop_now().await;
}

#[tokio::test]
async fn multi_statement_queries_return_every_result() {
    let db = MysqlDatabase::create("multi").await;
    let proxy = proxy_for(&db, 2).await;
    let mut conn = proxy.mysql(&db.name).await;
    let mut result = conn
        .query_iter("SELECT 1 AS a; CREATE TABLE t (x INT); INSERT INTO t VALUES (5), (6); SELECT x FROM t ORDER BY x")
        .await
        .expect("multi-statement");
    let first: Vec<i32> = result.collect().await.expect("first result");
    assert_eq!(first, vec![1]);
    let _: Vec<Row> = result.collect().await.expect("create");
    let _: Vec<Row> = result.collect().await.expect("insert");
    let last: Vec<i32> = result.collect().await.expect("last result");
    assert_eq!(last, vec![5, 6]);
    drop(result);
    let after: Option<i32> = conn.query_first("SELECT 2").await.expect("next query");
    assert_eq!(after, Some(2));
    drop(conn);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_hundred_thousand_rows_arrive_whole() {
    let db = MysqlDatabase::create("big").await;
    let proxy = proxy_for(&db, 1).await;
    let mut conn = proxy.mysql(&db.name).await;
    conn.query_drop("SET SESSION max_recursive_iterations = 1000000")
        .await
        .expect("set");
    let rows: Vec<(i64, String)> = conn
        .query("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) SELECT i, REPEAT('x', 20) FROM n")
        .await
        .expect("big result");
    assert_eq!(rows.len(), 100_000);
    assert_eq!(rows[99_999].0, 100_000);
    let binary: Vec<i64> = conn
        .exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) SELECT i FROM n", (100_000,))
        .await
        .expect("big binary result");
    assert_eq!(binary.iter().sum::<i64>(), 5_000_050_000);
    drop(conn);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn every_common_column_type_and_null_round_trips() {
    let db = MysqlDatabase::create("types").await;
    let proxy = proxy_for(&db, 1).await;
    let mut conn = proxy.mysql(&db.name).await;
    conn.query_drop(
        "CREATE TABLE t (i TINYINT, s SMALLINT, m MEDIUMINT, b BIGINT UNSIGNED, d DECIMAL(10,3), f FLOAT, g DOUBLE, \
         dt DATE, tm TIME(3), dtm DATETIME(6), ts TIMESTAMP NULL, j JSON, bl BLOB, u VARCHAR(20) CHARACTER SET utf8mb4, \
         l VARCHAR(20) CHARACTER SET latin1)",
    )
    .await
    .expect("create");
    let values: Vec<Value> = vec![
        (-5i8).into(),
        300i16.into(),
        70000i32.into(),
        u64::MAX.into(),
        "1234.567".into(),
        1.5f32.into(),
        2.25f64.into(),
        "2026-12-03".into(),
        "12:34:56.789".into(),
        "2026-12-03 01:02:03.456789".into(),
        "2026-12-03 04:05:06".into(),
        "{\"a\": [1, 2]}".into(),
        vec![0u8, 1, 255].into(),
        "héllo 🚀".into(),
        "café".into(),
    ];
    conn.exec_drop(
        "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        values,
    )
    .await
    .expect("insert");
    conn.query_drop("INSERT INTO t VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)")
        .await
        .expect("insert nulls");
    let mut direct = db.direct().await;
    let direct_text: Vec<Row> = direct.query("SELECT * FROM t").await.expect("direct text");
    let direct_binary: Vec<Row> = direct
        .exec("SELECT * FROM t WHERE 1 = ?", (1,))
        .await
        .expect("direct binary");
    let text: Vec<Row> = conn.query("SELECT * FROM t").await.expect("text");
    let binary: Vec<Row> = conn
        .exec("SELECT * FROM t WHERE 1 = ?", (1,))
        .await
        .expect("binary");
    for (through, direct) in [(&text, &direct_text), (&binary, &direct_binary)] {
        assert_eq!(through.len(), 2);
        let values = |rows: &Vec<Row>| -> Vec<Vec<Value>> {
            rows.iter().map(|r| r.clone().unwrap()).collect()
        };
        assert_eq!(values(through), values(direct));
        assert!(values(through)[1].iter().all(|v| *v == Value::NULL));
    }
    let unicode: Option<String> = text[0].get(13);
    assert_eq!(unicode.as_deref(), Some("héllo 🚀"));
    let latin1: Option<String> = text[0].get(14);
    assert_eq!(latin1.as_deref(), Some("café"));
    drop(direct);
    drop(conn);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn update_counts_matched_rows_for_clients_that_ask_found_rows() {
    let db = MysqlDatabase::create("found_rows").await;
    let proxy = proxy_for(&db, 1).await;
    let mut setup = proxy.mysql(&db.name).await;
    setup
        .query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 5)")
        .await
        .expect("setup");
    setup.disconnect().await.expect("disconnect");
    for found_rows in [false, true, false] {
        let mut conn = Conn::new(
            proxy
                .mysql_opts(Some(&db.name))
                .client_found_rows(found_rows),
        )
        .await
        .expect("connect");
        conn.query_drop("UPDATE t SET v = 5 WHERE id = 1")
            .await
            .expect("update");
        let expected = u64::from(found_rows);
        assert_eq!(conn.affected_rows(), expected, "found_rows {found_rows}");
        conn.disconnect().await.expect("disconnect");
    }
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_and_mysql_deployments_run_in_one_process() {
    let db = MysqlDatabase::create("beside").await;
    let pg = common::TestDatabase::create("beside_pg").await;
    let proxy = Proxy::start_deployments(vec![
        common::deployment(&pg.name, small_pool(1)),
        mysql_deployment(&db.name, small_pool(1)),
    ])
    .await;
    let postgres = proxy.connect_at(0, &pg.name).await;
    let row = postgres
        .query_one("SELECT 40 + 2", &[])
        .await
        .expect("postgres");
    assert_eq!(row.get::<_, i32>(0), 42);
    let opts = proxy
        .mysql_opts(Some(&db.name))
        .tcp_port(proxy.addrs[1].port());
    let mut mysql = Conn::new(opts).await.expect("mysql");
    let answer: Option<i32> = mysql
        .query_first("SELECT 40 + 2")
        .await
        .expect("mysql query");
    assert_eq!(answer, Some(42));
    let names: Vec<String> = proxy
        .registry
        .snapshots()
        .into_iter()
        .map(|s| s.deployment)
        .collect();
    assert_eq!(names.len(), 2);
    drop((postgres, mysql));
    proxy.stop().await;
    pg.drop_now().await;
    db.drop_now().await;
}

#[tokio::test]
async fn a_shared_statement_text_means_what_it_means_in_each_clients_database() {
    let a = MysqlDatabase::create("stmt_db_a").await;
    let b = MysqlDatabase::create("stmt_db_b").await;
    for (db, value) in [(&a, 1), (&b, 2)] {
        let mut direct = db.direct().await;
        direct
            .query_drop(format!(
                "CREATE TABLE t (v INT); INSERT INTO t VALUES ({value})"
            ))
            .await
            .expect("setup");
    }
    // One connection serves both clients in turn.
    let proxy = proxy_for(&a, 1).await;
    let sql = "SELECT v FROM t";
    let mut in_a = proxy.mysql(&a.name).await;
    let first: Option<i32> = in_a.exec_first(sql, ()).await.expect("a");
    assert_eq!(first, Some(1));
    let mut in_b = proxy.mysql(&b.name).await;
    let second: Option<i32> = in_b.exec_first(sql, ()).await.expect("b");
    assert_eq!(second, Some(2), "b's statement read b's table");
    // A statement keeps the database it was prepared in, as on a direct connection.
    let mut direct = a.direct().await;
    let statement = direct.prep(sql).await.expect("prepare");
    direct
        .query_drop(format!("USE {}", b.name))
        .await
        .expect("use");
    let expected: Option<i32> = direct.exec_first(&statement, ()).await.expect("direct");
    let through = in_a.prep(sql).await.expect("prepare");
    in_a.query_drop(format!("USE {}", b.name))
        .await
        .expect("use");
    // Client b took the connection meanwhile, so a's statement is prepared again.
    let _: Option<i32> = in_b
        .exec_first("SELECT v + 0 FROM t", ())
        .await
        .expect("b again");
    let got: Option<i32> = in_a.exec_first(&through, ()).await.expect("through");
    assert_eq!(got, expected);
    drop((in_a, in_b, direct));
    proxy.stop().await;
    b.drop_now().await;
    a.drop_now().await;
}
