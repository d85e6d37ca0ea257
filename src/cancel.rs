//! CancelRequest routing: clients cancel with the key warpdrive gave them; warpdrive
//! forwards the cancel to the origin backend serving that client at the moment, if any.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use rand::RngExt;

use crate::auth::scram::constant_time_eq;
use crate::pool::Checkout;
use crate::pool::pg::{OriginTarget, PgOrigin};
use crate::wire::pg::startup::CancelRequest;

/// The origin backend a client's query is running on.
#[derive(Clone, Debug)]
pub struct CancelTarget {
    /// Where the backend lives.
    pub origin: Arc<OriginTarget>,
    /// Its process id.
    pub process_id: i32,
    /// Its secret key.
    pub secret_key: Bytes,
}

impl CancelTarget {
    /// The backend of a checked-out connection.
    pub fn of(checkout: &mut Checkout<PgOrigin>) -> CancelTarget {
        let origin = Arc::clone(&checkout.target().target);
        let conn = checkout.conn();
        CancelTarget {
            origin,
            process_id: conn.origin.process_id,
            secret_key: conn.origin.secret_key.clone(),
        }
    }
}

type Slot = Arc<Mutex<Option<CancelTarget>>>;

struct Entry {
    secret_key: [u8; 4],
    slot: Slot,
}

/// All live client sessions' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    next_process_id: AtomicI32,
    entries: Mutex<HashMap<i32, Entry>>,
}

/// A session's registration: its BackendKeyData, and where a cancel should go now.
/// Dropping it unregisters the session.
pub struct CancelHandle {
    /// The process id warpdrive reports to the client.
    pub process_id: i32,
    /// The secret key warpdrive reports to the client.
    pub secret_key: [u8; 4],
    slot: Slot,
    registry: Weak<CancelRegistry>,
}

impl CancelHandle {
    /// Where a cancel should go; `None` when the client has no query at an origin.
    pub fn set_target(&self, target: Option<CancelTarget>) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = target;
        }
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade()
            && let Ok(mut entries) = registry.entries.lock()
        {
            entries.remove(&self.process_id);
        }
    }
}

impl CancelRegistry {
    /// Registers a new session.
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        let mut secret_key = [0u8; 4];
        rand::rng().fill(&mut secret_key[..]);
        let slot: Slot = Arc::new(Mutex::new(None));
        let process_id = loop {
            // Positive ids, like real backends; skip ids still in use after wrap-around.
            let candidate = self
                .next_process_id
                .fetch_add(1, Ordering::Relaxed)
                .rem_euclid(i32::MAX - 1)
                + 1;
            let Ok(mut entries) = self.entries.lock() else {
                break candidate;
            };
            if let std::collections::hash_map::Entry::Vacant(vacant) = entries.entry(candidate) {
                vacant.insert(Entry {
                    secret_key,
                    slot: Arc::clone(&slot),
                });
                break candidate;
            }
        };
        CancelHandle {
            process_id,
            secret_key,
            slot,
            registry: Arc::downgrade(self),
        }
    }

    /// The origin backend a valid CancelRequest should cancel, if any. A wrong key is
    /// ignored, as PostgreSQL does.
    pub fn target(&self, request: &CancelRequest) -> Option<CancelTarget> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(&request.process_id)?;
        if !constant_time_eq(&entry.secret_key, &request.secret_key) {
            return None;
        }
        entry.slot.lock().ok()?.clone()
    }

    /// Number of registered sessions.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OriginUrl;

    fn target() -> CancelTarget {
        CancelTarget {
            origin: Arc::new(OriginTarget {
                url: OriginUrl::parse("postgres://u:p@127.0.0.1/db").expect("url"),
                database: "db".into(),
                tls: None,
                connect_timeout: std::time::Duration::from_secs(1),
            }),
            process_id: 77,
            secret_key: Bytes::from_static(&[1, 2, 3, 4]),
        }
    }

    #[test]
    fn cancels_need_the_right_key_and_a_running_query() {
        let registry = Arc::new(CancelRegistry::default());
        let handle = registry.register();
        let request = |key: [u8; 4]| CancelRequest {
            process_id: handle.process_id,
            secret_key: Bytes::copy_from_slice(&key),
        };
        assert!(
            registry.target(&request(handle.secret_key)).is_none(),
            "idle: nothing to cancel"
        );
        handle.set_target(Some(target()));
        assert_eq!(
            registry
                .target(&request(handle.secret_key))
                .map(|t| t.process_id),
            Some(77)
        );
        let mut wrong = handle.secret_key;
        wrong[0] ^= 0xff;
        assert!(registry.target(&request(wrong)).is_none());
        let other = registry.register();
        assert_ne!(other.process_id, handle.process_id);
        drop(handle);
        assert_eq!(registry.len(), 1);
    }
}
