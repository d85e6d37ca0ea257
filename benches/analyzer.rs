//! Analyzer speed over the fixture corpus, and the memo hit.
//!
//! `cargo bench --bench analyzer`. First it prints the distribution of per-query times over
//! the corpus (each query up to 300 bytes timed on its own, median of 101 runs); then the
//! criterion groups: `analyze/corpus` runs every such query once per iteration,
//! `analyze/query_*` times representative queries, `memo/hit_*` is the hot path for a
//! repeated text.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use warpdrive::analyze::{AnalysisMemo, Analyzer, AnalyzerOptions, Dialect};

fn corpus(max_bytes: usize) -> Vec<(Dialect, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/analyzer");
    let mut queries = Vec::new();
    for (dialect, dir) in [(Dialect::Postgres, "postgres"), (Dialect::Mysql, "mysql")] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("corpus directory")
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("corpus file");
            for case in text.split("\n>>>").skip(1) {
                let sql = case
                    .split_once('\n')
                    .map(|(_, sql)| sql.trim())
                    .unwrap_or("");
                if !sql.is_empty() && sql.len() <= max_bytes {
                    queries.push((dialect, sql.to_owned()));
                }
            }
        }
    }
    queries
}

const SAMPLES: [(&str, Dialect, &str); 4] = [
    (
        "point_select",
        Dialect::Postgres,
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    ),
    (
        "orm_join",
        Dialect::Postgres,
        "SELECT \"users\".\"id\", \"users\".\"email\", \"posts\".\"title\" FROM \"users\" LEFT JOIN \"posts\" ON \"posts\".\"user_id\" = \"users\".\"id\" WHERE \"users\".\"id\" = $1 AND \"posts\".\"published_at\" < now() ORDER BY \"posts\".\"published_at\" DESC LIMIT $2",
    ),
    (
        "volatile",
        Dialect::Postgres,
        "SELECT LASTVAL(), * FROM articles LIMIT 50",
    ),
    (
        "mysql_select",
        Dialect::Mysql,
        "SELECT `id`, `name` FROM `users` WHERE `id` = ? LIMIT 1",
    ),
];

/// Median time of one analysis of `sql`, over `runs` runs.
fn median_time(analyzer: &Analyzer, dialect: Dialect, sql: &str, runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            black_box(analyzer.analyze(dialect, black_box(sql)));
            started.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// Prints the distribution of per-query median times over the corpus.
fn print_distribution(analyzer: &Analyzer, queries: &[(Dialect, String)]) {
    let mut medians: Vec<Duration> = queries
        .iter()
        .map(|(dialect, sql)| median_time(analyzer, *dialect, sql, 101))
        .collect();
    medians.sort();
    let at = |q: f64| medians[((medians.len() - 1) as f64 * q) as usize];
    println!(
        "analyze/per-query over {} corpus queries <= 300 bytes: median {:?}, p90 {:?}, p99 {:?}, max {:?}",
        medians.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

fn bench_analyzer(c: &mut Criterion) {
    let analyzer = Analyzer::with_builtin_rules(AnalyzerOptions::default());
    let queries = corpus(300);
    assert!(!queries.is_empty(), "the corpus is empty");
    print_distribution(&analyzer, &queries);
    let mut group = c.benchmark_group("analyze");
    group.bench_function(format!("corpus_{}_queries", queries.len()), |b| {
        b.iter(|| {
            for (dialect, sql) in &queries {
                black_box(analyzer.analyze(*dialect, black_box(sql)));
            }
        })
    });
    for (name, dialect, sql) in SAMPLES {
        group.bench_function(format!("query_{name}"), |b| {
            b.iter(|| black_box(analyzer.analyze(dialect, black_box(sql))))
        });
    }
    group.finish();

    let memo = AnalysisMemo::new(analyzer, 1024);
    let mut group = c.benchmark_group("memo");
    for (name, dialect, sql) in SAMPLES {
        memo.analyze(dialect, sql);
        group.bench_function(format!("hit_{name}"), |b| {
            b.iter(|| black_box(memo.analyze(dialect, black_box(sql))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_analyzer);
criterion_main!(benches);
