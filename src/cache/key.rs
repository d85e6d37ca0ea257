//! Cache keys: blake3 over everything that can change a result.
//!
//! Inputs, each length-prefixed after a one-byte field tag, behind a version byte (bump
//! [`KEY_VERSION`] whenever the encoding changes, so old entries can never match):
//!
//! 1. the deployment name: deployments never share entries;
//! 2. the origin database;
//! 3. the origin role (the user warpdrive connects as): privileges and row-level
//!    security change results;
//! 4. the session settings that can change output, as the statements that set them
//!    (search_path, TimeZone, DateStyle, IntervalStyle, extra_float_digits, bytea_output,
//!    client_encoding, standard_conforming_strings, role, lc_*, …); settings known not to
//!    change any result (application_name, timeouts, planner and logging knobs) are left
//!    out so they do not split the cache;
//! 5. the request: for a simple query, its text; for the extended protocol, the
//!    statement's text and parameter type OIDs, the Bind's parameter formats, values and
//!    result formats, and which Describes were asked for, in order. Statement and portal
//!    names are not inputs: two clients that name the same statement differently share
//!    entries, and the same name for different text never matches.
//!
//! The text is used byte for byte (no normalisation): a comment or a hint makes a
//! different key, which can only cost a miss, never serve a wrong answer.

use std::collections::BTreeMap;

use super::entry::{Described, Request};

/// Version of the key encoding.
pub const KEY_VERSION: u8 = 2;

/// A cache key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

/// Everything a key is made of.
#[derive(Debug)]
pub struct KeyInputs<'a> {
    /// Deployment name.
    pub deployment: &'a str,
    /// Origin database.
    pub database: &'a str,
    /// Origin role.
    pub role: &'a str,
    /// The client's settings: name → the statement that sets it.
    pub settings: &'a BTreeMap<String, String>,
    /// The request.
    pub request: &'a Request,
}

mod tag {
    pub const DEPLOYMENT: u8 = 1;
    pub const DATABASE: u8 = 2;
    pub const ROLE: u8 = 3;
    pub const SETTING: u8 = 4;
    pub const SIMPLE: u8 = 5;
    pub const STATEMENT: u8 = 6;
    pub const PARAMETER_TYPES: u8 = 7;
    pub const ARGUMENTS: u8 = 8;
    pub const DESCRIBE_STATEMENT: u8 = 9;
    pub const DESCRIBE_PORTAL: u8 = 10;
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

struct Writer(blake3::Hasher);

impl Writer {
    fn field(&mut self, tag: u8, bytes: &[u8]) {
        self.0.update(&[tag]);
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }
}

impl KeyInputs<'_> {
    /// The key.
    pub fn key(&self) -> CacheKey {
        let mut writer = Writer(blake3::Hasher::new());
        writer.0.update(&[KEY_VERSION]);
        writer.field(tag::DEPLOYMENT, self.deployment.as_bytes());
        writer.field(tag::DATABASE, self.database.as_bytes());
        writer.field(tag::ROLE, self.role.as_bytes());
        for statement in result_settings(self.settings) {
            writer.field(tag::SETTING, statement.as_bytes());
        }
        match self.request {
            Request::Simple { sql } => writer.field(tag::SIMPLE, sql),
            Request::Extended {
                sql,
                parameter_types,
                arguments,
                describes,
            } => {
                writer.field(tag::STATEMENT, sql);
                writer.field(tag::PARAMETER_TYPES, parameter_types);
                writer.field(tag::ARGUMENTS, arguments);
                for described in describes {
                    let tag = match described {
                        Described::Statement => tag::DESCRIBE_STATEMENT,
                        Described::Portal => tag::DESCRIBE_PORTAL,
                    };
                    writer.field(tag, &[]);
                }
            }
        }
        CacheKey(*writer.0.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn simple(sql: &'static str) -> Request {
        Request::Simple {
            sql: Bytes::from_static(sql.as_bytes()),
        }
    }

    fn key(
        deployment: &str,
        database: &str,
        settings: &BTreeMap<String, String>,
        request: &Request,
    ) -> CacheKey {
        KeyInputs {
            deployment,
            database,
            role: "app",
            settings,
            request,
        }
        .key()
    }

    #[test]
    fn every_input_changes_the_key() {
        let none = BTreeMap::new();
        let base = key("d", "db", &none, &simple("SELECT 1"));
        assert_eq!(base, key("d", "db", &none, &simple("SELECT 1")));
        assert_ne!(base, key("e", "db", &none, &simple("SELECT 1")));
        assert_ne!(base, key("d", "db2", &none, &simple("SELECT 1")));
        assert_ne!(base, key("d", "db", &none, &simple("SELECT 2")));
        assert_ne!(base, key("d", "db", &none, &simple("SELECT 1 ")));
        let mut zone = BTreeMap::new();
        zone.insert(
            "timezone".to_owned(),
            "SET \"timezone\" TO 'UTC'".to_owned(),
        );
        assert_ne!(base, key("d", "db", &zone, &simple("SELECT 1")));
        let other_role = KeyInputs {
            deployment: "d",
            database: "db",
            role: "admin",
            settings: &none,
            request: &simple("SELECT 1"),
        }
        .key();
        assert_ne!(base, other_role);
    }

    #[test]
    fn neutral_settings_do_not_split_the_cache() {
        let none = BTreeMap::new();
        let mut app = BTreeMap::new();
        app.insert("application_name".to_owned(), "x".to_owned());
        app.insert("enable_seqscan".to_owned(), "off".to_owned());
        assert_eq!(
            key("d", "db", &none, &simple("SELECT 1")),
            key("d", "db", &app, &simple("SELECT 1"))
        );
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
        let request = |args, describes| typed(&[0, 0], args, describes);
        let a = key(
            "d",
            "db",
            &none,
            &request(b"\0\0\0\x01\0\0\0\x011\0\0", vec![]),
        );
        let b = key(
            "d",
            "db",
            &none,
            &request(b"\0\0\0\x01\0\0\0\x012\0\0", vec![]),
        );
        let c = key(
            "d",
            "db",
            &none,
            &request(b"\0\0\0\x01\0\0\0\x011\0\0", vec![Described::Portal]),
        );
        assert_ne!(a, b);
        assert_ne!(a, c);
        // The same argument bytes read as text or as int4 ('1' is not 1).
        let int4 = key(
            "d",
            "db",
            &none,
            &typed(&[0, 1, 0, 0, 0, 23], b"\0\0\0\x01\0\0\0\x011\0\0", vec![]),
        );
        let text = key(
            "d",
            "db",
            &none,
            &typed(&[0, 1, 0, 0, 0, 25], b"\0\0\0\x01\0\0\0\x011\0\0", vec![]),
        );
        assert_ne!(int4, text);
        assert_ne!(a, int4);
        // A simple query with the same text is a different request.
        assert_ne!(a, key("d", "db", &none, &simple("SELECT $1")));
    }
}
