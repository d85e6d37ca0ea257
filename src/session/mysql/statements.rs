//! A client's prepared statements, by the ids warpdrive gave them: the SQL (which names
//! the origin statement on whichever connection serves the client), the counts of
//! parameters, the parameter types it bound last, and whether a cursor or
//! long data keeps it on its connection.

use std::collections::HashMap;

use std::sync::Arc;

use bytes::Bytes;

use crate::analyze::Analysis;
use crate::pool::mysql::SessionState;

/// One of the client's statements.
#[derive(Clone, Debug)]
pub struct ClientStatement {
    /// Its SQL text.
    pub sql: Bytes,
    /// The analysis of its text, made once at the prepare.
    pub analysis: Arc<Analysis>,
    /// What it is on a connection ([`super::state::statement_key`]).
    pub key: Bytes,
    /// The session state it was prepared under: its database and parse settings are
    /// the ones it is prepared with on every connection.
    pub context: Arc<SessionState>,
    /// Parameters.
    pub params: u16,
    /// The parameter types of its last execute that bound them.
    pub param_types: Option<Bytes>,
    /// A cursor is open on it at the origin.
    pub cursor_open: bool,
    /// Long data was sent for its next execute.
    pub long_data: bool,
}

/// The client's statements.
#[derive(Default)]
pub struct ClientStatements {
    next_id: u32,
    by_id: HashMap<u32, ClientStatement>,
}

impl ClientStatements {
    /// Registers a statement prepared under `context`; its id for the client.
    pub fn add(
        &mut self,
        sql: Bytes,
        analysis: Arc<Analysis>,
        key: Bytes,
        context: Arc<SessionState>,
    ) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.by_id.insert(
            self.next_id,
            ClientStatement {
                sql,
                analysis,
                key,
                context,
                params: 0,
                param_types: None,
                cursor_open: false,
                long_data: false,
            },
        );
        self.next_id
    }

    /// The statement with id `id`.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut ClientStatement> {
        self.by_id.get_mut(&id)
    }

    /// Forgets a statement.
    pub fn remove(&mut self, id: u32) -> Option<ClientStatement> {
        self.by_id.remove(&id)
    }

    /// Forgets them all (COM_RESET_CONNECTION, COM_CHANGE_USER).
    pub fn clear(&mut self) {
        self.by_id.clear();
    }

    /// Whether a cursor or long data keeps the client on its connection.
    pub fn keep_connection(&self) -> bool {
        self.by_id.values().any(|s| s.cursor_open || s.long_data)
    }

    /// The connection is gone: its cursors and long data with it.
    pub fn lose_connection(&mut self) {
        for statement in self.by_id.values_mut() {
            statement.cursor_open = false;
            statement.long_data = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_per_client_and_cursors_keep_the_connection() {
        let mut statements = ClientStatements::default();
        let sql = Bytes::from_static(b"SELECT 1");
        let analyzer = crate::analyze::Analyzer::with_builtin_rules(Default::default());
        let analysis = Arc::new(analyzer.analyze(crate::analyze::Dialect::Mysql, "SELECT 1"));
        let state = || Arc::new(SessionState::default());
        let a = statements.add(sql.clone(), Arc::clone(&analysis), sql.clone(), state());
        let b = statements.add(sql.clone(), analysis, sql, state());
        assert_ne!(a, b);
        assert!(!statements.keep_connection());
        statements.get_mut(a).expect("known").cursor_open = true;
        assert!(statements.keep_connection());
        statements.lose_connection();
        assert!(!statements.keep_connection());
        assert!(statements.remove(b).is_some());
        assert!(statements.get_mut(b).is_none());
    }
}
