//! Which queries are cached, and for how long: the deployment's settings, then its rules
//! (by table or fingerprint), then the query's own hint.
//!
//! Order of the decision (the first that applies gives the status):
//! 1. caching off for the deployment → `disabled`;
//! 2. the analyzer's verdict under the deployment's `stable_functions` policy, if not
//!    cacheable → that status (`uncacheable`, `volatile`, …);
//! 3. inside a transaction → `transaction`;
//! 4. a `/* warpdrive: no-cache */` hint, or a matching rule with `enabled = false` →
//!    `disabled`;
//! 5. otherwise cached: max_age and stale_while_revalidate are the deployment's, replaced
//!    by those of the matching rules (when several set one, the shortest wins), then by
//!    the hint's; never above 3600 s. Results without rows use `empty_max_age` when it
//!    is shorter.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::analyze::{Analysis, Status};
use crate::cache::tier::TierStamp;
use crate::cache::{CacheStatus, Entry, Refetch, Validity};
use crate::config::CacheSettings;
use crate::config::cache::MAX_LIFETIME;

/// Lifetimes for one cacheable query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Fresh for this long.
    pub max_age: Duration,
    /// Then served stale for this long while refreshed.
    pub stale_while_revalidate: Duration,
    /// max_age when the result has no rows.
    pub empty_max_age: Duration,
}

/// Where a recorded result comes from: what its request read, the write clock it
/// started on, and how to run it again.
pub struct Source {
    /// The relations it read.
    pub tables: Arc<[String]>,
    /// It ran code whose reads warpdrive does not know.
    pub tables_unknown: bool,
    /// The writes that may overtake it, from when it was sent.
    pub validity: Option<Validity>,
    /// The generations in the upstream tier of what it read, when it was sent.
    pub tier_stamp: Option<TierStamp>,
    /// How to run the request again.
    pub refetch: Arc<dyn Refetch>,
}

impl Policy {
    /// The entry for a result recorded under this policy, its request sent at
    /// `requested_at`.
    pub fn entry(
        &self,
        segments: Vec<Bytes>,
        has_rows: bool,
        requested_at: Duration,
        source: Source,
    ) -> Entry {
        let Source {
            tables,
            tables_unknown,
            validity,
            tier_stamp,
            refetch,
        } = source;
        Entry {
            segments,
            stored_at: requested_at,
            max_age: if has_rows {
                self.max_age
            } else {
                self.empty_max_age
            },
            stale_while_revalidate: self.stale_while_revalidate,
            tables,
            tables_unknown,
            validity,
            tier_stamp,
            refetch,
        }
    }
}

/// The decision for one query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Look it up; store it on a miss.
    Cache(Policy),
    /// Forward it; this is its status.
    Refuse(CacheStatus),
}

/// The decision, and the indices of the rules that matched (for `warpdrive check`).
pub fn decide(
    settings: &CacheSettings,
    analysis: &Analysis,
    in_transaction: bool,
) -> (Decision, Vec<usize>) {
    if !settings.enabled {
        return (Decision::Refuse(CacheStatus::Disabled), Vec::new());
    }
    let status = analysis.status_under(settings.stable_functions);
    if status != Status::Cacheable {
        return (Decision::Refuse(refusal(status)), Vec::new());
    }
    if in_transaction {
        return (Decision::Refuse(CacheStatus::Transaction), Vec::new());
    }
    let matched: Vec<usize> = settings
        .rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| rule.matches(&analysis.tables_read, &analysis.fingerprint))
        .map(|(index, _)| index)
        .collect();
    let hint = analysis.hint.unwrap_or_default();
    let disabled = hint.no_cache
        || matched
            .iter()
            .any(|&i| settings.rules[i].enabled == Some(false));
    if disabled {
        return (Decision::Refuse(CacheStatus::Disabled), matched);
    }
    let shortest = |base: Duration, pick: fn(&crate::config::CacheRule) -> Option<Duration>| {
        matched
            .iter()
            .filter_map(|&i| pick(&settings.rules[i]))
            .min()
            .unwrap_or(base)
    };
    let max_age = hint
        .max_age
        .unwrap_or_else(|| shortest(settings.max_age, |rule| rule.max_age))
        .min(MAX_LIFETIME);
    let stale_while_revalidate = hint
        .stale_while_revalidate
        .unwrap_or_else(|| {
            shortest(settings.stale_while_revalidate, |rule| {
                rule.stale_while_revalidate
            })
        })
        .min(MAX_LIFETIME);
    let empty_max_age = settings
        .empty_max_age
        .map_or(max_age, |empty| empty.min(max_age));
    (
        Decision::Cache(Policy {
            max_age,
            stale_while_revalidate,
            empty_max_age,
        }),
        matched,
    )
}

/// The cache status of an analyzer verdict that is not cacheable (a cacheable one
/// becomes hit or miss only at lookup; it maps to miss here).
fn refusal(status: Status) -> CacheStatus {
    match status {
        Status::Cacheable => CacheStatus::Miss,
        Status::Uncacheable => CacheStatus::Uncacheable,
        Status::MultipleStatements => CacheStatus::MultipleStatements,
        Status::NotAQuery => CacheStatus::NotAQuery,
        Status::ParseError => CacheStatus::ParseError,
        Status::Volatile => CacheStatus::Volatile,
        Status::OversizedQuery => CacheStatus::OversizedQuery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{Analyzer, AnalyzerOptions, Dialect, StableFunctions};
    use crate::config::CacheRule;

    fn analysis(sql: &str) -> Analysis {
        Analyzer::with_builtin_rules(AnalyzerOptions::default()).analyze(Dialect::Postgres, sql)
    }

    fn rule(tables: &[&str], enabled: Option<bool>, max_age: Option<u64>) -> CacheRule {
        CacheRule {
            tables: tables.iter().map(|t| t.to_string()).collect(),
            fingerprint: None,
            enabled,
            max_age: max_age.map(Duration::from_secs),
            stale_while_revalidate: None,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_order_of_refusals() {
        let mut settings = CacheSettings::default();
        let read = analysis("SELECT * FROM items");
        assert!(matches!(
            decide(&settings, &read, false).0,
            Decision::Cache(_)
        ));
        assert_eq!(
            decide(&settings, &read, true).0,
            Decision::Refuse(CacheStatus::Transaction)
        );
        let write = analysis("DELETE FROM items");
        assert_eq!(
            decide(&settings, &write, true).0,
            Decision::Refuse(CacheStatus::Uncacheable)
        );
        let clock = analysis("SELECT now()");
        assert!(matches!(
            decide(&settings, &clock, false).0,
            Decision::Cache(_)
        ));
        settings.stable_functions = StableFunctions::Bypass;
        assert_eq!(
            decide(&settings, &clock, false).0,
            Decision::Refuse(CacheStatus::Volatile)
        );
        settings.enabled = false;
        assert_eq!(
            decide(&settings, &read, false).0,
            Decision::Refuse(CacheStatus::Disabled)
        );
    }

    #[test]
    fn rules_set_lifetimes_or_disable() {
        let settings = CacheSettings {
            empty_max_age: Some(secs(5)),
            rules: vec![
                rule(&["prices"], None, Some(2)),
                rule(&["sessions"], Some(false), None),
                rule(&["items"], None, Some(600)),
            ],
            ..CacheSettings::default()
        };
        let (decision, matched) = decide(
            &settings,
            &analysis("SELECT * FROM shop.prices p JOIN items i ON true"),
            false,
        );
        assert_eq!(matched, vec![0, 2]);
        assert_eq!(
            decision,
            Decision::Cache(Policy {
                max_age: secs(2),
                stale_while_revalidate: secs(15),
                empty_max_age: secs(2),
            })
        );
        let (decision, _) = decide(&settings, &analysis("SELECT * FROM items"), false);
        assert_eq!(
            decision,
            Decision::Cache(Policy {
                max_age: secs(600),
                stale_while_revalidate: secs(15),
                empty_max_age: secs(5),
            })
        );
        assert_eq!(
            decide(&settings, &analysis("SELECT * FROM sessions"), false).0,
            Decision::Refuse(CacheStatus::Disabled)
        );
    }

    #[test]
    fn fingerprint_rules_and_hints() {
        let read = analysis("SELECT * FROM reports WHERE id = 1");
        let settings = CacheSettings {
            rules: vec![CacheRule {
                tables: Vec::new(),
                fingerprint: Some(read.fingerprint.clone()),
                enabled: None,
                max_age: Some(secs(3600)),
                stale_while_revalidate: Some(secs(60)),
            }],
            ..CacheSettings::default()
        };
        let other_value = analysis("SELECT * FROM reports WHERE id = 2");
        let Decision::Cache(policy) = decide(&settings, &other_value, false).0 else {
            panic!("cacheable")
        };
        assert_eq!(
            (policy.max_age, policy.stale_while_revalidate),
            (secs(3600), secs(60))
        );
        let hinted =
            analysis("/* warpdrive: max_age=30 swr=5 */ SELECT * FROM reports WHERE id = 3");
        let Decision::Cache(policy) = decide(&settings, &hinted, false).0 else {
            panic!("cacheable")
        };
        assert_eq!(
            (policy.max_age, policy.stale_while_revalidate),
            (secs(30), secs(5))
        );
        let off = analysis("/* warpdrive: no-cache */ SELECT * FROM reports");
        assert_eq!(
            decide(&settings, &off, false).0,
            Decision::Refuse(CacheStatus::Disabled)
        );
        let long = analysis("/* warpdrive: max_age=99999 */ SELECT 1");
        let Decision::Cache(policy) = decide(&settings, &long, false).0 else {
            panic!("cacheable")
        };
        assert_eq!(policy.max_age, MAX_LIFETIME);
    }
}
