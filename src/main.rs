//! The `warpdrive` command line: parse arguments, call the library, print, exit.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use warpdrive::analyze::{Analyzer, AnalyzerOptions, Dialect, Rules, StableFunctions};
use warpdrive::check::CheckReport;
use warpdrive::config::Config;
use warpdrive::server::Server;

/// A query-result cache and connection pooler for PostgreSQL and MySQL/MariaDB.
#[derive(Parser)]
#[command(name = "warpdrive", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy: in front of one origin (--origin URL) or as configured (--config FILE).
    Serve(ServeArgs),
    /// Print the analyzer's decision about one query, without touching a database.
    Check(CheckArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// The origin: postgres://user:password@host:port/database[?sslmode=…]. Clients log in
    /// with the same user and password.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "config",
        required_unless_present = "config"
    )]
    origin: Option<String>,
    /// Address clients connect to (with --origin).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:6432",
        conflicts_with = "config"
    )]
    listen: SocketAddr,
    /// A TOML configuration file with one or more [[deployment]] tables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    /// SQL dialect of the query.
    #[arg(long, value_enum)]
    dialect: Dialect,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Policy for STABLE functions such as now(): cache them, or bypass the cache.
    #[arg(long, value_enum, default_value = "cache")]
    stable_functions: StableFunctions,
    /// A rules file merged over the built-in volatility rules of the dialect.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Texts longer than this many bytes are `oversizedquery`.
    #[arg(long, value_name = "BYTES", default_value_t = AnalyzerOptions::DEFAULT_MAX_QUERY_BYTES)]
    max_query_bytes: usize,
    /// The query text; `-` reads it from standard input.
    sql: String,
}

/// Exit status for bad usage, the same clap uses for a bad flag.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("warpdrive: {error:#}");
            ExitCode::from(USAGE_ERROR)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = match (&args.config, &args.origin) {
        (Some(path), _) => Config::from_file(path)?,
        (None, Some(origin)) => Config::single(args.listen, origin)?,
        (None, None) => anyhow::bail!("give --origin URL or --config FILE"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARPDRIVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        server.serve(shutdown_signal()).await;
        Ok(())
    })
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let sql = if args.sql == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the query from standard input (it must be UTF-8)")?;
        text
    } else {
        args.sql
    };
    let mut postgres = Rules::builtin(Dialect::Postgres);
    let mut mysql = Rules::builtin(Dialect::Mysql);
    if let Some(path) = &args.rules {
        match args.dialect {
            Dialect::Postgres => postgres = postgres.with_overrides_from(path)?,
            Dialect::Mysql => mysql = mysql.with_overrides_from(path)?,
        }
    }
    let options = AnalyzerOptions {
        max_query_bytes: args.max_query_bytes,
    };
    let analysis = Analyzer::new(postgres, mysql, options).analyze(args.dialect, &sql);
    let report = CheckReport::new(&analysis, args.dialect, args.stable_functions);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
