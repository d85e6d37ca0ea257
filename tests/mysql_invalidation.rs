//! Read-your-writes over MySQL, against the local MariaDB and the Redis on
//! 127.0.0.1:6379: every kind of write through warpdrive reaches the cached reads of
//! what it wrote, for the writer, for other clients and for other instances; inside a
//! transaction at COMMIT. A differential run checks freshness bounds over a random mix.

mod common;

use std::time::{Duration, Instant};

use common::Proxy;
use common::mysql::{MysqlDatabase, cached_mysql_deployment};
use common::tier::{Prefix, REDIS, until_up};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use warpdrive::cache::tier::Consistency;
use warpdrive::clock::ManualClock;

async fn count(client: &mut Conn, sql: &str) -> i64 {
    client
        .query_first::<i64, _>(sql)
        .await
        .expect("read")
        .expect("a row")
}

/// Each covered kind of write, named as users name tables (backticks, the database,
/// another current database), is read back at once by the writer and by another
/// client; the read in between is a hit, so the write is what made the next one fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_write_reaches_the_reads_of_its_tables() {
    let db = MysqlDatabase::create("writes").await;
    let other = MysqlDatabase::create("writes_other").await;
    db.run(
        "CREATE TABLE t (id INT PRIMARY KEY, n INT);
         CREATE TABLE u (id INT PRIMARY KEY, n INT);
         INSERT INTO t VALUES (1, 1); INSERT INTO u VALUES (1, 1)",
    )
    .await;
    let proxy = Proxy::start(cached_mysql_deployment(&db, 3)).await;
    let path = std::env::temp_dir().join(format!("{}.tsv", db.name));
    std::fs::write(&path, "100\t1\n101\t1\n").expect("file");
    let handler = mysql_async::WhiteListFsHandler::new([path.clone()]);
    let opts = proxy
        .mysql_opts(Some(&db.name))
        .local_infile_handler(Some(handler));
    let mut writer = Conn::new(opts).await.expect("connect");
    let mut reader = proxy.mysql(&db.name).await;
    let mut elsewhere = proxy.mysql(&other.name).await;
    let name = &db.name;
    let read_t = "SELECT COUNT(*) * 1000 + COALESCE(SUM(n), 0) FROM t";
    let read_u = format!("SELECT COUNT(*) * 1000 + COALESCE(SUM(n), 0) FROM `{name}`.`u`");
    // Whether the write comes from a client in another database, and the write.
    let writes: Vec<(bool, String)> = vec![
        (false, "INSERT INTO t VALUES (2, 2)".into()),
        (false, "REPLACE INTO `t` VALUES (2, 5)".into()),
        (false, format!("UPDATE `{name}`.`t` SET n = n + 1")),
        (true, format!("DELETE FROM {name}.t WHERE id = 2")),
        (
            false,
            "UPDATE t JOIN u ON t.id = u.id SET t.n = 7, u.n = 7".into(),
        ),
        (
            true,
            format!("DELETE {name}.u FROM {name}.u JOIN {name}.t ON u.id = t.id WHERE t.n = 7"),
        ),
        (
            false,
            format!("LOAD DATA LOCAL INFILE '{}' INTO TABLE t", path.display()),
        ),
        (false, "INSERT INTO u VALUES (9, 9)".into()),
        (false, "TRUNCATE TABLE t".into()),
        (false, "ALTER TABLE u ADD COLUMN extra INT".into()),
        (true, format!("DROP TABLE {name}.u")),
    ];
    let mut direct = db.direct().await;
    for (from_elsewhere, sql) in writes {
        // Cached on both sides of the write: the second read is a hit.
        let _ = count(&mut reader, read_t).await;
        let hits = proxy.count("hit");
        let _ = count(&mut reader, read_t).await;
        assert_eq!(proxy.count("hit"), hits + 1, "cached before {sql}");
        let u_cached = match sql.contains("DROP") {
            true => None,
            false => Some(count(&mut reader, &read_u).await),
        };
        let client = match from_elsewhere {
            true => &mut elsewhere,
            false => &mut writer,
        };
        client
            .query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let want_t = count(&mut direct, read_t).await;
        let own_read = format!("SELECT COUNT(*) * 1000 + COALESCE(SUM(n), 0) FROM {name}.t");
        assert_eq!(
            count(client, &own_read).await,
            want_t,
            "the writer after {sql}"
        );
        assert_eq!(
            count(&mut reader, read_t).await,
            want_t,
            "another client after {sql}"
        );
        if u_cached.is_some() && !sql.contains("DROP") {
            let want_u = count(&mut direct, &read_u).await;
            assert_eq!(count(&mut reader, &read_u).await, want_u, "u after {sql}");
        }
    }
    let _ = std::fs::remove_file(&path);
    for client in [writer, reader, elsewhere, direct] {
        client.disconnect().await.unwrap();
    }
    proxy.stop().await;
    db.drop_now().await;
    other.drop_now().await;
}

/// A statement's names resolve in the database it was prepared in, also after USE: it
/// reads that database's table, and a write to it is read at once. (MariaDB switches to
/// the statement's database and back for each such execute and reports the switch: the
/// result is not stored, and the client is not pinned for it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_reads_the_database_it_was_prepared_in_after_use() {
    let db = MysqlDatabase::create("prepared_in").await;
    let other = MysqlDatabase::create("prepared_other").await;
    db.run("CREATE TABLE t (id INT PRIMARY KEY, n INT); INSERT INTO t VALUES (1, 1)")
        .await;
    other
        .run("CREATE TABLE t (id INT PRIMARY KEY, n INT); INSERT INTO t VALUES (1, 100)")
        .await;
    let proxy = Proxy::start(cached_mysql_deployment(&db, 3)).await;
    let mut reader = proxy.mysql(&db.name).await;
    let mut writer = proxy.mysql(&db.name).await;
    let statement = reader.prep("SELECT n FROM t WHERE id = ?").await.unwrap();
    reader
        .query_drop(format!("USE {}", other.name))
        .await
        .unwrap();
    for _ in 0..2 {
        let seen: Option<i64> = reader.exec_first(&statement, (1,)).await.unwrap();
        assert_eq!(
            seen,
            Some(1),
            "the table of the database it was prepared in"
        );
    }
    assert_eq!(proxy.snapshot().pinned_sessions, 0);
    writer.query_drop("UPDATE t SET n = 2").await.unwrap();
    let seen: Option<i64> = reader.exec_first(&statement, (1,)).await.unwrap();
    assert_eq!(seen, Some(2), "the write is read");
    reader.disconnect().await.unwrap();
    writer.disconnect().await.unwrap();
    proxy.stop().await;
    db.drop_now().await;
    other.drop_now().await;
}

/// Inside a transaction a write is not visible to others until COMMIT, and once
/// committed it is: the cached read before the commit stays until then, never after.
/// A rolled-back write leaves the entry alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_a_transaction_is_fresh_at_commit() {
    let db = MysqlDatabase::create("commit").await;
    db.run("CREATE TABLE t (id INT PRIMARY KEY, n INT); INSERT INTO t VALUES (1, 1)")
        .await;
    let proxy = Proxy::start(cached_mysql_deployment(&db, 3)).await;
    let mut writer = proxy.mysql(&db.name).await;
    let mut reader = proxy.mysql(&db.name).await;
    let read = "SELECT n FROM t WHERE id = 1";
    assert_eq!(count(&mut reader, read).await, 1);
    writer.query_drop("START TRANSACTION").await.unwrap();
    writer.query_drop("UPDATE t SET n = 2").await.unwrap();
    assert_eq!(
        count(&mut writer, read).await,
        2,
        "the writer reads its own write"
    );
    assert_eq!(count(&mut reader, read).await, 1, "not committed yet");
    writer.query_drop("COMMIT").await.unwrap();
    assert_eq!(count(&mut reader, read).await, 2, "fresh at COMMIT");
    // Rolled back: the entry of n = 2 stays good and is hit.
    writer.query_drop("BEGIN").await.unwrap();
    writer.query_drop("UPDATE t SET n = 3").await.unwrap();
    writer.query_drop("ROLLBACK").await.unwrap();
    let hits = proxy.count("hit");
    assert_eq!(count(&mut reader, read).await, 2);
    assert_eq!(count(&mut reader, read).await, 2);
    assert!(proxy.count("hit") > hits);
    // autocommit off: the write commits with COMMIT.
    writer.query_drop("SET autocommit = 0").await.unwrap();
    writer.query_drop("UPDATE t SET n = 4").await.unwrap();
    assert_eq!(count(&mut reader, read).await, 2);
    writer.query_drop("COMMIT").await.unwrap();
    assert_eq!(count(&mut reader, read).await, 4);
    // DDL commits what is open, implicitly.
    writer.query_drop("UPDATE t SET n = 5").await.unwrap();
    writer.query_drop("CREATE TABLE t2 (x INT)").await.unwrap();
    assert_eq!(count(&mut reader, read).await, 5);
    writer.disconnect().await.unwrap();
    reader.disconnect().await.unwrap();
    proxy.stop().await;
    db.drop_now().await;
}

async fn value(client: &mut Conn, sql: &str) -> String {
    client
        .query_first::<String, _>(sql)
        .await
        .expect("read")
        .expect("a row")
}

/// A number below `n`, at random.
fn pick(n: u32) -> u32 {
    rand::random::<u32>() % n
}

/// Two instances sharing Redis: a write through one is read fresh through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_is_fresh_on_another() {
    let db = MysqlDatabase::create("tier").await;
    db.run("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'one')")
        .await;
    let prefix = Prefix::new("mysql-write");
    let mut deployment = cached_mysql_deployment(&db, 3);
    deployment.cache.upstream = Some(prefix.tier(REDIS, Consistency::Fast));
    let a = Proxy::start(deployment.clone()).await;
    let b = Proxy::start(deployment).await;
    until_up(&a).await;
    until_up(&b).await;
    let mut on_a = a.mysql(&db.name).await;
    let mut on_b = b.mysql(&db.name).await;
    let read = "SELECT v FROM t WHERE id = 1";
    for written in ["two", "three", "four"] {
        let _ = value(&mut on_b, read).await;
        let _ = value(&mut on_b, read).await;
        on_a.query_drop(format!("UPDATE t SET v = '{written}' WHERE id = 1"))
            .await
            .unwrap();
        let started = Instant::now();
        while value(&mut on_b, read).await != written {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "B never read {written}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(started.elapsed() < Duration::from_millis(200));
    }
    assert!(
        b.count("hit") >= 3,
        "B served reads from its cache in between"
    );
    on_a.disconnect().await.unwrap();
    on_b.disconnect().await.unwrap();
    a.stop().await;
    b.stop().await;
    prefix.remove().await;
    db.drop_now().await;
}

/// Every version a key held: when it was written (on the cache's clock), its value,
/// and whether the write went through warpdrive.
#[derive(Default)]
struct History(Vec<(Duration, i64, bool)>);

impl History {
    /// Whether a read at `now` may have seen `value`: a version no older than the last
    /// write through warpdrive, that was current at some moment since `now - bound`.
    fn allows(&self, value: i64, now: Duration, bound: Duration) -> bool {
        let through = self
            .0
            .iter()
            .rposition(|(_, _, through)| *through)
            .unwrap_or(0);
        self.0.iter().enumerate().any(|(index, (_, v, _))| {
            let replaced_at = self
                .0
                .get(index + 1)
                .map_or(Duration::MAX, |(at, _, _)| *at);
            *v == value && index >= through && replaced_at.saturating_add(bound) >= now
        })
    }
}

/// A random mix of reads (text and binary) and writes from several clients, writes
/// behind warpdrive's back, and time moving. With the cache on, every read is a
/// version current within max_age + stale_while_revalidate of it, and none older than
/// the last write that went through warpdrive before it started; with the cache off,
/// every read equals a direct read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_mix_reads_every_write_before_it() {
    let db = MysqlDatabase::create("mix").await;
    db.run("CREATE TABLE k (id INT PRIMARY KEY, n INT)").await;
    for caching in [true, false] {
        db.run("REPLACE INTO k VALUES (1, 0), (2, 0), (3, 0), (4, 0)")
            .await;
        let manual = ManualClock::new();
        // A connection per client: a writer stays on its own for its next statement.
        let mut deployment = cached_mysql_deployment(&db, 5);
        deployment.cache.enabled = caching;
        let bound = deployment.cache.max_age + deployment.cache.stale_while_revalidate;
        let proxy = Proxy::start_with_clock(deployment, manual.clock()).await;
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(proxy.mysql(&db.name).await);
        }
        let mut direct = db.direct().await;
        let mut history: Vec<History> = (0..5)
            .map(|_| History(vec![(Duration::ZERO, 0, false)]))
            .collect();
        let mut now = Duration::ZERO;
        for step in 0..400 {
            let key = 1 + pick(4) as usize;
            let value = step as i64 + 1;
            let update = format!("UPDATE k SET n = {value} WHERE id = {key}");
            match pick(10) {
                0 | 1 => {
                    let client = &mut clients[pick(4) as usize];
                    client.query_drop(&update).await.unwrap();
                    history[key].0.push((now, value, true));
                    continue;
                }
                2 if caching => {
                    direct.query_drop(&update).await.unwrap();
                    history[key].0.push((now, value, false));
                    continue;
                }
                3 if caching => {
                    let by = Duration::from_secs(u64::from(pick(20)));
                    manual.advance(by);
                    now += by;
                    continue;
                }
                _ => {}
            }
            let client = &mut clients[pick(4) as usize];
            let seen: i64 = match pick(2) {
                0 => client
                    .exec_first("SELECT n FROM k WHERE id = ?", (key,))
                    .await
                    .unwrap()
                    .unwrap(),
                _ => client
                    .query_first(format!("SELECT n FROM k WHERE id = {key}"))
                    .await
                    .unwrap()
                    .unwrap(),
            };
            assert!(
                history[key].allows(seen, now, bound),
                "step {step}, key {key}, caching {caching}: read {seen} at {now:?}"
            );
            if !caching {
                let origin: i64 = direct
                    .query_first(format!("SELECT n FROM k WHERE id = {key}"))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(seen, origin);
            }
        }
        if caching {
            assert!(
                proxy.count("hit") > 30,
                "the mix was served from the cache too"
            );
        }
        for client in clients {
            client.disconnect().await.unwrap();
        }
        direct.disconnect().await.unwrap();
        proxy.stop().await;
    }
    db.drop_now().await;
}

/// MySQL writes the proxy must not take for unwritten: a BEGIN that commits the open
/// transaction, a ROLLBACK that cannot undo a non-transactional table, a statement that
/// fails after writing some rows, and a write after USE in the same multi-statement
/// text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_mysql_keeps_despite_an_error_a_rollback_or_a_use_are_read() {
    let db = MysqlDatabase::create("kept").await;
    let other = MysqlDatabase::create("kept_other").await;
    db.run(
        "CREATE TABLE t (id INT PRIMARY KEY, n INT) ENGINE=InnoDB; INSERT INTO t VALUES (1, 1);
         CREATE TABLE m (id INT PRIMARY KEY) ENGINE=MyISAM; INSERT INTO m VALUES (1)",
    )
    .await;
    other
        .run("CREATE TABLE t (id INT PRIMARY KEY, n INT); INSERT INTO t VALUES (1, 1)")
        .await;
    let proxy = Proxy::start(cached_mysql_deployment(&db, 3)).await;
    let mut writer = proxy.mysql(&db.name).await;
    let mut reader = proxy.mysql(&db.name).await;
    let mut direct = db.direct().await;
    for (write, read) in [
        (
            "BEGIN; UPDATE t SET n = 2; BEGIN; ROLLBACK",
            "SELECT n FROM t",
        ),
        (
            "BEGIN; INSERT INTO m VALUES (2); ROLLBACK",
            "SELECT COUNT(*) FROM m",
        ),
        ("INSERT INTO m VALUES (3), (1)", "SELECT COUNT(*) FROM m"),
    ] {
        let _ = count(&mut reader, read).await;
        let _ = count(&mut reader, read).await;
        // The pieces one at a time, as a client sends them; an error is expected.
        for statement in write.split("; ") {
            let _ = writer.query_drop(statement).await;
        }
        let want = count(&mut direct, read).await;
        assert_eq!(count(&mut reader, read).await, want, "after {write}");
    }
    // USE inside a multi-statement text: the UPDATE writes the other database's table.
    let other_read = format!("SELECT n FROM {}.t", other.name);
    let mut in_other = proxy.mysql(&other.name).await;
    assert_eq!(count(&mut in_other, "SELECT n FROM t").await, 1);
    assert_eq!(count(&mut reader, &other_read).await, 1);
    writer
        .query_drop(format!("USE {}; UPDATE t SET n = 9", other.name))
        .await
        .unwrap();
    assert_eq!(count(&mut in_other, "SELECT n FROM t").await, 9);
    assert_eq!(count(&mut reader, &other_read).await, 9);
    for client in [writer, reader, direct, in_other] {
        client.disconnect().await.unwrap();
    }
    proxy.stop().await;
    db.drop_now().await;
    other.drop_now().await;
}
