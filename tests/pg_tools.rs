//! psql and pgbench through warpdrive, TLS towards clients and origins, several
//! deployments in one process, and max_query_duration.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{PASSWORD, Proxy, TestDatabase};
use warpdrive::config::{Config, ServerTls, SslMode};
use warpdrive::server::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_runs_through_warpdrive() {
    let db = TestDatabase::create("psql").await;
    let proxy = Proxy::for_database(&db, 2).await;
    let port = proxy.addr.port().to_string();
    let script = r#"
\set ON_ERROR_STOP 1
CREATE TABLE notes (id serial PRIMARY KEY, body text);
INSERT INTO notes (body) VALUES ('first'), ('second');
BEGIN;
UPDATE notes SET body = 'changed' WHERE id = 1;
ROLLBACK;
\copy notes (body) from stdin
third
fourth
\.
SELECT string_agg(body, ',' ORDER BY id) AS bodies FROM notes;
\copy (SELECT count(*) FROM notes) to stdout
\d notes
"#;
    let db_name = db.name.clone();
    let (ok, output) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                &db_name,
                "-X",
                "-q",
                "-A",
                "-t",
            ])
            .env("PGPASSWORD", PASSWORD)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("psql is required on the PATH");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("script");
        let output = child.wait_with_output().expect("psql finishes");
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    })
    .await
    .unwrap();
    assert!(ok, "{output}");
    assert!(output.contains("first,second,third,fourth"), "{output}");
    assert!(output.lines().any(|l| l.trim() == "4"), "{output}");
    assert!(output.contains("body"), "{output}");
    proxy.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_every_protocol_mode() {
    let db = TestDatabase::create("pgbench").await;
    let (ok, output) = common::run(
        "pgbench",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-i",
            "-q",
            "-s",
            "1",
            &db.name,
        ],
        &[],
    );
    assert!(ok, "pgbench -i: {output}");
    let proxy = Proxy::for_database(&db, 4).await;
    let port = proxy.addr.port().to_string();
    for mode in ["simple", "extended", "prepared"] {
        let (port, name) = (port.clone(), db.name.clone());
        let (ok, output) = tokio::task::spawn_blocking(move || {
            common::run(
                "pgbench",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-M",
                    mode,
                    "-c",
                    "4",
                    "-j",
                    "2",
                    "-t",
                    "50",
                    &name,
                ],
                &[("PGPASSWORD", PASSWORD)],
            )
        })
        .await
        .unwrap();
        assert!(ok, "pgbench -M {mode}: {output}");
        assert!(
            output.contains("number of failed transactions: 0"),
            "pgbench -M {mode}: {output}"
        );
        assert!(
            output.contains("number of transactions actually processed: 200/200"),
            "pgbench -M {mode}: {output}"
        );
    }
    proxy.stop().await;
    db.drop_now().await;
}

fn write_certificate(dir: &std::path::Path) -> ServerTls {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    ServerTls { cert, key }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_towards_clients_when_configured() {
    let db = TestDatabase::create("tls").await;
    let dir = std::env::temp_dir().join(format!("warpdrive-tls-{}", db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let mut deployment = common::deployment(&db.name, common::small_pool(1));
    deployment.tls = Some(write_certificate(&dir));
    let proxy = Proxy::start(deployment).await;
    let (ok, output) = common::psql(
        proxy.addr.port(),
        &db.name,
        &["\\conninfo", "SELECT 40 + 2"],
        "require",
    )
    .await;
    assert!(ok, "{output}");
    assert!(output.contains("SSL connection"), "{output}");
    assert!(output.contains("42"), "{output}");
    // Without a certificate, SSLRequest is answered 'N': sslmode=require fails, prefer works.
    let plain = Proxy::for_database(&db, 1).await;
    let (ok, output) = common::psql(plain.addr.port(), &db.name, &["SELECT 1"], "require").await;
    assert!(!ok, "{output}");
    assert!(output.contains("does not support SSL"), "{output}");
    plain.stop().await;
    proxy.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_tls_modes() {
    let db = TestDatabase::create("origin_tls").await;
    // The local server has a self-signed certificate: require encrypts without checking it.
    let mut deployment = common::deployment(&db.name, common::small_pool(1));
    deployment.origin.ssl_mode = SslMode::Require;
    let proxy = Proxy::start(deployment).await;
    let client = proxy.connect(&db.name).await;
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the origin connection is encrypted");
    drop(client);
    proxy.stop().await;
    // verify-full against a certificate no trusted CA signed: refused, with the reason.
    let dir = std::env::temp_dir().join(format!("warpdrive-ca-{}", db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let unrelated_ca = write_certificate(&dir).cert;
    let mut deployment = common::deployment(&db.name, common::small_pool(1));
    deployment.origin.ssl_mode = SslMode::VerifyFull;
    deployment.origin.ssl_root_cert = Some(unrelated_ca);
    let proxy = Proxy::start(deployment).await;
    let error = match proxy.connect_checked(&db.name).await {
        Ok(_) => panic!("an unverifiable origin certificate was accepted"),
        Err(error) => error,
    };
    let message = error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("TLS handshake"), "{error:?}");
    proxy.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_deployments_in_one_process() {
    let first = TestDatabase::create("multi_a").await;
    let second = TestDatabase::create("multi_b").await;
    let text = format!(
        r#"
        [admin]
        enabled = false

        [[deployment]]
        name = "a"
        listen = "127.0.0.1:0"
        origin = "postgres://postgres:{PASSWORD}@127.0.0.1:5432/{a}?sslmode=disable"
        [deployment.pool]
        min_idle = 0
        max_size = 1

        [[deployment]]
        name = "b"
        listen = "127.0.0.2:0"
        origin = "postgres://postgres:{PASSWORD}@127.0.0.1:5432/{b}?sslmode=disable"
        [deployment.pool]
        min_idle = 0
        max_size = 1
        "#,
        a = first.name,
        b = second.name
    );
    let config = Config::from_toml(&text, "test").expect("valid");
    let server = Server::bind(config).await.expect("binds");
    let addrs = server.local_addrs();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    for (addr, db) in addrs.iter().zip([&first, &second]) {
        let url = format!(
            "host={} port={} user=postgres password={PASSWORD} dbname={}",
            addr.ip(),
            addr.port(),
            db.name
        );
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let name: String = client
            .query_one("SELECT current_database()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, db.name);
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
    first.drop_now().await;
    second.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_query_duration_cancels_at_the_origin() {
    let db = TestDatabase::create("duration").await;
    let mut pool = common::small_pool(1);
    pool.max_query_duration = Duration::from_millis(500);
    let proxy = Proxy::start(common::deployment(&db.name, pool)).await;
    let client = proxy.connect(&db.name).await;
    let started = std::time::Instant::now();
    let error = client
        .simple_query("SELECT pg_sleep(20)")
        .await
        .unwrap_err();
    let db_error = error.as_db_error().expect("server error");
    assert_eq!(db_error.code().code(), "57014");
    assert!(
        db_error.message().contains("max_query_duration"),
        "{}",
        db_error.message()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);
    proxy.stop().await;
    db.drop_now().await;
}
