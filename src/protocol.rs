//! What every protocol has in common, in neutral terms: the transaction status an
//! origin reports after each request, and which protocol a deployment speaks.
//!
//! Each protocol's edge maps its own wire values to these (PostgreSQL's ReadyForQuery
//! status byte, MySQL's status flags); the pool, the cache policy and the session driver
//! see only these.

/// Where an origin connection stands once a request has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnStatus {
    /// No transaction open.
    Idle,
    /// Inside a transaction.
    InTransaction,
    /// Inside a transaction that failed: everything up to its end is refused.
    Failed,
}

impl TxnStatus {
    /// Whether no transaction is open.
    pub fn is_idle(self) -> bool {
        self == TxnStatus::Idle
    }
}

/// The protocol a deployment's clients and origin speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// PostgreSQL's frontend/backend protocol 3.0.
    Postgres,
    /// MySQL's client/server protocol 4.1 (MariaDB's too).
    Mysql,
}

impl Protocol {
    /// Its name in metrics, stats and errors.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgresql",
            Protocol::Mysql => "mysql",
        }
    }
}
