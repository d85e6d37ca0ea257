//! `warpdrive check`: the analyzer's decision about one query, for people or as JSON.
//!
//! The JSON object is an interface other tools rely on: its field names and status
//! spellings only ever grow, they do not change.

use serde::Serialize;

use crate::analyze::{
    Analysis, CacheHint, CatalogNames, Dialect, Kind, Reason, StableFunctions, Status,
};
use crate::cache::CacheStatus;
use crate::config::CacheSettings;
use crate::proxy::{Decision, decide};

/// What a deployment's cache settings make of the query (`check --config`).
#[derive(Debug, Serialize)]
pub struct PolicyReport {
    /// The deployment.
    pub deployment: String,
    /// Whether the result is cached (outside a transaction).
    pub cached: bool,
    /// When not cached: the status it gets instead.
    pub status: Option<CacheStatus>,
    /// Fresh for this many seconds, when cached.
    pub max_age_seconds: Option<f64>,
    /// Then stale for this many seconds while refreshed.
    pub stale_while_revalidate_seconds: Option<f64>,
    /// max_age of a result without rows.
    pub empty_max_age_seconds: Option<f64>,
    /// The rules that matched, as written.
    pub rules: Vec<String>,
}

impl PolicyReport {
    /// The decision of `settings` for `analysis`.
    pub fn new(deployment: &str, settings: &CacheSettings, analysis: &Analysis) -> PolicyReport {
        let (decision, matched) = decide(settings, analysis, false);
        let rules = matched
            .iter()
            .map(|&i| format!("rule[{i}]: {}", settings.rules[i].describe()))
            .collect();
        let (status, policy) = match decision {
            Decision::Cache(policy) => (None, Some(policy)),
            Decision::Refuse(status) => (Some(status), None),
        };
        PolicyReport {
            deployment: deployment.to_owned(),
            cached: policy.is_some(),
            status,
            max_age_seconds: policy.map(|p| p.max_age.as_secs_f64()),
            stale_while_revalidate_seconds: policy.map(|p| p.stale_while_revalidate.as_secs_f64()),
            empty_max_age_seconds: policy.map(|p| p.empty_max_age.as_secs_f64()),
            rules,
        }
    }

    fn to_text(&self) -> String {
        let decision = match (self.max_age_seconds, self.stale_while_revalidate_seconds) {
            (Some(max_age), Some(swr)) => format!(
                "cached for {max_age}s, then served stale for {swr}s while refreshed (empty results: {}s)",
                self.empty_max_age_seconds.unwrap_or(max_age)
            ),
            _ => format!(
                "not cached (status {})",
                self.status.map_or("unknown", CacheStatus::name)
            ),
        };
        let rules = if self.rules.is_empty() {
            "no rule matches".to_owned()
        } else {
            self.rules.join("; ")
        };
        format!(
            "deployment:         {}: {decision}
rules:              {rules}
",
            self.deployment
        )
    }
}

/// The JSON shape of `warpdrive check --json`.
#[derive(Debug, Serialize)]
pub struct CheckReport<'a> {
    /// The decision under the chosen policy.
    pub status: Status,
    /// Whether the result may be cached under that policy.
    pub cacheable: bool,
    /// The dialect the text was analysed as.
    pub dialect: Dialect,
    /// The policy for STABLE functions the status was decided under.
    pub stable_functions_policy: StableFunctions,
    /// The statement kind.
    pub kind: Kind,
    /// Number of statements.
    pub statements: usize,
    /// Relations read.
    pub tables_read: &'a [String],
    /// Relations written.
    pub tables_written: &'a [String],
    /// Functions called.
    pub functions: &'a [String],
    /// Volatile (or unknown) functions called.
    pub volatile_functions: &'a [String],
    /// STABLE functions called.
    pub stable_functions: &'a [String],
    /// Why.
    pub reasons: Vec<Reason>,
    /// The query's fingerprint (for cache rules).
    pub fingerprint: &'a str,
    /// A `/* warpdrive: … */` hint in a leading comment.
    pub hint: Option<CacheHint>,
    /// What the proxy resolves with the origin's catalog (user functions, operators,
    /// types converted to, `x.name` references): `check` has no catalog.
    pub catalog_names: &'a CatalogNames,
    /// With a configuration: what the deployment's cache rules make of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<PolicyReport>,
}

impl<'a> CheckReport<'a> {
    /// The report of `analysis` under `policy`.
    pub fn new(analysis: &'a Analysis, dialect: Dialect, policy: StableFunctions) -> Self {
        let status = analysis.status_under(policy);
        CheckReport {
            status,
            cacheable: status == Status::Cacheable,
            dialect,
            stable_functions_policy: policy,
            kind: analysis.kind,
            statements: analysis.statements,
            tables_read: &analysis.tables_read,
            tables_written: &analysis.tables_written,
            functions: &analysis.functions,
            volatile_functions: &analysis.volatile_functions,
            stable_functions: &analysis.stable_functions,
            reasons: analysis.reasons_under(policy),
            fingerprint: &analysis.fingerprint,
            hint: analysis.hint,
            catalog_names: &analysis.catalog_names,
            cache: None,
        }
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report of strings and enums always serializes")
    }

    /// The decision in words, then the details, one per line.
    pub fn to_text(&self) -> String {
        let headline = match self.status {
            Status::Cacheable => "cacheable: the result may be served from the cache",
            Status::Volatile => {
                "volatile: the result can change without a write, so it is not cached"
            }
            Status::Uncacheable => {
                "uncacheable: not a plain read, so it is forwarded and never cached"
            }
            Status::MultipleStatements => {
                "multiplestatements: several statements in one query are forwarded, never cached"
            }
            Status::NotAQuery => "notaquery: not a query; forwarded, never cached",
            Status::ParseError => "parseerror: warpdrive cannot parse it; forwarded, never cached",
            Status::OversizedQuery => {
                "oversizedquery: the text is above the size limit; forwarded, never cached"
            }
        };
        let list = |items: &[String]| {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join(", ")
            }
        };
        let mut out = format!(
            "{headline}\n\
             kind:               {}\n\
             statements:         {}\n\
             tables read:        {}\n\
             tables written:     {}\n\
             functions:          {}\n\
             volatile functions: {}\n\
             stable functions:   {} (stable_functions = \"{}\")\n",
            self.kind,
            self.statements,
            list(self.tables_read),
            list(self.tables_written),
            list(self.functions),
            list(self.volatile_functions),
            list(self.stable_functions),
            match self.stable_functions_policy {
                StableFunctions::Cache => "cache",
                StableFunctions::Bypass => "bypass",
            },
        );
        if !self.catalog_names.unknown_functions.is_empty() {
            out.push_str(&format!(
                "origin's catalog:   the proxy judges {} by the volatility the origin's catalog declares\n",
                list(&self.catalog_names.unknown_functions)
            ));
        }
        out.push_str(&format!("fingerprint:        {}\n", self.fingerprint));
        for reason in &self.reasons {
            out.push_str(&format!("why:                {reason}\n"));
        }
        if let Some(cache) = &self.cache {
            out.push_str(&cache.to_text());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{Analyzer, AnalyzerOptions};

    fn report(sql: &str, policy: StableFunctions) -> (String, String) {
        let analysis = Analyzer::with_builtin_rules(AnalyzerOptions::default())
            .analyze(Dialect::Postgres, sql);
        let report = CheckReport::new(&analysis, Dialect::Postgres, policy);
        (report.to_text(), report.to_json())
    }

    #[test]
    fn json_has_the_stable_field_names() {
        let (_, json) = report("SELECT now(), a FROM t", StableFunctions::Cache);
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        for field in [
            "status",
            "kind",
            "statements",
            "tables_read",
            "tables_written",
            "functions",
            "volatile_functions",
            "stable_functions",
        ] {
            assert!(value.get(field).is_some(), "missing {field} in {json}");
        }
        assert_eq!(value["status"], "cacheable");
        assert_eq!(value["tables_read"][0], "t");
        assert_eq!(value["stable_functions"][0], "now");
    }

    #[test]
    fn text_names_the_decision_and_the_reason() {
        let (text, json) = report("SELECT now()", StableFunctions::Bypass);
        assert!(text.starts_with("volatile:"), "{text}");
        assert!(text.contains("stable_functions = \"bypass\""), "{text}");
        assert!(json.contains("\"status\":\"volatile\""), "{json}");
    }
}
