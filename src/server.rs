//! Listeners and the life of the process: bind every deployment's address, accept
//! clients, and on shutdown stop accepting and let sessions finish (bounded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::analyze::memo::DEFAULT_MEMO_ENTRIES;
use crate::analyze::{AnalysisMemo, Analyzer, AnalyzerOptions, Dialect, Rules, RulesError};
use crate::cache::tier::{Tier, TierError};
use crate::cache::{Clocks, Store};
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::{DeploymentMetrics, Registry};
use crate::protocol::Protocol;
use crate::session::{self, ProcessShared, SessionContext};
use crate::tls::TlsError;

/// How long running sessions may continue after shutdown starts, by default.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listen address could not be bound.
    #[error("deployment {deployment:?}: cannot listen on {address}: {source}")]
    Bind {
        /// The deployment.
        deployment: String,
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS could not be configured.
    #[error("deployment {deployment:?}: {source}")]
    Tls {
        /// The deployment.
        deployment: String,
        /// Why.
        source: TlsError,
    },
    /// The rules file is missing or invalid.
    #[error("rules: {0}")]
    Rules(#[from] RulesError),
    /// The cache upstream cannot be used.
    #[error("deployment {deployment:?}: {source}")]
    Upstream {
        /// The deployment.
        deployment: String,
        /// Why.
        source: TierError,
    },
}

/// A deployment's sessions, by protocol.
enum Listener {
    Postgres(Arc<SessionContext>),
    Mysql(Arc<SessionContext<session::mysql::Shared>>),
}

/// A session to run.
type SessionTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Listener {
    fn serve(&self, tcp: tokio::net::TcpStream) -> SessionTask {
        match self {
            Listener::Postgres(ctx) => Box::pin(session::serve(tcp, Arc::clone(ctx))),
            Listener::Mysql(ctx) => Box::pin(session::serve_mysql(tcp, Arc::clone(ctx))),
        }
    }

    fn cache(&self) -> crate::admin::DeploymentCache {
        fn of<P>(ctx: &SessionContext<P>) -> crate::admin::DeploymentCache {
            crate::admin::DeploymentCache {
                name: ctx.deployment.name.clone(),
                store: Arc::clone(&ctx.cache),
                tier: ctx.tier.clone(),
                metrics: Arc::clone(&ctx.metrics),
            }
        }
        match self {
            Listener::Postgres(ctx) => of(ctx),
            Listener::Mysql(ctx) => of(ctx),
        }
    }
}

/// Bound listeners, ready to serve.
pub struct Server {
    listeners: Vec<(TcpListener, Listener)>,
    admin: Option<TcpListener>,
    registry: Registry,
    drain_timeout: Duration,
    /// Tells sessions that shutdown started (see [`SessionContext::shutdown`]).
    draining: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// Binds every deployment's listener (and the admin listener) and prepares the pools
    /// (which start warming up) and caches, on the system clock.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        Server::bind_with_clock(config, Clock::system()).await
    }

    /// [`Server::bind`] with the caches on `clock` (tests move a manual clock).
    pub async fn bind_with_clock(config: Config, clock: Clock) -> Result<Server, ServerError> {
        let mut postgres = Rules::builtin(Dialect::Postgres);
        if let Some(path) = &config.rules {
            postgres = postgres.with_overrides_from(path)?;
        }
        let analyzer = Arc::new(AnalysisMemo::new(
            Analyzer::new(
                postgres,
                Rules::builtin(Dialect::Mysql),
                AnalyzerOptions::default(),
            ),
            DEFAULT_MEMO_ENTRIES,
        ));
        let mut listeners = Vec::new();
        let mut registry = Registry::default();
        let (draining, _) = tokio::sync::watch::channel(false);
        let process = ProcessShared {
            analyzer: Arc::clone(&analyzer),
            clocks: Arc::new(Clocks::default()),
            schema_changes: Arc::default(),
            shutdown: draining.subscribe(),
        };
        for deployment in config.deployments {
            let name = deployment.name.clone();
            let tls_error = |source| ServerError::Tls {
                deployment: name.clone(),
                source,
            };
            let tls = match &deployment.tls {
                Some(tls) => Some(tokio_rustls::TlsAcceptor::from(
                    crate::tls::server_config(&tls.cert, &tls.key).map_err(tls_error)?,
                )),
                None => None,
            };
            let store = Store::new(
                deployment.cache.capacity_bytes,
                deployment.cache.max_result_bytes as u64,
                clock.clone(),
            );
            let metrics = Arc::new(DeploymentMetrics::new(
                &name,
                deployment.origin.protocol,
                Arc::clone(&store),
            ));
            registry.add(Arc::clone(&metrics));
            let listener = TcpListener::bind(deployment.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    deployment: name.clone(),
                    address: deployment.listen,
                    source,
                })?;
            tracing::info!(deployment = %name, listen = %listener.local_addr().unwrap_or(deployment.listen), origin = %deployment.origin, "listening");
            let tier = match &deployment.cache.upstream {
                // Also with caching off: its writes still reach the other instances.
                Some(settings) => Some(
                    Tier::start(settings.clone(), Arc::clone(&process.clocks)).map_err(
                        |source| ServerError::Upstream {
                            deployment: name.clone(),
                            source,
                        },
                    )?,
                ),
                None => None,
            };
            metrics.set_tier(tier.clone());
            let url = deployment.origin.clone();
            let pool_settings = deployment.pool.clone();
            let pool_metrics = Arc::clone(&metrics.pool);
            let ctx = match url.protocol {
                Protocol::Postgres => {
                    let pools = crate::pool::pg::pools(url, pool_settings, pool_metrics)
                        .map_err(tls_error)?;
                    pools.get(&deployment.origin.database);
                    let shared = |deployment: &_| session::pg::Shared::new(deployment, pools);
                    Listener::Postgres(Arc::new(SessionContext::new(
                        deployment, shared, tls, &process, store, metrics, tier,
                    )))
                }
                Protocol::Mysql => {
                    let pools = crate::pool::mysql::pools(url, pool_settings, pool_metrics)
                        .map_err(tls_error)?;
                    pools.get(crate::pool::mysql::PLAIN);
                    let shared = |deployment: &_| session::mysql::Shared::new(deployment, pools);
                    Listener::Mysql(Arc::new(SessionContext::new(
                        deployment, shared, tls, &process, store, metrics, tier,
                    )))
                }
            };
            listeners.push((listener, ctx));
        }
        let admin = match config.admin {
            Some(address) => {
                let listener =
                    TcpListener::bind(address)
                        .await
                        .map_err(|source| ServerError::Bind {
                            deployment: "admin".to_owned(),
                            address,
                            source,
                        })?;
                tracing::info!(listen = %listener.local_addr().unwrap_or(address), "admin listener: /metrics, /stats, /healthz");
                Some(listener)
            }
            None => None,
        };
        Ok(Server {
            listeners,
            admin,
            registry,
            drain_timeout: DRAIN_TIMEOUT,
            draining,
        })
    }

    /// Sets how long running sessions may continue after shutdown starts.
    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> Server {
        self.drain_timeout = drain_timeout;
        self
    }

    /// The counters of every deployment.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// The admin listener's address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The bound addresses, in deployment order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(listener, _)| listener.local_addr().ok())
            .collect()
    }

    /// Accepts clients until `shutdown` completes, then drains: no new clients; idle
    /// sessions are closed at once (SQLSTATE 57P01), sessions in a transaction may finish
    /// it within the drain timeout ([`DRAIN_TIMEOUT`] by default).
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut sessions = JoinSet::new();
        let mut acceptors = JoinSet::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (session_tx, mut session_rx) = tokio::sync::mpsc::unbounded_channel();
        let drain_timeout = self.drain_timeout;
        let caches = self
            .listeners
            .iter()
            .map(|(_, listener)| listener.cache())
            .collect();
        let admin = crate::admin::Admin {
            registry: self.registry.clone(),
            caches,
        };
        let admin = self
            .admin
            .map(|listener| tokio::spawn(crate::admin::serve(listener, admin)));
        for (listener, ctx) in self.listeners {
            let mut stop = stop_rx.clone();
            let session_tx = session_tx.clone();
            acceptors.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        accepted = listener.accept() => match accepted {
                            Ok((tcp, _)) => {
                                let _ = session_tx.send(ctx.serve(tcp));
                            }
                            Err(error) => {
                                tracing::warn!(%error, "accept failed");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        },
                    }
                }
            });
        }
        drop(session_tx);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(session) = session_rx.recv() => { sessions.spawn(session); }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            }
        }
        tracing::info!(
            sessions = sessions.len(),
            "shutting down: no new clients; waiting for sessions to finish"
        );
        let _ = stop_tx.send(true);
        let _ = self.draining.send(true);
        while acceptors.join_next().await.is_some() {}
        let drained = tokio::time::timeout(drain_timeout, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = sessions.len(),
                "drain timeout: closing the remaining sessions"
            );
            sessions.shutdown().await;
        }
        if let Some(admin) = admin {
            admin.abort();
        }
    }
}
