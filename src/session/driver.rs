//! The protocol-neutral half of a client session: the client's hold on an origin
//! connection (released, held, pinned), the deadline of what it has in flight and
//! warpdrive's own cancel, the frontend's input timer, the drain on shutdown, and the
//! wait for whichever of these speaks next.
//!
//! [`drive`] is the session's event loop over a protocol's [`Frontend`]. The driver
//! reads no message: the frontend decides what each frame means, and tells the driver
//! when to check out, release, pin or arm the deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use super::SessionError;
use crate::conn::{Conn, ConnError};
use crate::metrics::DeploymentMetrics;
use crate::pool::{Backend, Checkout, Pool, PoolError, PooledConn};
use crate::wire::Framing;

/// Grace period for the origin to answer a cancel before the connection is dropped.
pub const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// The client's hold on an origin connection.
enum Hold<B: Backend> {
    /// None: the client is between transactions with nothing in flight.
    Released,
    /// A connection, until the client is between transactions again.
    Held(Checkout<B>),
    /// A connection for the rest of the session, for this reason (state that does not
    /// survive multiplexing); closed, not reused, when the client leaves.
    Pinned(Checkout<B>, String),
}

/// The deadline of what the client has in flight at the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// Nothing is timed.
    Off,
    /// What is in flight must end by then (max_query_duration).
    Running(Instant),
    /// warpdrive cancelled it; the origin must answer by then or lose the connection.
    Cancelling(Instant),
}

/// What woke the session.
pub enum Wake<C, O> {
    /// A frame from the client, its clean end (`None`), or a failure.
    Client(Result<Option<C>, ConnError>),
    /// A frame from the origin, its end, or a failure.
    Origin(Result<Option<O>, ConnError>),
    /// The deadline passed.
    Deadline,
    /// The frontend's input timer fired.
    Timer,
    /// The server is shutting down (`server_gone`: it is already gone).
    Shutdown {
        /// Nothing can be served any more.
        server_gone: bool,
    },
}

/// What to do now that the deadline passed.
#[derive(Debug, PartialEq, Eq)]
pub enum Overdue {
    /// Nothing was in flight any more.
    Nothing,
    /// warpdrive's cancel is on its way; the grace period runs.
    Cancelling,
    /// The origin did not answer the cancel either: give the connection up.
    GiveUp,
}

/// Whether the session goes on after a client message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// It goes on.
    Continue,
    /// The client is leaving (Terminate, or a message that ends the session).
    Stop,
}

/// A protocol's half of a client session: what each wake means for it.
pub trait Frontend {
    /// The origin's protocol.
    type Backend: Backend;
    /// The client's framing.
    type Framing: Framing<Error: Into<ConnError>>;

    /// The neutral state it runs on.
    fn driver(&mut self) -> &mut Driver<Self::Backend, Self::Framing>;

    /// Whether the client is idle between transactions with nothing in flight or held
    /// back, so that a draining server may close it.
    fn between_transactions(&self) -> bool;

    /// Whether the origin still owes the client replies.
    fn awaits_origin(&self) -> bool;

    /// The server is shutting down and the client is between transactions: say so.
    fn say_shutting_down(&mut self) -> impl Future<Output = Result<(), SessionError>> + Send;

    /// A message from the client.
    fn on_client(
        &mut self,
        frame: <Self::Framing as Framing>::Frame,
    ) -> impl Future<Output = Result<Flow, SessionError>> + Send;

    /// Reading from the client failed (or it sent bytes that are not a message); the
    /// session ends.
    fn on_client_failed(
        &mut self,
        error: ConnError,
    ) -> impl Future<Output = Result<(), SessionError>> + Send;

    /// What the origin sent, its end, or its failure.
    fn on_origin(
        &mut self,
        reply: Result<Option<<<Self::Backend as Backend>::Framing as Framing>::Frame>, ConnError>,
    ) -> impl Future<Output = Result<(), SessionError>> + Send;

    /// The input timer the frontend set fired.
    fn on_timer(&mut self) -> impl Future<Output = Result<(), SessionError>> + Send;

    /// The origin connection is gone (or ignored warpdrive's cancel): give it up
    /// ([`Driver::lose_origin`]) and answer what was in flight.
    fn origin_lost(
        &mut self,
        error: ConnError,
    ) -> impl Future<Output = Result<(), SessionError>> + Send;
}

/// Serves a client until it leaves: the one event loop of every protocol.
pub async fn drive<S: Frontend>(session: &mut S) -> Result<(), SessionError> {
    loop {
        if session.driver().draining() && session.between_transactions() {
            return session.say_shutting_down().await;
        }
        match session.driver().wake().await {
            Wake::Client(Ok(Some(frame))) => {
                if session.on_client(frame).await? == Flow::Stop {
                    return Ok(());
                }
            }
            Wake::Client(Ok(None)) => return Ok(()),
            Wake::Client(Err(error)) => return session.on_client_failed(error).await,
            Wake::Origin(reply) => session.on_origin(reply).await?,
            Wake::Timer => session.on_timer().await?,
            Wake::Deadline => {
                let in_flight = session.awaits_origin();
                match session.driver().overdue(in_flight) {
                    Overdue::Nothing => {}
                    Overdue::Cancelling => {
                        tracing::warn!(
                            "query exceeded max_query_duration; cancelling it at the origin"
                        );
                    }
                    Overdue::GiveUp => {
                        let error = ConnError::Io(std::io::Error::other(
                            "the query was cancelled for exceeding max_query_duration but the origin did not answer",
                        ));
                        session.origin_lost(error).await?;
                    }
                }
            }
            // The server itself is gone: nothing can be served any more.
            Wake::Shutdown { server_gone: true } => return Ok(()),
            Wake::Shutdown { server_gone: false } => {}
        }
    }
}

/// Completes when the server starts shutting down (false) or is gone (true).
type ShutdownSignal = Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// The neutral state of one client session.
pub struct Driver<B: Backend, F: Framing> {
    /// The client's connection.
    pub client: Conn<F>,
    /// The pool of the client's database.
    pub pool: Pool<B>,
    hold: Hold<B>,
    deadline: Deadline,
    /// The timer behind `deadline`, kept across waits (reset, not recreated).
    deadline_timer: Pin<Box<Sleep>>,
    timer: Option<Instant>,
    /// The timer behind `timer`.
    input_timer: Pin<Box<Sleep>>,
    /// Made once per session, so that waiting on it costs nothing per message.
    shutdown: ShutdownSignal,
    draining: bool,
    /// warpdrive's own cancel of an overdue request, until it can no longer land on a
    /// later query of the connection.
    own_cancel: Option<JoinHandle<()>>,
}

impl<B, F> Driver<B, F>
where
    B: Backend,
    F: Framing,
    F::Error: Into<ConnError>,
{
    /// A session for `client`, served from `pool`, that drains when `shutdown` says so.
    pub fn new(
        client: Conn<F>,
        pool: Pool<B>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Driver<B, F> {
        Driver {
            client,
            pool,
            hold: Hold::Released,
            deadline: Deadline::Off,
            deadline_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timer: None,
            input_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            shutdown: Box::pin(
                async move { shutdown.wait_for(|draining| *draining).await.is_err() },
            ),
            draining: false,
            own_cancel: None,
        }
    }

    /// Waits for the next thing to handle: the origin first (its replies free the
    /// client's pipeline), then the client, the deadline, the input timer, a shutdown.
    pub async fn wake(&mut self) -> Wake<F::Frame, <B::Framing as Framing>::Frame> {
        let deadline = match self.deadline {
            Deadline::Off => None,
            Deadline::Running(at) | Deadline::Cancelling(at) => Some(at),
        };
        if let Some(at) = deadline
            && self.deadline_timer.deadline() != at
        {
            self.deadline_timer.as_mut().reset(at);
        }
        if let Some(at) = self.timer
            && self.input_timer.deadline() != at
        {
            self.input_timer.as_mut().reset(at);
        }
        let watching = !self.draining;
        let timing = self.timer.is_some();
        let origin = match &mut self.hold {
            Hold::Released => None,
            Hold::Held(checkout) | Hold::Pinned(checkout, _) => Some(B::io(checkout.conn())),
        };
        let client = &mut self.client;
        let deadline_timer = &mut self.deadline_timer;
        let input_timer = &mut self.input_timer;
        let shutdown = &mut self.shutdown;
        tokio::select! {
            biased;
            frame = async {
                match origin {
                    Some(origin) => origin.read_frame().await,
                    None => std::future::pending().await,
                }
            } => Wake::Origin(frame),
            frame = client.read_frame() => Wake::Client(frame),
            _ = deadline_timer, if deadline.is_some() => Wake::Deadline,
            _ = input_timer, if timing => {
                self.timer = None;
                Wake::Timer
            }
            server_gone = shutdown, if watching => {
                self.draining = true;
                Wake::Shutdown { server_gone }
            }
        }
    }

    /// Whether shutdown started: the session should end once the client is between
    /// transactions.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Sets (or clears) the frontend's input timer.
    pub fn set_timer(&mut self, at: Option<Instant>) {
        self.timer = at;
    }

    /// The connection the client holds, if it holds one.
    pub fn origin(&mut self) -> Option<&mut PooledConn<B>> {
        match &mut self.hold {
            Hold::Released => None,
            Hold::Held(checkout) | Hold::Pinned(checkout, _) => Some(checkout.conn()),
        }
    }

    /// The checkout the client holds, if it holds one.
    pub fn checkout(&mut self) -> Option<&mut Checkout<B>> {
        match &mut self.hold {
            Hold::Released => None,
            Hold::Held(checkout) | Hold::Pinned(checkout, _) => Some(checkout),
        }
    }

    /// Whether the client holds a connection.
    pub fn holds(&self) -> bool {
        !matches!(self.hold, Hold::Released)
    }

    /// Makes sure the client holds a connection: true when it was just checked out. With
    /// nothing in flight, a cancel warpdrive sent on it is settled first, so that the
    /// next query cannot meet it.
    pub async fn hold(&mut self, in_flight: bool) -> Result<bool, PoolError<B::Error>> {
        let fresh = match self.hold {
            Hold::Released => {
                self.hold = Hold::Held(self.pool.checkout().await?);
                true
            }
            _ => false,
        };
        if !in_flight
            && let Some(cancel) = self.own_cancel.take()
            && let Some(checkout) = self.checkout()
        {
            checkout.settle_cancel(cancel).await;
        }
        Ok(fresh)
    }

    /// Gives the connection back (or closes it, per its state), pinned or not, and stops
    /// the deadline. After warpdrive's own cancel, only once the cancel can no longer hit
    /// the next client's query.
    pub fn release(&mut self) {
        let checkout = match std::mem::replace(&mut self.hold, Hold::Released) {
            Hold::Released => None,
            Hold::Held(checkout) | Hold::Pinned(checkout, _) => Some(checkout),
        };
        match (checkout, self.own_cancel.take()) {
            (Some(mut checkout), Some(cancel)) => {
                tokio::spawn(async move { checkout.settle_cancel(cancel).await });
            }
            (checkout, _) => drop(checkout),
        }
        self.deadline = Deadline::Off;
    }

    /// The connection is gone: it is closed rather than returned, and the hold released.
    /// Returns whether the client was pinned to it (its session state died with it).
    pub fn lose_origin(&mut self) -> bool {
        if let Some(checkout) = self.checkout() {
            checkout.discard();
        }
        let pinned = self.pinned().is_some();
        self.release();
        pinned
    }

    /// Keeps the client on its connection for the rest of the session (state that does
    /// not survive multiplexing); the connection is closed, not reused, when the client
    /// leaves. Without a connection there is nothing to pin to.
    pub fn pin(&mut self, why: &str, metrics: &DeploymentMetrics) {
        match std::mem::replace(&mut self.hold, Hold::Released) {
            Hold::Held(mut checkout) => {
                checkout.conn().keep_from_others();
                self.hold = Hold::Pinned(checkout, why.to_owned());
                tracing::info!(feature = %why, "client pinned to its origin connection");
                metrics.pinned_sessions.fetch_add(1, Ordering::Relaxed);
            }
            other => self.hold = other,
        }
    }

    /// The client's session state is known again (it reset it): it is pooled again. Its
    /// connection stays unusable for others and is closed when released, since a reset
    /// connection can still differ from a new one.
    pub fn unpin(&mut self) {
        match std::mem::replace(&mut self.hold, Hold::Released) {
            Hold::Pinned(checkout, why) => {
                self.hold = Hold::Held(checkout);
                tracing::info!(feature = %why, "the client reset its session; it is pooled again");
            }
            other => self.hold = other,
        }
    }

    /// Why the client is pinned, if it is.
    pub fn pinned(&self) -> Option<&str> {
        match &self.hold {
            Hold::Pinned(_, why) => Some(why),
            _ => None,
        }
    }

    /// Starts the deadline of what was just sent, unless one runs already.
    pub fn arm_deadline(&mut self) {
        if self.deadline == Deadline::Off {
            self.restart_deadline();
        }
    }

    /// Starts the deadline again (a request ended and another is in flight).
    pub fn restart_deadline(&mut self) {
        self.deadline = Deadline::Running(Instant::now() + self.pool.settings().max_query_duration);
    }

    /// Nothing is in flight any more: no deadline, no cancel pending.
    pub fn settle_deadline(&mut self) {
        self.deadline = Deadline::Off;
    }

    /// Whether warpdrive cancelled what is in flight for running too long.
    pub fn cancelled_overdue(&self) -> bool {
        matches!(self.deadline, Deadline::Cancelling(_))
    }

    /// The deadline passed: cancels what is in flight at the origin, or, once the
    /// origin ignored the cancel too, says to give the connection up.
    pub fn overdue(&mut self, in_flight: bool) -> Overdue {
        if !in_flight {
            self.deadline = Deadline::Off;
            return Overdue::Nothing;
        }
        if self.cancelled_overdue() {
            return Overdue::GiveUp;
        }
        if let Some(checkout) = self.checkout() {
            let target = std::sync::Arc::clone(checkout.target());
            let cancel = target.cancel(checkout.conn());
            self.own_cancel = Some(tokio::spawn(cancel));
        }
        self.deadline = Deadline::Cancelling(Instant::now() + CANCEL_GRACE);
        Overdue::Cancelling
    }
}

impl<B: Backend, F: Framing> Drop for Driver<B, F> {
    fn drop(&mut self) {
        // A client that leaves right after warpdrive cancelled its query: the connection
        // returns only once that cancel cannot hit anyone else's.
        if let (Hold::Held(checkout) | Hold::Pinned(checkout, _), Some(cancel)) = (
            std::mem::replace(&mut self.hold, Hold::Released),
            self.own_cancel.take(),
        ) {
            let mut checkout = checkout;
            tokio::spawn(async move { checkout.settle_cancel(cancel).await });
        }
    }
}
