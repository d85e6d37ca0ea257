//! Queries of warpdrive's own on an origin connection: the client's settings replayed
//! where the connection differs, and startup settings tried once per value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::sqlstate::{from_pool, setting_refusal};
use crate::conn::ConnError;
use crate::pool::pg::{PgPool, PgPooledConn as PooledConn, read_until_ready};
use crate::session::error::{ClientError, ErrorKind};
use crate::session::settings::{self, SettingMap};
use crate::wire::pg::backend::{BackendMessage, tag as backend_tag};

/// What the origin said of each (database, setting, value) a client tried at startup.
#[derive(Default)]
pub struct TriedSettings {
    tried: Mutex<HashMap<(String, String, String), Arc<TriedSetting>>>,
}

impl TriedSettings {
    /// Tries a startup setting (its replay statement) on an origin connection, once per
    /// distinct value, and returns what the origin said of it.
    pub(super) async fn try_setting(
        &self,
        pool: &PgPool,
        database: &str,
        name: &str,
        value: &str,
    ) -> Result<Arc<TriedSetting>, ClientError> {
        let key = (database.to_owned(), name.to_owned(), value.to_owned());
        if let Some(known) = self.tried.lock().ok().and_then(|v| v.get(&key).cloned()) {
            return Ok(known);
        }
        let mut checkout = pool.checkout().await.map_err(|error| from_pool(&error))?;
        let conn = checkout.conn();
        let outcome = run_internal(conn, value).await;
        match outcome {
            Ok(Ok(reply)) => {
                conn.settings.insert(name.to_owned(), value.to_owned());
                let tried = Arc::new(TriedSetting {
                    reports: reply.reports,
                    value: reply.values.into_iter().next_back(),
                    notices: reply.notices,
                });
                if let Ok(mut tried_settings) = self.tried.lock() {
                    tried_settings.insert(key, Arc::clone(&tried));
                }
                Ok(tried)
            }
            Ok(Err(fields)) => {
                // The origin's reason when it is about the setting; else "not supported".
                let kind = setting_refusal(fields.code()).unwrap_or(ErrorKind::NotSupported);
                Err(ClientError::fatal(
                    kind,
                    format!("startup parameter {name:?}: {}", fields.message()),
                ))
            }
            Err(error) => {
                checkout.discard();
                Err(ClientError::origin_lost(&error))
            }
        }
    }
}

/// What trying a startup setting on the origin told.
#[derive(Debug)]
pub(super) struct TriedSetting {
    /// The ParameterStatus values the origin reported.
    pub(super) reports: Vec<(Bytes, Bytes)>,
    /// The value in force afterwards, as `set_config()` returned it (the origin's own
    /// spelling: `EUC_JP` for `eucjp`). The origin reports only what changed, and a
    /// connection may already hold the value.
    pub(super) value: Option<Bytes>,
    /// The notices the origin sent about it (a value it truncated, …), as frames: a
    /// client setting it gets them as PostgreSQL would send them at startup.
    pub(super) notices: Vec<Bytes>,
}

/// What the origin answered a query of warpdrive's own.
pub(super) struct InternalReply {
    /// ParameterStatus values reported.
    reports: Vec<(Bytes, Bytes)>,
    /// The first column of every row returned.
    values: Vec<Bytes>,
    /// NoticeResponse frames.
    notices: Vec<Bytes>,
}

/// The longest warpdrive waits for the origin to answer a statement of its own (a
/// settings replay, a startup parameter check): a connection that stays silent this long
/// is dropped rather than leaving the client hanging.
const INTERNAL_QUERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs a query of warpdrive's own on an idle origin connection, swallowing its replies.
/// Returns the ParameterStatus values reported and the rows' first columns, or the
/// origin's error. The connection
/// counts as busy until the origin's ReadyForQuery, so that it is closed, not reused,
/// if this is abandoned half-way.
pub(super) async fn run_internal(
    conn: &mut PooledConn,
    sql: &str,
) -> Result<Result<InternalReply, crate::wire::pg::backend::ErrorFields>, ConnError> {
    conn.set_busy();
    conn.write_query(sql.as_bytes());
    let origin = &mut conn.origin.conn;
    let mut reply = InternalReply {
        reports: Vec::new(),
        values: Vec::new(),
        notices: Vec::new(),
    };
    let mut failure = None;
    let exchange = read_until_ready(origin, |frame| {
        match frame.tag() {
            backend_tag::DATA_ROW => {
                let row = crate::wire::pg::backend::decode_data_row(&frame)?;
                reply.values.extend(row.into_iter().next().flatten());
            }
            backend_tag::NOTICE_RESPONSE => reply.notices.push(frame.into_raw()),
            _ => match BackendMessage::decode(&frame)? {
                BackendMessage::ParameterStatus { name, value } => {
                    reply.reports.push((name, value))
                }
                BackendMessage::ErrorResponse(fields) => failure = Some(fields),
                _ => {}
            },
        }
        Ok(())
    });
    let status = tokio::time::timeout(INTERNAL_QUERY_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            ConnError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the origin did not answer warpdrive's own query within {}s",
                    INTERNAL_QUERY_TIMEOUT.as_secs()
                ),
            ))
        })??;
    conn.set_ready(status.into());
    Ok(match failure {
        Some(fields) => Err(fields),
        None => Ok(reply),
    })
}

/// Makes an origin connection's settings match `desired` (one round trip, only when
/// they differ). On failure the connection's settings are unknown: discard it.
pub(crate) async fn apply_settings(
    conn: &mut PooledConn,
    desired: &SettingMap,
) -> Result<(), ClientError> {
    let Some(sql) = settings::sync_sql(desired, &conn.settings) else {
        return Ok(());
    };
    match run_internal(conn, &sql).await {
        Ok(Ok(_)) => {
            conn.settings = desired.clone();
            Ok(())
        }
        Ok(Err(fields)) => Err(ClientError::error(
            ErrorKind::Unavailable,
            format!(
                "warpdrive could not restore this session's settings on an origin connection: {}",
                fields.message()
            ),
        )
        .hint("a setting made earlier in this session is no longer valid on the origin; RESET it or reconnect")),
        Err(error) => Err(ClientError::origin_lost(&error)),
    }
}
