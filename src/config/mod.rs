//! Configuration: raw TOML or flags → one validation step → typed [`Config`].
//!
//! Every error names the key at fault and says what is wrong with its value; unknown keys
//! are refused so that a typo never silently falls back to a default. Defaults are
//! documented on each field and in README.md.
//!
//! ```toml
//! [[deployment]]
//! name = "shop"
//! listen = "127.0.0.1:6432"
//! origin = "postgres://app:secret@127.0.0.1:5432/shop?sslmode=prefer"
//! databases = ["shop", "shop_test"]    # optional: databases clients may ask for
//!
//! [deployment.client]
//! auth = "scram-sha-256"               # or "md5", or "trust"
//! users = [{ name = "app", password = "secret" }]   # default: the origin URL's user
//! tls_cert = "server.crt"              # optional, with tls_key: TLS for clients
//! tls_key = "server.key"
//!
//! [deployment.pool]
//! min_idle = 5
//! max_size = 20
//! acquire_timeout = "5s"
//! idle_timeout = "10m"
//! connect_timeout = "15s"
//! max_query_duration = "60s"
//! prepared_statements_per_connection = 256
//! health_check_interval = "30s"
//! catalog_max_age = "10s"
//! stay_after_write = 1
//! stay_after_write_timeout = "10s"
//!
//! [deployment.limits]
//! max_message_bytes = "64MiB"
//! ```

pub mod cache;
mod origin;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::protocol::Protocol;

pub use cache::{CacheRule, CacheSettings};
pub use origin::{OriginUrl, SslMode};

/// A configuration problem, naming the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("configuration file {path} is invalid: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: `{key}`: {problem}")]
    Invalid {
        /// The key, e.g. `deployment[0].pool.max_size`.
        key: String,
        /// What is wrong and what is accepted.
        problem: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// How clients prove who they are. Each protocol has a strong method (its default) and a
/// legacy one; validation keeps each deployment to its protocol's names, and a frontend
/// reads the other protocol's name as its own counterpart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// SCRAM-SHA-256 (PostgreSQL's default).
    ScramSha256,
    /// MD5 password hashing (PostgreSQL).
    Md5,
    /// caching_sha2_password (MySQL's default).
    CachingSha2,
    /// mysql_native_password (MySQL).
    MysqlNative,
    /// No password: only when explicitly configured.
    Trust,
}

impl ClientAuth {
    /// The default method of `protocol`.
    pub fn default_for(protocol: Protocol) -> ClientAuth {
        match protocol {
            Protocol::Postgres => ClientAuth::ScramSha256,
            Protocol::Mysql => ClientAuth::CachingSha2,
        }
    }

    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::ScramSha256 => "scram-sha-256",
            ClientAuth::Md5 => "md5",
            ClientAuth::CachingSha2 => "caching_sha2_password",
            ClientAuth::MysqlNative => "mysql_native_password",
            ClientAuth::Trust => "trust",
        }
    }

    /// The methods `protocol` offers.
    pub fn of(protocol: Protocol) -> [ClientAuth; 3] {
        match protocol {
            Protocol::Postgres => [ClientAuth::ScramSha256, ClientAuth::Md5, ClientAuth::Trust],
            Protocol::Mysql => [
                ClientAuth::CachingSha2,
                ClientAuth::MysqlNative,
                ClientAuth::Trust,
            ],
        }
    }

    /// The method named `name`, if `protocol` offers it; the error lists those it does.
    pub fn parse(name: &str, protocol: Protocol) -> Result<ClientAuth, String> {
        let offered = ClientAuth::of(protocol);
        offered
            .iter()
            .copied()
            .find(|auth| auth.name() == name)
            .ok_or_else(|| {
                let names: Vec<String> = offered
                    .iter()
                    .map(|auth| format!("{:?}", auth.name()))
                    .collect();
                format!(
                    "{name:?} is not one of {} (for a {} origin)",
                    names.join(", "),
                    protocol.name()
                )
            })
    }
}

/// A user clients may log in as.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientUser {
    /// The user name clients send.
    pub name: String,
    /// Their password.
    pub password: String,
}

impl std::fmt::Debug for ClientUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Certificate and key for TLS towards clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Pool settings of a deployment (per database).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Idle connections kept open and ready. Default 5.
    pub min_idle: usize,
    /// Most origin connections open at once (soft maximum). Default 20.
    pub max_size: usize,
    /// How long a client waits for a connection when all are busy. Default 5 s.
    pub acquire_timeout: Duration,
    /// Idle connections above `min_idle` close after this long. Default 10 min.
    pub idle_timeout: Duration,
    /// Connecting and authenticating to the origin must finish within this. Default 15 s.
    pub connect_timeout: Duration,
    /// A query running longer is cancelled at the origin. Default 60 s.
    pub max_query_duration: Duration,
    /// Statements kept prepared per origin connection (LRU). Default 256.
    pub prepared_statements_per_connection: usize,
    /// Idle connections unused this long get the empty query `;` as a health check.
    /// Default 30 s.
    pub health_check_interval: Duration,
    /// What warpdrive read of the origin's catalog (views, functions, triggers, …) is
    /// read again once this old, to see DDL that did not pass through warpdrive.
    /// Default 10 s, at most 1 h.
    pub catalog_max_age: Duration,
    /// MySQL: after a statement that generated an AUTO_INCREMENT id or changed rows, the
    /// client keeps its connection for this many more statements, so that
    /// `LAST_INSERT_ID()` and `ROW_COUNT()` answer about it. Default 1.
    pub stay_after_write: usize,
    /// MySQL: how long such a client keeps its connection while it sends nothing, so
    /// that an idle client does not starve the pool. Default 10 s.
    pub stay_after_write_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            min_idle: 5,
            max_size: 20,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(15),
            max_query_duration: Duration::from_secs(60),
            prepared_statements_per_connection: 256,
            health_check_interval: Duration::from_secs(30),
            catalog_max_age: Duration::from_secs(10),
            stay_after_write: 1,
            stay_after_write_timeout: Duration::from_secs(10),
        }
    }
}

/// One deployment: a listener in front of one origin.
#[derive(Clone, Debug)]
pub struct Deployment {
    /// Its name, used in logs and metrics.
    pub name: String,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The origin server, user and default database.
    pub origin: OriginUrl,
    /// Databases clients may ask for; `None` allows any database on the origin server.
    pub databases: Option<Vec<String>>,
    /// Client authentication method.
    pub client_auth: ClientAuth,
    /// Users clients may log in as.
    pub users: Vec<ClientUser>,
    /// TLS towards clients; without it an SSLRequest is answered 'N'.
    pub tls: Option<ServerTls>,
    /// Pool settings.
    pub pool: PoolSettings,
    /// Largest message accepted from a client, in bytes. Default 64 MiB.
    pub max_message_bytes: usize,
    /// Caching.
    pub cache: CacheSettings,
}

impl Deployment {
    /// Default for [`Deployment::max_message_bytes`].
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

    /// A deployment with every default, for `warpdrive serve --origin URL`.
    pub fn from_origin(listen: SocketAddr, origin: OriginUrl) -> Deployment {
        let protocol = origin.protocol;
        let users = vec![ClientUser {
            name: origin.user.clone(),
            password: origin.password.clone().unwrap_or_default(),
        }];
        Deployment {
            name: "default".to_owned(),
            listen,
            origin,
            databases: None,
            client_auth: ClientAuth::default_for(protocol),
            users,
            tls: None,
            pool: PoolSettings::default(),
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            cache: CacheSettings::default(),
        }
    }

    /// Whether clients may ask for `database`.
    pub fn allows_database(&self, database: &str) -> bool {
        self.databases
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|name| name == database))
    }
}

/// The single-deployment form's flags (`warpdrive serve --origin URL …`), validated like
/// a configuration file.
#[derive(Clone, Debug)]
pub struct SingleDeployment {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The origin URL.
    pub origin: String,
    /// How clients log in (default: the protocol's default).
    pub client_auth: Option<ClientAuth>,
    /// `--max-age`, seconds.
    pub max_age: Option<u64>,
    /// `--swr`, seconds.
    pub stale_while_revalidate: Option<u64>,
    /// `--caching-disabled`.
    pub caching_disabled: bool,
    /// `--cache-upstream`: a Redis URL.
    pub cache_upstream: Option<String>,
}

impl SingleDeployment {
    /// The form with its defaults, in front of `origin`.
    pub fn new(listen: SocketAddr, origin: &str) -> SingleDeployment {
        SingleDeployment {
            listen,
            origin: origin.to_owned(),
            client_auth: None,
            max_age: None,
            stale_while_revalidate: None,
            caching_disabled: false,
            cache_upstream: None,
        }
    }
}

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The deployments, each with its own listener.
    pub deployments: Vec<Deployment>,
    /// Where the admin HTTP listener (/metrics, /stats, /healthz) listens; `None` for
    /// none. Default 127.0.0.1:9187.
    pub admin: Option<SocketAddr>,
    /// A volatility rules file merged over the built-in PostgreSQL rules (to declare the
    /// application's own functions immutable or stable); loaded when the server starts.
    pub rules: Option<PathBuf>,
}

/// Default admin listener address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9187";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, rename = "deployment")]
    deployments: Vec<RawDeployment>,
    #[serde(default)]
    admin: RawAdmin,
    rules: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    enabled: Option<bool>,
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    name: String,
    listen: String,
    origin: String,
    databases: Option<Vec<String>>,
    #[serde(default)]
    client: RawClient,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    cache: cache::RawCache,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    auth: Option<String>,
    users: Option<Vec<RawUser>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    min_idle: Option<usize>,
    max_size: Option<usize>,
    acquire_timeout: Option<RawDuration>,
    idle_timeout: Option<RawDuration>,
    connect_timeout: Option<RawDuration>,
    max_query_duration: Option<RawDuration>,
    prepared_statements_per_connection: Option<usize>,
    health_check_interval: Option<RawDuration>,
    catalog_max_age: Option<RawDuration>,
    stay_after_write: Option<usize>,
    stay_after_write_timeout: Option<RawDuration>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<RawBytes>,
}

/// A duration as text (`"15s"`) or a number of seconds.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawDuration {
    Seconds(u64),
    Text(String),
}

/// A size as text (`"64MiB"`) or a number of bytes.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawBytes {
    Bytes(u64),
    Text(String),
}

impl Config {
    /// Reads and validates a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Syntax {
            path: origin.to_owned(),
            message: error.to_string(),
        })?;
        if raw.deployments.is_empty() {
            return Err(ConfigError::invalid(
                "deployment",
                "no [[deployment]] table: configure at least one deployment",
            ));
        }
        let deployments = raw
            .deployments
            .into_iter()
            .enumerate()
            .map(|(index, raw)| validate_deployment(index, raw))
            .collect::<Result<Vec<_>, _>>()?;
        let admin = match (raw.admin.enabled, raw.admin.listen) {
            (Some(false), _) => None,
            (_, listen) => {
                let listen = listen.unwrap_or_else(|| DEFAULT_ADMIN.to_owned());
                Some(listen.parse().map_err(|_| {
                    ConfigError::invalid(
                        "admin.listen",
                        format!("{listen:?} is not an address:port such as \"127.0.0.1:9187\""),
                    )
                })?)
            }
        };
        let config = Config {
            deployments,
            admin,
            rules: raw.rules,
        };
        config.check_unique()?;
        Ok(config)
    }

    /// The configuration of `warpdrive serve --origin URL`.
    pub fn single(single: &SingleDeployment) -> Result<Config, ConfigError> {
        let origin = OriginUrl::parse(&single.origin)
            .map_err(|problem| ConfigError::invalid("--origin", problem))?;
        let mut deployment = Deployment::from_origin(single.listen, origin);
        if let Some(auth) = single.client_auth {
            deployment.client_auth = ClientAuth::parse(auth.name(), deployment.origin.protocol)
                .map_err(|problem| ConfigError::invalid("--client-auth", problem))?;
        }
        check_passwords(&deployment, "--origin", "pass --client-auth trust")?;
        let seconds = |flag: &str, value: u64| {
            let duration = Duration::from_secs(value);
            match duration <= cache::MAX_LIFETIME {
                true => Ok(duration),
                false => Err(ConfigError::invalid(
                    flag,
                    format!("{value} is too long: at most 3600 seconds"),
                )),
            }
        };
        let cache = &mut deployment.cache;
        if let Some(max_age) = single.max_age {
            cache.max_age = seconds("--max-age", max_age)?;
        }
        if let Some(swr) = single.stale_while_revalidate {
            cache.stale_while_revalidate = seconds("--swr", swr)?;
        }
        cache.enabled = !single.caching_disabled;
        if let Some(url) = &single.cache_upstream {
            if !crate::cache::tier::is_redis_url(url) {
                return Err(ConfigError::invalid(
                    "--cache-upstream",
                    "must be a redis://, rediss:// or redis+cluster:// URL, such as redis://127.0.0.1:6379/0",
                ));
            }
            cache.upstream = Some(cache::upstream(url));
        }
        Ok(Config {
            deployments: vec![deployment],
            admin: DEFAULT_ADMIN.parse().ok(),
            rules: None,
        })
    }

    fn check_unique(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut listens = HashSet::new();
        for (index, deployment) in self.deployments.iter().enumerate() {
            if !names.insert(deployment.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("deployment[{index}].name"),
                    format!(
                        "{:?} is used by two deployments; names must be unique",
                        deployment.name
                    ),
                ));
            }
            if !listens.insert(deployment.listen) {
                return Err(ConfigError::invalid(
                    format!("deployment[{index}].listen"),
                    format!(
                        "{} is used by two deployments; each needs its own address",
                        deployment.listen
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Refuses users without a password unless clients are trusted: no client could log in.
fn check_passwords(deployment: &Deployment, key: &str, or: &str) -> Result<(), ConfigError> {
    match deployment
        .users
        .iter()
        .find(|user| user.password.is_empty())
    {
        Some(user) if deployment.client_auth != ClientAuth::Trust => Err(ConfigError::invalid(
            key,
            format!(
                "user {:?} has no password, so no client could log in; give one (in the origin URL or client.users) or {or}",
                user.name
            ),
        )),
        _ => Ok(()),
    }
}

pub(super) fn duration(
    key: &str,
    raw: Option<RawDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let value = match raw {
        None => return Ok(default),
        Some(RawDuration::Seconds(seconds)) => Duration::from_secs(seconds),
        Some(RawDuration::Text(text)) => crate::units::parse_duration(&text)
            .map_err(|problem| ConfigError::invalid(key, problem))?,
    };
    if value.is_zero() {
        return Err(ConfigError::invalid(key, "must be longer than zero"));
    }
    Ok(value)
}

fn validate_deployment(index: usize, raw: RawDeployment) -> Result<Deployment, ConfigError> {
    let key = |field: &str| format!("deployment[{index}].{field}");
    if raw.name.trim().is_empty() {
        return Err(ConfigError::invalid(key("name"), "must not be empty"));
    }
    let listen: SocketAddr = raw.listen.parse().map_err(|_| {
        ConfigError::invalid(
            key("listen"),
            format!(
                "{:?} is not an address:port such as \"127.0.0.1:6432\"",
                raw.listen
            ),
        )
    })?;
    let origin = OriginUrl::parse(&raw.origin)
        .map_err(|problem| ConfigError::invalid(key("origin"), problem))?;
    let mut deployment = Deployment::from_origin(listen, origin);
    deployment.name = raw.name;

    if let Some(databases) = raw.databases {
        if databases.is_empty() {
            return Err(ConfigError::invalid(
                key("databases"),
                "is empty, so no client could connect; leave it out to allow every database",
            ));
        }
        deployment.databases = Some(databases);
    }

    if let Some(name) = raw.client.auth.as_deref() {
        deployment.client_auth = ClientAuth::parse(name, deployment.origin.protocol)
            .map_err(|problem| ConfigError::invalid(key("client.auth"), problem))?;
    }
    if let Some(users) = raw.client.users {
        if users.is_empty() {
            return Err(ConfigError::invalid(
                key("client.users"),
                "is empty; no client could log in",
            ));
        }
        deployment.users = users
            .into_iter()
            .map(|user| ClientUser {
                name: user.name,
                password: user.password,
            })
            .collect();
    }
    check_passwords(
        &deployment,
        &key("client.users"),
        "set client.auth = \"trust\"",
    )?;
    deployment.tls = match (raw.client.tls_cert, raw.client.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(ServerTls { cert, key }),
        _ => {
            return Err(ConfigError::invalid(
                key("client.tls_cert"),
                "tls_cert and tls_key go together: give both or neither",
            ));
        }
    };

    let defaults = PoolSettings::default();
    let pool = raw.pool;
    deployment.pool = PoolSettings {
        min_idle: pool.min_idle.unwrap_or(defaults.min_idle),
        max_size: pool.max_size.unwrap_or(defaults.max_size),
        acquire_timeout: duration(
            &key("pool.acquire_timeout"),
            pool.acquire_timeout,
            defaults.acquire_timeout,
        )?,
        idle_timeout: duration(
            &key("pool.idle_timeout"),
            pool.idle_timeout,
            defaults.idle_timeout,
        )?,
        connect_timeout: duration(
            &key("pool.connect_timeout"),
            pool.connect_timeout,
            defaults.connect_timeout,
        )?,
        max_query_duration: duration(
            &key("pool.max_query_duration"),
            pool.max_query_duration,
            defaults.max_query_duration,
        )?,
        prepared_statements_per_connection: pool
            .prepared_statements_per_connection
            .unwrap_or(defaults.prepared_statements_per_connection),
        health_check_interval: duration(
            &key("pool.health_check_interval"),
            pool.health_check_interval,
            defaults.health_check_interval,
        )?,
        catalog_max_age: duration(
            &key("pool.catalog_max_age"),
            pool.catalog_max_age,
            defaults.catalog_max_age,
        )?,
        stay_after_write: pool.stay_after_write.unwrap_or(defaults.stay_after_write),
        stay_after_write_timeout: duration(
            &key("pool.stay_after_write_timeout"),
            pool.stay_after_write_timeout,
            defaults.stay_after_write_timeout,
        )?,
    };
    if deployment.pool.catalog_max_age.is_zero()
        || deployment.pool.catalog_max_age > Duration::from_secs(3600)
    {
        return Err(ConfigError::invalid(
            key("pool.catalog_max_age"),
            "must be more than 0 and at most 1h",
        ));
    }
    if deployment.pool.max_size == 0 {
        return Err(ConfigError::invalid(
            key("pool.max_size"),
            "must be at least 1",
        ));
    }
    if deployment.pool.min_idle > deployment.pool.max_size {
        return Err(ConfigError::invalid(
            key("pool.min_idle"),
            format!(
                "{} is above pool.max_size ({}); min_idle must not exceed max_size",
                deployment.pool.min_idle, deployment.pool.max_size
            ),
        ));
    }
    if deployment.pool.prepared_statements_per_connection == 0 {
        return Err(ConfigError::invalid(
            key("pool.prepared_statements_per_connection"),
            "must be at least 1",
        ));
    }
    if let Some(raw) = raw.limits.max_message_bytes {
        let bytes = match raw {
            RawBytes::Bytes(bytes) => usize::try_from(bytes).unwrap_or(usize::MAX),
            RawBytes::Text(text) => crate::units::parse_bytes(&text).map_err(|problem| {
                ConfigError::invalid(key("limits.max_message_bytes"), problem)
            })?,
        };
        if !(1024..=1 << 30).contains(&bytes) {
            return Err(ConfigError::invalid(
                key("limits.max_message_bytes"),
                "must be between 1KiB and 1GiB",
            ));
        }
        deployment.max_message_bytes = bytes;
    }
    deployment.cache = raw.cache.validate(&key("cache"))?;
    Ok(deployment)
}

#[cfg(test)]
mod tests;
