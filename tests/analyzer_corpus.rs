//! Every query in `fixtures/analyzer/` gets the status its case says.
//!
//! Case format (see `fixtures/analyzer/README.md`):
//!
//! ```text
//! >>> STATUS [bypass=STATUS] [# note]
//! SQL, up to the next `>>>` line
//! ```
//!
//! The directory (`postgres/` or `mysql/`) names the dialect. A failure names the file
//! and line of the case.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use warpdrive::analyze::{Analyzer, AnalyzerOptions, Dialect, StableFunctions, Status};

struct Case {
    file: PathBuf,
    line: usize,
    expected: Status,
    expected_bypass: Option<Status>,
    sql: String,
}

fn parse_header(header: &str, file: &Path, line: usize) -> (Status, Option<Status>) {
    let header = header.split('#').next().unwrap_or("");
    let mut words = header.split_whitespace();
    let place = format!("{}:{line}", file.display());
    let status = words
        .next()
        .unwrap_or_else(|| panic!("{place}: case without a status"));
    let status =
        Status::from_name(status).unwrap_or_else(|| panic!("{place}: unknown status {status}"));
    let bypass = words.next().map(|word| {
        let name = word
            .strip_prefix("bypass=")
            .unwrap_or_else(|| panic!("{place}: unexpected {word:?} after the status"));
        Status::from_name(name).unwrap_or_else(|| panic!("{place}: unknown status {name}"))
    });
    assert!(
        words.next().is_none(),
        "{place}: trailing words after the header"
    );
    (status, bypass)
}

fn read_cases(file: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(file).expect("corpus file is readable UTF-8");
    let mut cases: Vec<Case> = Vec::new();
    let mut sql_lines: Vec<&str> = Vec::new();
    let finish = |cases: &mut Vec<Case>, lines: &mut Vec<&str>| {
        if let Some(case) = cases.last_mut() {
            case.sql = lines.join("\n").trim_matches('\n').trim_end().to_owned();
        }
        lines.clear();
    };
    for (index, line) in text.lines().enumerate() {
        if let Some(header) = line.strip_prefix(">>>") {
            finish(&mut cases, &mut sql_lines);
            let (expected, expected_bypass) = parse_header(header, file, index + 1);
            cases.push(Case {
                file: file.to_owned(),
                line: index + 1,
                expected,
                expected_bypass,
                sql: String::new(),
            });
        } else if !cases.is_empty() {
            sql_lines.push(line);
        }
    }
    finish(&mut cases, &mut sql_lines);
    cases
}

fn corpus(dialect_dir: &str) -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/analyzer")
        .join(dialect_dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus directory exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    files.iter().flat_map(|file| read_cases(file)).collect()
}

fn check_dialect(dialect: Dialect, dir: &str) -> (usize, String) {
    let analyzer = Analyzer::with_builtin_rules(AnalyzerOptions::default());
    let cases = corpus(dir);
    let mut failures = String::new();
    for case in &cases {
        let analysis = analyzer.analyze(dialect, &case.sql);
        let mut check = |policy: StableFunctions, expected: Status| {
            let got = analysis.status_under(policy);
            if got != expected {
                let _ = writeln!(
                    failures,
                    "{}:{}: expected {expected}, got {got} (stable_functions = {policy:?})\n    sql: {}\n    reasons: {:?}",
                    case.file.display(),
                    case.line,
                    case.sql.replace('\n', "\n         "),
                    analysis
                        .reasons_under(policy)
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>(),
                );
            }
        };
        check(StableFunctions::Cache, case.expected);
        if let Some(bypass) = case.expected_bypass {
            check(StableFunctions::Bypass, bypass);
        }
    }
    (cases.len(), failures)
}

#[test]
fn postgres_corpus() {
    let (count, failures) = check_dialect(Dialect::Postgres, "postgres");
    assert!(count >= 150, "only {count} PostgreSQL cases");
    assert!(
        failures.is_empty(),
        "PostgreSQL corpus mismatches:\n{failures}"
    );
}

#[test]
fn mysql_corpus() {
    let (count, failures) = check_dialect(Dialect::Mysql, "mysql");
    assert!(count >= 100, "only {count} MySQL cases");
    assert!(failures.is_empty(), "MySQL corpus mismatches:\n{failures}");
}

#[test]
fn the_corpus_covers_every_analyzer_status_but_oversized() {
    let mut seen: Vec<Status> = corpus("postgres")
        .into_iter()
        .chain(corpus("mysql"))
        .map(|case| case.expected)
        .collect();
    seen.sort_by_key(|status| status.name());
    seen.dedup();
    for status in Status::ALL
        .into_iter()
        .filter(|s| *s != Status::OversizedQuery)
    {
        assert!(seen.contains(&status), "no corpus case expects {status}");
    }
    assert!(corpus("postgres").len() + corpus("mysql").len() >= 300);
}
