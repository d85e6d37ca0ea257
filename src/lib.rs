//! warpdrive: a query-result cache and connection pooler for PostgreSQL and MySQL/MariaDB.
//!
//! Applications point their ordinary driver at warpdrive instead of the database.
//! warpdrive answers the client handshake itself, pools origin connections in transaction
//! mode, and analyses every query to decide whether its result may be cached.
//!
//! Layout (see `DESIGN.md` in the shared notes for the whole map):
//!
//! | module | owns | does not know about |
//! |---|---|---|
//! | [`analyze`] | SQL text → [`analyze::Analysis`]: kind, tables, functions, cache status, session effects; volatility rules; memo | sockets, time, caches |
//! | [`check`] | the `warpdrive check` report | sockets |
//! | [`config`] | raw TOML/flags → validated [`config::Config`] | sockets |
//! | [`wire`] | sans-I/O protocol framing and messages | tokio, sessions, SQL |
//! | [`conn`] | buffered frame reads/writes over TCP or TLS | SQL, pools |
//! | [`auth`] | SCRAM-SHA-256 and MD5, both directions | sockets |
//! | [`tls`] | rustls configurations for clients and origins | sessions |
//! | [`protocol`] | the neutral transaction status and the protocol a deployment speaks | byte layouts |
//! | [`proxy`] | the composer: cache policy, lookup, single flight, record and fill, stale-while-revalidate | byte layouts |
//! | [`cache`] | keys from canonical parts, entries of opaque bytes, the bounded store with single flight | SQL, wire formats, config |
//! | [`pool`] | origin connections: connect, authenticate, pool per database, reset on return | sessions, SQL |
//! | [`session`] | one client: startup, authentication, statements, settings, relaying replies | pool internals, byte layouts of the origin |
//! | [`cancel`] | routing CancelRequests to the origin backend serving a client | SQL |
//! | [`catalog`] | reading the origin's catalog (functions, triggers, …) for the analyzer, per database | sessions, caches |
//! | [`server`] | listeners, accept loop, drain on shutdown | message formats |
//!
//! The analyzer and the wire layer are pure: no sockets, no clocks, no global state.
//! Everything is passed to constructors; nothing is a process-global.

pub mod admin;
pub mod analyze;
pub mod auth;
pub mod cache;
pub mod cancel;
pub mod catalog;
pub mod check;
pub mod clock;
pub mod config;
pub mod conn;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod session;
pub mod tls;
pub mod units;
pub mod validate;
pub mod wire;
