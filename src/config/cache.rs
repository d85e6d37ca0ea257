//! The `[deployment.cache]` table: caching on or off, lifetimes, sizes, and rules by
//! table or query fingerprint.
//!
//! ```toml
//! [deployment.cache]
//! enabled = true                 # default true
//! max_age = "60s"                # default 60 s, at most 3600 s
//! stale_while_revalidate = "15s" # default 15 s
//! empty_max_age = "5s"           # default: max_age; lifetime of empty results
//! max_result_bytes = "50MiB"     # larger results stream through unstored
//! capacity_bytes = "256MiB"      # memory for cached results
//! stable_functions = "cache"     # or "bypass": refuse now(), current_date, …
//! invalidate_on_write = true     # a write through warpdrive drops the reads it reached
//! upstream = "redis://127.0.0.1:6379/0"  # optional L2 tier shared by instances (rediss://, redis+cluster://H:P,H:P/)
//! upstream_prefix = "warpdrive"  # namespace of its keys (default "warpdrive")
//! upstream_timeout = "20ms"      # longest wait for Redis before the origin
//! consistency = "fast"           # or "strict": check Redis on every hit
//! upstream_ca = "redis-ca.pem"   # rediss:// only: CA instead of the system's
//! upstream_single_flight = false # true: instances missing one key send one query
//!
//! [[deployment.cache.rule]]      # by tables read …
//! tables = ["prices"]
//! max_age = "2s"
//!
//! [[deployment.cache.rule]]
//! tables = ["sessions"]
//! enabled = false
//!
//! [[deployment.cache.rule]]      # … or by fingerprint (`warpdrive check` prints it)
//! fingerprint = "9f86d081884c7d65"
//! max_age = "1h"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, RawBytes, RawDuration};
use crate::analyze::StableFunctions;
use crate::cache::tier::{Consistency, TierSettings};
use crate::units::{parse_bytes, parse_duration};

/// The longest max_age (or stale_while_revalidate) anything may ask for.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// Caching settings of a deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// Whether results are cached at all. Default true.
    pub enabled: bool,
    /// Fresh for this long. Default 60 s.
    pub max_age: Duration,
    /// Served stale for this long after max_age while refreshed. Default 15 s.
    pub stale_while_revalidate: Duration,
    /// max_age of results with no rows. Default: max_age.
    pub empty_max_age: Option<Duration>,
    /// Results above this many bytes stream through unstored. Default 50 MiB.
    pub max_result_bytes: usize,
    /// Bytes of results kept in memory. Default 256 MiB.
    pub capacity_bytes: u64,
    /// STABLE functions: cache (default) or bypass.
    pub stable_functions: StableFunctions,
    /// Whether a write through warpdrive invalidates the cached reads of what it wrote,
    /// so that no read is served older than a write that went through it. Default true.
    pub invalidate_on_write: bool,
    /// The L2 tier on Redis shared with other instances. Default none.
    pub upstream: Option<TierSettings>,
    /// Overrides by table or fingerprint.
    pub rules: Vec<CacheRule>,
}

/// Default for `upstream_prefix`.
pub const DEFAULT_UPSTREAM_PREFIX: &str = "warpdrive";
/// Default for `upstream_timeout`.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(20);

/// The tier's settings for `url`, with the defaults.
pub fn upstream(url: &str) -> TierSettings {
    TierSettings {
        url: url.to_owned(),
        prefix: DEFAULT_UPSTREAM_PREFIX.to_owned(),
        timeout: DEFAULT_UPSTREAM_TIMEOUT,
        consistency: Consistency::Fast,
        single_flight: false,
        ca_file: None,
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            max_age: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(15),
            empty_max_age: None,
            max_result_bytes: 50 << 20,
            capacity_bytes: 256 << 20,
            stable_functions: StableFunctions::Cache,
            invalidate_on_write: true,
            upstream: None,
            rules: Vec::new(),
        }
    }
}

/// An override for the queries that read any of `tables`, or have this `fingerprint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheRule {
    /// Matches queries reading any of these relations (`name` matches `name` in any
    /// schema; `schema.name` matches only that one).
    pub tables: Vec<String>,
    /// Matches queries with this fingerprint.
    pub fingerprint: Option<String>,
    /// `false` turns caching off for the matching queries.
    pub enabled: Option<bool>,
    /// max_age for the matching queries.
    pub max_age: Option<Duration>,
    /// stale_while_revalidate for the matching queries.
    pub stale_while_revalidate: Option<Duration>,
}

impl CacheRule {
    /// Whether the rule applies to a query reading `tables` with `fingerprint`.
    pub fn matches(&self, tables: &[String], fingerprint: &str) -> bool {
        let by_table = self.tables.iter().any(|wanted| {
            tables.iter().any(|read| {
                read == wanted
                    || (!wanted.contains('.') && read.rsplit('.').next() == Some(wanted.as_str()))
            })
        });
        by_table || self.fingerprint.as_deref() == Some(fingerprint)
    }

    /// The rule as the `check` command shows it.
    pub fn describe(&self) -> String {
        let mut what = Vec::new();
        if !self.tables.is_empty() {
            what.push(format!("tables = {:?}", self.tables));
        }
        if let Some(fingerprint) = &self.fingerprint {
            what.push(format!("fingerprint = {fingerprint:?}"));
        }
        if let Some(enabled) = self.enabled {
            what.push(format!("enabled = {enabled}"));
        }
        if let Some(max_age) = self.max_age {
            what.push(format!("max_age = {max_age:?}"));
        }
        if let Some(swr) = self.stale_while_revalidate {
            what.push(format!("stale_while_revalidate = {swr:?}"));
        }
        what.join(", ")
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    enabled: Option<bool>,
    max_age: Option<RawDuration>,
    stale_while_revalidate: Option<RawDuration>,
    empty_max_age: Option<RawDuration>,
    max_result_bytes: Option<RawBytes>,
    capacity_bytes: Option<RawBytes>,
    stable_functions: Option<String>,
    invalidate_on_write: Option<bool>,
    upstream: Option<String>,
    upstream_prefix: Option<String>,
    upstream_timeout: Option<RawDuration>,
    consistency: Option<String>,
    upstream_ca: Option<PathBuf>,
    upstream_single_flight: Option<bool>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    tables: Vec<String>,
    fingerprint: Option<String>,
    enabled: Option<bool>,
    max_age: Option<RawDuration>,
    stale_while_revalidate: Option<RawDuration>,
}

/// A lifetime: a duration of at most [`MAX_LIFETIME`] (zero allowed).
fn lifetime(key: &str, raw: RawDuration) -> Result<Duration, ConfigError> {
    let value = match raw {
        RawDuration::Seconds(seconds) => Duration::from_secs(seconds),
        RawDuration::Text(text) => {
            parse_duration(&text).map_err(|problem| ConfigError::invalid(key, problem))?
        }
    };
    if value > MAX_LIFETIME {
        return Err(ConfigError::invalid(
            key,
            format!("{value:?} is longer than the 3600 s maximum"),
        ));
    }
    Ok(value)
}

fn size(key: &str, raw: RawBytes) -> Result<u64, ConfigError> {
    match raw {
        RawBytes::Bytes(bytes) => Ok(bytes),
        RawBytes::Text(text) => parse_bytes(&text)
            .map(|b| b as u64)
            .map_err(|problem| ConfigError::invalid(key, problem)),
    }
}

impl RawCache {
    fn upstream_settings(&self, prefix: &str) -> Result<Option<TierSettings>, ConfigError> {
        let key = |field: &str| format!("{prefix}.{field}");
        let Some(url) = &self.upstream else {
            let stray = [
                ("upstream_prefix", self.upstream_prefix.is_some()),
                ("upstream_timeout", self.upstream_timeout.is_some()),
                ("consistency", self.consistency.is_some()),
                ("upstream_ca", self.upstream_ca.is_some()),
                (
                    "upstream_single_flight",
                    self.upstream_single_flight.is_some(),
                ),
            ];
            return match stray.iter().find(|(_, set)| *set) {
                Some((field, _)) => Err(ConfigError::invalid(
                    key(field),
                    "applies to the upstream tier: set upstream = \"redis://HOST:PORT/DB\" too",
                )),
                None => Ok(None),
            };
        };
        if !crate::cache::tier::is_redis_url(url) {
            return Err(ConfigError::invalid(
                key("upstream"),
                "must be a redis://, rediss:// or redis+cluster:// URL, such as redis://127.0.0.1:6379/0",
            ));
        }
        let mut tier = upstream(url);
        if let Some(namespace) = &self.upstream_prefix {
            if namespace.is_empty() || namespace.contains(['{', '}', '*', '?', '[', ']', '\\']) {
                return Err(ConfigError::invalid(
                    key("upstream_prefix"),
                    "must be non-empty, without { } * ? [ ] or \\ (it names keys and a channel pattern)",
                ));
            }
            tier.prefix = namespace.clone();
        }
        if let Some(raw) = self.upstream_timeout.clone() {
            tier.timeout = super::duration(&key("upstream_timeout"), Some(raw), tier.timeout)?;
        }
        tier.consistency = match self.consistency.as_deref() {
            None | Some("fast") => Consistency::Fast,
            Some("strict") => Consistency::Strict,
            Some(other) => {
                return Err(ConfigError::invalid(
                    key("consistency"),
                    format!("{other:?} is not \"fast\" or \"strict\""),
                ));
            }
        };
        tier.single_flight = self.upstream_single_flight.unwrap_or(false);
        if let Some(ca) = &self.upstream_ca {
            if !url.starts_with("rediss") {
                return Err(ConfigError::invalid(
                    key("upstream_ca"),
                    "applies to TLS: write the upstream as rediss://HOST:PORT/DB",
                ));
            }
            tier.ca_file = Some(ca.clone());
        }
        Ok(Some(tier))
    }

    /// Validates the table; `prefix` is the key of the table (`deployment[0].cache`).
    pub(super) fn validate(self, prefix: &str) -> Result<CacheSettings, ConfigError> {
        let key = |field: &str| format!("{prefix}.{field}");
        let defaults = CacheSettings::default();
        let upstream = self.upstream_settings(prefix)?;
        let optional = |field: &str, raw: Option<RawDuration>| {
            raw.map(|raw| lifetime(&key(field), raw)).transpose()
        };
        let mut settings = CacheSettings {
            enabled: self.enabled.unwrap_or(defaults.enabled),
            max_age: optional("max_age", self.max_age)?.unwrap_or(defaults.max_age),
            stale_while_revalidate: optional(
                "stale_while_revalidate",
                self.stale_while_revalidate,
            )?
            .unwrap_or(defaults.stale_while_revalidate),
            empty_max_age: optional("empty_max_age", self.empty_max_age)?,
            max_result_bytes: defaults.max_result_bytes,
            capacity_bytes: defaults.capacity_bytes,
            stable_functions: match self.stable_functions.as_deref() {
                None | Some("cache") => StableFunctions::Cache,
                Some("bypass") => StableFunctions::Bypass,
                Some(other) => {
                    return Err(ConfigError::invalid(
                        key("stable_functions"),
                        format!("{other:?} is not \"cache\" or \"bypass\""),
                    ));
                }
            },
            invalidate_on_write: self
                .invalidate_on_write
                .unwrap_or(defaults.invalidate_on_write),
            upstream,
            rules: Vec::new(),
        };
        if let Some(raw) = self.max_result_bytes {
            let bytes = size(&key("max_result_bytes"), raw)?;
            if bytes == 0 || bytes > 1 << 30 {
                return Err(ConfigError::invalid(
                    key("max_result_bytes"),
                    "must be between 1 byte and 1GiB",
                ));
            }
            settings.max_result_bytes = bytes as usize;
        }
        if let Some(raw) = self.capacity_bytes {
            let bytes = size(&key("capacity_bytes"), raw)?;
            if bytes < 1 << 20 {
                return Err(ConfigError::invalid(
                    key("capacity_bytes"),
                    "must be at least 1MiB",
                ));
            }
            settings.capacity_bytes = bytes;
        }
        if settings.max_result_bytes as u64 > settings.capacity_bytes {
            return Err(ConfigError::invalid(
                key("max_result_bytes"),
                format!(
                    "{} bytes is above capacity_bytes ({} bytes): no result that large could be kept; lower it or raise capacity_bytes",
                    settings.max_result_bytes, settings.capacity_bytes
                ),
            ));
        }
        for (index, rule) in self.rules.into_iter().enumerate() {
            let rule_key = |field: &str| key(&format!("rule[{index}].{field}"));
            if rule.tables.is_empty() && rule.fingerprint.is_none() {
                return Err(ConfigError::invalid(
                    rule_key("tables"),
                    "a rule needs tables = [...] or fingerprint = \"...\" to say which queries it covers",
                ));
            }
            if rule.enabled.is_none()
                && rule.max_age.is_none()
                && rule.stale_while_revalidate.is_none()
            {
                return Err(ConfigError::invalid(
                    rule_key("enabled"),
                    "a rule must set enabled, max_age or stale_while_revalidate",
                ));
            }
            if let Some(fingerprint) = &rule.fingerprint
                && (fingerprint.len() != 16 || !fingerprint.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(ConfigError::invalid(
                    rule_key("fingerprint"),
                    format!(
                        "{fingerprint:?} is not a fingerprint (16 hex digits, as `warpdrive check` prints)"
                    ),
                ));
            }
            settings.rules.push(CacheRule {
                tables: rule.tables.iter().map(|t| t.to_lowercase()).collect(),
                fingerprint: rule.fingerprint.map(|f| f.to_lowercase()),
                enabled: rule.enabled,
                max_age: rule
                    .max_age
                    .map(|raw| lifetime(&rule_key("max_age"), raw))
                    .transpose()?,
                stale_while_revalidate: rule
                    .stale_while_revalidate
                    .map(|raw| lifetime(&rule_key("stale_while_revalidate"), raw))
                    .transpose()?,
            });
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CacheSettings, ConfigError> {
        let raw: RawCache = toml::from_str(text).expect("toml");
        raw.validate("deployment[0].cache")
    }

    #[test]
    fn defaults() {
        let settings = parse("").expect("valid");
        assert_eq!(settings, CacheSettings::default());
        assert_eq!(settings.max_age, Duration::from_secs(60));
        assert_eq!(settings.stale_while_revalidate, Duration::from_secs(15));
        assert_eq!(settings.max_result_bytes, 50 << 20);
        assert_eq!(settings.capacity_bytes, 256 << 20);
        assert!(settings.invalidate_on_write);
        let off = parse("invalidate_on_write = false").expect("valid");
        assert!(!off.invalidate_on_write);
    }

    #[test]
    fn rules_and_limits() {
        let settings = parse(
            r#"
            max_age = "30s"
            empty_max_age = 2
            stable_functions = "bypass"
            [[rule]]
            tables = ["prices"]
            max_age = "2s"
            [[rule]]
            tables = ["Sessions"]
            enabled = false
            "#,
        )
        .expect("valid");
        assert_eq!(settings.max_age, Duration::from_secs(30));
        assert_eq!(settings.empty_max_age, Some(Duration::from_secs(2)));
        assert_eq!(settings.stable_functions, StableFunctions::Bypass);
        assert_eq!(settings.rules.len(), 2);
        assert_eq!(settings.rules[1].tables, ["sessions"]);
        let over = parse("max_age = \"2h\"").expect_err("too long").to_string();
        assert!(over.contains("deployment[0].cache.max_age"), "{over}");
        let empty_rule = parse("[[rule]]\nmax_age = 1\n")
            .expect_err("needs a target")
            .to_string();
        assert!(empty_rule.contains("rule[0].tables"), "{empty_rule}");
        let bad_fingerprint = parse("[[rule]]\nfingerprint = \"xyz\"\nenabled = false\n")
            .expect_err("bad fingerprint")
            .to_string();
        assert!(
            bad_fingerprint.contains("16 hex digits"),
            "{bad_fingerprint}"
        );
        let too_large = parse("capacity_bytes = \"8MiB\"")
            .expect_err("the default max_result_bytes does not fit")
            .to_string();
        assert!(
            too_large.contains("max_result_bytes") && too_large.contains("capacity_bytes"),
            "{too_large}"
        );
    }

    #[test]
    fn rules_match_tables_with_or_without_schema() {
        let rule = CacheRule {
            tables: vec!["prices".into()],
            fingerprint: None,
            enabled: Some(false),
            max_age: None,
            stale_while_revalidate: None,
        };
        assert!(rule.matches(&["prices".into()], "0"));
        assert!(rule.matches(&["shop.prices".into()], "0"));
        assert!(!rule.matches(&["price_history".into()], "0"));
        let qualified = CacheRule {
            tables: vec!["shop.prices".into()],
            ..rule.clone()
        };
        assert!(!qualified.matches(&["prices".into()], "0"));
        assert!(qualified.matches(&["shop.prices".into()], "0"));
        let by_print = CacheRule {
            tables: vec![],
            fingerprint: Some("abcdef0123456789".into()),
            ..rule
        };
        assert!(by_print.matches(&[], "abcdef0123456789"));
    }
}
