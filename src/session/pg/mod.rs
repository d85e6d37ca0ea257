//! The PostgreSQL side of a session: what a cacheable request is and how its reply is
//! recorded. (The rest of the PostgreSQL frontend is still in [`crate::session`].)

pub mod recorder;
pub mod request;

use crate::protocol::TxnStatus;
use crate::wire::pg::backend::TransactionStatus;

impl From<TransactionStatus> for TxnStatus {
    fn from(status: TransactionStatus) -> TxnStatus {
        match status {
            TransactionStatus::Idle => TxnStatus::Idle,
            TransactionStatus::InTransaction => TxnStatus::InTransaction,
            TransactionStatus::Failed => TxnStatus::Failed,
        }
    }
}
