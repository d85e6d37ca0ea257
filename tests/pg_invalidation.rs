//! Read-your-writes against the real PostgreSQL: a write through warpdrive invalidates
//! the cached reads of what it reached, before its reply reaches the writer, for the
//! writer and every other client of every deployment on the database; at COMMIT inside
//! a transaction, never at ROLLBACK or for a failed statement.

mod common;

use common::{Proxy, TestDatabase};
use tokio_postgres::{Client, SimpleQueryMessage};

/// The first column of the first row (`None` for no row or NULL).
async fn read(client: &Client, sql: &str) -> Option<String> {
    let messages = client.simple_query(sql).await.expect("read");
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
        _ => None,
    })?
}

struct Setup {
    db: TestDatabase,
    proxy: Proxy,
    writer: Client,
    other: Client,
}

impl Setup {
    async fn new(tag: &str, schema: &str) -> Setup {
        let db = TestDatabase::create(tag).await;
        db.direct()
            .await
            .batch_execute(schema)
            .await
            .expect("schema");
        let proxy = Proxy::start(common::cached_deployment(&db.name, 4)).await;
        let writer = proxy.connect(&db.name).await;
        let other = proxy.connect(&db.name).await;
        Setup {
            db,
            proxy,
            writer,
            other,
        }
    }

    /// Reads `sql` on both clients until it is cached (a hit on each), and returns it.
    async fn cached(&self, sql: &str) -> Option<String> {
        let first = read(&self.writer, sql).await;
        let hits = self.proxy.count("hit");
        assert_eq!(read(&self.writer, sql).await, first);
        assert_eq!(read(&self.other, sql).await, first);
        assert_eq!(self.proxy.count("hit"), hits + 2, "{sql} is cached");
        first
    }

    /// Runs `sql` on the writer.
    async fn write(&self, sql: &str) {
        self.writer.batch_execute(sql).await.expect(sql);
    }

    /// Reads `sql` on the writer, then on the other client: both see `expected`, and the
    /// first of them went to the origin.
    async fn fresh(&self, sql: &str, expected: Option<&str>) {
        let misses = self.proxy.count("miss");
        assert_eq!(read(&self.writer, sql).await.as_deref(), expected, "{sql}");
        assert_eq!(read(&self.other, sql).await.as_deref(), expected, "{sql}");
        assert!(
            self.proxy.count("miss") > misses,
            "{sql} went to the origin"
        );
    }

    async fn done(self) {
        drop((self.writer, self.other));
        self.proxy.stop().await;
        self.db.drop_now().await;
    }
}

const PRICES: &str = "CREATE TABLE prices (id int PRIMARY KEY, p int NOT NULL);
    INSERT INTO prices VALUES (1, 10), (2, 20)";
const TOTAL: &str = "SELECT sum(p)::text FROM prices";

/// Every kind of write, through the simple protocol: the writer's next read and the
/// other client's are fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_kind_is_seen_at_once_by_the_writer_and_by_others() {
    let setup = Setup::new("kinds", PRICES).await;
    let writes = [
        ("INSERT INTO prices VALUES (3, 30)", "60"),
        ("UPDATE prices SET p = p + 1", "63"),
        ("DELETE FROM prices WHERE id = 3", "32"),
        (
            "MERGE INTO prices t USING (VALUES (1, 100)) s (id, p) ON t.id = s.id WHEN MATCHED THEN UPDATE SET p = s.p",
            "121",
        ),
        (
            "WITH moved AS (UPDATE prices SET p = 0 WHERE id = 2 RETURNING id) SELECT count(*) FROM moved",
            "100",
        ),
        ("ALTER TABLE prices ADD COLUMN note text DEFAULT 'x'", "100"),
    ];
    for (write, total) in writes {
        setup.cached(TOTAL).await;
        setup.write(write).await;
        setup.fresh(TOTAL, Some(total)).await;
    }
    setup.cached(TOTAL).await;
    setup.write("TRUNCATE prices").await;
    setup.fresh(TOTAL, None).await;
    setup.done().await;
}

/// COPY FROM, and the extended protocol's writes (committed at Sync, after their
/// CommandComplete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_extended_protocol_writes_invalidate() {
    let setup = Setup::new("copy", PRICES).await;
    setup.cached(TOTAL).await;
    let sink = setup
        .writer
        .copy_in("COPY prices FROM STDIN")
        .await
        .expect("copy");
    futures_util::pin_mut!(sink);
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"5\t50\n"))
        .await
        .expect("copy data");
    sink.finish().await.expect("copy done");
    setup.fresh(TOTAL, Some("80")).await;
    setup.cached(TOTAL).await;
    setup
        .writer
        .execute("UPDATE prices SET p = $1 WHERE id = $2", &[&0i32, &5i32])
        .await
        .expect("extended update");
    setup.fresh(TOTAL, Some("30")).await;
    setup.done().await;
}

/// SELECT … INTO writes the table it creates: a read of that name cached before (of a
/// table dropped behind warpdrive's back) is not served after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_into_invalidates_reads_of_the_table_it_creates() {
    let setup = Setup::new("into", &format!("{PRICES}; CREATE TABLE archive (p int)")).await;
    let count = "SELECT count(*)::text FROM archive";
    assert_eq!(setup.cached(count).await.as_deref(), Some("0"));
    setup
        .db
        .direct()
        .await
        .batch_execute("DROP TABLE archive")
        .await
        .unwrap();
    setup.write("SELECT p INTO archive FROM prices").await;
    setup.fresh(count, Some("2")).await;
    setup.done().await;
}

/// Inside a transaction the write counts at COMMIT: others read the committed value
/// (from the cache) until then; a ROLLBACK invalidates nothing, nor does a failed
/// statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_invalidate_at_commit_and_rollbacks_and_failures_do_not() {
    let setup = Setup::new("txn", PRICES).await;
    setup.cached(TOTAL).await;
    setup.write("BEGIN").await;
    setup.write("UPDATE prices SET p = 0 WHERE id = 1").await;
    let hits = setup.proxy.count("hit");
    assert_eq!(read(&setup.other, TOTAL).await.as_deref(), Some("30"));
    assert_eq!(
        setup.proxy.count("hit"),
        hits + 1,
        "not invalidated before COMMIT"
    );
    setup.write("COMMIT").await;
    setup.fresh(TOTAL, Some("20")).await;

    setup.cached(TOTAL).await;
    setup
        .write("BEGIN; UPDATE prices SET p = 99; ROLLBACK")
        .await;
    setup.write("BEGIN").await;
    setup.write("DELETE FROM prices").await;
    setup.write("ROLLBACK").await;
    let failed = setup
        .writer
        .batch_execute("UPDATE prices SET p = 1 / (p - p)")
        .await;
    assert!(failed.is_err());
    let hits = setup.proxy.count("hit");
    assert_eq!(read(&setup.other, TOTAL).await.as_deref(), Some("20"));
    assert_eq!(
        setup.proxy.count("hit"),
        hits + 1,
        "nothing was invalidated"
    );
    // A COMMIT of a failed transaction is a rollback: nothing either.
    setup.write("BEGIN").await;
    setup.write("DELETE FROM prices").await;
    assert!(setup.writer.batch_execute("SELECT 1 / 0").await.is_err());
    setup.write("COMMIT").await;
    assert_eq!(read(&setup.other, TOTAL).await.as_deref(), Some("20"));
    assert_eq!(setup.proxy.count("hit"), hits + 2);
    setup.done().await;
}

/// A write to a table invalidates reads of views over it (through views of views), of
/// its partitioned parent, of tables its foreign keys cascade to, and of tables its
/// triggers write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_partitions_cascades_and_triggers_count() {
    let schema = format!(
        "{PRICES};
        CREATE VIEW cheap AS SELECT * FROM prices WHERE p < 100;
        CREATE VIEW cheapest AS SELECT min(p) AS p FROM cheap;
        CREATE TABLE orders (id int, region text) PARTITION BY LIST (region);
        CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu');
        CREATE TABLE customers (id int PRIMARY KEY);
        CREATE TABLE carts (customer int REFERENCES customers ON DELETE CASCADE);
        CREATE TABLE notes (customer int REFERENCES customers);
        INSERT INTO customers VALUES (1), (2); INSERT INTO carts VALUES (1);
        INSERT INTO notes VALUES (2);
        CREATE TABLE audit (n int);
        CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS
          $$ BEGIN INSERT INTO audit VALUES (1); RETURN NEW; END $$;
        CREATE TABLE stock (n int);
        CREATE TRIGGER noted AFTER INSERT ON stock FOR EACH ROW EXECUTE FUNCTION note();"
    );
    let setup = Setup::new("reach", &schema).await;
    let cheapest = "SELECT p::text FROM cheapest";
    setup.cached(cheapest).await;
    setup.write("UPDATE prices SET p = 5 WHERE id = 2").await;
    setup.fresh(cheapest, Some("5")).await;

    let orders = "SELECT count(*)::text FROM orders";
    setup.cached(orders).await;
    setup.write("INSERT INTO orders_eu VALUES (1, 'eu')").await;
    setup.fresh(orders, Some("1")).await;

    let carts = "SELECT count(*)::text FROM carts";
    setup.cached(carts).await;
    setup.write("DELETE FROM customers WHERE id = 1").await;
    setup.fresh(carts, Some("0")).await;
    // TRUNCATE … CASCADE empties tables whose foreign keys do not cascade, too.
    let notes = "SELECT count(*)::text FROM notes";
    setup.cached(notes).await;
    setup.write("TRUNCATE customers CASCADE").await;
    setup.fresh(notes, Some("0")).await;

    let audit = "SELECT count(*)::text FROM audit";
    setup.cached(audit).await;
    setup.write("INSERT INTO stock VALUES (1)").await;
    setup.fresh(audit, Some("1")).await;
    setup.done().await;
}

/// A write to `shop.items` invalidates reads of `items` through search_path, and the
/// other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qualified_and_unqualified_names_meet() {
    let setup = Setup::new(
        "names",
        "CREATE SCHEMA shop; CREATE TABLE shop.items (n int); INSERT INTO shop.items VALUES (1)",
    )
    .await;
    for client in [&setup.writer, &setup.other] {
        client
            .batch_execute("SET search_path = shop, public")
            .await
            .unwrap();
    }
    let bare = "SELECT count(*)::text FROM items";
    let qualified = "SELECT count(*)::text FROM shop.items";
    setup.cached(bare).await;
    setup.cached(qualified).await;
    setup.write("INSERT INTO shop.items VALUES (2)").await;
    setup.fresh(bare, Some("2")).await;
    setup.fresh(qualified, Some("2")).await;
    setup.write("INSERT INTO items VALUES (3)").await;
    setup.fresh(qualified, Some("3")).await;
    setup.fresh(bare, Some("3")).await;
    setup.done().await;
}

/// Writes warpdrive cannot name (DO, CALL, a volatile user function) invalidate every
/// read of the database; a read through a user function whose tables warpdrive does
/// not know is invalidated by any write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_writes_and_unknown_reads_meet_everything() {
    let schema = format!(
        "{PRICES};
        CREATE TABLE other (n int);
        CREATE FUNCTION total() RETURNS bigint STABLE LANGUAGE sql AS 'SELECT sum(p) FROM prices';
        CREATE FUNCTION bump() RETURNS void LANGUAGE sql AS 'UPDATE prices SET p = p + 1';
        CREATE PROCEDURE halve() LANGUAGE sql AS 'UPDATE prices SET p = p / 2';"
    );
    let setup = Setup::new("unknown", &schema).await;
    for (write, total) in [
        ("DO $$ BEGIN UPDATE prices SET p = p * 2; END $$", "60"),
        ("CALL halve()", "30"),
        ("SELECT bump()", "32"),
    ] {
        setup.cached(TOTAL).await;
        setup.write(write).await;
        setup.fresh(TOTAL, Some(total)).await;
    }
    let through_function = "SELECT total()::text";
    setup.cached(through_function).await;
    setup.write("INSERT INTO other VALUES (1)").await;
    setup.fresh(through_function, Some("32")).await;
    let snapshot = setup.proxy.snapshot();
    assert!(snapshot.invalidations_unknown_write >= 3, "{snapshot:?}");
    assert!(snapshot.invalidations_write >= 1, "{snapshot:?}");
    assert!(snapshot.entries_invalidated >= 4, "{snapshot:?}");
    setup.done().await;
}

/// Two deployments on one origin database: a write through one invalidates the other's
/// cached reads. A deployment with invalidate_on_write = false serves its entries until
/// they expire, whatever goes through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_every_deployment_on_the_database_that_wants_them() {
    let db = TestDatabase::create("deployments").await;
    db.direct().await.batch_execute(PRICES).await.unwrap();
    let mut lax = common::cached_deployment(&db.name, 2);
    lax.cache.invalidate_on_write = false;
    let proxy = Proxy::start_deployments(vec![
        common::cached_deployment(&db.name, 2),
        common::cached_deployment(&db.name, 2),
        lax,
    ])
    .await;
    let connect = |index: usize| proxy.connect_at(index, &db.name);
    let (writer, reader, lax_reader) = (connect(0).await, connect(1).await, connect(2).await);
    assert_eq!(read(&reader, TOTAL).await.as_deref(), Some("30"));
    assert_eq!(read(&lax_reader, TOTAL).await.as_deref(), Some("30"));
    writer
        .batch_execute("UPDATE prices SET p = 0")
        .await
        .unwrap();
    assert_eq!(read(&reader, TOTAL).await.as_deref(), Some("0"));
    assert_eq!(
        read(&lax_reader, TOTAL).await.as_deref(),
        Some("30"),
        "invalidate_on_write = false keeps its entry"
    );
    drop((writer, reader, lax_reader));
    proxy.stop().await;
    db.drop_now().await;
}

/// COMMIT AND CHAIN commits (invalidating) and opens the next transaction, whose writes
/// wait for its own COMMIT; a ROLLBACK TO SAVEPOINT keeps what came before the
/// savepoint; a transaction driven by a driver (BEGIN, extended-protocol writes, COMMIT)
/// counts at its COMMIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_savepoints_and_driver_transactions() {
    let mut setup = Setup::new("chains", PRICES).await;
    setup.cached(TOTAL).await;
    setup
        .write("BEGIN; UPDATE prices SET p = 0 WHERE id = 1; COMMIT AND CHAIN")
        .await;
    setup.fresh(TOTAL, Some("20")).await;
    setup.write("UPDATE prices SET p = 0 WHERE id = 2").await;
    let hits = setup.proxy.count("hit");
    assert_eq!(read(&setup.other, TOTAL).await.as_deref(), Some("20"));
    assert_eq!(
        setup.proxy.count("hit"),
        hits + 1,
        "the chained write waits"
    );
    setup.write("COMMIT").await;
    setup.fresh(TOTAL, Some("0")).await;

    setup.cached(TOTAL).await;
    setup
        .writer
        .batch_execute(
            "BEGIN; UPDATE prices SET p = 5 WHERE id = 1; SAVEPOINT s;
             UPDATE prices SET p = 7 WHERE id = 2; ROLLBACK TO SAVEPOINT s; COMMIT",
        )
        .await
        .unwrap();
    setup.fresh(TOTAL, Some("5")).await;

    setup.cached(TOTAL).await;
    let transaction = setup.writer.transaction().await.unwrap();
    transaction
        .execute("UPDATE prices SET p = $1 WHERE id = $2", &[&10i32, &2i32])
        .await
        .unwrap();
    let hits = setup.proxy.count("hit");
    assert_eq!(read(&setup.other, TOTAL).await.as_deref(), Some("5"));
    assert_eq!(setup.proxy.count("hit"), hits + 1);
    transaction.commit().await.unwrap();
    setup.fresh(TOTAL, Some("15")).await;
    setup.done().await;
}

/// User code that writes behind a built-in's name (an overload the search path picks),
/// behind an operator, or behind `x.name` notation: the write invalidates the database,
/// and a call through a built-in's name is not served from the cache either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_hidden_behind_builtin_names_operators_and_attributes() {
    let schema = "CREATE TABLE log (n int); CREATE TABLE t (x int); INSERT INTO t VALUES (1);
        CREATE FUNCTION length(int) RETURNS int LANGUAGE sql AS
          'INSERT INTO log VALUES (1) RETURNING 1';
        CREATE FUNCTION noted(a int, b int) RETURNS int LANGUAGE sql AS
          'INSERT INTO log VALUES (2) RETURNING 2';
        CREATE OPERATOR ### (LEFTARG = int, RIGHTARG = int, FUNCTION = noted);
        CREATE FUNCTION stamp(t) RETURNS int LANGUAGE sql AS
          'INSERT INTO log VALUES (3) RETURNING 3';";
    let setup = Setup::new("hidden", schema).await;
    let count = "SELECT count(*)::text FROM log";
    for (write, total) in [
        ("SELECT length(42)", "1"),
        ("SELECT 1 ### 2", "2"),
        ("SELECT r.stamp FROM t AS r", "3"),
    ] {
        setup.cached(count).await;
        setup.write(write).await;
        setup.fresh(count, Some(total)).await;
    }
    setup.write("SELECT length(42)").await;
    setup.write("SELECT length(42)").await;
    assert_eq!(
        read(&setup.other, count).await.as_deref(),
        Some("5"),
        "the call through a built-in's name ran each time"
    );
    setup.done().await;
}

/// Deployments that name the origin differently (`localhost`, `127.0.0.1`) share one
/// write clock for the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_naming_the_origin_differently_meet() {
    let db = TestDatabase::create("hosts").await;
    db.direct().await.batch_execute(PRICES).await.unwrap();
    let mut by_name = common::cached_deployment(&db.name, 2);
    by_name.origin.host = "localhost".to_owned();
    let proxy =
        Proxy::start_deployments(vec![common::cached_deployment(&db.name, 2), by_name]).await;
    let connect = |index: usize| proxy.connect_at(index, &db.name);
    let (reader, writer) = (connect(0).await, connect(1).await);
    assert_eq!(read(&reader, TOTAL).await.as_deref(), Some("30"));
    writer
        .batch_execute("UPDATE prices SET p = 1")
        .await
        .unwrap();
    assert_eq!(read(&reader, TOTAL).await.as_deref(), Some("2"));
    drop((reader, writer));
    proxy.stop().await;
    db.drop_now().await;
}

/// DDL through one deployment makes every deployment on the database read the catalog
/// again: a trigger created through A is seen by B's next write, whose trigger's writes
/// then invalidate too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_through_one_deployment_refreshes_every_deployments_catalog() {
    let db = TestDatabase::create("ddl_seen").await;
    db.direct()
        .await
        .batch_execute(
            "CREATE TABLE stock (n int); CREATE TABLE audit (n int);
             CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO audit VALUES (1); RETURN NEW; END $$;",
        )
        .await
        .unwrap();
    let proxy = Proxy::start_deployments(vec![
        common::cached_deployment(&db.name, 2),
        common::cached_deployment(&db.name, 2),
    ])
    .await;
    let connect = |index: usize| proxy.connect_at(index, &db.name);
    let (a, b) = (connect(0).await, connect(1).await);
    let audit = "SELECT count(*)::text FROM audit";
    assert_eq!(
        read(&b, audit).await.as_deref(),
        Some("0"),
        "B reads its catalog"
    );
    a.batch_execute(
        "CREATE TRIGGER noted AFTER INSERT ON stock FOR EACH ROW EXECUTE FUNCTION note()",
    )
    .await
    .unwrap();
    assert_eq!(read(&b, audit).await.as_deref(), Some("0"));
    assert_eq!(read(&b, audit).await.as_deref(), Some("0"), "cached on B");
    b.batch_execute("INSERT INTO stock VALUES (1)")
        .await
        .unwrap();
    assert_eq!(read(&b, audit).await.as_deref(), Some("1"));
    drop((a, b));
    proxy.stop().await;
    db.drop_now().await;
}
