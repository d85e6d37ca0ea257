//! The statements prepared on one MySQL origin connection, by their key (text, database,
//! parse settings): the origin's id for each, so that every client's statement with the
//! same key shares one,
//! and a connection that lacks a client's statement prepares it first. Bounded: the
//! least recently used is closed on the origin when room is needed.

use std::collections::HashMap;

use bytes::Bytes;

/// A statement as prepared on one origin connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginStatement {
    /// The origin's statement id.
    pub id: u32,
}

struct Slot {
    statement: OriginStatement,
    last_used: u64,
}

/// The statements on one connection.
pub struct StatementCache {
    capacity: usize,
    clock: u64,
    by_sql: HashMap<Bytes, Slot>,
}

impl StatementCache {
    /// A cache of at most `capacity` statements (at least one).
    pub fn new(capacity: usize) -> StatementCache {
        StatementCache {
            capacity: capacity.max(1),
            clock: 0,
            by_sql: HashMap::new(),
        }
    }

    /// The statement prepared for `sql`, if there is one; marks it used.
    pub fn get(&mut self, sql: &[u8]) -> Option<OriginStatement> {
        self.clock += 1;
        let clock = self.clock;
        self.by_sql.get_mut(sql).map(|slot| {
            slot.last_used = clock;
            slot.statement
        })
    }

    /// Records a statement just prepared; returns the id of the one evicted to make
    /// room, which the caller closes on the origin.
    pub fn insert(&mut self, sql: Bytes, statement: OriginStatement) -> Option<u32> {
        self.clock += 1;
        let evicted = if self.by_sql.len() >= self.capacity && !self.by_sql.contains_key(&sql) {
            let oldest = self
                .by_sql
                .iter()
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(sql, _)| sql.clone());
            oldest
                .and_then(|sql| self.by_sql.remove(&sql))
                .map(|slot| slot.statement.id)
        } else {
            None
        };
        let replaced = self.by_sql.insert(
            sql,
            Slot {
                statement,
                last_used: self.clock,
            },
        );
        evicted.or(replaced.map(|slot| slot.statement.id))
    }

    /// Forgets the statement for `sql` (closed on the origin by the caller).
    pub fn remove(&mut self, sql: &[u8]) -> Option<OriginStatement> {
        self.by_sql.remove(sql).map(|slot| slot.statement)
    }

    /// Forgets every statement (the origin dropped them: COM_RESET_CONNECTION).
    pub fn clear(&mut self) {
        self.by_sql.clear();
    }

    /// How many are prepared.
    pub fn len(&self) -> usize {
        self.by_sql.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_sql.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(id: u32) -> OriginStatement {
        OriginStatement { id }
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut cache = StatementCache::new(2);
        assert_eq!(cache.insert(Bytes::from_static(b"a"), statement(1)), None);
        assert_eq!(cache.insert(Bytes::from_static(b"b"), statement(2)), None);
        assert_eq!(cache.get(b"a"), Some(statement(1)));
        assert_eq!(
            cache.insert(Bytes::from_static(b"c"), statement(3)),
            Some(2)
        );
        assert_eq!(cache.get(b"b"), None);
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert!(cache.is_empty());
    }
}
