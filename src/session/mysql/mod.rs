//! A MySQL client session: the handshake, then every command until the client leaves.
//!
//! Transaction mode, as for PostgreSQL: the session holds an origin connection from the
//! first command that needs one until the origin's status flags say no transaction is
//! open and autocommit is on, then gives it back (the hold, the deadline and the wait
//! are [`crate::session::driver`]'s). What the client changed in its session is tracked
//! from the origin's own session-state reports ([`state`]) and put on whichever
//! connection serves it next; what cannot move between connections pins it
//! ([`lexical`] reads that from the query text, the origin's reports catch the rest:
//! stored procedures, functions, triggers). Prepared statements get client-side ids
//! ([`statements`]) and are prepared on each connection where they are missing
//! ([`crate::pool::mysql::statements`]). [`relay::Relay`] turns each origin reply into
//! the one this client's capabilities expect; [`session`] wires the parts together.

mod caching;
mod catalog;
mod errno;
mod handshake;
mod lexical;
mod recorder;
mod relay;
mod session;
pub mod sessions;
mod setup;
mod state;
mod statements;

use std::collections::HashMap;
use std::sync::Arc;

use super::{SessionContext, SessionError};
use crate::config::Deployment;
use crate::conn::Conn;
use crate::pool;
use crate::pool::mysql::{MysqlPool, MysqlPools};
use crate::wire::mysql::{MysqlFraming, caps};

/// What MySQL's sessions of one deployment share.
pub struct Shared {
    /// The deployment's pools.
    pools: MysqlPools,
    /// Client passwords per user.
    passwords: HashMap<String, String>,
    /// The live sessions, for KILL.
    sessions: Arc<sessions::Sessions>,
    /// The origin's catalog, for the cache.
    catalog: Arc<catalog::MysqlCatalog>,
}

impl Shared {
    /// The shared state of a deployment's MySQL sessions, served from `pools`.
    pub(crate) fn new(deployment: &Deployment, pools: MysqlPools) -> Shared {
        Shared {
            pools,
            passwords: deployment
                .users
                .iter()
                .map(|user| (user.name.clone(), user.password.clone()))
                .collect(),
            sessions: Arc::default(),
            catalog: Arc::default(),
        }
    }

    /// The pool of a client with `capabilities`: its CLIENT_FOUND_ROWS decides.
    fn pool_for(&self, capabilities: u32) -> MysqlPool {
        match capabilities & caps::FOUND_ROWS {
            0 => self.pools.get(pool::mysql::PLAIN),
            _ => self.pools.get(pool::mysql::FOUND_ROWS),
        }
    }
}

/// Admits the client, then serves it until it leaves.
pub(super) async fn run(
    client: Conn<MysqlFraming>,
    ctx: &Arc<SessionContext<Shared>>,
) -> Result<(), SessionError> {
    let registration = ctx.protocol.sessions.register();
    let Some(admitted) = handshake::admit(client, ctx, registration.id).await? else {
        return Ok(());
    };
    tracing::debug!(
        user = %admitted.user,
        database = ?admitted.database,
        capabilities = format_args!("{:#x}", admitted.capabilities),
        "client admitted"
    );
    session::serve(admitted, ctx, registration).await
}
