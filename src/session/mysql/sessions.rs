//! The live MySQL sessions of a deployment, by the connection id warpdrive gave each:
//! which origin thread serves each one now, so that `KILL [QUERY] id` reaches it, and
//! whether it was killed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The first connection id warpdrive gives: ids from here on are its own, so that KILL
/// of a smaller id (an origin thread from SHOW PROCESSLIST) goes to the origin as is.
pub const FIRST_ID: u32 = 0x4000_0000;

/// One live session as others see it.
#[derive(Default)]
pub struct Handle {
    origin_thread: Mutex<Option<u32>>,
    killed: AtomicBool,
}

impl Handle {
    /// The origin thread serving the session now.
    pub fn origin_thread(&self) -> Option<u32> {
        *self.origin_thread.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (or clears) the origin thread serving it.
    pub fn set_origin_thread(&self, thread: Option<u32>) {
        *self.origin_thread.lock().unwrap_or_else(|p| p.into_inner()) = thread;
    }

    /// Marks it killed: it ends at its next command.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
    }

    /// Whether KILL CONNECTION named it.
    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }
}

/// The live sessions.
pub struct Sessions {
    next_id: AtomicU32,
    live: Mutex<HashMap<u32, Arc<Handle>>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            next_id: AtomicU32::new(FIRST_ID),
            live: Mutex::default(),
        }
    }
}

/// A session's registration; dropping it unregisters the session.
pub struct Registration {
    /// Its connection id.
    pub id: u32,
    /// What others see of it.
    pub handle: Arc<Handle>,
    sessions: Weak<Sessions>,
}

impl Sessions {
    /// Registers a new session.
    pub fn register(self: &Arc<Self>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).max(FIRST_ID);
        let handle = Arc::new(Handle::default());
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::clone(&handle));
        Registration {
            id,
            handle,
            sessions: Arc::downgrade(self),
        }
    }

    /// The live session with connection id `id`.
    pub fn get(&self, id: u64) -> Option<Arc<Handle>> {
        let id = u32::try_from(id).ok()?;
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(sessions) = self.sessions.upgrade() {
            sessions
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_id_until_they_leave() {
        let sessions = Arc::new(Sessions::default());
        let a = sessions.register();
        let b = sessions.register();
        assert!(a.id >= FIRST_ID && b.id > a.id);
        a.handle.set_origin_thread(Some(7));
        assert_eq!(
            sessions.get(a.id.into()).and_then(|h| h.origin_thread()),
            Some(7)
        );
        let id = b.id;
        drop(b);
        assert!(sessions.get(id.into()).is_none());
        assert!(sessions.get(5).is_none());
    }
}
