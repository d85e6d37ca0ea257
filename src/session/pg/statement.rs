//! A statement a client prepared, as warpdrive knows it: its origin-side name and
//! identity, its text and parameter types, and the analyzer's verdict.

use std::sync::Arc;

use bytes::Bytes;

use crate::analyze::Analysis;

/// A statement the client prepared, as warpdrive knows it.
#[derive(Clone, Debug)]
pub(super) struct ClientStatement {
    /// The name on origin connections.
    pub(super) origin_name: Bytes,
    /// Identity (text, parameter types, settings), for the unnamed statement.
    pub(super) identity: [u8; 32],
    /// The SQL text.
    pub(super) sql: Bytes,
    /// Parameter type OIDs as sent.
    pub(super) parameter_types: Bytes,
    /// The analyzer's verdict on its text.
    pub(super) analysis: Arc<Analysis>,
}

impl PartialEq for ClientStatement {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
    }
}

impl Eq for ClientStatement {}
