//! The query-result cache over MySQL, against the local MariaDB: freshness on a manual
//! clock for text and binary protocol, every status, what is never stored, byte
//! identity of hits, statements shared by clients, single flight.

mod common;

use std::time::Duration;

use common::Proxy;
use common::mysql::{MysqlDatabase, RawMysql, cached_mysql_deployment};
use mysql_async::prelude::Queryable;
use warpdrive::clock::ManualClock;
use warpdrive::wire::mysql::caps;
use warpdrive::wire::mysql::response::Expect;

/// Fresh, stale (served while one refresh runs), then expired, for COM_QUERY and for
/// COM_STMT_EXECUTE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_then_stale_then_expired_text_and_binary() {
    let db = MysqlDatabase::create("fresh").await;
    db.run("CREATE TABLE v (id INT PRIMARY KEY, n INT); INSERT INTO v VALUES (1, 1)")
        .await;
    let manual = ManualClock::new();
    let proxy = Proxy::start_with_clock(cached_mysql_deployment(&db, 2), manual.clock()).await;
    let mut client = proxy.mysql(&db.name).await;
    let text = "SELECT n FROM v WHERE id = 1";
    let binary = "SELECT n FROM v WHERE id = ?";
    macro_rules! reads {
        () => {
            (
                client.query_first::<i64, _>(text).await.unwrap().unwrap(),
                client
                    .exec_first::<i64, _, _>(binary, (1,))
                    .await
                    .unwrap()
                    .unwrap(),
            )
        };
    }
    assert_eq!(reads!(), (1, 1));
    let misses = proxy.count("miss");
    db.run("UPDATE v SET n = 2").await;
    manual.advance(Duration::from_secs(59));
    assert_eq!(
        reads!(),
        (1, 1),
        "within max_age both are served from the cache"
    );
    assert_eq!(proxy.count("hit"), 2);
    manual.advance(Duration::from_secs(2));
    assert_eq!(reads!(), (1, 1), "within stale_while_revalidate: stale");
    common::eventually("both revalidations", || {
        proxy.snapshot().revalidations_ok == 2
    })
    .await;
    assert_eq!(reads!(), (2, 2), "refreshed in the background");
    assert_eq!(proxy.snapshot().stale_served, 2);
    db.run("UPDATE v SET n = 3").await;
    manual.advance(Duration::from_secs(80));
    assert_eq!(reads!(), (3, 3), "expired: asked again");
    assert_eq!(proxy.count("miss"), misses + 2);
    client.disconnect().await.unwrap();
    proxy.stop().await;
    db.drop_now().await;
}

/// Each of the eleven statuses is reached and counted once per query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_is_reached_and_counted() {
    let db = MysqlDatabase::create("statuses").await;
    db.run("CREATE TABLE t (n INT); INSERT INTO t VALUES (1); CREATE TABLE private (n INT)")
        .await;
    let mut deployment = cached_mysql_deployment(&db, 2);
    deployment.cache.max_result_bytes = 4096;
    deployment
        .cache
        .rules
        .push(common::caching_off_for("private"));
    let proxy = Proxy::start(deployment).await;
    let opts = proxy.mysql_opts(Some(&db.name)).client_found_rows(false);
    let mut client = mysql_async::Conn::new(opts).await.unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("miss", "SELECT n FROM t".into()),
        ("hit", "SELECT n FROM t".into()),
        ("uncacheable", "UPDATE t SET n = n".into()),
        ("uncacheable", "SELECT n FROM t FOR UPDATE".into()),
        ("uncacheable", "SELECT n FROM t LOCK IN SHARE MODE".into()),
        ("multiplestatements", "SELECT 1; SELECT 2".into()),
        ("notaquery", "SHOW TABLES".into()),
        ("volatile", "SELECT RAND()".into()),
        ("volatile", "SELECT @@session.sql_mode".into()),
        ("volatile", "SELECT SQL_CALC_FOUND_ROWS n FROM t".into()),
        (
            "parseerror",
            "SELECT 1 FROM DUAL PROCEDURE ANALYSE()".into(),
        ),
        ("disabled", "SELECT n FROM private".into()),
        (
            "disabled",
            "/* warpdrive: no-cache */ SELECT n FROM t".into(),
        ),
        ("oversizedresult", "SELECT REPEAT('x', 10000)".into()),
        (
            "oversizedquery",
            format!("SELECT '{}'", "x".repeat(1_100_000)),
        ),
    ];
    for (status, sql) in cases {
        let counted = proxy.count(status);
        client
            .query_iter(sql.as_str())
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"))
            .drop_result()
            .await
            .unwrap();
        assert_eq!(
            proxy.count(status),
            counted + 1,
            "{status} for {}",
            &sql[..sql.len().min(60)]
        );
    }
    let counted = proxy.count("transaction");
    for sql in [
        "BEGIN",
        "SELECT n FROM t",
        "COMMIT",
        "SET autocommit = 0",
        "SELECT n FROM t",
        "SET autocommit = 1",
    ] {
        client.query_drop(sql).await.unwrap();
    }
    assert_eq!(proxy.count("transaction"), counted + 2);
    client.disconnect().await.unwrap();
    proxy.stop().await;

    let mut off = cached_mysql_deployment(&db, 1);
    off.cache.enabled = false;
    let proxy = Proxy::start(off).await;
    let mut client = proxy.mysql(&db.name).await;
    let disabled = proxy.count("disabled");
    client.query_drop("SELECT n FROM t").await.unwrap();
    client.query_drop("SELECT n FROM t").await.unwrap();
    assert_eq!(proxy.count("disabled"), disabled + 2);
    assert_eq!(proxy.count("hit"), 0);
    assert_eq!(proxy.snapshot().protocol, "mysql");
    client.disconnect().await.unwrap();
    proxy.stop().await;
    db.drop_now().await;
}

/// Results with warnings, of several statements, reading variables or through a
/// cursor are answered by the origin every time, and never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_may_not_be_stored_never_is() {
    let db = MysqlDatabase::create("unstored").await;
    db.run("CREATE TABLE t (n INT); INSERT INTO t VALUES (1), (2)")
        .await;
    let proxy = Proxy::start(cached_mysql_deployment(&db, 2)).await;
    let mut client = proxy.mysql(&db.name).await;
    let entries = || proxy.snapshot().entries;
    for _ in 0..2 {
        let truncated: Option<i64> = client
            .query_first("SELECT CAST('x' AS SIGNED) FROM t LIMIT 1")
            .await
            .unwrap();
        assert_eq!(truncated, Some(0));
        let warnings: Vec<(String, u32, String)> = client.query("SHOW WARNINGS").await.unwrap();
        assert_eq!(warnings.len(), 1, "the origin's warning, every time");
    }
    assert_eq!(entries(), 0);
    assert_eq!(proxy.snapshot().results_with_warnings, 2);
    // User variables: volatile, and the client is pinned from then on.
    for _ in 0..2 {
        client.query_drop("SET @x = 5").await.unwrap();
        let x: Option<i64> = client
            .query_first("SELECT @x + n FROM t LIMIT 1")
            .await
            .unwrap();
        assert_eq!(x, Some(6));
    }
    assert_eq!(entries(), 0);
    client.disconnect().await.unwrap();

    // Multi-statement results and cursors, packet by packet.
    let mut raw = RawMysql::login(
        proxy.addr,
        Some(&db.name),
        caps::MULTI_STATEMENTS | caps::MULTI_RESULTS | caps::DEPRECATE_EOF,
    )
    .await;
    for _ in 0..2 {
        let packets = raw
            .reply(b"\x03SELECT n FROM t; SELECT n FROM t", Expect::Results)
            .await;
        assert!(packets.len() > 6, "both results");
    }
    let prepared = raw.reply(b"\x16SELECT n FROM t", Expect::Prepare).await;
    let id = u32::from_le_bytes(prepared[0].payload[1..5].try_into().unwrap());
    let mut execute = vec![0x17];
    execute.extend_from_slice(&id.to_le_bytes());
    execute.extend_from_slice(&[1, 1, 0, 0, 0]);
    for _ in 0..2 {
        let opened = raw.reply(&execute, Expect::Results).await;
        assert!(!opened.is_empty());
        let mut fetch = vec![0x1C];
        fetch.extend_from_slice(&id.to_le_bytes());
        fetch.extend_from_slice(&10u32.to_le_bytes());
        let rows = raw.reply(&fetch, Expect::Rows).await;
        assert_eq!(rows.len(), 3, "two rows and the end");
    }
    assert_eq!(entries(), 0);
    assert_eq!(proxy.count("hit"), 0);
    proxy.stop().await;
    db.drop_now().await;
}

/// Every common column type and NULL, as text and binary rows, with and without
/// CLIENT_DEPRECATE_EOF: a hit's packets equal the miss's, sequence ids included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_byte_for_byte_the_miss() {
    let db = MysqlDatabase::create("bytes").await;
    db.run(
        "CREATE TABLE typed (
            id INT PRIMARY KEY, tiny TINYINT, small SMALLINT UNSIGNED, big BIGINT,
            dec_col DECIMAL(10,3), f FLOAT, d DOUBLE, s VARCHAR(20), c CHAR(3),
            t TEXT, b VARBINARY(8), bl BLOB, dt DATETIME(3), da DATE, ti TIME,
            ts TIMESTAMP NULL, y YEAR, e ENUM('a','b'), j JSON, bit_col BIT(5));
         INSERT INTO typed VALUES
            (1, -5, 65000, 9007199254740993, -12.345, 1.5, 2.25, 'héllo', 'ab',
             'long text', X'00FF10', X'0102', '2024-02-29 12:34:56.789', '2024-01-01',
             '-838:59:59', '2024-03-01 00:00:00', 2024, 'b', '{\"k\": [1, 2]}', b'10101'),
            (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
             NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .await;
    let proxy = Proxy::start(cached_mysql_deployment(&db, 2)).await;
    let sql = "SELECT * FROM typed ORDER BY id";
    for extra in [0, caps::DEPRECATE_EOF] {
        let mut raw = RawMysql::login(proxy.addr, Some(&db.name), extra).await;
        let mut query = vec![0x03];
        query.extend_from_slice(sql.as_bytes());
        let miss = raw.reply(&query, Expect::Results).await;
        let hit = raw.reply(&query, Expect::Results).await;
        assert_eq!(miss, hit, "text, capabilities {extra:#x}");
        let mut prepare = vec![0x16];
        prepare.extend_from_slice(b"SELECT * FROM typed WHERE id >= ? ORDER BY id");
        let prepared = raw.reply(&prepare, Expect::Prepare).await;
        let id = u32::from_le_bytes(prepared[0].payload[1..5].try_into().unwrap());
        let mut execute = vec![0x17];
        execute.extend_from_slice(&id.to_le_bytes());
        // No cursor, one iteration, no NULLs, types bound: one LONGLONG, 1.
        execute.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 0x08, 0]);
        execute.extend_from_slice(&1i64.to_le_bytes());
        let miss = raw.reply(&execute, Expect::Results).await;
        let hit = raw.reply(&execute, Expect::Results).await;
        assert_eq!(miss, hit, "binary, capabilities {extra:#x}");
        assert_eq!(miss.len(), hit.len());
    }
    assert_eq!(proxy.count("hit"), 4);
    assert_eq!(proxy.count("miss"), 4);
    proxy.stop().await;
    db.drop_now().await;
}

/// One statement, prepared by three clients under different ids, executed with
/// repeated and new parameters: right rows, and a hit exactly for each repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_share_a_statements_entries_by_its_parameters() {
    let db = MysqlDatabase::create("shared").await;
    db.run(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(10));
         INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, 'four')",
    )
    .await;
    let proxy = Proxy::start(cached_mysql_deployment(&db, 2)).await;
    let sql = "SELECT name FROM items WHERE id = ?";
    let mut clients = Vec::new();
    for index in 0..3 {
        let mut client = proxy.mysql(&db.name).await;
        for _ in 0..index {
            // Other statements first: the shared one gets another id on each client.
            client
                .prep(format!("SELECT {index} FROM items"))
                .await
                .unwrap();
        }
        clients.push(client);
    }
    let names = ["", "one", "two", "three", "four"];
    let plan = [
        (0, 1),
        (1, 1),
        (2, 2),
        (0, 2),
        (1, 3),
        (2, 1),
        (0, 4),
        (1, 4),
    ];
    let mut seen = std::collections::HashSet::new();
    let mut hits_expected = 0;
    for (client, id) in plan {
        let hits = proxy.count("hit");
        let name: Option<String> = clients[client].exec_first(sql, (id,)).await.unwrap();
        assert_eq!(name.as_deref(), Some(names[id as usize]));
        let repeat = !seen.insert(id);
        hits_expected += usize::from(repeat);
        assert_eq!(
            proxy.count("hit"),
            hits + u64::from(repeat),
            "client {client}, id {id}"
        );
    }
    assert_eq!(proxy.count("hit"), hits_expected as u64);
    // Unsigned and signed parameters of one value are different requests.
    let unsigned: Option<String> = clients[0].exec_first(sql, (2u64,)).await.unwrap();
    assert_eq!(unsigned.as_deref(), Some("two"));
    for client in clients {
        client.disconnect().await.unwrap();
    }
    proxy.stop().await;
    db.drop_now().await;
}

/// A hundred clients send one slow query at once: the origin runs it once, the others
/// wait for its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_reaches_the_origin_once() {
    let db = MysqlDatabase::create("stampede").await;
    db.run(
        // Not `slow`: MariaDB notes that it shadows a native function, and a result
        // with a note is not stored.
        "CREATE FUNCTION pause_then(x INT) RETURNS INT DETERMINISTIC NO SQL
         BEGIN DO SLEEP(0.5); RETURN x; END",
    )
    .await;
    let proxy = Proxy::start(cached_mysql_deployment(&db, 4)).await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(proxy.mysql(&db.name).await);
    }
    let misses = proxy.count("miss");
    let reads = clients.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let value: Option<i64> = client.query_first("SELECT pause_then(7)").await.unwrap();
            client.disconnect().await.unwrap();
            value
        })
    });
    for read in futures_util::future::join_all(reads).await {
        assert_eq!(read.unwrap(), Some(7));
    }
    assert_eq!(
        proxy.count("miss"),
        misses + 1,
        "one query reached the origin"
    );
    assert_eq!(proxy.count("hit"), 99);
    assert!(proxy.snapshot().coalesced_waits >= 1);
    proxy.stop().await;
    db.drop_now().await;
}

/// A view over a volatile function is volatile; a view over a table is cached as a
/// read of the table, and a write to the table through warpdrive reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_judged_by_their_definitions() {
    let db = MysqlDatabase::create("views").await;
    db.run(
        "CREATE TABLE prices (id INT PRIMARY KEY, cents INT);
         INSERT INTO prices VALUES (1, 100);
         CREATE VIEW euros AS SELECT id, cents / 100 AS euros FROM prices;
         CREATE VIEW lucky AS SELECT id, RAND() AS r FROM prices;
         CREATE VIEW outer_view AS SELECT * FROM euros",
    )
    .await;
    let proxy = Proxy::start(cached_mysql_deployment(&db, 2)).await;
    let mut client = proxy.mysql(&db.name).await;
    let volatile = proxy.count("volatile");
    client.query_drop("SELECT r FROM lucky").await.unwrap();
    client.query_drop("SELECT r FROM lucky").await.unwrap();
    assert_eq!(proxy.count("volatile"), volatile + 2);
    let read = "SELECT euros FROM outer_view WHERE id = 1";
    let euros: Option<String> = client.query_first(read).await.unwrap();
    assert_eq!(euros.as_deref(), Some("1.0000"));
    let hits = proxy.count("hit");
    client.query_drop(read).await.unwrap();
    assert_eq!(proxy.count("hit"), hits + 1);
    client
        .query_drop("UPDATE prices SET cents = 250")
        .await
        .unwrap();
    let euros: Option<String> = client.query_first(read).await.unwrap();
    assert_eq!(
        euros.as_deref(),
        Some("2.5000"),
        "the write reached the view's read"
    );
    // A view created through warpdrive is known at once.
    client
        .query_drop("CREATE VIEW later AS SELECT UUID() AS u FROM prices")
        .await
        .unwrap();
    let volatile = proxy.count("volatile");
    client.query_drop("SELECT u FROM later").await.unwrap();
    assert_eq!(proxy.count("volatile"), volatile + 1);
    assert_eq!(
        proxy.snapshot().catalog_reads,
        2,
        "read for the first read, again after the DDL"
    );
    client.disconnect().await.unwrap();
    proxy.stop().await;
    db.drop_now().await;
}

/// A client without a current database never runs in another client's: a connection
/// that has one is not given to it (MySQL cannot go back to none), and what it reads is
/// not cached (its connection's database would not be in the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_a_database_gets_none() {
    let db = MysqlDatabase::create("nodb").await;
    db.run("CREATE TABLE t (n INT); INSERT INTO t VALUES (1)")
        .await;
    let mut deployment = cached_mysql_deployment(&db, 1);
    deployment.origin.database = String::new();
    let proxy = Proxy::start(deployment).await;
    let mut user = mysql_async::Conn::new(proxy.mysql_opts(None))
        .await
        .unwrap();
    user.query_drop(format!("USE {}", db.name)).await.unwrap();
    let qualified = format!("SELECT n FROM {}.t", db.name);
    let _: Option<i64> = user.query_first(&qualified).await.unwrap();
    drop(user);
    let mut none = mysql_async::Conn::new(proxy.mysql_opts(None))
        .await
        .unwrap();
    for _ in 0..2 {
        let current: Option<Option<String>> = none.query_first("SELECT DATABASE()").await.unwrap();
        assert_eq!(current, Some(None), "no database, as on a server");
        let n: Option<i64> = none.query_first(&qualified).await.unwrap();
        assert_eq!(n, Some(1));
    }
    assert_eq!(proxy.count("hit"), 0);
    none.disconnect().await.unwrap();
    proxy.stop().await;
    db.drop_now().await;
}

/// Lifetimes and policy as for PostgreSQL: empty results live empty_max_age, a table
/// rule and a fingerprint rule and a hint set their own, stable functions follow
/// stable_functions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_hints_empty_results_and_stable_functions() {
    use warpdrive::analyze::StableFunctions;
    use warpdrive::config::CacheRule;
    let db = MysqlDatabase::create("lifetimes").await;
    db.run(
        "CREATE TABLE t (n INT); INSERT INTO t VALUES (1);
         CREATE TABLE prices (p INT); INSERT INTO prices VALUES (10)",
    )
    .await;
    let mut deployment = cached_mysql_deployment(&db, 2);
    deployment.cache.max_age = Duration::from_secs(60);
    deployment.cache.stale_while_revalidate = Duration::ZERO;
    deployment.cache.empty_max_age = Some(Duration::from_secs(5));
    deployment.cache.stable_functions = StableFunctions::Bypass;
    let rule = |tables: Vec<String>, fingerprint: Option<String>, seconds: u64| CacheRule {
        tables,
        fingerprint,
        enabled: None,
        max_age: Some(Duration::from_secs(seconds)),
        stale_while_revalidate: None,
    };
    deployment
        .cache
        .rules
        .push(rule(vec!["prices".into()], None, 2));
    let by_shape = "SELECT n FROM t WHERE n < 100";
    let fingerprint = warpdrive::analyze::Analyzer::with_builtin_rules(Default::default())
        .analyze(warpdrive::analyze::Dialect::Mysql, by_shape)
        .fingerprint;
    deployment
        .cache
        .rules
        .push(rule(Vec::new(), Some(fingerprint), 4));
    let manual = ManualClock::new();
    let proxy = Proxy::start_with_clock(deployment, manual.clock()).await;
    let mut client = proxy.mysql(&db.name).await;
    let empty = "SELECT n FROM t WHERE n = 42";
    let hinted = "/* warpdrive: max_age=3 */ SELECT n FROM t";
    let reads = [
        empty,
        "SELECT n FROM t",
        "SELECT p FROM prices",
        hinted,
        by_shape,
    ];
    for sql in reads {
        let rows: Vec<i64> = client.query(sql).await.unwrap();
        assert_eq!(rows.len(), usize::from(sql != empty), "{sql}");
    }
    db.run("INSERT INTO t VALUES (42); INSERT INTO prices VALUES (20)")
        .await;
    // The rows each read returns: the origin's now, or the cached ones.
    macro_rules! read {
        ($sql:expr) => {
            client.query::<i64, _>($sql).await.unwrap().len()
        };
    }
    manual.advance(Duration::from_secs(1));
    assert_eq!(read!(empty), 0, "empty, fresh");
    assert_eq!(read!("SELECT p FROM prices"), 1, "rule: fresh for 2 s");
    assert_eq!(read!(hinted), 1, "hint: fresh for 3 s");
    manual.advance(Duration::from_secs(2));
    assert_eq!(read!("SELECT p FROM prices"), 2, "rule: expired at 2 s");
    assert_eq!(read!(by_shape), 1, "fingerprint rule: fresh for 4 s");
    manual.advance(Duration::from_secs(1));
    assert_eq!(read!(hinted), 2, "hint: expired at 3 s");
    assert_eq!(read!(empty), 0, "empty: fresh until 5 s");
    assert_eq!(read!(by_shape), 2, "fingerprint rule: expired at 4 s");
    manual.advance(Duration::from_secs(2));
    assert_eq!(read!(empty), 1, "empty: expired at 5 s");
    assert_eq!(read!("SELECT n FROM t"), 1, "max_age: still fresh at 6 s");
    let volatile = proxy.count("volatile");
    client.query_drop("SELECT NOW()").await.unwrap();
    assert_eq!(
        proxy.count("volatile"),
        volatile + 1,
        "stable_functions = bypass"
    );
    client.disconnect().await.unwrap();
    proxy.stop().await;
    db.drop_now().await;
}

/// The active role changes what a session may read, and the origin reports no change
/// for it: SET ROLE pins the client, whose reads then bypass the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_pins_the_client_and_bypasses_the_cache() {
    let db = MysqlDatabase::create("role").await;
    db.run("CREATE TABLE t (n INT); INSERT INTO t VALUES (1)")
        .await;
    let proxy = Proxy::start(cached_mysql_deployment(&db, 2)).await;
    let mut client = proxy.mysql(&db.name).await;
    client.query_drop("SELECT n FROM t").await.unwrap();
    client.query_drop("SET ROLE NONE").await.unwrap();
    assert_eq!(proxy.snapshot().pinned_sessions, 1);
    let bypassed = proxy.snapshot().pinned_bypasses;
    client.query_drop("SELECT n FROM t").await.unwrap();
    assert_eq!(proxy.snapshot().pinned_bypasses, bypassed + 1);
    assert_eq!(proxy.count("hit"), 0);
    client.disconnect().await.unwrap();
    proxy.stop().await;
    db.drop_now().await;
}

/// DDL straight at the origin is seen once the catalog is re-read in the background,
/// after `pool.catalog_max_age`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_read_again_after_catalog_max_age() {
    let db = MysqlDatabase::create("catalog_age").await;
    db.run("CREATE TABLE t (n INT); INSERT INTO t VALUES (1)")
        .await;
    let mut deployment = cached_mysql_deployment(&db, 2);
    deployment.pool.catalog_max_age = Duration::from_millis(200);
    let proxy = Proxy::start(deployment).await;
    let mut client = proxy.mysql(&db.name).await;
    client.query_drop("SELECT n FROM t").await.unwrap();
    assert_eq!(proxy.snapshot().catalog_reads, 1);
    db.run("CREATE VIEW lucky AS SELECT RAND() AS r FROM t")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Old enough: this read starts a read of the catalog in the background.
    client.query_drop("SELECT n FROM t").await.unwrap();
    common::eventually("the background read", || {
        proxy.snapshot().catalog_reads == 2
    })
    .await;
    let volatile = proxy.count("volatile");
    client.query_drop("SELECT r FROM lucky").await.unwrap();
    assert_eq!(
        proxy.count("volatile"),
        volatile + 1,
        "the new view is known"
    );
    client.disconnect().await.unwrap();
    proxy.stop().await;
    db.drop_now().await;
}
