//! Real MySQL tools and drivers through warpdrive, with no errors: the mariadb client,
//! sysbench (oltp_read_only, oltp_point_select), PyMySQL and mysql2.

mod common;

use common::mysql::{MYSQL_USER, MysqlDatabase, mysql_deployment};
use common::{PASSWORD, Proxy, small_pool};
use warpdrive::config::ClientAuth;

/// Runs a program without blocking the runtime warpdrive serves on.
async fn run(program: &'static str, args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run(program, &args, &[])
    })
    .await
    .expect("the program ran")
}

fn drivers_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mariadb_client_runs_a_script() {
    let db = MysqlDatabase::create("cli").await;
    let other = MysqlDatabase::create("cli_other").await;
    let proxy = Proxy::start(mysql_deployment(&db.name, small_pool(2))).await;
    let script = format!(
        "CREATE TABLE {other}.t (x INT);\n\
         USE {other};\n\
         SET sql_mode = 'ANSI_QUOTES', time_zone = '+02:00';\n\
         INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); SELECT COUNT(*) AS n FROM \"t\";\n\
         START TRANSACTION; INSERT INTO t VALUES (3); ROLLBACK;\n\
         SELECT @@time_zone AS zone, DATABASE() AS db, SUM(x) AS total FROM t;\n",
        other = other.name
    );
    let path = std::env::temp_dir().join(format!("{}.sql", db.name));
    std::fs::write(&path, script).expect("script");
    let port = proxy.addr.port().to_string();
    let (ok, output) = run(
        "sh",
        vec![
            "-c".into(),
            format!(
                "mariadb --ssl=0 -h 127.0.0.1 -P {port} -u {MYSQL_USER} -p{PASSWORD} {} < {}",
                db.name,
                path.display()
            ),
        ],
    )
    .await;
    let _ = std::fs::remove_file(&path);
    assert!(ok, "{output}");
    assert!(output.contains("n\n2\n"), "{output}");
    assert!(
        output.contains(&format!("+02:00\t{}\t3", other.name)),
        "{output}"
    );
    proxy.stop().await;
    other.drop_now().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_read_only_and_point_select_run_without_errors() {
    let db = MysqlDatabase::create("sysbench").await;
    let mut deployment = mysql_deployment(&db.name, small_pool(4));
    // libmariadb loads caching_sha2_password as a plugin that may be missing.
    deployment.client_auth = ClientAuth::MysqlNative;
    let proxy = Proxy::start(deployment).await;
    let port = proxy.addr.port().to_string();
    let common_args = |test: &str, command: &str| -> Vec<String> {
        [
            test,
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            &format!("--mysql-user={MYSQL_USER}"),
            &format!("--mysql-password={PASSWORD}"),
            &format!("--mysql-db={}", db.name),
            "--mysql-ssl=off",
            "--tables=1",
            "--table-size=1000",
            "--threads=4",
            "--time=3",
            command,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let (ok, output) = run("sysbench", common_args("oltp_read_only", "prepare")).await;
    assert!(ok, "sysbench prepare: {output}");
    for test in ["oltp_read_only", "oltp_point_select"] {
        let (ok, output) = run("sysbench", common_args(test, "run")).await;
        assert!(ok, "sysbench {test}: {output}");
        assert!(
            output.contains("ignored errors:                      0"),
            "{test}: {output}"
        );
        assert!(!output.contains("FATAL"), "{test}: {output}");
    }
    proxy.stop().await;
    db.drop_now().await;
}

/// Runs a driver's program (`program script port database [other] password`) through
/// warpdrive with caching off, then on (every read the program checks is answered
/// right, repeats from the cache).
async fn runs_with_and_without_cache(tag: &str, program: &'static str, script: &str, other: bool) {
    for caching in [false, true] {
        let db = MysqlDatabase::create(tag).await;
        let other = match other {
            true => Some(MysqlDatabase::create(&format!("{tag}_other")).await),
            false => None,
        };
        let mut deployment = mysql_deployment(&db.name, small_pool(2));
        deployment.cache.enabled = caching;
        let proxy = Proxy::start(deployment).await;
        let mut args = vec![
            drivers_dir().join(script).display().to_string(),
            proxy.addr.port().to_string(),
            db.name.clone(),
        ];
        args.extend(other.as_ref().map(|other| other.name.clone()));
        args.push(PASSWORD.to_owned());
        let (ok, output) = run(program, args).await;
        assert!(
            ok && output.trim_end().ends_with("ok"),
            "caching {caching}: {output}"
        );
        assert_eq!(
            proxy.count("hit") > 0,
            caching,
            "hits with caching {caching}"
        );
        proxy.stop().await;
        if let Some(other) = other {
            other.drop_now().await;
        }
        db.drop_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_runs_its_program() {
    runs_with_and_without_cache("pymysql", "python3", "pymysql_smoke.py", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql2_runs_its_program_with_text_queries_and_execute() {
    runs_with_and_without_cache("mysql2", "node", "mysql2_smoke.js", false).await;
}
