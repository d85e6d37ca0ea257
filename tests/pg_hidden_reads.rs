//! Volatility and tables the query text hides (DESIGN.md invariant 2): views, user
//! functions, operators, casts, domains, attribute notation and row-level-security
//! policies, judged from the origin's catalog before the cache answers; `FROM ONLY`;
//! clock-dependent literals. Each test reads through warpdrive with the cache on and
//! checks what PostgreSQL did (rows a volatile function wrote, a sequence advanced).

mod common;

use std::time::Duration;

use common::{Proxy, Roles, TestDatabase, first_column, last_value};
use tokio_postgres::Client;

/// A log every "noisy" function writes to, and functions that write to it.
const NOISY: &str = "CREATE TABLE calls (at timestamptz DEFAULT clock_timestamp());
    CREATE FUNCTION noisy_int(a int, b int) RETURNS int LANGUAGE plpgsql VOLATILE AS
      $$BEGIN INSERT INTO public.calls DEFAULT VALUES; RETURN a + b; END$$;
    CREATE FUNCTION noisy_check(v int) RETURNS boolean LANGUAGE plpgsql VOLATILE AS
      $$BEGIN INSERT INTO public.calls DEFAULT VALUES; RETURN true; END$$;";

async fn calls(direct: &Client) -> String {
    last_value(direct, "SELECT count(*) FROM calls")
        .await
        .expect("a count")
}

/// Runs `sql` three times through warpdrive: the function behind it must run each time.
async fn three_times_uncached(proxy: &Proxy, db: &TestDatabase, direct: &Client, sql: &str) {
    direct
        .batch_execute("TRUNCATE calls")
        .await
        .expect("empty the call log");
    let hits = proxy.count("hit");
    let client = proxy.connect(&db.name).await;
    for _ in 0..3 {
        first_column(&client, sql).await;
    }
    assert_eq!(
        calls(direct).await,
        "3",
        "{sql}: the function ran fewer times"
    );
    assert_eq!(proxy.count("hit"), hits, "{sql} was served from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_read_through_to_what_they_call() {
    let db = TestDatabase::create("hidden_views").await;
    let direct = db.direct().await;
    direct
        .batch_execute(
            "CREATE SEQUENCE s;
             CREATE TABLE items (a int); INSERT INTO items VALUES (1), (2);
             CREATE VIEW v_seq AS SELECT nextval('s') AS n;
             CREATE VIEW v_random AS SELECT random() AS r;
             CREATE VIEW v_clock AS SELECT clock_timestamp() AS t;
             CREATE VIEW v_activity AS SELECT count(*) AS n FROM pg_stat_activity;
             CREATE VIEW v_items AS SELECT a FROM items;
             CREATE VIEW v_v_items AS SELECT a FROM v_items;",
        )
        .await
        .unwrap();
    let deployment = common::cached_deployment(&db.name, 2);
    let proxy = Proxy::start(deployment).await;
    let client = proxy.connect(&db.name).await;
    let first = first_column(&client, "SELECT n FROM v_seq").await;
    let second = first_column(&client, "SELECT n FROM v_seq").await;
    assert_eq!(
        (first, second),
        (vec![Some("1".into())], vec![Some("2".into())])
    );
    for sql in [
        "SELECT r FROM v_random",
        "SELECT t FROM v_clock",
        "SELECT n FROM v_activity",
    ] {
        let hits = proxy.count("hit");
        first_column(&client, sql).await;
        first_column(&client, sql).await;
        assert_eq!(proxy.count("hit"), hits, "{sql} was served from the cache");
    }
    assert_eq!(proxy.count("hit"), 0);
    for _ in 0..2 {
        first_column(&client, "SELECT a FROM v_v_items ORDER BY a").await;
    }
    assert_eq!(proxy.count("hit"), 1, "a view over a plain table is cached");
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_rule_reaches_the_views_over_its_table() {
    let db = TestDatabase::create("hidden_rule").await;
    db.direct()
        .await
        .batch_execute(
            "CREATE TABLE secret (x int); INSERT INTO secret VALUES (1);
             CREATE VIEW v_secret AS SELECT x FROM secret;",
        )
        .await
        .unwrap();
    let mut deployment = common::cached_deployment(&db.name, 2);
    deployment
        .cache
        .rules
        .push(common::caching_off_for("secret"));
    let proxy = Proxy::start(deployment).await;
    let client = proxy.connect(&db.name).await;
    for sql in [
        "SELECT x FROM v_secret",
        "SELECT x FROM ONLY secret",
        "SELECT count(*) FROM ONLY pg_locks",
    ] {
        for _ in 0..2 {
            first_column(&client, sql).await;
        }
    }
    assert_eq!(proxy.count("hit"), 0);
    assert_eq!(proxy.count("disabled"), 4);
    assert_eq!(proxy.count("volatile"), 2);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_functions_are_cached_as_their_owner_declared() {
    let db = TestDatabase::create("hidden_functions").await;
    db.direct()
        .await
        .batch_execute(&format!(
            "{NOISY}
             CREATE FUNCTION double(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x * 2';"
        ))
        .await
        .unwrap();
    let proxy = Proxy::start(common::cached_deployment(&db.name, 2)).await;
    let client = proxy.connect(&db.name).await;
    for _ in 0..2 {
        assert_eq!(
            last_value(&client, "SELECT double(21)").await.as_deref(),
            Some("42")
        );
    }
    assert_eq!(
        proxy.count("hit"),
        1,
        "an IMMUTABLE user function is cached"
    );
    three_times_uncached(&proxy, &db, &db.direct().await, "SELECT noisy_int(1, 2)").await;
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_reached_without_their_name_run_every_time() {
    let db = TestDatabase::create("hidden_constructs").await;
    let direct = db.direct().await;
    direct
        .batch_execute(&format!(
            "{NOISY}
             CREATE OPERATOR ### (LEFTARG = int, RIGHTARG = int, FUNCTION = noisy_int);
             CREATE TABLE t (a int); INSERT INTO t VALUES (1);
             CREATE FUNCTION f(t) RETURNS int LANGUAGE plpgsql VOLATILE AS
               $$BEGIN INSERT INTO public.calls DEFAULT VALUES; RETURN 1; END$$;
             CREATE DOMAIN logdom AS int CHECK (noisy_check(VALUE));
             CREATE TYPE pair AS (a int, b int);
             CREATE FUNCTION to_pair(x int) RETURNS pair LANGUAGE plpgsql VOLATILE AS
               $$BEGIN INSERT INTO public.calls DEFAULT VALUES; RETURN ROW(x, x); END$$;
             CREATE CAST (int AS pair) WITH FUNCTION to_pair(int);"
        ))
        .await
        .unwrap();
    let proxy = Proxy::start(common::cached_deployment(&db.name, 2)).await;
    for sql in [
        "SELECT 1 ### 2",
        "SELECT t.f FROM t",
        "SELECT 5::logdom",
        "SELECT 7::pair",
    ] {
        three_times_uncached(&proxy, &db, &direct, sql).await;
    }
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_policies_are_judged_by_what_they_call() {
    let db = TestDatabase::create("hidden_policies").await;
    let roles = Roles::create(&db).await;
    let direct = db.direct().await;
    direct
        .batch_execute(&format!(
            "{NOISY}
             GRANT INSERT ON calls TO {app};
             CREATE TABLE docs (id int); INSERT INTO docs VALUES (1);
             ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
             CREATE POLICY noisy ON docs USING (noisy_check(id));
             GRANT SELECT ON docs TO {app};",
            app = roles.app
        ))
        .await
        .unwrap();
    let mut deployment = common::deployment_as(&db.name, &roles.app, common::small_pool(2));
    deployment.cache.enabled = true;
    let proxy = Proxy::start(deployment).await;
    let client = proxy.connect_as(&db.name, &roles.app).await;
    direct.batch_execute("TRUNCATE calls").await.unwrap();
    for _ in 0..3 {
        assert_eq!(first_column(&client, "SELECT id FROM docs").await.len(), 1);
    }
    assert_eq!(calls(&direct).await, "3");
    assert_eq!(proxy.count("hit"), 0);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
    roles.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_time_literals_follow_the_stable_functions_policy() {
    let db = TestDatabase::create("hidden_time").await;
    let mut deployment = common::cached_deployment(&db.name, 2);
    deployment.cache.stable_functions = warpdrive::analyze::StableFunctions::Bypass;
    let proxy = Proxy::start(deployment).await;
    let client = proxy.connect(&db.name).await;
    for sql in [
        "SELECT 'now'::timestamptz",
        "SELECT 'today'::date",
        "SELECT CAST('tomorrow' AS date)",
        "SELECT timestamp 'now'",
    ] {
        first_column(&client, sql).await;
        first_column(&client, sql).await;
    }
    assert_eq!(proxy.count("hit"), 0);
    assert_eq!(proxy.count("volatile"), 8);
    first_column(&client, "SELECT 'epoch'::timestamptz").await;
    first_column(&client, "SELECT 'epoch'::timestamptz").await;
    assert_eq!(proxy.count("hit"), 1);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_read_again_after_ddl_and_when_old() {
    let db = TestDatabase::create("hidden_refresh").await;
    let direct = db.direct().await;
    direct
        .batch_execute(
            "CREATE TABLE items (a int); INSERT INTO items VALUES (1);
             CREATE VIEW v AS SELECT a FROM items;
             CREATE VIEW w AS SELECT a FROM items;",
        )
        .await
        .unwrap();
    let mut deployment = common::cached_deployment(&db.name, 2);
    deployment.pool.catalog_max_age = Duration::from_secs(1);
    let proxy = Proxy::start(deployment).await;
    let client = proxy.connect(&db.name).await;
    for _ in 0..2 {
        first_column(&client, "SELECT a FROM v").await;
        first_column(&client, "SELECT a FROM w").await;
    }
    assert_eq!(proxy.count("hit"), 2);
    // DDL through warpdrive: seen at once, whatever is cached.
    client
        .batch_execute("CREATE OR REPLACE VIEW v AS SELECT (random() * 0)::int AS a")
        .await
        .unwrap();
    first_column(&client, "SELECT a FROM v").await;
    assert_eq!(
        proxy.count("hit"),
        2,
        "a view made volatile through warpdrive"
    );
    // DDL sent directly: seen once the catalog is catalog_max_age old.
    direct
        .batch_execute("CREATE OR REPLACE VIEW w AS SELECT (random() * 0)::int AS a")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first_column(&client, "SELECT a FROM w").await;
    assert_eq!(
        proxy.count("hit"),
        2,
        "a view made volatile behind warpdrive"
    );
    assert!(proxy.snapshot().catalog_reads >= 3);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_operators_and_casts_stay_cacheable() {
    let db = TestDatabase::create("hidden_everyday").await;
    db.direct()
        .await
        .batch_execute(
            "CREATE TABLE docs (id int, body jsonb, tags text[], name text, at timestamptz);
             INSERT INTO docs VALUES (1, '{\"a\": 1}', '{x}', 'one', '2026-01-01');",
        )
        .await
        .unwrap();
    let proxy = Proxy::start(common::cached_deployment(&db.name, 2)).await;
    let client = proxy.connect(&db.name).await;
    let reads = [
        "SELECT d.id FROM docs d WHERE d.body ->> 'a' = '1' AND d.body @> '{\"a\": 1}'",
        "SELECT id FROM docs WHERE tags && ARRAY['x'] AND name || '!' <> 'two' AND id != 2",
        "SELECT id FROM docs WHERE name ~ '^o' AND name LIKE 'o%' AND id BETWEEN 0 AND 9",
        "SELECT -id, id % 2, id::text, CAST(id AS bigint), at::date, '1 day'::interval FROM docs",
        "SELECT id::numeric(10, 2), name::varchar(3), at::timestamp with time zone FROM docs",
    ];
    for sql in reads {
        first_column(&client, sql).await;
        first_column(&client, sql).await;
    }
    assert_eq!(proxy.count("hit"), reads.len() as u64);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}
