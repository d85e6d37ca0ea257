//! Client sessions: what every session of a deployment shares ([`SessionContext`]),
//! the protocol-neutral driver of one session ([`driver`]: its hold on an origin
//! connection, its deadline, its wait), the settings tracker ([`settings`]), the neutral
//! client errors ([`error`]), and the PostgreSQL frontend ([`pg`]).

pub mod driver;
pub mod error;
pub mod mysql;
pub mod pg;
pub mod settings;

use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::Instrument;

use crate::analyze::AnalysisMemo;
use crate::cache::tier::Tier;
use crate::cache::{Clocks, Generations, Store};
use crate::cancel::CancelRegistry;
use crate::catalog::{Catalogs, SchemaChanges};
use crate::config::Deployment;
use crate::conn::{Conn, ConnError, Stream};
use crate::metrics::DeploymentMetrics;
use error::ClientError;

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client's socket failed.
    #[error("client connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent something that is not the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The client went away mid-exchange.
    #[error("the client closed the connection")]
    ClientGone,
    /// warpdrive refused the session with this error (already sent to the client).
    #[error("{}", .0.message)]
    Refused(ClientError),
}

impl From<ConnError> for SessionError {
    fn from(error: ConnError) -> Self {
        match error {
            ConnError::Io(error) => SessionError::Io(error),
            ConnError::Wire(error) => SessionError::Protocol(error.to_string()),
            ConnError::MysqlWire(error) => SessionError::Protocol(error.to_string()),
            ConnError::TruncatedFrame => SessionError::ClientGone,
        }
    }
}

/// What the sessions of every deployment in the process share.
pub struct ProcessShared {
    /// The analyzer (with its memo).
    pub analyzer: Arc<AnalysisMemo>,
    /// The write clocks of the origin databases.
    pub clocks: Arc<Clocks>,
    /// When DDL last went through warpdrive to each database.
    pub schema_changes: Arc<SchemaChanges>,
    /// Becomes true when the server starts shutting down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// What every session of one deployment shares; `P` is what its protocol's sessions
/// share besides (their pools first).
pub struct SessionContext<P = pg::Shared> {
    /// The deployment's configuration.
    pub deployment: Deployment,
    /// TLS towards clients.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// What the protocol's sessions of the deployment share besides.
    pub(crate) protocol: P,
    /// The analyzer (with its memo).
    pub analyzer: Arc<AnalysisMemo>,
    /// Cancel keys of live sessions.
    pub cancels: Arc<CancelRegistry>,
    /// The origin's catalog, per database, for judging code statements run.
    pub catalogs: Arc<Catalogs>,
    /// The deployment's result cache.
    pub cache: Arc<Store>,
    /// The deployment's counters.
    pub metrics: Arc<DeploymentMetrics>,
    /// The write clocks of the origin databases (shared with every deployment).
    pub clocks: Arc<Clocks>,
    /// The deployment's upstream tier.
    pub tier: Option<Arc<Tier>>,
    /// Becomes true when the server starts shutting down.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl<P> SessionContext<P> {
    /// The shared state of a deployment's sessions; `protocol` is made from the
    /// deployment.
    pub(crate) fn new(
        deployment: Deployment,
        protocol: impl FnOnce(&Deployment) -> P,
        tls: Option<tokio_rustls::TlsAcceptor>,
        process: &ProcessShared,
        cache: Arc<Store>,
        metrics: Arc<DeploymentMetrics>,
        tier: Option<Arc<Tier>>,
    ) -> SessionContext<P> {
        let analyzer = Arc::clone(&process.analyzer);
        let catalogs = Arc::new(Catalogs::new(
            Arc::clone(&analyzer),
            Arc::clone(&metrics),
            Arc::clone(&process.schema_changes),
        ));
        SessionContext {
            catalogs,
            protocol: protocol(&deployment),
            deployment,
            tls,
            analyzer,
            cancels: Arc::new(CancelRegistry::default()),
            cache,
            metrics,
            clocks: Arc::clone(&process.clocks),
            tier,
            shutdown: process.shutdown.clone(),
        }
    }

    /// The write clock of the origin database `database`. Clocks are per database name,
    /// not per host: deployments that name one server differently (`localhost` and
    /// `127.0.0.1`, a DNS alias, a pooler in front) must meet; two servers with a
    /// database of the same name share a clock, which costs misses, never a stale read.
    pub fn generations(&self, database: &str) -> Arc<Generations> {
        self.clocks.of(database)
    }

    /// Where writes to the origin database whose clock is `generations` are marked,
    /// counted on this deployment.
    pub(crate) fn marking<'a>(
        &'a self,
        generations: &'a Generations,
    ) -> crate::proxy::writes::Marking<'a> {
        crate::proxy::writes::Marking {
            generations,
            metrics: &self.metrics,
        }
    }

    /// The deployment's cache, as requests on origin `database` (its write clock
    /// `generations`) see it; a background refresh may take `refresh_deadline`.
    pub(crate) fn composer<'a>(
        &'a self,
        database: &'a str,
        generations: &'a Arc<Generations>,
        refresh_deadline: std::time::Duration,
    ) -> crate::proxy::Composer<'a> {
        crate::proxy::Composer {
            upstream: self
                .tier
                .as_ref()
                .map(|tier| crate::proxy::Upstream { tier, database }),
            store: &self.cache,
            settings: &self.deployment.cache,
            metrics: &self.metrics,
            refresh_deadline,
            generations: self
                .deployment
                .cache
                .invalidate_on_write
                .then_some(generations),
        }
    }
}

/// Turns a client's plain connection into TLS, warpdrive as the server, once it asked
/// for it. Bytes that came before the handshake are refused: anyone on the path could
/// have injected them.
pub(crate) async fn accept_tls<F: crate::wire::Framing<Error: Into<ConnError>>>(
    client: Conn<F>,
    acceptor: &tokio_rustls::TlsAcceptor,
    max_message_bytes: usize,
) -> Result<Conn<F>, SessionError> {
    if client.has_buffered_input() {
        return Err(SessionError::Protocol(
            "data after the request for TLS, before the TLS handshake".into(),
        ));
    }
    let (stream, _) = client.into_parts();
    let Stream::Plain(tcp) = stream else {
        return Err(SessionError::Protocol(
            "a request for TLS on an encrypted connection".into(),
        ));
    };
    let tls = acceptor.accept(tcp).await?;
    Ok(Conn::new(
        Stream::ServerTls(Box::new(tls)),
        max_message_bytes,
    ))
}

/// Serves one PostgreSQL client connection to its end.
pub async fn serve(tcp: TcpStream, ctx: Arc<SessionContext>) {
    serve_with(tcp, &ctx, |client| pg::run(client, &ctx)).await
}

/// Serves one MySQL client connection to its end.
pub async fn serve_mysql(tcp: TcpStream, ctx: Arc<SessionContext<mysql::Shared>>) {
    serve_with(tcp, &ctx, |client| mysql::run(client, &ctx)).await
}

async fn serve_with<P, F, R, Fut>(tcp: TcpStream, ctx: &SessionContext<P>, run: R)
where
    F: crate::wire::Framing<Error: Into<ConnError>>,
    R: FnOnce(Conn<F>) -> Fut,
    Fut: std::future::Future<Output = Result<(), SessionError>>,
{
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let span = tracing::info_span!("client", deployment = %ctx.deployment.name, %peer);
    async move {
        let _ = tcp.set_nodelay(true);
        let client = Conn::new(Stream::Plain(tcp), ctx.deployment.max_message_bytes);
        match run(client).await {
            Ok(()) => tracing::debug!("client left"),
            Err(SessionError::ClientGone) => tracing::debug!("client disconnected"),
            Err(error) => tracing::info!(%error, "session ended"),
        }
    }
    .instrument(span)
    .await
}
