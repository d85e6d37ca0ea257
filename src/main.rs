//! The `warpdrive` command line: parse arguments, call the library, print, exit.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use warpdrive::analyze::{Analyzer, AnalyzerOptions, Dialect, Rules, StableFunctions};
use warpdrive::check::{CheckReport, PolicyReport};
use warpdrive::config::{ClientAuth, Config, DEFAULT_ADMIN, OriginUrl, SingleDeployment};
use warpdrive::metrics::DeploymentSnapshot;
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
    /// Print the counters of a running warpdrive (from its admin listener).
    Stats(StatsArgs),
    /// Connect to each origin as the pool would, run the empty query, and name the cause
    /// of any failure (exit status 1).
    Validate(ValidateArgs),
    /// Drop cached entries in a running warpdrive: all, or those that read given tables.
    Purge(PurgeArgs),
}

/// How clients log in (`--client-auth`).
#[derive(Clone, Copy, ValueEnum)]
enum ClientAuthArg {
    /// SCRAM-SHA-256, with the origin URL's user and password.
    #[value(name = "scram-sha-256")]
    ScramSha256,
    /// MD5, with the origin URL's user and password.
    Md5,
    /// caching_sha2_password (MySQL origins), with the origin URL's user and password.
    #[value(name = "caching_sha2_password")]
    CachingSha2,
    /// mysql_native_password (MySQL origins), with the origin URL's user and password.
    #[value(name = "mysql_native_password")]
    MysqlNative,
    /// No password: anyone who can reach the listener logs in.
    Trust,
}

impl From<ClientAuthArg> for ClientAuth {
    fn from(arg: ClientAuthArg) -> ClientAuth {
        match arg {
            ClientAuthArg::ScramSha256 => ClientAuth::ScramSha256,
            ClientAuthArg::Md5 => ClientAuth::Md5,
            ClientAuthArg::CachingSha2 => ClientAuth::CachingSha2,
            ClientAuthArg::MysqlNative => ClientAuth::MysqlNative,
            ClientAuthArg::Trust => ClientAuth::Trust,
        }
    }
}

/// `--dialect`.
#[derive(Clone, Copy, ValueEnum)]
enum DialectArg {
    Postgres,
    Mysql,
}

impl From<DialectArg> for Dialect {
    fn from(arg: DialectArg) -> Dialect {
        match arg {
            DialectArg::Postgres => Dialect::Postgres,
            DialectArg::Mysql => Dialect::Mysql,
        }
    }
}

/// `--stable-functions`.
#[derive(Clone, Copy, ValueEnum)]
enum StableFunctionsArg {
    Cache,
    Bypass,
}

impl From<StableFunctionsArg> for StableFunctions {
    fn from(arg: StableFunctionsArg) -> StableFunctions {
        match arg {
            StableFunctionsArg::Cache => StableFunctions::Cache,
            StableFunctionsArg::Bypass => StableFunctions::Bypass,
        }
    }
}

/// One origin (`--origin URL`) or the deployments of a file (`--config FILE`).
#[derive(Args)]
struct Deployments {
    /// The origin: postgres://user:password@host:port/database[?sslmode=…]. With serve,
    /// clients log in with the same user and password unless --client-auth trust.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "config",
        required_unless_present = "config"
    )]
    origin: Option<String>,
    /// A TOML configuration file with one or more [[deployment]] tables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl Deployments {
    /// The configuration: the file's, or `single` in front of the origin.
    fn load(&self, single: impl FnOnce(&str) -> SingleDeployment) -> anyhow::Result<Config> {
        Ok(match (&self.config, &self.origin) {
            (Some(path), _) => Config::from_file(path)?,
            (None, Some(origin)) => Config::single(&single(origin))?,
            (None, None) => anyhow::bail!("give --origin URL or --config FILE"),
        })
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    deployments: Deployments,
    /// Address clients connect to (with --origin; default 127.0.0.1:6432, for a MySQL
    /// origin 127.0.0.1:6033).
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    listen: Option<SocketAddr>,
    /// Cached results are fresh for this many seconds (with --origin; default 60, at most 3600).
    #[arg(long, value_name = "SECONDS", conflicts_with = "config")]
    max_age: Option<u64>,
    /// Stale results are served this many seconds more while refreshed (with --origin; default 15).
    #[arg(long, value_name = "SECONDS", conflicts_with = "config")]
    swr: Option<u64>,
    /// Forward every query; cache nothing (with --origin).
    #[arg(long, conflicts_with = "config")]
    caching_disabled: bool,
    /// Share cached results with other instances through this Redis (with --origin):
    /// redis://HOST:PORT/DB or rediss://…
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    cache_upstream: Option<String>,
    /// How clients log in (with --origin): with the origin URL's user and password, or
    /// `trust` for no password (default scram-sha-256, for a MySQL origin
    /// caching_sha2_password).
    #[arg(long, value_enum, conflicts_with = "config")]
    client_auth: Option<ClientAuthArg>,
    /// Address of the admin listener (/metrics, /stats, /healthz); `off` for none.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// A rules file merged over the built-in PostgreSQL volatility rules (declare your
    /// own functions immutable or stable); overrides `rules` of --config.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    /// SQL dialect of the query.
    #[arg(long, value_enum)]
    dialect: DialectArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Policy for STABLE functions such as now(): cache them, or bypass the cache.
    #[arg(long, value_enum)]
    stable_functions: Option<StableFunctionsArg>,
    /// A rules file merged over the built-in volatility rules of the dialect.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Texts longer than this many bytes are `oversizedquery`.
    #[arg(long, value_name = "BYTES", default_value_t = AnalyzerOptions::DEFAULT_MAX_QUERY_BYTES)]
    max_query_bytes: usize,
    /// A configuration file: also show which cache rules apply and for how long.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The deployment of --config to use (default: the first).
    #[arg(long, value_name = "NAME", requires = "config")]
    deployment: Option<String>,
    /// The query text; `-` reads it from standard input.
    sql: String,
}

#[derive(Args)]
struct StatsArgs {
    /// Address of warpdrive's admin listener.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN)]
    admin: String,
    /// Print the JSON as the admin listener returns it.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["tables", "all"])))]
struct PurgeArgs {
    /// Address of warpdrive's admin listener.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN)]
    admin: String,
    /// Only this deployment's cache (default: every deployment's).
    #[arg(long, value_name = "NAME")]
    deployment: Option<String>,
    /// Drop the entries that read this table (`prices` matches it in any schema);
    /// repeatable.
    #[arg(long = "table", value_name = "TABLE")]
    tables: Vec<String>,
    /// Drop every entry.
    #[arg(long, conflicts_with = "tables")]
    all: bool,
}

#[derive(Args)]
struct ValidateArgs {
    #[command(flatten)]
    deployments: Deployments,
    /// Print one JSON array, an object per origin database checked.
    #[arg(long)]
    json: bool,
}

/// Exit status for bad usage, the same clap uses for a bad flag.
const USAGE_ERROR: u8 = 2;
/// Exit status when a running warpdrive could not be asked.
const UNAVAILABLE: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve(args).map_err(|e| (USAGE_ERROR, e)),
        Command::Check(args) => check(args).map_err(|e| (USAGE_ERROR, e)),
        Command::Stats(args) => stats(args).map_err(|e| (UNAVAILABLE, e)),
        Command::Validate(args) => validate(args),
        Command::Purge(args) => purge(args).map_err(|e| (UNAVAILABLE, e)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, error)) => {
            eprintln!("warpdrive: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = args.deployments.load(|origin| SingleDeployment {
        client_auth: args.client_auth.map(ClientAuth::from),
        max_age: args.max_age,
        stale_while_revalidate: args.swr,
        caching_disabled: args.caching_disabled,
        cache_upstream: args.cache_upstream.clone(),
        ..SingleDeployment::new(
            args.listen
                .unwrap_or_else(|| OriginUrl::default_listen(origin)),
            origin,
        )
    })?;
    if let Some(rules) = args.rules {
        config.rules = Some(rules);
    }
    match args.admin.as_deref() {
        None => {}
        Some("off") => config.admin = None,
        Some(address) => {
            config.admin = Some(address.parse().with_context(|| {
                format!("--admin {address:?} is not an address:port such as 127.0.0.1:9187")
            })?)
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARPDRIVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    runtime()?.block_on(async {
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
    let config = args.config.as_deref().map(Config::from_file).transpose()?;
    // The proxy's own rules file (for PostgreSQL) unless --rules names another.
    let config_rules = config
        .as_ref()
        .and_then(|c| c.rules.clone())
        .filter(|_| matches!(args.dialect, DialectArg::Postgres));
    let mut postgres = Rules::builtin(Dialect::Postgres);
    let mut mysql = Rules::builtin(Dialect::Mysql);
    let dialect = Dialect::from(args.dialect);
    if let Some(path) = args.rules.as_ref().or(config_rules.as_ref()) {
        match dialect {
            Dialect::Postgres => postgres = postgres.with_overrides_from(path)?,
            Dialect::Mysql => mysql = mysql.with_overrides_from(path)?,
        }
    }
    let options = AnalyzerOptions {
        max_query_bytes: args.max_query_bytes,
    };
    let analysis = Analyzer::new(postgres, mysql, options).analyze(dialect, &sql);
    let deployment = match (config, &args.config) {
        (Some(config), Some(path)) => {
            let deployment = match &args.deployment {
                Some(name) => config
                    .deployments
                    .into_iter()
                    .find(|d| &d.name == name)
                    .with_context(|| {
                        format!("no deployment named {name:?} in {}", path.display())
                    })?,
                None => config
                    .deployments
                    .into_iter()
                    .next()
                    .context("the configuration has no deployment")?,
            };
            Some(deployment)
        }
        _ => None,
    };
    let policy = args
        .stable_functions
        .map(StableFunctions::from)
        .or_else(|| deployment.as_ref().map(|d| d.cache.stable_functions))
        .unwrap_or_default();
    let mut report = CheckReport::new(&analysis, dialect, policy);
    if let Some(deployment) = &deployment {
        report.cache = Some(PolicyReport::new(
            &deployment.name,
            &deployment.cache,
            &analysis,
        ));
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let body = runtime()?
        .block_on(warpdrive::admin::get(&args.admin, "/stats"))
        .with_context(|| {
            format!(
                "cannot read stats from the admin listener at {} (is warpdrive running, with --admin there?)",
                args.admin
            )
        })?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let snapshots: Vec<DeploymentSnapshot> = serde_json::from_str(&body)
        .context("the admin listener's /stats is not what this warpdrive expects")?;
    print!("{}", warpdrive::metrics::stats_table(&snapshots));
    Ok(())
}

fn purge(args: PurgeArgs) -> anyhow::Result<()> {
    let mut query = match args.all {
        true => vec!["all=true".to_owned()],
        false => args
            .tables
            .iter()
            .map(|table| format!("table={}", query_escape(table)))
            .collect(),
    };
    if let Some(deployment) = &args.deployment {
        query.push(format!("deployment={}", query_escape(deployment)));
    }
    let path = format!("/purge?{}", query.join("&"));
    let body = runtime()?
        .block_on(warpdrive::admin::post(&args.admin, &path))
        .with_context(|| format!("cannot purge through the admin listener at {}", args.admin))?;
    let purged: warpdrive::admin::Purged = serde_json::from_str(&body)
        .context("the admin listener's /purge answer is not what this warpdrive expects")?;
    let each: Vec<String> = purged
        .deployments
        .iter()
        .map(|d| format!("{}: {}", d.deployment, d.dropped))
        .collect();
    println!(
        "dropped {} cached entries in this instance ({})",
        purged.dropped,
        each.join(", ")
    );
    for deployment in &purged.deployments {
        match deployment.shared {
            Some(true) => println!(
                "{}: the other instances sharing its upstream were told",
                deployment.deployment
            ),
            Some(false) => eprintln!(
                "{}: its upstream (Redis) could not be reached: other instances keep their entries until they expire; purge again once Redis answers",
                deployment.deployment
            ),
            None => {}
        }
    }
    Ok(())
}

/// A query-string value: everything but unreserved characters percent-encoded.
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn validate(args: ValidateArgs) -> Result<(), (u8, anyhow::Error)> {
    let config = args
        .deployments
        .load(|origin| SingleDeployment {
            // Only the origin is checked: how clients log in does not matter here.
            client_auth: Some(ClientAuth::Trust),
            ..SingleDeployment::new(SocketAddr::from(([127, 0, 0, 1], 0)), origin)
        })
        .map_err(|error| (USAGE_ERROR, error))?;
    let checks = runtime()
        .map_err(|error| (UNAVAILABLE, error))?
        .block_on(warpdrive::validate::validate(&config));
    if args.json {
        let json = serde_json::to_string_pretty(&checks).map_err(|e| (UNAVAILABLE, e.into()))?;
        println!("{json}");
    } else {
        for check in &checks {
            println!("{}", check.to_text());
        }
    }
    let failed = checks.iter().filter(|c| c.failure.is_some()).count();
    match failed {
        0 => Ok(()),
        _ => Err((
            UNAVAILABLE,
            anyhow::anyhow!("{failed} of {} origin checks failed", checks.len()),
        )),
    }
}
