//! `warpdrive validate` as a user runs it: one precise cause per failure, with its stable
//! name, text or JSON, and the exit status; and the single-deployment form refusing a
//! setup no client could log in to.

mod common;

use common::{PASSWORD, Proxy, TestDatabase};

/// Runs `warpdrive validate ARGS --json`: the exit status and the checks.
async fn validate(args: &[&str]) -> (Option<i32>, Vec<serde_json::Value>) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_warpdrive"))
        .arg("validate")
        .args(args)
        .arg("--json")
        .output()
        .await
        .expect("warpdrive runs");
    let checks = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("a JSON array: {output:?}"));
    (output.status.code(), checks)
}

/// The cause `validate --origin URL` names, `None` when the check passed.
async fn cause(origin: &str) -> Option<String> {
    let (code, checks) = validate(&["--origin", origin]).await;
    assert_eq!(checks.len(), 1, "{checks:?}");
    let cause = checks[0]["failure"]["cause"].as_str().map(str::to_owned);
    assert_eq!(
        code,
        Some(if cause.is_some() { 1 } else { 0 }),
        "{checks:?}"
    );
    if cause.is_some() {
        let hint = checks[0]["failure"]["hint"].as_str().unwrap_or_default();
        assert!(!hint.is_empty(), "{checks:?}");
    }
    cause
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cause_that_can_be_produced_locally_is_named() {
    let db = TestDatabase::create("val_causes").await;
    let url = |rest: &str| format!("postgres://postgres@127.0.0.1:5432/{rest}");
    assert_eq!(
        cause(&url(&format!("{}?sslmode=disable", db.name))).await,
        None
    );
    assert_eq!(
        cause("postgres://postgres@no-such-host.invalid/test")
            .await
            .as_deref(),
        Some("host_not_found")
    );
    assert_eq!(
        cause("postgres://postgres@127.0.0.1:1/test")
            .await
            .as_deref(),
        Some("connection_refused")
    );
    assert_eq!(
        cause(&url(&format!("{}_missing?sslmode=disable", db.name)))
            .await
            .as_deref(),
        Some("database_not_found")
    );
    // A CA that did not sign the origin's certificate.
    let dir = std::env::temp_dir().join(format!("warpdrive-validate-{}", db.name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca = rcgen::generate_simple_self_signed(vec!["elsewhere".to_owned()]).expect("CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).expect("write CA");
    assert_eq!(
        cause(&url(&format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            db.name,
            ca_file.display()
        )))
        .await
        .as_deref(),
        Some("certificate_invalid")
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_tls_and_permissions_are_told_apart() {
    let db = TestDatabase::create("val_auth").await;
    // An origin that checks passwords and offers no TLS: warpdrive itself.
    let origin = Proxy::start(common::deployment(&db.name, common::small_pool(1))).await;
    let at = |password: &str, sslmode: &str| {
        format!(
            "postgres://{}:{password}@127.0.0.1:{}/{}?sslmode={sslmode}",
            common::ORIGIN_USER,
            origin.addr.port(),
            db.name
        )
    };
    assert_eq!(cause(&at(PASSWORD, "disable")).await, None);
    assert_eq!(
        cause(&at("wrong", "disable")).await.as_deref(),
        Some("bad_credentials")
    );
    assert_eq!(
        cause(&at(PASSWORD, "require")).await.as_deref(),
        Some("tls_unsupported")
    );
    origin.stop().await;
    // A role the database does not let in.
    let role = format!("{}_outsider", db.name);
    let admin = common::admin().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; REVOKE CONNECT ON DATABASE {0} FROM PUBLIC",
            db.name
        ))
        .await
        .expect("role");
    let denied = cause(&format!(
        "postgres://{role}@127.0.0.1:5432/{}?sslmode=disable",
        db.name
    ))
    .await;
    db.drop_now().await;
    admin
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .expect("drop role");
    assert_eq!(denied.as_deref(), Some("permission_denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_file_is_checked_database_by_database() {
    let db = TestDatabase::create("val_config").await;
    let dir = std::env::temp_dir().join(format!("warpdrive-validate-{}", db.name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("warpdrive.toml");
    // A server that accepts connections and never answers: not PostgreSQL.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let silent_port = silent.local_addr().expect("address").port();
    std::fs::write(
        &file,
        format!(
            r#"
[[deployment]]
name = "shop"
listen = "127.0.0.1:0"
origin = "postgres://postgres:{PASSWORD}@127.0.0.1:5432/{0}?sslmode=disable"
databases = ["{0}", "{0}_gone"]

[[deployment]]
name = "far"
listen = "127.0.0.1:1"
origin = "postgres://postgres:{PASSWORD}@127.0.0.1:{silent_port}/{0}?sslmode=disable"
[deployment.pool]
connect_timeout = "1s"
"#,
            db.name
        ),
    )
    .expect("write config");
    let (code, checks) = validate(&["--config", file.to_str().expect("path")]).await;
    assert_eq!(code, Some(1));
    let summary: Vec<(String, String, Option<String>)> = checks
        .iter()
        .map(|check| {
            (
                check["deployment"].as_str().unwrap_or_default().to_owned(),
                check["database"].as_str().unwrap_or_default().to_owned(),
                check["failure"]["cause"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let name = |suffix: &str| format!("{}{suffix}", db.name);
    assert_eq!(
        summary,
        vec![
            ("shop".to_owned(), name(""), None),
            (
                "shop".to_owned(),
                name("_gone"),
                Some("database_not_found".to_owned())
            ),
            (
                "far".to_owned(),
                name(""),
                Some("protocol_error".to_owned())
            ),
        ]
    );
    assert!(
        checks
            .iter()
            .all(|check| !check.to_string().contains(PASSWORD)),
        "{checks:?}"
    );
    drop(silent);
    std::fs::remove_dir_all(&dir).expect("clean up");
    db.drop_now().await;
}

#[test]
fn text_output_names_the_cause_and_the_hint() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_warpdrive"))
        .args([
            "validate",
            "--origin",
            "postgres://postgres@127.0.0.1:1/test",
        ])
        .output()
        .expect("warpdrive runs");
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("connection_refused"), "{stdout}");
    assert!(stdout.contains("hint: check the port"), "{stdout}");
}

#[test]
fn serving_an_origin_without_a_password_is_refused_unless_clients_are_trusted() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_warpdrive"))
        .args([
            "serve",
            "--origin",
            "postgres://postgres@127.0.0.1:5432/test",
            "--listen",
            "127.0.0.1:1",
            "--admin",
            "off",
        ])
        .output()
        .expect("serve runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no password"), "{stderr}");
    assert!(stderr.contains("--client-auth trust"), "{stderr}");
}

/// A server that is not PostgreSQL (an HTTP server on the port, with sslmode=prefer and
/// with TLS off) is named as such, not as a timeout or an unreachable host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_postgresql_is_named() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut stream,
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                )
                .await;
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            });
        }
    });
    for sslmode in ["prefer", "disable"] {
        let origin = format!("postgres://postgres@127.0.0.1:{port}/test?sslmode={sslmode}");
        let (code, checks) = validate(&["--origin", &origin]).await;
        assert_eq!(code, Some(1));
        let failure = &checks[0]["failure"];
        assert_eq!(failure["cause"], "protocol_error", "{checks:?}");
        let message = failure["message"].as_str().unwrap_or_default();
        assert!(message.contains("does not speak PostgreSQL"), "{message}");
    }
    server.abort();
}
