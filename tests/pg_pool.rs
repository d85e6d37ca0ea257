//! Pool behaviour under load and failure, against the real PostgreSQL.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::{Proxy, TestDatabase, origin_connections, until_backends};

/// 200 clients, a pool of 5, transfers between accounts: every client finishes, money is
/// conserved, and the origin never sees more connections than the pool's maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_clients_share_five_connections() {
    const CLIENTS: usize = 200;
    const TRANSFERS: usize = 5;
    const POOL: usize = 5;
    let db = TestDatabase::create("bank").await;
    let direct = db.direct().await;
    direct
        .batch_execute("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL); INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 50) g")
        .await
        .unwrap();
    drop(direct);
    // The setup connection's backend lingers a moment after the client closes it; the
    // sampler must not count it.
    until_backends(&db.name, 0).await;
    let proxy = Proxy::for_database(&db, POOL).await;
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (sampling, peak, name) = (Arc::clone(&sampling), Arc::clone(&peak), db.name.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let seen = origin_connections(&name).await;
                peak.fetch_max(seen, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let url = proxy.url(&db.name);
    let mut tasks = Vec::new();
    for client_index in 0..CLIENTS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let (mut client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            for transfer in 0..TRANSFERS {
                let from = ((client_index * 7 + transfer) % 50 + 1) as i32;
                let to = ((client_index * 13 + transfer * 3) % 50 + 1) as i32;
                // Rows are locked in id order so that transfers cannot deadlock.
                let (first, first_delta, second, second_delta) = if from < to {
                    (from, -10i64, to, 10i64)
                } else {
                    (to, 10, from, -10)
                };
                let tx = client.transaction().await?;
                tx.execute(
                    "UPDATE accounts SET balance = balance + $2 WHERE id = $1",
                    &[&first, &first_delta],
                )
                .await?;
                tx.execute(
                    "UPDATE accounts SET balance = balance + $2 WHERE id = $1",
                    &[&second, &second_delta],
                )
                .await?;
                tx.commit().await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        task.await
            .unwrap()
            .unwrap_or_else(|e| panic!("client {i}: {e:?}"));
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let check = db.direct().await;
    let total: i64 = check
        .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 50 * 1000);
    let peak = peak.load(Ordering::Relaxed);
    // The sampler's own count excludes itself (it connects to another database); the
    // check connection above opened after sampling stopped.
    assert!(
        peak <= POOL as i64,
        "origin saw {peak} connections for a pool of {POOL}"
    );
    assert!(peak >= 1);
    drop(check);
    proxy.stop().await;
    db.drop_now().await;
}

/// Backends killed underneath: idle ones are replaced unnoticed; a query in flight gets
/// a clear error, never a hang; the next query works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connections_killed_underneath() {
    let db = TestDatabase::create("killed").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let client = proxy.connect(&db.name).await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let killer = db.direct().await;
    let kill_all = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name
    );
    killer.batch_execute(&kill_all).await.unwrap();
    // Only the killer itself is left.
    common::until_backends(&db.name, 1).await;
    // Idle connection was killed: the next query runs on a fresh connection.
    let two: i32 = client.query_one("SELECT 2", &[]).await.unwrap().get(0);
    assert_eq!(two, 2);
    // Killed while a query runs: a clear error, quickly.
    let sleeper = tokio::spawn({
        let client = proxy.connect(&db.name).await;
        async move {
            let result = client.simple_query("SELECT pg_sleep(30)").await;
            (result.map(|_| ()), client)
        }
    });
    common::until_running(&db.name, "%pg_sleep(30)%").await;
    killer
        .batch_execute(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()", db.name))
        .await
        .unwrap();
    let (result, sleeper_client) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("no hang")
        .unwrap();
    let error = result.unwrap_err();
    let message = format!("{error:?}");
    assert!(
        message.contains("origin connection was lost")
            || message.contains("terminating connection"),
        "{message}"
    );
    let three: i32 = sleeper_client
        .query_one("SELECT 3", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(three, 3);

    // The extended protocol, killed mid-query: an error, then the client goes on.
    let extended = proxy.connect(&db.name).await;
    let statement = extended.prepare("SELECT pg_sleep($1)").await.unwrap();
    let running = extended.query(&statement, &[&30f64]);
    let kill = async {
        common::until_running(&db.name, "%pg_sleep($1)%").await;
        killer
            .batch_execute(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '%pg_sleep($1)%' AND pid <> pg_backend_pid()", db.name))
            .await
            .unwrap();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(running, kill)
    })
    .await
    .expect("no hang");
    assert!(result.is_err());
    let rows = extended.query(&statement, &[&0f64]).await.unwrap();
    assert_eq!(rows.len(), 1);

    // Killed inside a transaction: the transaction is gone, so the client is told and
    // disconnected, as PostgreSQL would, without a hang.
    let in_transaction = proxy.connect(&db.name).await;
    in_transaction.batch_execute("BEGIN").await.unwrap();
    in_transaction.batch_execute("SELECT 1").await.unwrap();
    killer.batch_execute(&kill_all).await.unwrap();
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        in_transaction.batch_execute("SELECT 2"),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    // Told why (or cut off before it asked), then disconnected, as PostgreSQL would.
    let message = format!("{error:?}");
    assert!(
        error.is_closed()
            || message.contains("transaction")
            || message.contains("terminating connection"),
        "{message}"
    );
    common::eventually("the client disconnected", || in_transaction.is_closed()).await;
    drop((client, sleeper_client, extended, in_transaction, killer));
    proxy.stop().await;
    db.drop_now().await;
}

/// A client that disconnects inside a transaction does not leave it open on the
/// connection the next client gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_transactions_are_rolled_back() {
    let db = TestDatabase::create("abandon").await;
    let proxy = Proxy::for_database(&db, 1).await;
    let setup = proxy.connect(&db.name).await;
    setup.batch_execute("CREATE TABLE t (v int)").await.unwrap();
    drop(setup);
    let quitter = proxy.connect(&db.name).await;
    quitter
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    drop(quitter);
    // With one connection, the next client's checkout waits for the rollback.
    let next = proxy.connect(&db.name).await;
    let count: i64 = next
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    let status: String = next
        .query_one(
            "SELECT state FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "active");
    drop(next);
    proxy.stop().await;
    db.drop_now().await;
}

/// With every connection busy, a client waits at most the acquire timeout and gets the
/// documented error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_timeout_error() {
    let db = TestDatabase::create("acquire").await;
    let mut pool = common::small_pool(1);
    pool.acquire_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(common::deployment(&db.name, pool)).await;
    let holder = proxy.connect(&db.name).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let waiter = proxy
        .connect_checked(&db.name)
        .await
        .expect("startup uses the baseline, not a connection");
    let error = waiter.simple_query("SELECT 1").await.unwrap_err();
    let db_error = error.as_db_error().expect("a server error");
    assert_eq!(db_error.code().code(), "58000");
    assert_eq!(
        db_error.message(),
        "Failed to acquire a connection from the pool."
    );
    assert_eq!(proxy.snapshot().acquire_timeouts, 1);
    holder.batch_execute("COMMIT").await.unwrap();
    let one: i32 = waiter.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop((holder, waiter));
    proxy.stop().await;
    db.drop_now().await;
}

/// min_idle connections are opened ahead of demand; idle ones above it close after
/// idle_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_and_idle_timeout() {
    let db = TestDatabase::create("idle").await;
    let mut pool = common::small_pool(4);
    pool.min_idle = 2;
    pool.idle_timeout = Duration::from_secs(1);
    let proxy = Proxy::start(common::deployment(&db.name, pool)).await;
    let mut warmed = 0;
    for _ in 0..50 {
        warmed = origin_connections(&db.name).await;
        if warmed >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(warmed, 2, "min_idle connections opened at start");
    // Four clients in transactions at once: four connections.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let client = proxy.connect(&db.name).await;
        client.batch_execute("BEGIN").await.unwrap();
        clients.push(client);
    }
    assert_eq!(origin_connections(&db.name).await, 4);
    for client in &clients {
        client.batch_execute("COMMIT").await.unwrap();
    }
    drop(clients);
    let mut settled = 0;
    for _ in 0..60 {
        settled = origin_connections(&db.name).await;
        if settled == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        settled, 2,
        "idle connections above min_idle closed after idle_timeout"
    );
    let snapshot = proxy.snapshot();
    assert_eq!(snapshot.origin_connections, 2);
    assert_eq!(snapshot.origin_connections_opened, 4);
    proxy.stop().await;
    db.drop_now().await;
}

/// Another database's pool stays warm only while clients use it, and a database created
/// and used through warpdrive can be dropped through it without FORCE (createdb, dropdb
/// and test suites do exactly this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_of_other_databases_let_go() {
    let db = TestDatabase::create("letgo").await;
    let mut pool = common::small_pool(4);
    pool.min_idle = 2;
    pool.idle_timeout = Duration::from_secs(1);
    let proxy = Proxy::start(common::deployment(&db.name, pool)).await;
    let admin = proxy.connect(&db.name).await;
    let other = format!("{}_other", db.name);
    admin
        .batch_execute(&format!("CREATE DATABASE {other}"))
        .await
        .unwrap();
    let client = proxy.connect(&other).await;
    client.batch_execute("SELECT 1").await.unwrap();
    drop(client);
    let mut held = i64::MAX;
    for _ in 0..80 {
        held = origin_connections(&other).await;
        if held == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held, 0, "an unused pool of another database let go of it");
    assert!(
        origin_connections(&db.name).await >= 2,
        "the origin URL's database stays warm"
    );
    // Used again, then dropped at once: warpdrive's idle connections close first.
    let client = proxy.connect(&other).await;
    client.batch_execute("SELECT 1").await.unwrap();
    drop(client);
    admin
        .batch_execute(&format!("DROP DATABASE {other}"))
        .await
        .expect("DROP DATABASE through warpdrive, without FORCE");
    drop(admin);
    proxy.stop().await;
    db.drop_now().await;
}

/// Shutdown: idle clients are told and disconnected at once; a client in a transaction
/// may finish it; new clients are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains() {
    let db = TestDatabase::create("drain").await;
    let server = warpdrive::server::Server::bind(warpdrive::config::Config {
        deployments: vec![common::deployment(&db.name, common::small_pool(2))],
        admin: None,
        rules: None,
    })
    .await
    .unwrap()
    .with_drain_timeout(Duration::from_secs(10));
    let addr = server.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let url = format!(
        "host=127.0.0.1 port={} user=postgres password={} dbname={}",
        addr.port(),
        common::PASSWORD,
        db.name
    );
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>((client, connection))
    };
    let (idle, idle_connection) = connect().await.unwrap();
    let (busy, _busy_connection) = connect().await.unwrap();
    busy.batch_execute("CREATE TABLE t (v int); BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let _ = stop.send(());
    // The idle client's connection ends promptly.
    tokio::time::timeout(Duration::from_secs(5), idle_connection)
        .await
        .expect("idle session closed at shutdown")
        .unwrap()
        .ok();
    assert!(idle.is_closed());
    // The client in a transaction finishes it.
    busy.batch_execute("INSERT INTO t VALUES (2); COMMIT")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("drained")
        .unwrap();
    assert!(connect().await.is_err(), "no new clients after shutdown");
    let count: i64 = db
        .direct()
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
    db.drop_now().await;
}

/// Idle connections get the empty query as a health check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_health_checked() {
    let db = TestDatabase::create("health").await;
    let mut pool = common::small_pool(2);
    pool.min_idle = 1;
    pool.health_check_interval = Duration::from_millis(500);
    let proxy = Proxy::start(common::deployment(&db.name, pool)).await;
    let direct = db.direct().await;
    let mut checked = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rows = direct
            .query(
                "SELECT query FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db.name],
            )
            .await
            .unwrap();
        if rows.iter().any(|row| row.get::<_, &str>(0) == ";") {
            checked = true;
            break;
        }
    }
    assert!(checked, "no health check reached the origin");
    drop(direct);
    proxy.stop().await;
    db.drop_now().await;
}
