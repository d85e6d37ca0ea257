//! A cacheable PostgreSQL request: what its key is made of, and how to run it again for a
//! background refresh.
//!
//! The key's parts, after the scope (see [`crate::cache::key`]):
//! 1. the session settings that can change output, as the statements that set them
//!    (search_path, TimeZone, DateStyle, IntervalStyle, extra_float_digits, bytea_output,
//!    client_encoding, standard_conforming_strings, role, lc_*, …); settings known not to
//!    change any result (application_name, timeouts, planner and logging knobs) are left
//!    out so they do not split the cache;
//! 2. the request: for a simple query, its text; for the extended protocol, the
//!    statement's text and parameter type OIDs, the Bind's parameter formats, values and
//!    result formats, and which Describes were asked for, in order. Statement and portal
//!    names are not parts: two clients that name the same statement differently share
//!    entries, and the same name for different text never matches.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use super::internal::apply_settings;
pub use super::recorder::Described;
use super::recorder::Recorder;
use crate::cache::{CacheKey, KeyBuilder, KeyScope, Recorded, Refetch, RefetchFuture};
use crate::conn::ConnError;
use crate::pool::pg::{PgPool as Pool, read_until_ready};
use crate::proxy::Record;
use crate::wire::pg::backend::{TransactionStatus, tag};
use crate::wire::pg::encode;

/// A cacheable request.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// A simple-protocol query.
    Simple {
        /// Its text.
        sql: Bytes,
    },
    /// One extended-protocol execution.
    Extended {
        /// The statement's text.
        sql: Bytes,
        /// Parameter type OIDs as the client sent them in Parse.
        parameter_types: Bytes,
        /// The Bind's parameter formats, values and result formats.
        arguments: Bytes,
        /// The Describes in the batch, in order (each is one segment of the entry, before
        /// the Execute's).
        describes: Vec<Described>,
    },
}

/// Query parameters never reach a log: only the request's shape is shown.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Simple { sql } => f.debug_struct("Simple").field("bytes", &sql.len()).finish(),
            Request::Extended { sql, describes, .. } => f
                .debug_struct("Extended")
                .field("bytes", &sql.len())
                .field("describes", describes)
                .finish(),
        }
    }
}

mod tag_of {
    pub const SETTING: u8 = 1;
    pub const SIMPLE: u8 = 2;
    pub const STATEMENT: u8 = 3;
    pub const PARAMETER_TYPES: u8 = 4;
    pub const ARGUMENTS: u8 = 5;
    pub const DESCRIBE_STATEMENT: u8 = 6;
    pub const DESCRIBE_PORTAL: u8 = 7;
}

/// Settings that never change a query's result. (Not client_min_messages: it decides
/// which notices a reply carries, and a reply stored for a client that saw none must
/// not reach one that would have seen them.)
const NEUTRAL_SETTINGS: [&str; 6] = [
    "application_name",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "work_mem",
];

/// Prefixes of settings that never change a query's result (planner, logging, JIT).
const NEUTRAL_PREFIXES: [&str; 6] = [
    "enable_",
    "log_",
    "jit",
    "parallel_",
    "max_parallel_",
    "cpu_",
];

/// Whether a setting can change what a query returns.
pub fn affects_results(name: &str) -> bool {
    !NEUTRAL_SETTINGS.contains(&name)
        && !NEUTRAL_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// The statements of the settings that can change what a query returns, in name order.
pub fn result_settings(settings: &BTreeMap<String, String>) -> impl Iterator<Item = &str> {
    settings
        .iter()
        .filter(|(name, _)| affects_results(name))
        .map(|(_, statement)| statement.as_str())
}

impl Request {
    /// Its key in `scope`, run with `settings` (name → the statement that sets it).
    pub fn key(&self, scope: KeyScope<'_>, settings: &BTreeMap<String, String>) -> CacheKey {
        let mut key = KeyBuilder::new(scope);
        for statement in result_settings(settings) {
            key.part(tag_of::SETTING, statement.as_bytes());
        }
        match self {
            Request::Simple { sql } => {
                key.part(tag_of::SIMPLE, sql);
            }
            Request::Extended {
                sql,
                parameter_types,
                arguments,
                describes,
            } => {
                key.part(tag_of::STATEMENT, sql)
                    .part(tag_of::PARAMETER_TYPES, parameter_types)
                    .part(tag_of::ARGUMENTS, arguments);
                for described in describes {
                    let tag = match described {
                        Described::Statement => tag_of::DESCRIBE_STATEMENT,
                        Described::Portal => tag_of::DESCRIBE_PORTAL,
                    };
                    key.part(tag, &[]);
                }
            }
        }
        key.finish()
    }

    /// A recorder of its reply, up to `limit` bytes.
    pub fn recorder(&self, limit: usize) -> Recorder {
        match self {
            Request::Simple { .. } => Recorder::simple(limit),
            Request::Extended { describes, .. } => Recorder::extended(describes.clone(), limit),
        }
    }
}

/// How a stored PostgreSQL result is fetched again: the request, on a connection of its
/// pool, with the client's settings replayed.
pub struct PgRefetch {
    /// The pool of the request's database.
    pub pool: Pool,
    /// The client's settings: name → the statement that sets it.
    pub settings: BTreeMap<String, String>,
    /// The request.
    pub request: Request,
    /// max_result_bytes.
    pub limit: usize,
}

impl fmt::Debug for PgRefetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgRefetch")
            .field("database", &self.pool.target().target.database)
            .field("request", &self.request)
            .finish()
    }
}

impl Refetch for PgRefetch {
    fn weight(&self) -> usize {
        match &self.request {
            Request::Simple { sql } => sql.len(),
            Request::Extended { sql, arguments, .. } => sql.len() + arguments.len(),
        }
    }

    fn fetch(&self) -> RefetchFuture<'_> {
        Box::pin(async move { Ok(self.run().await?) })
    }
}

/// Why a background fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("no origin connection: {0}")]
    Pool(crate::pool::pg::PgPoolError),
    #[error("{0}")]
    Settings(String),
    #[error("origin connection failed: {0}")]
    Origin(ConnError),
}

impl PgRefetch {
    /// Runs the request on a pooled connection, recording its result.
    async fn run(&self) -> Result<Recorded, FetchError> {
        let mut checkout = self.pool.checkout().await.map_err(FetchError::Pool)?;
        let conn = checkout.conn();
        apply_settings(conn, &self.settings)
            .await
            .map_err(|error| FetchError::Settings(error.message))?;
        match &self.request {
            Request::Simple { sql } => conn.write_query(sql),
            Request::Extended {
                sql,
                parameter_types,
                arguments,
                describes,
            } => {
                let out = &mut conn.origin.conn.out;
                encode::parse_raw(out, b"", sql, parameter_types);
                encode::bind_raw(out, b"", b"", arguments);
                for described in describes {
                    encode::describe(out, described.target(), b"");
                }
                encode::execute(out, b"", 0);
                encode::sync(out);
                // The Parse replaced the unnamed statement with this request's.
                conn.unnamed_statement = None;
            }
        }
        let mut recorder = self.request.recorder(self.limit);
        conn.set_busy();
        let io = &mut conn.origin.conn;
        let mut failed = false;
        let status = read_until_ready(io, |frame| {
            match frame.tag() {
                tag::ERROR_RESPONSE => failed = true,
                _ => recorder.accept(&frame),
            }
            Ok(())
        })
        .await
        .map_err(FetchError::Origin)?;
        conn.set_ready(status.into());
        failed |= status != TransactionStatus::Idle;
        Ok(if failed {
            Recorded::Unusable
        } else {
            recorder.finish()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(sql: &'static str) -> Request {
        Request::Simple {
            sql: Bytes::from_static(sql.as_bytes()),
        }
    }

    fn key(settings: &BTreeMap<String, String>, request: &Request) -> CacheKey {
        let scope = KeyScope {
            deployment: "d",
            database: "db",
            role: "app",
        };
        request.key(scope, settings)
    }

    #[test]
    fn result_changing_settings_split_the_cache_and_neutral_ones_do_not() {
        let none = BTreeMap::new();
        let base = key(&none, &simple("SELECT 1"));
        let mut zone = BTreeMap::new();
        zone.insert(
            "timezone".to_owned(),
            "SET \"timezone\" TO 'UTC'".to_owned(),
        );
        assert_ne!(base, key(&zone, &simple("SELECT 1")));
        let mut app = BTreeMap::new();
        app.insert("application_name".to_owned(), "x".to_owned());
        app.insert("enable_seqscan".to_owned(), "off".to_owned());
        assert_eq!(base, key(&app, &simple("SELECT 1")));
        assert!(affects_results("search_path"));
        assert!(affects_results("datestyle"));
        assert!(affects_results("client_min_messages"));
        assert!(!affects_results("statement_timeout"));
    }

    #[test]
    fn extended_requests_key_on_text_types_arguments_and_describes() {
        let none = BTreeMap::new();
        let typed = |types: &'static [u8], args: &'static [u8], describes: Vec<Described>| {
            Request::Extended {
                sql: Bytes::from_static(b"SELECT $1"),
                parameter_types: Bytes::from_static(types),
                arguments: Bytes::from_static(args),
                describes,
            }
        };
        let one = b"\0\0\0\x01\0\0\0\x011\0\0";
        let two = b"\0\0\0\x01\0\0\0\x012\0\0";
        let a = key(&none, &typed(&[0, 0], one, vec![]));
        assert_ne!(a, key(&none, &typed(&[0, 0], two, vec![])));
        assert_ne!(a, key(&none, &typed(&[0, 0], one, vec![Described::Portal])));
        assert_ne!(
            key(&none, &typed(&[0, 0], one, vec![Described::Portal])),
            key(&none, &typed(&[0, 0], one, vec![Described::Statement]))
        );
        // The same argument bytes read as text or as int4 ('1' is not 1).
        let int4 = key(&none, &typed(&[0, 1, 0, 0, 0, 23], one, vec![]));
        let text = key(&none, &typed(&[0, 1, 0, 0, 0, 25], one, vec![]));
        assert_ne!(int4, text);
        assert_ne!(a, int4);
        // A simple query with the same text is a different request.
        assert_ne!(a, key(&none, &simple("SELECT $1")));
    }

    #[test]
    fn debug_output_never_shows_parameters() {
        let request = Request::Extended {
            sql: Bytes::from_static(b"SELECT $1"),
            parameter_types: Bytes::new(),
            arguments: Bytes::from_static(b"\0\0\0\x01\0\0\0\x06secret\0\0"),
            describes: vec![],
        };
        assert!(!format!("{request:?}").contains("secret"));
    }
}
