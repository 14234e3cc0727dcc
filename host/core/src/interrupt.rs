//! Stopping work in progress. A step carries a [`Cancel`] token: work
//! checks it between operations (host operations, policy calls, the
//! chain), a policy in a loop is stopped by its store's epoch callback
//! within one tick, and what the step holds is released.
//!
//! The binaries turn SIGINT and SIGTERM into a request on the process's
//! token ([`process`]) through [`request`], which exits at once when
//! nothing is held; a library user cancels a step's own token instead.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

static HOLDING: AtomicUsize = AtomicUsize::new(0);
static FORWARDING: AtomicUsize = AtomicUsize::new(0);

/// What a library user's [`Cancel::cancel`] records (no signal).
pub const CANCELLED: i32 = -1;

/// A request to stop one step, or every step that shares the token.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicI32>);

impl Cancel {
    /// A token no one has cancelled yet.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks the steps that carry this token to stop and release what they
    /// hold.
    pub fn cancel(&self) {
        let _ = self
            .0
            .compare_exchange(0, CANCELLED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The signal that asked to stop ([`CANCELLED`] for [`Cancel::cancel`]),
    /// if anything did.
    pub fn requested(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }

    fn signal(&self, signal: i32) {
        self.0.store(signal, Ordering::SeqCst);
    }
}

static PROCESS: OnceLock<Cancel> = OnceLock::new();

/// The token the process's signals cancel (the binaries' steps carry it).
pub fn process() -> &'static Cancel {
    PROCESS.get_or_init(Cancel::new)
}

/// The signal that asked this process to stop, if one did.
pub fn requested() -> Option<i32> {
    process().requested()
}

/// For the binaries' signal handler only (it is async-signal-safe: atomic
/// loads and stores): records that `signal` asked the process to stop;
/// whether it must exit at once (nothing is held: no [`Holding`] guard is
/// alive). [`process`] must have been called before the handler was
/// installed (the token is not made here).
#[must_use]
pub fn request(signal: i32) -> bool {
    if FORWARDING.load(Ordering::SeqCst) > 0 {
        return false;
    }
    if let Some(token) = PROCESS.get() {
        token.signal(signal);
    }
    HOLDING.load(Ordering::SeqCst) == 0
}

/// The name of a signal, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        2 => "SIGINT",
        15 => "SIGTERM",
        CANCELLED => "cancellation",
        _ => "a signal",
    }
}

/// While one of these lives, a stop request is left to the work in
/// progress, which releases what it holds and then exits.
pub struct Holding(());

impl Holding {
    pub fn start() -> Holding {
        HOLDING.fetch_add(1, Ordering::SeqCst);
        Holding(())
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        HOLDING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// While one of these lives, signals belong to a child (the container's
/// runtime, which gets them forwarded) and are no request to stop.
pub struct Forwarding(());

impl Forwarding {
    pub fn start() -> Forwarding {
        FORWARDING.fetch_add(1, Ordering::SeqCst);
        Forwarding(())
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        FORWARDING.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_cancelled_once_and_shared_by_its_clones() {
        let token = Cancel::new();
        let clone = token.clone();
        assert_eq!(clone.requested(), None);
        token.cancel();
        assert_eq!(clone.requested(), Some(CANCELLED));
        assert_eq!(name(CANCELLED), "cancellation");
        assert_eq!(Cancel::new().requested(), None, "a new token is not the process's");
    }
}
