//! warpdrive: a query-result cache and connection pooler for PostgreSQL and MySQL/MariaDB.
//!
//! Applications point their ordinary driver at warpdrive instead of the database. Every
//! query passes through the [`analyze`] module, which decides from the SQL text alone
//! whether its result may be cached; later layers (wire protocol, sessions, pool, cache)
//! build on that verdict.
//!
//! Layout (see `DESIGN.md` in the shared notes for the whole map):
//!
//! | module | owns |
//! |---|---|
//! | [`analyze`] | SQL text → [`analyze::Analysis`]: statement kind, tables, functions, cache status; the volatility rules; the memo |
//!
//! The analyzer is pure: no sockets, no clocks, no global state. Everything it needs (the
//! rules, the limits) is passed to [`analyze::Analyzer::new`].

pub mod analyze;
pub mod check;
