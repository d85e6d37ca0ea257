//! Per-query cache hints in a leading comment:
//!
//! ```sql
//! /* warpdrive: no-cache */ SELECT …
//! /* warpdrive: max_age=30 swr=5 */ SELECT …
//! ```
//!
//! Durations are seconds or `"500ms"`, `"30s"`, `"2m"`. The hint is part of the decision
//! (it can shorten, lengthen within the deployment's bound, or turn off caching for that
//! text), and since the comment is part of the text it is also part of the memo's and the
//! cache key's input: a text with a hint never shares an entry with the text without it.

use std::time::Duration;

use serde::Serialize;

use crate::units::parse_duration;

/// What a leading `/* warpdrive: … */` comment asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheHint {
    /// `no-cache`: never serve or store this query from the cache.
    pub no_cache: bool,
    /// `max_age=`: fresh for this long.
    pub max_age: Option<Duration>,
    /// `swr=`: served stale for this long while refreshed.
    pub stale_while_revalidate: Option<Duration>,
}

/// The marker that starts a hint comment.
const MARKER: &str = "warpdrive:";

/// Parses a comment body (without `/*` and `*/`). `None`: not a warpdrive hint.
/// `Some(Err)`: a warpdrive hint that does not parse, with what is wrong.
pub fn parse(comment: &str) -> Option<Result<CacheHint, String>> {
    let body = comment.trim().strip_prefix(MARKER)?;
    let mut hint = CacheHint::default();
    for word in body.split_whitespace() {
        let parsed = match word.split_once('=') {
            None if word == "no-cache" => {
                hint.no_cache = true;
                Ok(())
            }
            Some(("max_age", value)) => parse_duration(value).map(|d| hint.max_age = Some(d)),
            Some(("swr", value)) => {
                parse_duration(value).map(|d| hint.stale_while_revalidate = Some(d))
            }
            _ => Err(format!(
                "unknown hint {word:?} (expected no-cache, max_age=SECONDS, swr=SECONDS)"
            )),
        };
        if let Err(problem) = parsed {
            return Some(Err(problem));
        }
    }
    Some(Ok(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        assert_eq!(
            parse(" warpdrive: no-cache "),
            Some(Ok(CacheHint {
                no_cache: true,
                ..CacheHint::default()
            }))
        );
        assert_eq!(
            parse("warpdrive: max_age=30 swr=5"),
            Some(Ok(CacheHint {
                no_cache: false,
                max_age: Some(Duration::from_secs(30)),
                stale_while_revalidate: Some(Duration::from_secs(5)),
            }))
        );
        assert_eq!(
            parse("warpdrive: max_age=500ms")
                .and_then(Result::ok)
                .and_then(|h| h.max_age),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse("just a comment"), None);
        assert!(matches!(parse("warpdrive: max_age=soon"), Some(Err(_))));
        assert!(matches!(parse("warpdrive: nocache"), Some(Err(_))));
    }
}
