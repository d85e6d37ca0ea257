//! What the pool needs from a protocol's origin connections: how to open one, and how to
//! bring one back to a known state. Each protocol implements it once (`pool::pg`).

use std::fmt;
use std::future::Future;

use crate::conn::{Conn, ConnError};
use crate::protocol::TxnStatus;
use crate::wire::Framing;

/// One origin database, as a protocol connects to it.
pub trait Backend: fmt::Display + Send + Sync + 'static {
    /// An open, authenticated origin connection, with what the protocol tracks on it.
    type Conn: Send + 'static;
    /// What an origin says about itself when a connection opens (server version,
    /// settings), the same for every connection of the pool.
    type Greeting: Clone + Send + Sync + 'static;
    /// Why a connection could not be opened.
    type Error: std::error::Error + Send + Sync + 'static;
    /// How the origin's replies are framed.
    type Framing: Framing<Error: Into<ConnError>>;

    /// Connects, negotiates TLS, authenticates, and waits until the origin is ready.
    fn connect(
        &self,
    ) -> impl Future<Output = Result<(Self::Conn, Self::Greeting), Self::Error>> + Send;

    /// Whether an idle connection is still usable: nothing unexpected arrived on it and
    /// the origin did not close it. Must not wait.
    fn is_idle_and_open(conn: &mut Self::Conn) -> bool;

    /// Rolls back the transaction a client left open; whether the connection is then
    /// idle (false: it must be closed). Bounded in time.
    fn roll_back(conn: &mut Self::Conn) -> impl Future<Output = bool> + Send;

    /// A round trip that answers after everything sent before it: the transaction status
    /// then, `None` if the origin did not answer in time. Bounded in time.
    fn round_trip(conn: &mut Self::Conn) -> impl Future<Output = Option<TxnStatus>> + Send;

    /// The idle health check: whether the origin answered at once, without an error,
    /// outside a transaction. Bounded in time.
    fn healthy(conn: &mut Self::Conn) -> impl Future<Output = bool> + Send;

    /// Says goodbye and closes. Bounded in time.
    fn terminate(conn: Self::Conn) -> impl Future<Output = ()> + Send;

    /// The framed transport, for relaying.
    fn io(conn: &mut Self::Conn) -> &mut Conn<Self::Framing>;

    /// Asks the origin, out of band, to cancel what `conn` is running; the future ends
    /// once the origin has the request (or it failed, which it logs).
    fn cancel(&self, conn: &Self::Conn) -> impl Future<Output = ()> + Send + 'static;
}
