//! Which Redis the tier talks to: one server (`redis://`, `rediss://`) or a Redis Cluster
//! (`redis+cluster://HOST:PORT,HOST:PORT/`, `rediss+cluster://…`), and how to open its
//! two connections: one for commands, one subscribed to the notices. On a cluster the
//! commands go through a cluster connection, and the subscription to any one node,
//! which hears what is published on every node.

use std::path::PathBuf;
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::{RedisError, TlsCertificates};

use super::link::Connection;

/// Why the tier cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The URL is not one the Redis client takes.
    #[error(
        "cache upstream {url:?} is not a Redis URL warpdrive can use ({reason}); write redis://HOST:PORT/DB, rediss://HOST:PORT/DB, or redis+cluster://HOST:PORT,HOST:PORT/ for a Redis Cluster"
    )]
    Url {
        /// The URL, without its password.
        url: String,
        /// Why.
        reason: String,
    },
    /// The CA file named by `upstream_ca` cannot be read.
    #[error("cannot read the cache upstream's CA file {path}: {source}; check upstream_ca")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The servers of an upstream.
pub enum Servers {
    /// One server.
    Single(Box<redis::Client>),
    /// A cluster, and its seed nodes (for the subscription).
    Cluster {
        /// Routes commands by slot.
        cluster: Box<ClusterClient>,
        /// The nodes the URL names.
        nodes: Vec<redis::Client>,
    },
}

/// A connection for commands, and one subscribed to the notices.
pub type Connected = (Connection, redis::aio::PubSubSink, redis::aio::PubSubStream);

/// Whether `url` names a Redis or a Redis Cluster warpdrive can use.
pub fn is_redis_url(url: &str) -> bool {
    [
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme))
}

impl Servers {
    /// The servers `url` names; TLS checked against `ca_file` when given.
    pub fn open(url: &str, ca_file: Option<&PathBuf>) -> Result<Servers, TierError> {
        let refused = |reason: String| TierError::Url {
            url: redacted(url),
            reason,
        };
        let certificates = || -> Result<Option<TlsCertificates>, TierError> {
            let Some(path) = ca_file else {
                return Ok(None);
            };
            let root_cert = std::fs::read(path).map_err(|source| TierError::Ca {
                path: path.clone(),
                source,
            })?;
            Ok(Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            }))
        };
        let client = |node: &str| -> Result<redis::Client, TierError> {
            match certificates()? {
                None => redis::Client::open(node),
                Some(certificates) => redis::Client::build_with_tls(node, certificates),
            }
            .map_err(|e| refused(e.to_string()))
        };
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let node_scheme = match scheme {
            "redis" | "rediss" => return Ok(Servers::Single(Box::new(client(url)?))),
            "redis+cluster" => "redis",
            "rediss+cluster" => "rediss",
            _ => {
                return Err(refused(
                    "the scheme is not redis, rediss, redis+cluster or rediss+cluster".to_owned(),
                ));
            }
        };
        let (credentials, hosts) = match rest.trim_end_matches('/').rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), rest.trim_end_matches('/')),
        };
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(|host| format!("{node_scheme}://{credentials}{host}"))
            .collect();
        if nodes.is_empty() {
            return Err(refused(
                "a cluster URL names its nodes: redis+cluster://HOST:PORT,HOST:PORT/".to_owned(),
            ));
        }
        let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(CONNECT_TIMEOUT)
            .retries(1);
        if let Some(certificates) = certificates()? {
            builder = builder.certs(certificates);
        }
        let cluster = builder.build().map_err(|e| refused(e.to_string()))?;
        let nodes = nodes
            .iter()
            .map(|node| client(node))
            .collect::<Result<_, _>>()?;
        Ok(Servers::Cluster {
            cluster: Box::new(cluster),
            nodes,
        })
    }

    /// Opens both connections and subscribes to the channels `pattern` matches.
    pub async fn connect(&self, pattern: &str) -> Result<Connected, RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let (connection, subscribers) = match self {
            Servers::Single(client) => (
                Connection::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ),
                std::slice::from_ref(client.as_ref()),
            ),
            Servers::Cluster { cluster, nodes } => (
                Connection::Cluster(cluster.get_async_connection().await?),
                nodes.as_slice(),
            ),
        };
        let mut failure = None;
        for client in subscribers {
            match subscribe(client, pattern).await {
                Ok((sink, stream)) => return Ok((connection, sink, stream)),
                Err(error) => failure = Some(error),
            }
        }
        Err(failure
            .unwrap_or_else(|| RedisError::from(std::io::Error::other("no node to subscribe on"))))
    }
}

/// How long connecting or subscribing to one server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

async fn subscribe(
    client: &redis::Client,
    pattern: &str,
) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), RedisError> {
    let connecting = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.psubscribe(pattern).await?;
        Ok((sink, stream))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "subscribing took too long",
            )))
        })
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, hosts)) => match credentials.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{hosts}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("redis+cluster://u:pw@a:1,b:2/"),
            "redis+cluster://u:***@a:1,b:2/"
        );
        assert_eq!(redacted("redis://127.0.0.1/0"), "redis://127.0.0.1/0");
    }

    #[test]
    fn cluster_urls_name_their_nodes() {
        assert!(matches!(
            Servers::open("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/", None),
            Ok(Servers::Cluster { ref nodes, .. }) if nodes.len() == 2
        ));
        assert!(matches!(
            Servers::open("redis://127.0.0.1:6379/0", None),
            Ok(Servers::Single(_))
        ));
        assert!(Servers::open("redis+cluster:///", None).is_err());
        assert!(Servers::open("memcached://h", None).is_err());
        assert!(matches!(
            Servers::open("rediss://h", Some(&PathBuf::from("/nonexistent/ca.pem"))),
            Err(TierError::Ca { .. })
        ));
    }
}
