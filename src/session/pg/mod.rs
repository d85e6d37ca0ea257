//! A PostgreSQL client session: startup, then every message until the client leaves.
//!
//! Transaction mode: the session holds an origin connection from the first message that
//! needs one until the origin reports ReadyForQuery 'I' with nothing in flight, then gives
//! it back (the hold, the deadline and the wait are [`crate::session::driver`]'s).
//! Extended-protocol messages are buffered until Sync (or Flush) and translated for
//! whichever connection serves them: statements are prepared on the origin under
//! content-derived names ([`crate::pool::pg::statements`]) and replayed where missing; the
//! client's settings are replayed where they differ. [`relay::Relay`] matches the
//! origin's replies to what the client sent; [`reply`] handles them, [`loss`] what
//! happens when the origin connection goes; [`session`] wires the parts together.
//!
//! What does not survive multiplexing (LISTEN, session advisory locks, SQL-level
//! PREPARE, temporary objects, WITH HOLD cursors) pins the client to its connection for
//! the rest of the session; that connection is closed, not reused, when the client
//! leaves.

mod caching;
mod catalog;
mod extended;
mod inflight;
pub mod internal;
mod loss;
pub mod recorder;
mod relay;
mod reply;
pub mod request;
mod session;
pub mod sqlstate;
mod startup;
mod statement;
mod translate;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::driver::{Driver, drive};
use super::settings::Settings;
use super::{SessionContext, SessionError};
use crate::auth::scram::ScramSecret;
use crate::cache::Generations;
use crate::cancel::CancelHandle;
use crate::config::Deployment;
use crate::conn::Conn;
use crate::pool::pg::{PgOrigin, PgPoolSet};
use crate::protocol::TxnStatus;
use crate::proxy::writes::PendingWrites;
use crate::wire::pg::PgFraming;
use crate::wire::pg::backend::TransactionStatus;
use extended::Batch;
use inflight::Requests;
use relay::Relay;
use statement::ClientStatements;

/// What PostgreSQL's sessions of one deployment share.
pub struct Shared {
    /// The deployment's pools, one per database.
    pub(crate) pools: PgPoolSet,
    /// SCRAM secrets per user.
    secrets: HashMap<String, ScramSecret>,
    /// The key unknown users' SCRAM salts are derived from (random per process, as
    /// PostgreSQL's mock authentication nonce).
    mock_secret: [u8; 32],
    /// What the origin said of each startup setting tried.
    tried: internal::TriedSettings,
}

impl Shared {
    /// The shared state of a deployment's PostgreSQL sessions, served from `pools`.
    pub(crate) fn new(deployment: &Deployment, pools: PgPoolSet) -> Shared {
        let secrets = deployment
            .users
            .iter()
            .map(|user| (user.name.clone(), ScramSecret::new(&user.password)))
            .collect();
        let mut mock_secret = [0u8; 32];
        rand::RngExt::fill(&mut rand::rng(), &mut mock_secret[..]);
        Shared {
            pools,
            secrets,
            mock_secret,
            tried: internal::TriedSettings::default(),
        }
    }
}

impl From<TransactionStatus> for TxnStatus {
    fn from(status: TransactionStatus) -> TxnStatus {
        match status {
            TransactionStatus::Idle => TxnStatus::Idle,
            TransactionStatus::InTransaction => TxnStatus::InTransaction,
            TransactionStatus::Failed => TxnStatus::Failed,
        }
    }
}

/// How long extended-protocol messages wait without their Sync once the client has sent
/// nothing more for this long: a client may wait for the replies (an early error, a libpq
/// pipeline without Sync) before it sends the rest, as PostgreSQL runs messages as they
/// arrive. A batch written at once arrives whole well within this, and is decided at its
/// Sync.
const INPUT_DRY: Duration = Duration::from_millis(2);

/// Gives the connection back (or closes it, per its state), and with it the route of the
/// client's cancel key. After warpdrive's own cancel, only once the cancel can no longer
/// hit the next client's query.
fn release(io: &mut Driver<PgOrigin, PgFraming>, cancel: &CancelHandle) {
    io.release();
    cancel.set_target(None);
}

/// Admits the client, then serves it until it leaves.
pub(super) async fn run(client: Conn, ctx: &Arc<SessionContext>) -> Result<(), SessionError> {
    let Some(admitted) = startup::admit(client, ctx).await? else {
        return Ok(());
    };
    let cancel = ctx.cancels.register();
    let mut client = admitted.client;
    startup::finish_greeting(&mut client.out, cancel.process_id, &cancel.secret_key);
    client.flush().await?;
    tracing::debug!(user = %admitted.user, database = %admitted.database, "client admitted");
    let database = admitted.database;
    let mut session = Session {
        ctx: Arc::clone(ctx),
        io: Driver::new(client, admitted.pool, ctx.shutdown.clone()),
        database: database.clone(),
        settings: Settings::new(admitted.settings),
        standard_conforming_strings: admitted.standard_conforming_strings,
        requests: Requests::default(),
        statements: ClientStatements::default(),
        relay: Relay::default(),
        batch: Batch::default(),
        status: TransactionStatus::Idle,
        catalog_changing: false,
        cancel,
        generations: ctx.generations(&database),
        writes: match ctx.tier {
            Some(_) => PendingWrites::published(),
            None => PendingWrites::default(),
        },
    };
    let served = drive(&mut session).await;
    session.leave().await;
    served
}

struct Session {
    ctx: Arc<SessionContext>,
    /// The client, its hold on an origin connection, its deadline and timers.
    io: Driver<PgOrigin, PgFraming>,
    /// The origin database the client asked for.
    database: String,
    settings: Settings,
    /// `standard_conforming_strings` as the origin last reported it to this client.
    standard_conforming_strings: bool,
    /// Requests at the origin, one per ReadyForQuery owed, for metrics and recording.
    requests: Requests,
    statements: ClientStatements,
    relay: Relay,
    /// Extended-protocol messages waiting for Sync or Flush.
    batch: Batch,
    /// Transaction status as the client last saw it.
    status: TransactionStatus,
    /// DDL (or a DO block, which may run some) went to the origin in the current
    /// transaction: the catalog is read again once it ends.
    catalog_changing: bool,
    /// The client's cancel key, routed to the origin connection it holds.
    cancel: CancelHandle,
    /// The write clock of the client's origin database.
    generations: Arc<Generations>,
    /// The client's writes not yet known to be committed.
    writes: PendingWrites,
}
