//! Session state changed by code the query text does not show (DESIGN.md invariant 5):
//! functions, DO blocks, triggers and FunctionCall messages that set a tenant, a role, a
//! search path or a lock must never reach another client through a pooled connection,
//! nor a cache entry. The multi-tenant scenario runs as a non-superuser, so that
//! row-level security applies.

mod common;

use std::time::Duration;

use common::{
    Proxy, RawClient, Roles, TWO_SCHEMAS, TestDatabase, first_column as column, last_value,
};
use tokio_postgres::Client;
use warpdrive::wire::pg::encode;

async fn one(client: &Client, sql: &str) -> Option<String> {
    last_value(client, sql).await
}

/// Tenants 7 and 8 under row-level security keyed by the custom setting app.tenant, and
/// functions that set the tenant and the role the way applications do.
async fn tenants(db: &TestDatabase, roles: &Roles) {
    db.direct()
        .await
        .batch_execute(&format!(
            "CREATE TABLE docs (tenant int, body text);
             INSERT INTO docs VALUES (7, 'seven'), (8, 'eight');
             ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
             CREATE POLICY by_tenant ON docs
               USING (tenant = NULLIF(current_setting('app.tenant', true), '')::int);
             GRANT SELECT ON docs TO {app};
             CREATE FUNCTION set_tenant(t text) RETURNS text LANGUAGE sql
               AS $$ SELECT set_config('app.tenant', t, false) $$;
             CREATE FUNCTION become(r text) RETURNS text LANGUAGE plpgsql
               AS $$ BEGIN RETURN set_config('role', r, false); END $$;",
            app = roles.app,
        ))
        .await
        .expect("tenants");
}

const READ: &str = "SELECT body FROM docs ORDER BY body";
const TENANT: &str = "SELECT current_setting('app.tenant', true)";

/// A fresh client sees no tenant's rows, no tenant, and its own role.
async fn assert_fresh(proxy: &Proxy, db: &TestDatabase, roles: &Roles) {
    let fresh = proxy.connect_as(&db.name, &roles.app).await;
    assert_eq!(column(&fresh, READ).await, Vec::<Option<String>>::new());
    assert_eq!(one(&fresh, TENANT).await, None);
    assert_eq!(
        one(&fresh, "SELECT current_user").await.as_deref(),
        Some(roles.app.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_set_by_code_never_reaches_another_client() {
    let db = TestDatabase::create("code_tenant").await;
    let roles = Roles::create(&db).await;
    tenants(&db, &roles).await;
    let deployment = {
        let mut deployment = common::deployment_as(&db.name, &roles.app, common::small_pool(2));
        deployment.cache.enabled = true;
        deployment
    };
    let proxy = Proxy::start(deployment).await;
    // A tenant-less entry in the cache, which the tenant's client must never be served.
    let warm = proxy.connect_as(&db.name, &roles.app).await;
    assert_eq!(column(&warm, READ).await, Vec::<Option<String>>::new());
    drop(warm);

    let setters: [(&str, &str); 2] = [
        ("SELECT set_tenant('8')", "eight"),
        (
            "DO $$BEGIN PERFORM set_config('app.tenant', '7', false); END$$",
            "seven",
        ),
    ];
    for (set, own_row) in setters {
        let tenant = proxy.connect_as(&db.name, &roles.app).await;
        tenant.simple_query(set).await.expect(set);
        for _ in 0..3 {
            assert_eq!(
                column(&tenant, READ).await,
                vec![Some(own_row.to_owned())],
                "{set}"
            );
        }
        for _ in 0..6 {
            assert_fresh(&proxy, &db, &roles).await;
        }
        drop(tenant);
        // Once the client leaves, its connection is gone, not back in the pool.
        for _ in 0..6 {
            assert_fresh(&proxy, &db, &roles).await;
        }
    }

    let actor = proxy.connect_as(&db.name, &roles.app).await;
    let take_role = format!("SELECT become('{}')", roles.other);
    actor.simple_query(&take_role).await.expect("become");
    assert_eq!(
        one(&actor, "SELECT current_user").await.as_deref(),
        Some(roles.other.as_str())
    );
    for _ in 0..6 {
        assert_fresh(&proxy, &db, &roles).await;
    }
    drop(actor);
    for _ in 0..6 {
        assert_fresh(&proxy, &db, &roles).await;
    }
    assert!(proxy.snapshot().pinned_sessions >= 3);
    proxy.stop().await;
    db.drop_now().await;
    roles.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_that_leaves_the_session_alone_does_not_pin() {
    let db = TestDatabase::create("code_safe").await;
    db.direct()
        .await
        .batch_execute(
            "CREATE TABLE audit (at timestamptz, what text);
             CREATE TABLE orders (id int, total int);
             CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS
               $$BEGIN INSERT INTO audit VALUES (now(), 'order ' || NEW.id); RETURN NEW; END$$;
             CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION note();
             CREATE FUNCTION add_one(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x + 1';
             CREATE FUNCTION place(i int) RETURNS int LANGUAGE plpgsql AS
               $$BEGIN INSERT INTO orders VALUES (i, add_one(i)); RETURN i; END$$;
             CREATE TABLE tenants (id int);
             CREATE FUNCTION pick() RETURNS trigger LANGUAGE plpgsql AS
               $$BEGIN PERFORM set_config('app.tenant', NEW.id::text, false); RETURN NEW; END$$;
             CREATE TRIGGER tenants_pick AFTER INSERT ON tenants FOR EACH ROW EXECUTE FUNCTION pick();
             CREATE FUNCTION stamp() RETURNS text LANGUAGE sql AS
               $$ SELECT set_config('app.stamp', 'x', false) $$;
             CREATE TABLE stamped (id int, s text DEFAULT stamp());",
        )
        .await
        .unwrap();
    let proxy = Proxy::for_database(&db, 3).await;
    let client = proxy.connect(&db.name).await;
    for sql in [
        "SELECT add_one(1), coalesce(NULL, 2), greatest(1, 2), now()",
        "SELECT place(1)",
        "INSERT INTO orders VALUES (2, 3)",
        "DO $$BEGIN INSERT INTO orders VALUES (3, 4); END$$",
    ] {
        client.simple_query(sql).await.expect(sql);
    }
    assert_eq!(proxy.snapshot().pinned_sessions, 0);
    assert_eq!(
        one(&client, "SELECT count(*) FROM audit").await.as_deref(),
        Some("3")
    );
    // A write whose trigger sets state: the writer keeps its connection.
    client
        .simple_query("INSERT INTO tenants VALUES (9)")
        .await
        .unwrap();
    assert_eq!(proxy.snapshot().pinned_sessions, 1);
    assert_eq!(one(&client, TENANT).await.as_deref(), Some("9"));
    let other = proxy.connect(&db.name).await;
    assert_eq!(one(&other, TENANT).await, None);
    // A column default that sets state runs on INSERT: that writer is pinned too.
    other
        .simple_query("INSERT INTO stamped (id) VALUES (1)")
        .await
        .unwrap();
    assert_eq!(proxy.snapshot().pinned_sessions, 2);
    drop((client, other));
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_decide_over_what_warpdrive_reads() {
    let db = TestDatabase::create("code_rules").await;
    db.direct()
        .await
        .batch_execute(
            "CREATE FUNCTION harmless() RETURNS int LANGUAGE sql AS 'SELECT 1';
             CREATE FUNCTION dynamic(s text) RETURNS int LANGUAGE plpgsql AS
               $$BEGIN EXECUTE 'SELECT 1 WHERE ' || s; RETURN 1; END$$;",
        )
        .await
        .unwrap();
    let rules = std::env::temp_dir().join(format!("{}-session.toml", db.name));
    std::fs::write(
        &rules,
        "[session]\nharmless = \"unsafe\"\ndynamic = { safety = \"safe\", reason = \"runs only SELECTs\" }\n",
    )
    .unwrap();
    let proxy = Proxy::start_with_rules(
        common::deployment(&db.name, common::small_pool(2)),
        rules.clone(),
    )
    .await;
    let reads = proxy.connect(&db.name).await;
    reads.simple_query("SELECT dynamic('true')").await.unwrap();
    assert_eq!(proxy.snapshot().pinned_sessions, 0);
    reads.simple_query("SELECT harmless()").await.unwrap();
    assert_eq!(proxy.snapshot().pinned_sessions, 1);
    drop(reads);
    proxy.stop().await;
    std::fs::remove_file(rules).unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_created_through_warpdrive_is_judged_at_once() {
    let db = TestDatabase::create("code_ddl").await;
    // Pinned clients keep their connections: room for each.
    let proxy = Proxy::for_database(&db, 4).await;
    let client = proxy.connect(&db.name).await;
    // The catalog was read before the function existed; DDL makes it read again.
    client.simple_query("SELECT 1").await.unwrap();
    client
        .batch_execute(
            "CREATE FUNCTION tenant(t text) RETURNS text LANGUAGE sql
               AS $$ SELECT set_config('app.tenant', t, false) $$",
        )
        .await
        .unwrap();
    client.simple_query("SELECT tenant('5')").await.unwrap();
    assert_eq!(proxy.snapshot().pinned_sessions, 1);
    // Created and called in one transaction: not yet visible to warpdrive's reads.
    let other = proxy.connect(&db.name).await;
    other
        .batch_execute(
            "BEGIN; CREATE FUNCTION tenant2(t text) RETURNS text LANGUAGE sql
               AS $$ SELECT set_config('app.tenant', t, false) $$;",
        )
        .await
        .unwrap();
    other.simple_query("SELECT tenant2('6')").await.unwrap();
    other.batch_execute("COMMIT").await.unwrap();
    assert_eq!(proxy.snapshot().pinned_sessions, 2);
    // Created directly, behind warpdrive's back: the catalog is read again when a
    // function it does not list is called (at most once a second), and judged.
    let third = proxy.connect(&db.name).await;
    for (create, call, pinned) in [
        (
            "CREATE FUNCTION plus(x int) RETURNS int LANGUAGE sql AS 'SELECT x + 1'",
            "SELECT plus(1)",
            2,
        ),
        (
            "CREATE FUNCTION tenant3(t text) RETURNS text LANGUAGE sql
               AS $$ SELECT set_config('app.tenant', t, false) $$",
            "SELECT tenant3('7')",
            3,
        ),
    ] {
        db.direct().await.batch_execute(create).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        third.simple_query(call).await.unwrap();
        assert_eq!(proxy.snapshot().pinned_sessions, pinned, "{call}");
    }
    // A function that does not exist fails at the origin; nothing to pin.
    let fourth = proxy.connect(&db.name).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        fourth
            .simple_query("SELECT no_such_function()")
            .await
            .is_err()
    );
    assert_eq!(proxy.snapshot().pinned_sessions, 3);
    drop((client, other, third, fourth));
    proxy.stop().await;
    db.drop_now().await;
}

/// A FunctionCall message: the function by OID, text arguments, a text result.
fn function_call(m: &mut bytes::BytesMut, oid: u32, arguments: &[&str]) {
    use bytes::BufMut;
    encode::message(m, b'F', |b| {
        b.put_u32(oid);
        b.put_i16(0);
        b.put_i16(arguments.len() as i16);
        for argument in arguments {
            b.put_i32(argument.len() as i32);
            b.put_slice(argument.as_bytes());
        }
        b.put_i16(0);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_by_oid_are_judged_like_statements() {
    let db = TestDatabase::create("code_fastpath").await;
    let direct = db.direct().await;
    direct.batch_execute(TWO_SCHEMAS).await.unwrap();
    let oid = |signature: &str| {
        let direct = &direct;
        let signature = signature.to_owned();
        async move {
            direct
                .query_one(&format!("SELECT '{signature}'::regprocedure::oid"), &[])
                .await
                .unwrap()
                .get::<_, u32>(0)
        }
    };
    let set_config = oid("set_config(text,text,boolean)").await;
    let lock = oid("pg_advisory_lock(bigint)").await;
    let mut deployment = common::trust_deployment(&db.name, 2);
    deployment.cache.enabled = true;
    let proxy = Proxy::start(deployment).await;
    let mut raw = RawClient::connect(proxy.addr, &db.name).await;
    raw.send(|m| function_call(m, set_config, &["search_path", "s2", "false"]))
        .await;
    assert_eq!(raw.tags().await, "VZ");
    raw.send(|m| function_call(m, lock, &["4242"])).await;
    assert_eq!(raw.tags().await, "VZ");
    raw.send(|m| encode::query(m, "SELECT v FROM t2")).await;
    let replies = raw.until_ready().await;
    assert!(
        replies
            .iter()
            .any(|(tag, body)| *tag == b'D' && body.ends_with(b"s2"))
    );
    for _ in 0..4 {
        let fresh = proxy.connect(&db.name).await;
        assert_eq!(
            one(&fresh, "SELECT v FROM t2").await.as_deref(),
            Some("public")
        );
        assert_eq!(
            one(&fresh, "SELECT pg_try_advisory_lock(4242)")
                .await
                .as_deref(),
            Some("f")
        );
    }
    drop(raw);
    // The client left: its connection closed, and the lock with it.
    let mut released = false;
    for _ in 0..50 {
        if direct
            .query_one("SELECT pg_try_advisory_lock(4242)", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
        {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        released,
        "the advisory lock outlived the client that took it"
    );
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_makes_a_pinned_client_pooled_again() {
    let db = TestDatabase::create("code_discard").await;
    db.direct()
        .await
        .batch_execute(
            "CREATE FUNCTION set_tenant(t text) RETURNS text LANGUAGE sql
               AS $$ SELECT set_config('app.tenant', t, false) $$",
        )
        .await
        .unwrap();
    let proxy = Proxy::start(common::cached_deployment(&db.name, 2)).await;
    let client = proxy.connect(&db.name).await;
    client.simple_query("SELECT set_tenant('3')").await.unwrap();
    assert_eq!(proxy.snapshot().pinned_sessions, 1);
    for _ in 0..2 {
        client.simple_query("SELECT 42 AS answer").await.unwrap();
    }
    assert_eq!(
        proxy.count("hit"),
        0,
        "a pinned client is not served from the cache"
    );
    client.batch_execute("DISCARD ALL").await.unwrap();
    // Pooled again, on a fresh connection: the tenant is not merely empty but unset, and
    // the cache serves the client.
    assert_eq!(one(&client, TENANT).await, None);
    for _ in 0..2 {
        client.simple_query("SELECT 42 AS answer").await.unwrap();
    }
    assert_eq!(proxy.count("hit"), 1);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}
