//! `warpdrive check` as a user runs it: arguments, stdin, output, exit status.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn warpdrive(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warpdrive"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("warpdrive runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("stdin accepts the query");
    drop(input);
    child.wait_with_output().expect("warpdrive exits")
}

fn json(args: &[&str], stdin: Option<&str>) -> serde_json::Value {
    let output = warpdrive(args, stdin);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

#[test]
fn hyperdrive_examples_through_the_cli() {
    let cacheable = json(
        &[
            "check",
            "--dialect",
            "postgres",
            "--json",
            "SELECT * FROM articles WHERE DATE(published_time) = CURRENT_DATE() ORDER BY published_time DESC LIMIT 50",
        ],
        None,
    );
    assert_eq!(cacheable["status"], "cacheable");
    assert_eq!(cacheable["kind"], "read");
    assert_eq!(cacheable["statements"], 1);
    assert_eq!(cacheable["tables_read"], serde_json::json!(["articles"]));
    assert_eq!(cacheable["tables_written"], serde_json::json!([]));
    assert_eq!(
        cacheable["stable_functions"],
        serde_json::json!(["current_date", "date"])
    );

    let volatile = json(
        &[
            "check",
            "--dialect",
            "postgres",
            "--json",
            "SELECT LASTVAL(), * FROM articles LIMIT 50",
        ],
        None,
    );
    assert_eq!(volatile["status"], "volatile");
    assert_eq!(
        volatile["volatile_functions"],
        serde_json::json!(["lastval"])
    );
    assert_eq!(volatile["functions"], serde_json::json!(["lastval"]));
}

#[test]
fn stable_function_policy_flag() {
    let args = |policy| {
        vec![
            "check",
            "--dialect",
            "mysql",
            "--json",
            "--stable-functions",
            policy,
            "SELECT NOW()",
        ]
    };
    assert_eq!(json(&args("cache"), None)["status"], "cacheable");
    assert_eq!(json(&args("bypass"), None)["status"], "volatile");
}

#[test]
fn sql_from_stdin() {
    let value = json(
        &["check", "--dialect", "mysql", "--json", "-"],
        Some("SELECT RAND()\n"),
    );
    assert_eq!(value["status"], "volatile");
}

#[test]
fn text_output_says_the_decision_in_words() {
    let output = warpdrive(
        &["check", "--dialect", "postgres", "UPDATE t SET a = 1"],
        None,
    );
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(text.starts_with("uncacheable:"), "{text}");
    assert!(text.contains("tables written:     t"), "{text}");
}

#[test]
fn unparsable_sql_is_an_answer_not_a_failure() {
    let value = json(
        &[
            "check",
            "--dialect",
            "postgres",
            "--json",
            "SELECT FROM WHERE (",
        ],
        None,
    );
    assert_eq!(value["status"], "parseerror");
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        vec!["check", "--dialect", "oracle", "SELECT 1"],
        vec!["check", "SELECT 1"],
        vec!["check", "--dialect", "postgres"],
        vec![
            "check",
            "--dialect",
            "postgres",
            "--rules",
            "/nonexistent/rules.toml",
            "SELECT 1",
        ],
    ] {
        let output = warpdrive(&args, None);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(!output.stderr.is_empty(), "{args:?} explains itself");
    }
}

#[test]
fn a_rules_file_declares_a_user_function() {
    let dir = std::env::temp_dir().join(format!("warpdrive-cli-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("rules.toml");
    std::fs::write(&path, "[functions]\nslugify = \"immutable\"\n").expect("write rules");
    let path_text = path.to_str().expect("UTF-8 path");
    let sql = "SELECT slugify(title) FROM posts";
    let without = json(&["check", "--dialect", "postgres", "--json", sql], None);
    let with = json(
        &[
            "check",
            "--dialect",
            "postgres",
            "--json",
            "--rules",
            path_text,
            sql,
        ],
        None,
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(without["status"], "volatile");
    assert_eq!(with["status"], "cacheable");
}

#[test]
fn with_a_config_the_applicable_rule_is_shown() {
    let dir = std::env::temp_dir().join(format!("warpdrive-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("warpdrive.toml");
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, "[functions]\nslugify = \"immutable\"\n").expect("write rules");
    std::fs::write(
        &path,
        format!(
            r#"
        rules = "{}"
        [[deployment]]
        name = "shop"
        listen = "127.0.0.1:6999"
        origin = "postgres://app:pw@127.0.0.1/shop"
        [[deployment.cache.rule]]
        tables = ["prices"]
        max_age = "2s"
        [[deployment.cache.rule]]
        tables = ["sessions"]
        enabled = false
        "#,
            rules.display()
        ),
    )
    .expect("write config");
    let config = path.to_str().expect("UTF-8 path");
    let prices = json(
        &[
            "check",
            "--dialect",
            "postgres",
            "--json",
            "--config",
            config,
            "SELECT * FROM prices",
        ],
        None,
    );
    let sessions = json(
        &[
            "check",
            "--dialect",
            "postgres",
            "--json",
            "--config",
            config,
            "SELECT * FROM sessions",
        ],
        None,
    );
    // The configuration's rules file declares slugify() immutable.
    let slug = json(
        &[
            "check",
            "--dialect",
            "postgres",
            "--json",
            "--config",
            config,
            "SELECT slugify(name) FROM prices",
        ],
        None,
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(slug["status"], "cacheable", "{slug}");
    assert_eq!(prices["cache"]["cached"], true);
    assert_eq!(prices["cache"]["max_age_seconds"], 2.0);
    assert_eq!(
        prices["cache"]["rules"][0],
        "rule[0]: tables = [\"prices\"], max_age = 2s"
    );
    assert_eq!(sessions["cache"]["cached"], false);
    assert_eq!(sessions["cache"]["status"], "disabled");
    assert_eq!(prices["fingerprint"].as_str().map(str::len), Some(16));
}
