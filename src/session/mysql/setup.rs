//! Putting a client's session state and statements on an origin connection: the
//! exchanges that both a session and a background refresh of its cache entries make.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::state::{self, Step};
use crate::pool::mysql::{Baseline, ExchangeError, MysqlConn, OriginStatement, SessionState};
use crate::wire::mysql::command::{code, with_statement_id};
use crate::wire::mysql::response::Expect;
use crate::wire::mysql::write_packet;

/// The longest warpdrive waits for the origin to answer a command of its own (putting
/// a client's state on a connection, preparing a statement).
pub(super) const INTERNAL_EXCHANGE: Duration = Duration::from_secs(10);

/// A step towards the client's state that the origin did not take.
#[derive(Debug)]
pub(super) struct StepFailed {
    pub(super) step: Step,
    pub(super) error: ExchangeError,
}

/// Brings `conn` to `want`; false when it cannot be (a setting another client left that
/// cannot be put back).
pub(super) async fn bring(
    conn: &mut MysqlConn,
    want: &SessionState,
    baseline: &Baseline,
) -> Result<bool, StepFailed> {
    let Some(steps) = state::steps(&conn.session, want, baseline) else {
        return Ok(false);
    };
    for step in steps {
        tracing::trace!(?step, "putting the client's state on its connection");
        let expect = match step {
            Step::Set(_) => Expect::Results,
            _ => Expect::Ok,
        };
        let command = step.command();
        let exchange = conn
            .link
            .exchange("the session's settings", &command, expect);
        if let Err(error) = tokio::time::timeout(INTERNAL_EXCHANGE, exchange)
            .await
            .unwrap_or(Err(ExchangeError::Timeout))
        {
            return Err(StepFailed { step, error });
        }
    }
    conn.session.variables = want.variables.clone();
    conn.session.multi_statements = want.multi_statements;
    if want.database.is_some() {
        conn.session.database = want.database.clone();
    }
    Ok(true)
}

/// Prepares `sql` on the connection as it stands.
pub(super) async fn prepare(
    conn: &mut MysqlConn,
    sql: &[u8],
) -> Result<OriginStatement, ExchangeError> {
    let mut command = BytesMut::with_capacity(1 + sql.len());
    command.put_u8(code::STMT_PREPARE);
    command.put_slice(sql);
    let exchange = conn
        .link
        .exchange("a statement the client prepared", &command, Expect::Prepare);
    let outcome = tokio::time::timeout(INTERNAL_EXCHANGE, exchange)
        .await
        .unwrap_or(Err(ExchangeError::Timeout))?;
    let prepared = outcome
        .prepared
        .ok_or(ExchangeError::Conn(crate::conn::ConnError::TruncatedFrame))?;
    Ok(OriginStatement {
        id: prepared.statement_id,
    })
}

/// Records a statement prepared on the connection; one it displaced is closed there.
pub(super) fn remember(conn: &mut MysqlConn, key: Bytes, statement: OriginStatement) {
    if let Some(displaced) = conn.statements.insert(key, statement)
        && displaced != statement.id
    {
        let close = with_statement_id(&[code::STMT_CLOSE, 0, 0, 0, 0], displaced);
        write_packet(&mut conn.link.conn.out, 0, &close);
    }
}
