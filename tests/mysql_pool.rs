//! warpdrive's transaction-mode pool in front of MariaDB: what one client changes in its
//! session never reaches another, what cannot move pins, LAST_INSERT_ID, KILL, limits,
//! and many clients over few connections.

mod common;

use std::time::{Duration, Instant};

use common::mysql::{MysqlDatabase, RawMysql, mysql_deployment};
use common::{Proxy, small_pool};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use warpdrive::config::PoolSettings;
use warpdrive::wire::mysql::response::Expect;

async fn proxy_for(database: &MysqlDatabase, pool: PoolSettings) -> Proxy {
    Proxy::start(mysql_deployment(&database.name, pool)).await
}

async fn read<T: mysql_async::prelude::FromValue + Send + 'static>(
    conn: &mut Conn,
    sql: &str,
) -> T {
    let value: Option<T> = conn.query_first(sql).await.expect(sql);
    value.expect("one row")
}

#[tokio::test]
async fn settings_follow_their_client_and_never_reach_another() {
    let db = MysqlDatabase::create("settings").await;
    let proxy = proxy_for(&db, small_pool(1)).await;
    let mut direct = db.direct().await;
    let fresh_mode: String = read(&mut direct, "SELECT @@session.sql_mode").await;
    let fresh_zone: String = read(&mut direct, "SELECT @@session.time_zone").await;
    let mut a = proxy.mysql(&db.name).await;
    a.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES', time_zone = '+05:00'")
        .await
        .expect("set");
    a.query_drop("SET NAMES latin1").await.expect("names");
    a.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .await
        .expect("isolation");
    // The pool's one connection serves b next: it must look fresh.
    let mut b = proxy.mysql(&db.name).await;
    assert_eq!(
        read::<String>(&mut b, "SELECT @@session.sql_mode").await,
        fresh_mode
    );
    assert_eq!(
        read::<String>(&mut b, "SELECT @@session.time_zone").await,
        fresh_zone
    );
    assert_eq!(
        read::<String>(&mut b, "SELECT @@character_set_client").await,
        "utf8mb4"
    );
    let isolation: String = read(&mut direct, "SELECT @@session.tx_isolation").await;
    assert_eq!(
        read::<String>(&mut b, "SELECT @@session.tx_isolation").await,
        isolation
    );
    // And a gets its own back.
    assert_eq!(
        read::<String>(&mut a, "SELECT @@session.sql_mode").await,
        "ANSI_QUOTES"
    );
    assert_eq!(
        read::<String>(&mut a, "SELECT @@session.time_zone").await,
        "+05:00"
    );
    assert_eq!(
        read::<String>(&mut a, "SELECT @@character_set_results").await,
        "latin1"
    );
    assert_eq!(
        read::<String>(&mut a, "SELECT @@session.tx_isolation").await,
        "SERIALIZABLE"
    );
    assert_eq!(proxy.snapshot().pinned_sessions, 0, "settings do not pin");
    drop((a, b, direct));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn state_changed_inside_a_procedure_pins_and_stays_with_its_client() {
    let db = MysqlDatabase::create("procedure").await;
    let proxy = proxy_for(&db, small_pool(2)).await;
    let mut direct = db.direct().await;
    direct
        .query_drop(
            "CREATE PROCEDURE shift() BEGIN SET @@session.sql_mode = 'ANSI_QUOTES'; SET @@session.time_zone = '+03:00'; SET @@session.max_statement_time = 7; SET @hidden = 1; END",
        )
        .await
        .expect("procedure");
    let fresh_zone: String = read(&mut direct, "SELECT @@session.time_zone").await;
    let fresh_mode: String = read(&mut direct, "SELECT @@session.sql_mode").await;
    // What a direct session looks like after the same call.
    let mut called = db.direct().await;
    called
        .query_drop("CALL shift()")
        .await
        .expect("direct call");
    let called_mode: String = read(&mut called, "SELECT @@session.sql_mode").await;
    drop(called);
    let mut caller = proxy.mysql(&db.name).await;
    caller.query_drop("CALL shift()").await.expect("call");
    assert_eq!(
        read::<String>(&mut caller, "SELECT @@session.sql_mode").await,
        called_mode
    );
    assert_eq!(
        read::<String>(&mut caller, "SELECT @@session.time_zone").await,
        "+03:00"
    );
    assert_eq!(read::<i64>(&mut caller, "SELECT @hidden").await, 1);
    assert_eq!(
        proxy.snapshot().pinned_sessions,
        1,
        "the call pinned its client"
    );
    // Its connection is the caller's alone: a fresh client gets the other one.
    let mut fresh = proxy.mysql(&db.name).await;
    assert_eq!(
        read::<String>(&mut fresh, "SELECT @@session.time_zone").await,
        fresh_zone
    );
    // Reading a user variable pins too: fresh leaves with it.
    assert!(
        read::<Option<i64>>(&mut fresh, "SELECT @hidden")
            .await
            .is_none()
    );
    drop((caller, fresh));
    common::eventually("the pinned connections close with their clients", || {
        proxy.snapshot().origin_connections == 0
    })
    .await;
    // Every connection left is fresh.
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut client = proxy.mysql(&db.name).await;
        client.query_drop("BEGIN").await.expect("begin");
        let zone: String = read(&mut client, "SELECT @@session.time_zone").await;
        assert_eq!(zone, fresh_zone);
        let mode: String = read(&mut client, "SELECT @@session.sql_mode").await;
        assert_eq!(mode, fresh_mode);
        let statement_time: f64 = read(&mut client, "SELECT @@session.max_statement_time").await;
        assert_eq!(statement_time, 0.0);
        clients.push(client);
    }
    drop(clients);
    drop(direct);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn user_variables_temporary_tables_and_locks_pin() {
    let db = MysqlDatabase::create("pins").await;
    let proxy = proxy_for(&db, small_pool(3)).await;
    let mut direct = db.direct().await;
    direct
        .query_drop("CREATE TABLE t (x INT)")
        .await
        .expect("table");
    for (sql, check) in [
        ("SET @x = 41", "SELECT @x + 1"),
        (
            "CREATE TEMPORARY TABLE tmp (y INT) SELECT 42 AS y",
            "SELECT y FROM tmp",
        ),
        (
            "SELECT GET_LOCK('wd_lock', 1)",
            "SELECT IS_USED_LOCK('wd_lock') = CONNECTION_ID() + 0 * 42 + 41 - 41",
        ),
    ] {
        let mut conn = proxy.mysql(&db.name).await;
        conn.query_drop(sql).await.expect(sql);
        // Other clients take the other connections meanwhile.
        let mut others = Vec::new();
        for _ in 0..2 {
            let mut other = proxy.mysql(&db.name).await;
            other.query_drop("BEGIN").await.expect("begin");
            others.push(other);
        }
        let value: i64 = read(&mut conn, check).await;
        assert!(value == 42 || value == 1, "{sql}: {value}");
        drop(others);
        drop(conn);
    }
    assert_eq!(proxy.snapshot().pinned_sessions, 3);
    drop(direct);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn last_insert_id_answers_about_the_clients_own_insert_under_pool_pressure() {
    let db = MysqlDatabase::create("insert_id").await;
    let proxy = proxy_for(&db, small_pool(2)).await;
    let mut setup = proxy.mysql(&db.name).await;
    setup
        .query_drop("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, who INT)")
        .await
        .expect("table");
    drop(setup);
    let mut clients = Vec::new();
    for who in 0..12 {
        let opts = proxy.mysql_opts(Some(&db.name));
        clients.push(tokio::spawn(async move {
            let mut conn = Conn::new(opts).await.expect("connect");
            for _ in 0..10 {
                conn.exec_drop("INSERT INTO t (who) VALUES (?)", (who,))
                    .await
                    .expect("insert");
                let reported = conn.last_insert_id().expect("an id");
                let id: u64 = read(&mut conn, "SELECT LAST_INSERT_ID()").await;
                assert_eq!(id, reported);
                let owner: i32 = conn
                    .exec_first("SELECT who FROM t WHERE id = ?", (id,))
                    .await
                    .expect("read")
                    .expect("row");
                assert_eq!(owner, who, "LAST_INSERT_ID named another client's row");
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn kill_query_reaches_the_origin_thread_of_that_client() {
    let db = MysqlDatabase::create("kill").await;
    let proxy = proxy_for(&db, small_pool(2)).await;
    let mut sleeper = proxy.mysql(&db.name).await;
    let id = sleeper.id();
    let started = Instant::now();
    let sleeping = tokio::spawn(async move {
        let answer: Result<Option<i64>, _> = sleeper.query_first("SELECT SLEEP(10)").await;
        (answer.map_err(|e| e.to_string()), sleeper)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut killer = proxy.mysql(&db.name).await;
    killer
        .query_drop(format!("KILL QUERY {id}"))
        .await
        .expect("kill query");
    let (answer, mut sleeper) = sleeping.await.expect("sleeper");
    assert!(started.elapsed() < Duration::from_secs(5), "interrupted");
    // SLEEP interrupted returns 1 (or the statement fails as interrupted).
    assert!(
        matches!(answer, Ok(Some(1))) || answer.as_ref().is_err_and(|e| e.contains("interrupted")),
        "{answer:?}"
    );
    assert_eq!(
        read::<i64>(&mut sleeper, "SELECT 5").await,
        5,
        "the killed query's client goes on"
    );
    let unknown = killer
        .query_drop(format!("KILL QUERY {}", u32::MAX - 1))
        .await
        .expect_err("unknown");
    assert!(
        unknown.to_string().contains("Unknown thread id"),
        "{unknown}"
    );
    killer
        .query_drop(format!("KILL {id}"))
        .await
        .expect("kill connection");
    assert!(
        sleeper.query_drop("SELECT 1").await.is_err(),
        "a killed connection ends"
    );
    drop(killer);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_move_money_over_five_connections() {
    let db = MysqlDatabase::create("money").await;
    let pool = PoolSettings {
        acquire_timeout: Duration::from_secs(60),
        ..small_pool(5)
    };
    let proxy = proxy_for(&db, pool).await;
    let mut direct = db.direct().await;
    direct
        .query_drop("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT) ENGINE=InnoDB")
        .await
        .expect("table");
    let values: Vec<String> = (0..20).map(|id| format!("({id}, 1000)")).collect();
    direct
        .query_drop(format!("INSERT INTO accounts VALUES {}", values.join(",")))
        .await
        .expect("accounts");
    let mut clients = Vec::new();
    for client in 0..200u32 {
        let opts = proxy.mysql_opts(Some(&db.name));
        clients.push(tokio::spawn(async move {
            let mut conn = Conn::new(opts).await.expect("connect");
            for round in 0..3u32 {
                let from = (client + round) % 20;
                let to = (client * 7 + round + 1) % 20;
                if from == to {
                    continue;
                }
                loop {
                    let transfer = async {
                        conn.query_drop("BEGIN").await?;
                        conn.exec_drop(
                            "UPDATE accounts SET balance = balance - 1 WHERE id = ?",
                            (from,),
                        )
                        .await?;
                        conn.exec_drop(
                            "UPDATE accounts SET balance = balance + 1 WHERE id = ?",
                            (to,),
                        )
                        .await?;
                        conn.query_drop("COMMIT").await
                    };
                    match transfer.await {
                        Ok(()) => break,
                        // A deadlock rolled the transaction back: try again.
                        Err(mysql_async::Error::Server(error)) if error.code == 1213 => continue,
                        Err(error) => panic!("transfer failed: {error}"),
                    }
                }
            }
            conn.disconnect().await.expect("disconnect");
        }));
    }
    for client in clients {
        client.await.expect("client finished");
    }
    let total: i64 = read(&mut direct, "SELECT SUM(balance) FROM accounts").await;
    assert_eq!(total, 20_000);
    assert!(
        proxy.snapshot().origin_connections_opened <= 5,
        "never more than five origin connections"
    );
    drop(direct);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn an_exhausted_pool_answers_1040_and_a_vanished_transaction_is_rolled_back() {
    let db = MysqlDatabase::create("limits").await;
    let pool = PoolSettings {
        acquire_timeout: Duration::from_millis(300),
        ..small_pool(1)
    };
    let proxy = proxy_for(&db, pool).await;
    let mut holder = proxy.mysql(&db.name).await;
    holder
        .query_drop("CREATE TABLE t (x INT) ENGINE=InnoDB")
        .await
        .expect("table");
    holder.query_drop("BEGIN").await.expect("begin");
    holder
        .query_drop("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    // A raw client: mysql_async's own first query would meet the busy pool already.
    let mut waiting = RawMysql::login(proxy.addr, Some(&db.name), 0).await;
    let error = waiting.command(b"\x03SELECT 1").await;
    assert_eq!(error.first(), Some(0xFF));
    let refusal = warpdrive::wire::mysql::reply::ErrPacket::decode(error.payload).expect("ERR");
    assert_eq!(refusal.code, 1040);
    assert!(String::from_utf8_lossy(&refusal.message).contains("pool.max_size"));
    // The holder vanishes mid-transaction: its insert is rolled back, the connection
    // serves the next client.
    drop(holder);
    let mut counted = None;
    for _ in 0..50 {
        let reply = waiting
            .reply(b"\x03SELECT COUNT(*) FROM t", Expect::Results)
            .await;
        if reply[0].first() != Some(0xFF) {
            counted = Some(reply[reply.len() - 2].payload.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        counted.as_deref(),
        Some(&b"\x010"[..]),
        "the vanished client's transaction was rolled back"
    );
    drop(waiting);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test]
async fn an_idle_client_after_a_write_lets_go_of_its_connection_in_time() {
    let db = MysqlDatabase::create("stay").await;
    let pool = PoolSettings {
        acquire_timeout: Duration::from_secs(5),
        stay_after_write_timeout: Duration::from_millis(300),
        ..small_pool(1)
    };
    let proxy = proxy_for(&db, pool).await;
    let mut writer = proxy.mysql(&db.name).await;
    writer
        .query_drop("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY)")
        .await
        .expect("table");
    writer
        .query_drop("INSERT INTO t VALUES ()")
        .await
        .expect("insert");
    // The writer keeps the one connection for its next statement, then lets it go.
    let started = Instant::now();
    let mut other = RawMysql::login(proxy.addr, Some(&db.name), 0).await;
    let reply = other.reply(b"\x03SELECT 1", Expect::Results).await;
    assert_ne!(
        reply[0].first(),
        Some(0xFF),
        "served once the writer let go"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "well before the acquire timeout"
    );
    drop((writer, other));
    proxy.stop().await;
    db.drop_now().await;
}
