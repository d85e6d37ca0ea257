//! The names of one database's keys and notice channel in Redis, all under one hash
//! tag (see [`super`]).

use std::collections::BTreeSet;

use super::super::invalidation::table_key;
use super::super::key::CacheKey;

/// Names of one database's keys.
pub(super) struct Keys(pub(super) String);

impl Keys {
    pub(super) fn entry(&self, key: CacheKey) -> String {
        let mut name = format!("{}:e:", self.0);
        for byte in key.0 {
            name.push_str(&format!("{byte:02x}"));
        }
        name
    }

    /// The lock of a key's fetch across instances.
    pub(super) fn lock(&self, key: CacheKey) -> String {
        let mut name = format!("{}:l:", self.0);
        for byte in key.0 {
            name.push_str(&format!("{byte:02x}"));
        }
        name
    }

    pub(super) fn generation(&self, table: &str) -> String {
        format!("{}:g:{table}", self.0)
    }

    pub(super) fn all(&self) -> String {
        format!("{}:all", self.0)
    }

    pub(super) fn any(&self) -> String {
        format!("{}:any", self.0)
    }

    /// The channel of the database's notices (in its slot, so that a write's pipeline
    /// stays in one slot on a cluster).
    pub(super) fn notices(&self) -> String {
        format!("{}:notices", self.0)
    }

    /// The keys of a [`TierStamp`] for a result that read `tables`.
    pub(super) fn stamp(&self, tables: &[String]) -> Vec<String> {
        let names: BTreeSet<&str> = tables.iter().map(|t| table_key(t)).collect();
        let mut keys: Vec<String> = names
            .into_iter()
            .map(|name| self.generation(name))
            .collect();
        keys.push(self.all());
        keys.push(self.any());
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tier::format::FORMAT;

    #[test]
    fn keys_of_a_database_share_one_hash_tag() {
        let keys = Keys(format!("{{{}:{}}}:{FORMAT}", "wd", "shop"));
        let stamp = keys.stamp(&[
            "public.prices".to_owned(),
            "prices".to_owned(),
            "stock".to_owned(),
        ]);
        assert_eq!(
            stamp,
            [
                "{wd:shop}:1:g:prices",
                "{wd:shop}:1:g:stock",
                "{wd:shop}:1:all",
                "{wd:shop}:1:any"
            ]
        );
        assert!(
            keys.entry(CacheKey([0xab; 32]))
                .starts_with("{wd:shop}:1:e:abab")
        );
    }
}
