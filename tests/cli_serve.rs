//! `warpdrive serve` as a process: Hyperdrive's flag names, the admin listener,
//! `warpdrive stats`, `warpdrive purge`, and SIGTERM.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{PASSWORD, TestDatabase};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_until_listening(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("warpdrive did not start listening on {port}");
}

/// `warpdrive serve --origin` for `db` on `port`, admin on `admin`, with more flags.
fn serve(db: &TestDatabase, port: u16, admin: u16, flags: &[&str]) -> Served {
    let origin = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:5432/{}?sslmode=disable",
        db.name
    );
    let (listen, admin) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin}"));
    let child = Command::new(env!("CARGO_BIN_EXE_warpdrive"))
        .args([
            "serve", "--origin", &origin, "--listen", &listen, "--admin", &admin,
        ])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("warpdrive starts");
    Served(child)
}

async fn connect(port: u16, db: &TestDatabase) -> tokio_postgres::Client {
    let url = format!(
        "host=127.0.0.1 port={port} user=postgres password={PASSWORD} dbname={}",
        db.name
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect through the warpdrive process");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_flags_admin_stats_and_sigterm() {
    let db = TestDatabase::create("cli_serve").await;
    let (port, admin) = (free_port(), free_port());
    let mut served = serve(&db, port, admin, &["--max-age", "30", "--swr", "5"]);
    wait_until_listening(port).await;
    let client = connect(port, &db).await;
    for _ in 0..3 {
        client.simple_query("SELECT 42").await.unwrap();
    }
    let metrics = warpdrive::admin::get(&format!("127.0.0.1:{admin}"), "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains("warpdrive_queries_total{deployment=\"default\",protocol=\"postgresql\",cache_status=\"hit\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warpdrive_queries_total{deployment=\"default\",protocol=\"postgresql\",cache_status=\"miss\"} 1")
    );
    let stats = Command::new(env!("CARGO_BIN_EXE_warpdrive"))
        .args(["stats", "--admin", &format!("127.0.0.1:{admin}")])
        .output()
        .expect("stats runs");
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.status.success(), "{stats:?}");
    assert!(
        text.starts_with("deployment default (postgresql): hit ratio 66.7% (2 hits, 1 misses)"),
        "{text}"
    );
    assert!(text.contains("hit"), "{text}");
    drop(client);
    // SIGTERM: the process drains and exits 0.
    let pid = served.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = served.0.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exited.expect("exits after SIGTERM").success());
    db.drop_now().await;
}

/// `warpdrive purge`: the entries that read a table, then everything; what was dropped
/// is printed, and the purged reads go to the origin again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_table_and_all() {
    let db = TestDatabase::create("cli_purge").await;
    db.direct()
        .await
        .batch_execute(
            "CREATE SCHEMA shop; CREATE TABLE shop.prices (p int); CREATE TABLE stock (n int)",
        )
        .await
        .unwrap();
    let (port, admin) = (free_port(), free_port());
    let _served = serve(&db, port, admin, &[]);
    wait_until_listening(port).await;
    let client = connect(port, &db).await;
    let admin = format!("127.0.0.1:{admin}");
    let misses = || async {
        let stats: Vec<warpdrive::metrics::DeploymentSnapshot> =
            serde_json::from_str(&warpdrive::admin::get(&admin, "/stats").await.unwrap()).unwrap();
        stats[0]
            .statuses
            .iter()
            .find(|s| s.status.name() == "miss")
            .map_or(0, |s| s.queries)
    };
    let reads = [
        "SELECT count(*) FROM shop.prices",
        "SELECT count(*) FROM stock",
    ];
    for sql in reads {
        client.simple_query(sql).await.unwrap();
    }
    assert_eq!(misses().await, 2);
    let purge = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_warpdrive"))
            .arg("purge")
            .args(["--admin", &admin])
            .args(args)
            .output()
            .expect("purge runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let text = purge(&["--table", "prices", "--deployment", "default"]);
    assert!(
        text.starts_with("dropped 1 cached entries in this instance (default: 1)"),
        "{text}"
    );
    for sql in reads {
        client.simple_query(sql).await.unwrap();
    }
    assert_eq!(misses().await, 3, "only the purged read went to the origin");
    assert!(purge(&["--all"]).starts_with("dropped 2 cached entries"));
    let unknown = Command::new(env!("CARGO_BIN_EXE_warpdrive"))
        .args(["purge", "--all", "--deployment", "nope", "--admin", &admin])
        .output()
        .expect("purge runs");
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("no deployment \"nope\" here; deployments: default"),
        "{unknown:?}"
    );
    drop(client);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_disabled_and_a_rules_file() {
    let db = TestDatabase::create("cli_flags").await;
    let rules = std::env::temp_dir().join(format!("{}.rules.toml", db.name));
    std::fs::write(&rules, "[functions]\nslugify = \"immutable\"\n").unwrap();
    let (port, admin) = (free_port(), free_port());
    let rules_flag = rules.display().to_string();
    let _served = serve(
        &db,
        port,
        admin,
        &["--caching-disabled", "--rules", &rules_flag],
    );
    wait_until_listening(port).await;
    let client = connect(port, &db).await;
    for _ in 0..2 {
        client.simple_query("SELECT 42").await.unwrap();
    }
    let metrics = warpdrive::admin::get(&format!("127.0.0.1:{admin}"), "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "warpdrive_queries_total{deployment=\"default\",protocol=\"postgresql\",cache_status=\"disabled\"} 2"
        ),
        "{metrics}"
    );
    drop(client);
    // An invalid rules file stops serve at start, naming the file and the entry.
    std::fs::write(&rules, "[functions]\nslugify = \"sometimes\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_warpdrive"))
        .args([
            "serve",
            "--origin",
            "postgres://u:p@127.0.0.1/db",
            "--admin",
            "off",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--rules",
            &rules_flag,
        ])
        .output()
        .expect("serve runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&rules_flag) && stderr.contains("slugify"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(rules);
    db.drop_now().await;
}

#[test]
fn stats_without_a_running_warpdrive_says_so() {
    let output = Command::new(env!("CARGO_BIN_EXE_warpdrive"))
        .args(["stats", "--admin", &format!("127.0.0.1:{}", free_port())])
        .output()
        .expect("stats runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is warpdrive running"));
}

#[test]
fn max_age_above_an_hour_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_warpdrive"))
        .args([
            "serve",
            "--origin",
            "postgres://u:p@127.0.0.1/db",
            "--max-age",
            "7200",
            "--admin",
            "off",
        ])
        .output()
        .expect("serve runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("at most 3600"));
}
