//! Read-your-writes: one clock per origin database, on which every write that completes
//! through warpdrive is marked against the tables it reached. A cached result carries the
//! tick at which its origin query started; it is current only while no table it read
//! (or, for a result whose tables are not all known, no table at all) was written at or
//! after that tick.
//!
//! A result whose query started before a write and finished after it therefore fails
//! the check the moment the write is marked, whether it is being stored or already is:
//! the store refuses such a fill and drops such an entry ([`super::Store`]).
//!
//! Tables are tracked by their last name part, so `shop.prices`, `prices` and
//! `"other".prices` meet: a write to one invalidates reads of all, which is conservative
//! when two schemas hold tables of one name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A tick of an origin database's write clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

/// What a completed write reached.
#[derive(Clone, Copy, Debug)]
pub enum Written<'a> {
    /// These tables (by any name reads use: bare or schema-qualified).
    Tables(&'a [String]),
    /// Anything in the database.
    Everything,
}

/// The write clock of one origin database.
#[derive(Debug, Default)]
pub struct Generations {
    clock: AtomicU64,
    /// The last tick of any write: an entry started after it is current without a look
    /// at its tables.
    last_write: AtomicU64,
    /// The last tick of a write that reached everything.
    everything: AtomicU64,
    /// The last tick each table was written, by last name part.
    tables: RwLock<HashMap<String, u64>>,
}

/// The key a table is tracked under: its last name part.
pub fn table_key(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

impl Generations {
    /// The tick for an origin query that starts now.
    pub fn stamp(&self) -> Stamp {
        Stamp(self.clock.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// A write completed: every result whose query started before now and read what it
    /// reached is no longer current.
    pub fn invalidate(&self, written: Written<'_>) {
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        let tick = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        match written {
            Written::Tables(names) => {
                for name in names {
                    tables.insert(table_key(name).to_owned(), tick);
                }
            }
            Written::Everything => {
                self.everything.fetch_max(tick, Ordering::SeqCst);
            }
        }
        self.last_write.fetch_max(tick, Ordering::SeqCst);
    }

    /// Whether a result whose query started at `stamp`, which read `tables` (and more,
    /// when `tables_unknown`), is still current.
    pub fn is_current(&self, stamp: Stamp, tables: &[String], tables_unknown: bool) -> bool {
        if self.last_write.load(Ordering::SeqCst) < stamp.0 {
            return true;
        }
        if tables_unknown || self.everything.load(Ordering::SeqCst) >= stamp.0 {
            return false;
        }
        let written = self.tables.read().unwrap_or_else(|p| p.into_inner());
        tables.iter().all(|name| {
            written
                .get(table_key(name))
                .is_none_or(|&tick| tick < stamp.0)
        })
    }
}

/// What decides whether an entry is still current.
#[derive(Clone, Debug)]
pub struct Validity {
    /// Its origin database's clock.
    pub generations: Arc<Generations>,
    /// When its origin query started.
    pub stamp: Stamp,
}

impl Validity {
    /// The validity of a result whose origin query starts now.
    pub fn starting(generations: &Arc<Generations>) -> Validity {
        Validity {
            generations: Arc::clone(generations),
            stamp: generations.stamp(),
        }
    }

    /// The same result's query started again now (a refresh).
    pub fn restarted(&self) -> Validity {
        Validity::starting(&self.generations)
    }

    /// Whether a result that read `tables` (and more, when `tables_unknown`) is current.
    pub fn is_current(&self, tables: &[String], tables_unknown: bool) -> bool {
        self.generations
            .is_current(self.stamp, tables, tables_unknown)
    }
}

/// The write clocks of every origin database the process serves, shared by all
/// deployments (two deployments on one database see each other's writes).
#[derive(Debug)]
pub struct Clocks {
    by_database: Mutex<HashMap<String, Arc<Generations>>>,
    /// Names these clocks among instances that tell each other of their writes.
    instance: u64,
}

impl Default for Clocks {
    fn default() -> Clocks {
        Clocks {
            by_database: Mutex::default(),
            instance: rand::random(),
        }
    }
}

impl Clocks {
    /// The instance these clocks belong to, as the notices of its writes name it.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The clock of the origin database named `origin`.
    pub fn of(&self, origin: &str) -> Arc<Generations> {
        let mut clocks = self.by_database.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(clocks.entry(origin.to_owned()).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_write_invalidates_reads_of_its_tables_started_before_it() {
        let clock = Generations::default();
        let before = clock.stamp();
        clock.invalidate(Written::Tables(&tables(&["shop.prices"])));
        let after = clock.stamp();
        assert!(!clock.is_current(before, &tables(&["prices"]), false));
        assert!(!clock.is_current(before, &tables(&["other.prices", "x"]), false));
        assert!(clock.is_current(before, &tables(&["stock"]), false));
        assert!(clock.is_current(after, &tables(&["prices"]), false));
    }

    #[test]
    fn reads_of_unknown_tables_and_writes_of_everything_meet_every_write() {
        let clock = Generations::default();
        let before = clock.stamp();
        assert!(clock.is_current(before, &[], true));
        clock.invalidate(Written::Tables(&tables(&["stock"])));
        assert!(!clock.is_current(before, &[], true));
        assert!(clock.is_current(before, &tables(&["prices"]), false));
        clock.invalidate(Written::Everything);
        assert!(!clock.is_current(before, &tables(&["prices"]), false));
        assert!(clock.is_current(clock.stamp(), &tables(&["prices"]), true));
    }

    #[test]
    fn one_clock_per_origin_database() {
        let clocks = Clocks::default();
        let a = clocks.of("127.0.0.1:5432/a");
        assert!(Arc::ptr_eq(&a, &clocks.of("127.0.0.1:5432/a")));
        let b = clocks.of("127.0.0.1:5432/b");
        let read = b.stamp();
        a.invalidate(Written::Everything);
        assert!(b.is_current(read, &tables(&["t"]), false));
    }
}
