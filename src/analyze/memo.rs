//! A bounded memo in front of the analyzer, so the hot path never parses the same text
//! twice.
//!
//! Keyed by blake3 over the dialect, how string literals are read, and the exact text:
//! two texts that differ in a single byte (a comment, a literal) are analysed
//! separately, so the memo can never hand out a verdict for other SQL. Bounded by entry count, with quick_cache's S3-FIFO eviction,
//! which keeps the texts an application repeats and lets one-off texts pass through.

use std::sync::Arc;

use super::{Analysis, Analyzer, Dialect, StringLiterals};

/// Default number of analyses kept.
pub const DEFAULT_MEMO_ENTRIES: usize = 16_384;

/// An [`Analyzer`] with a bounded memo of its answers.
pub struct AnalysisMemo {
    analyzer: Analyzer,
    memo: quick_cache::sync::Cache<[u8; 32], Arc<Analysis>>,
}

impl AnalysisMemo {
    /// A memo of at most `entries` analyses in front of `analyzer`.
    pub fn new(analyzer: Analyzer, entries: usize) -> AnalysisMemo {
        AnalysisMemo {
            analyzer,
            memo: quick_cache::sync::Cache::new(entries.max(1)),
        }
    }

    /// The analysis of `sql` (standard string literals), from the memo when this text was
    /// analysed before.
    pub fn analyze(&self, dialect: Dialect, sql: &str) -> Arc<Analysis> {
        self.analyze_bytes(dialect, sql.as_bytes(), StringLiterals::Standard)
    }

    /// The analysis of query text as received (see [`Analyzer::analyze_bytes`]).
    pub fn analyze_bytes(
        &self,
        dialect: Dialect,
        sql: &[u8],
        literals: StringLiterals,
    ) -> Arc<Analysis> {
        let key = memo_key(dialect, literals, sql);
        if let Some(known) = self.memo.get(&key) {
            return known;
        }
        let analysis = Arc::new(self.analyzer.analyze_bytes(dialect, sql, literals));
        self.memo.insert(key, Arc::clone(&analysis));
        analysis
    }

    /// The analyzer behind the memo.
    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// Number of analyses held.
    pub fn len(&self) -> usize {
        self.memo.len()
    }

    /// Whether the memo holds nothing.
    pub fn is_empty(&self) -> bool {
        self.memo.is_empty()
    }
}

fn memo_key(dialect: Dialect, literals: StringLiterals, sql: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(dialect.name().as_bytes());
    hasher.update(&[0]);
    hasher.update(literals.name().as_bytes());
    hasher.update(&[0]);
    hasher.update(sql);
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{AnalyzerOptions, Status};

    fn memo(entries: usize) -> AnalysisMemo {
        AnalysisMemo::new(
            Analyzer::with_builtin_rules(AnalyzerOptions::default()),
            entries,
        )
    }

    #[test]
    fn repeated_text_is_served_from_the_memo() {
        let memo = memo(16);
        let first = memo.analyze(Dialect::Postgres, "SELECT 1");
        let second = memo.analyze(Dialect::Postgres, "SELECT 1");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn dialect_and_every_byte_of_text_are_part_of_the_key() {
        let memo = memo(16);
        let postgres = memo.analyze(Dialect::Postgres, "SELECT @x");
        let mysql = memo.analyze(Dialect::Mysql, "SELECT @x");
        assert_ne!(postgres.status, mysql.status);
        assert_eq!(mysql.status, Status::Volatile);
        let plain = memo.analyze(Dialect::Postgres, "SELECT 1 /* a */");
        let other = memo.analyze(Dialect::Postgres, "SELECT random() /* a */");
        assert_eq!(plain.status, Status::Cacheable);
        assert_eq!(other.status, Status::Volatile);
    }

    #[test]
    fn the_memo_stays_bounded() {
        let memo = memo(64);
        for i in 0..1_000 {
            memo.analyze(Dialect::Postgres, &format!("SELECT {i}"));
        }
        assert!(memo.len() <= 64, "{} entries", memo.len());
    }
}
