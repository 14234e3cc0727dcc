//! SIGINT and SIGTERM as a request to stop: the process that receives one
//! finishes what it holds by releasing it, and exits with 128 + the signal.
//! Work checks [`requested`] between operations (host operations, policy
//! calls, the chain); a policy in a loop is stopped by its store's epoch
//! callback within one tick.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

static SIGNAL: AtomicI32 = AtomicI32::new(0);
static HOLDING: AtomicUsize = AtomicUsize::new(0);
static FORWARDING: AtomicUsize = AtomicUsize::new(0);

/// The signal that asked this process to stop, if one did.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Records that `signal` asked the process to stop. When nothing is held
/// (no [`Holding`] guard is alive), the process exits at once.
pub fn request(signal: i32) {
    if FORWARDING.load(Ordering::SeqCst) > 0 {
        return;
    }
    SIGNAL.store(signal, Ordering::SeqCst);
    if HOLDING.load(Ordering::SeqCst) == 0 {
        std::process::exit(128 + signal);
    }
}

/// The name of a signal, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        2 => "SIGINT",
        15 => "SIGTERM",
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
