//! Cache keys: blake3 over everything that can change a result.
//!
//! A key is built from its scope, then from canonical parts the protocol module supplies,
//! each one tagged and length-prefixed, behind a version byte (bump [`KEY_VERSION`]
//! whenever the encoding changes, so old entries can never match):
//!
//! 1. the scope, which entries never cross: the deployment, the origin database, and the
//!    origin role (the user warpdrive connects as: privileges and row-level security
//!    change results);
//! 2. the parts: whatever else can change the answer's bytes, as the protocol defines it
//!    (for PostgreSQL, the result-changing settings and the request; see
//!    `session::pg::request`). A part's tag is the protocol's own; scope fields and parts
//!    are told apart by a kind byte, so no part can pass for a scope field.
//!
//! Bytes are hashed as given (no normalisation): a comment or a hint makes a different
//! key, which can only cost a miss, never serve a wrong answer.

/// Version of the key encoding.
pub const KEY_VERSION: u8 = 3;

/// A cache key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

/// What no entry crosses.
#[derive(Clone, Copy, Debug)]
pub struct KeyScope<'a> {
    /// Deployment name.
    pub deployment: &'a str,
    /// Origin database.
    pub database: &'a str,
    /// Origin role.
    pub role: &'a str,
}

mod kind {
    pub const DEPLOYMENT: u8 = 1;
    pub const DATABASE: u8 = 2;
    pub const ROLE: u8 = 3;
    pub const PART: u8 = 4;
}

/// A key being built.
pub struct KeyBuilder(blake3::Hasher);

impl KeyBuilder {
    /// Starts a key in `scope`.
    pub fn new(scope: KeyScope<'_>) -> KeyBuilder {
        let mut builder = KeyBuilder(blake3::Hasher::new());
        builder.0.update(&[KEY_VERSION]);
        builder.field(kind::DEPLOYMENT, 0, scope.deployment.as_bytes());
        builder.field(kind::DATABASE, 0, scope.database.as_bytes());
        builder.field(kind::ROLE, 0, scope.role.as_bytes());
        builder
    }

    /// Adds one part under the protocol's `tag`.
    pub fn part(&mut self, tag: u8, bytes: &[u8]) -> &mut KeyBuilder {
        self.field(kind::PART, tag, bytes);
        self
    }

    /// The key.
    pub fn finish(&self) -> CacheKey {
        CacheKey(*self.0.finalize().as_bytes())
    }

    fn field(&mut self, kind: u8, tag: u8, bytes: &[u8]) {
        self.0.update(&[kind, tag]);
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(deployment: &str, database: &str, role: &str, parts: &[(u8, &[u8])]) -> CacheKey {
        let mut builder = KeyBuilder::new(KeyScope {
            deployment,
            database,
            role,
        });
        for (tag, bytes) in parts {
            builder.part(*tag, bytes);
        }
        builder.finish()
    }

    #[test]
    fn every_scope_field_and_part_changes_the_key() {
        let base = key("d", "db", "app", &[(1, b"SELECT 1")]);
        assert_eq!(base, key("d", "db", "app", &[(1, b"SELECT 1")]));
        assert_ne!(base, key("e", "db", "app", &[(1, b"SELECT 1")]));
        assert_ne!(base, key("d", "db2", "app", &[(1, b"SELECT 1")]));
        assert_ne!(base, key("d", "db", "admin", &[(1, b"SELECT 1")]));
        assert_ne!(base, key("d", "db", "app", &[(2, b"SELECT 1")]));
        assert_ne!(base, key("d", "db", "app", &[(1, b"SELECT 1 ")]));
        assert_ne!(base, key("d", "db", "app", &[(1, b"SELECT 1"), (1, b"")]));
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        // Length prefixes: moving bytes between neighbours changes the key.
        assert_ne!(key("ab", "c", "r", &[]), key("a", "bc", "r", &[]),);
        assert_ne!(
            key("d", "db", "r", &[(1, b"ab"), (1, b"c")]),
            key("d", "db", "r", &[(1, b"a"), (1, b"bc")]),
        );
        // A part never reads as the scope.
        assert_ne!(key("d", "db", "", &[]), key("d", "db", "", &[(3, b"")]));
    }
}
