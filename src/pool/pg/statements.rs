//! The statements warpdrive has prepared on one origin connection, least recently used
//! first out.
//!
//! Origin-side names are derived from the statement's text, parameter types and the
//! session settings it was prepared under (see [`origin_statement_name`]), so clients
//! that prepare the same statement share it, two different statements never collide,
//! whatever the clients call them, and clients whose settings make PostgreSQL read the
//! text differently (search_path for a schema per tenant, transform_null_equals,
//! standard_conforming_strings, DateStyle for typed literals, …) never run each other's
//! plans.

use std::collections::HashMap;

use bytes::Bytes;

/// The name under which warpdrive prepares a statement on origin connections: a prefix
/// and 128 bits of its [`statement_identity`] in hex.
pub fn origin_statement_name(identity: &[u8; 32]) -> Bytes {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = Vec::with_capacity(3 + 32);
    name.extend_from_slice(b"wd_");
    for byte in &identity[..16] {
        name.push(HEX[usize::from(byte >> 4)]);
        name.push(HEX[usize::from(byte & 0xf)]);
    }
    Bytes::from(name)
}

/// A statement's identity: blake3 over its length-prefixed text and parameter types, and
/// the settings in force when it was prepared, each length-prefixed. PostgreSQL parses and
/// analyses a statement once, under the settings of that moment (search_path to resolve
/// names; transform_null_equals, standard_conforming_strings, backslash_quote to read
/// the text; DateStyle, IntervalStyle and TimeZone to fold typed literals), and does not
/// do so again when they change: two clients may share an origin statement only if all
/// of them match.
pub fn statement_identity<'a>(
    sql: &[u8],
    parameter_types: &[u8],
    settings: impl IntoIterator<Item = &'a str>,
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for part in [sql, parameter_types] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    for setting in settings {
        hasher.update(&(setting.len() as u64).to_le_bytes());
        hasher.update(setting.as_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// A bounded set of statement names with least-recently-used eviction.
#[derive(Debug)]
pub struct StatementCache {
    capacity: usize,
    clock: u64,
    used: HashMap<Bytes, u64>,
}

impl StatementCache {
    /// An empty cache of at most `capacity` statements (at least one).
    pub fn new(capacity: usize) -> StatementCache {
        StatementCache {
            capacity: capacity.max(1),
            clock: 0,
            used: HashMap::new(),
        }
    }

    /// Whether `name` is prepared; marks it used.
    pub fn touch(&mut self, name: &Bytes) -> bool {
        self.clock += 1;
        match self.used.get_mut(name) {
            Some(at) => {
                *at = self.clock;
                true
            }
            None => false,
        }
    }

    /// Records `name` as prepared; returns the statement evicted to make room, which
    /// the caller must close on the origin.
    pub fn insert(&mut self, name: Bytes) -> Option<Bytes> {
        self.clock += 1;
        let evicted = if self.used.len() >= self.capacity && !self.used.contains_key(&name) {
            let oldest = self
                .used
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(name, _)| name.clone());
            oldest.inspect(|oldest| {
                self.used.remove(oldest);
            })
        } else {
            None
        };
        self.used.insert(name, self.clock);
        evicted
    }

    /// Forgets `name` (it failed, or went stale after DDL).
    pub fn remove(&mut self, name: &Bytes) {
        self.used.remove(name);
    }

    /// Forgets everything (after DISCARD ALL or DEALLOCATE ALL on the origin).
    pub fn clear(&mut self) {
        self.used.clear();
    }

    /// Number of statements held.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_depend_on_text_types_and_settings_only() {
        let name = |types: &[u8], settings: &[&str]| {
            origin_statement_name(&statement_identity(
                b"SELECT $1",
                types,
                settings.iter().copied(),
            ))
        };
        let a = name(&[0, 1, 0, 0, 0, 23], &[]);
        let b = name(&[0, 1, 0, 0, 0, 25], &[]);
        let c = name(&[0, 1, 0, 0, 0, 23], &[]);
        let d = name(&[0, 1, 0, 0, 0, 23], &["SET search_path TO tenant_2"]);
        let e = name(&[0, 1, 0, 0, 0, 23], &["SET transform_null_equals TO on"]);
        let split = name(&[0, 1, 0, 0, 0, 23], &["SET a TO b", "SET c TO d"]);
        let joined = name(&[0, 1, 0, 0, 0, 23], &["SET a TO bSET c TO d"]);
        assert_ne!(a, b);
        assert_ne!(a, d);
        assert_ne!(d, e);
        assert_ne!(split, joined);
        assert_eq!(a, c);
        assert!(a.starts_with(b"wd_"));
        assert_eq!(a.len(), 35);
    }

    #[test]
    fn least_recently_used_is_evicted() {
        let mut cache = StatementCache::new(2);
        let (a, b, c) = (Bytes::from("a"), Bytes::from("b"), Bytes::from("c"));
        assert_eq!(cache.insert(a.clone()), None);
        assert_eq!(cache.insert(b.clone()), None);
        assert!(cache.touch(&a));
        assert_eq!(cache.insert(c.clone()), Some(b.clone()));
        assert!(!cache.touch(&b));
        assert!(cache.touch(&a) && cache.touch(&c));
        cache.remove(&a);
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert!(cache.is_empty());
    }
}
