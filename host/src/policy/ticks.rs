//! What advances an engine's epoch (its stores count time limits and look
//! for a stop request at every tick): a thread that ticks for the engine's
//! whole life, or, in the binaries (one short-lived process, one engine),
//! a POSIX timer that signals SIGALRM only while a policy runs.
//!
//! A second thread costs a process that lives a few milliseconds its
//! creation and, from then on, a TLB shootdown on the other core at every
//! `munmap` and `mprotect` (wasmtime makes many): ~0.3 ms of a `specwright
//! spec`. The timer is deleted by `execve` (the runtime the wrapper execs
//! inherits no signals from it) and is never inherited by a child.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How often the engine's epoch advances; the time limit's granularity.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Whether this process's first engine ticks by the timer.
static BY_TIMER: AtomicBool = AtomicBool::new(false);
/// The engine the timer ticks (the process's first, once it is made).
static TIMED_ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
/// The timer, once made (a `timer_t`, kept as an address-sized integer).
static TIMER: OnceLock<Result<usize, String>> = OnceLock::new();
/// Calls in progress on the timed engine: the timer runs while any is
/// (counted and armed under the lock, so that one call's end cannot
/// disarm the timer another call just armed).
static RUNNING: Mutex<usize> = Mutex::new(0);

/// For a short-lived process (the binaries), before its first engine: that
/// engine is ticked by a timer while its policies run instead of by a
/// thread of its own. The process must not run policies of that engine on
/// threads it starts without expecting SIGALRM there.
pub fn tick_policies_by_timer() {
    BY_TIMER.store(true, Ordering::SeqCst);
}

/// How an engine's epoch advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ticker {
    /// A thread ticks it, always.
    Thread,
    /// The process's timer ticks it while a [`Ticking`] is alive.
    Timer,
}

/// Starts ticking `engine`: by the timer when the process asked for it
/// and this is its first engine (the timer's signal handler knows one
/// engine), by a thread otherwise.
pub(super) fn start(engine: &wasmtime::Engine) -> Ticker {
    if BY_TIMER.load(Ordering::SeqCst) && TIMED_ENGINE.set(engine.clone()).is_ok() {
        return Ticker::Timer;
    }
    let weak = engine.weak();
    std::thread::spawn(move || loop {
        std::thread::sleep(EPOCH_TICK);
        match weak.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
    });
    Ticker::Thread
}

/// While one lives, the timed engine's epoch advances every
/// [`EPOCH_TICK`] (a store holds one for as long as it runs a policy).
#[derive(Debug)]
pub(super) struct Ticking(());

impl Ticking {
    /// Ticks for a store of an engine ticked by `ticker`: nothing to do
    /// for a thread; the timer started by the first call in progress.
    pub(super) fn start(ticker: Ticker) -> Result<Option<Ticking>, String> {
        if ticker == Ticker::Thread {
            return Ok(None);
        }
        let timer = timer()?;
        let mut running = RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *running == 0 {
            // A mask inherited with SIGALRM blocked would keep the epoch
            // from advancing: the policy would run without a time limit.
            let mut alarm = nix::sys::signal::SigSet::empty();
            alarm.add(nix::sys::signal::Signal::SIGALRM);
            nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_UNBLOCK, Some(&alarm), None)
                .map_err(|e| format!("unblocking SIGALRM for the policies' time limit: {e}"))?;
            arm(timer, EPOCH_TICK)?;
        }
        *running += 1;
        Ok(Some(Ticking(())))
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *running -= 1;
        if *running == 0 {
            if let Some(Ok(timer)) = TIMER.get() {
                let _ = arm(*timer, Duration::ZERO);
            }
        }
    }
}

/// The process's timer, made on first use: SIGALRM, handled by advancing
/// the timed engine's epoch.
fn timer() -> Result<usize, String> {
    TIMER
        .get_or_init(|| {
            // SAFETY: the action is async-signal-safe: `OnceLock::get` is an
            // atomic load, and wasmtime documents `increment_epoch` as
            // signal-safe (one atomic increment, no system call).
            unsafe {
                signal_hook::low_level::register(signal_hook::consts::SIGALRM, || {
                    if let Some(engine) = TIMED_ENGINE.get() {
                        engine.increment_epoch();
                    }
                })
            }
            .map_err(|e| format!("handling SIGALRM for the policies' time limit: {e}"))?;
            // SAFETY: a zeroed `sigevent` is a valid value to fill in; the
            // kernel reads only the fields set for SIGEV_SIGNAL.
            let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
            event.sigev_notify = libc::SIGEV_SIGNAL;
            event.sigev_signo = libc::SIGALRM;
            let mut timer: libc::timer_t = std::ptr::null_mut();
            // SAFETY: both pointers are to live locals of the right types.
            if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) } != 0 {
                return Err(format!(
                    "making the policies' time-limit timer: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(timer as usize)
        })
        .clone()
}

/// Sets `timer` to fire every `every` (zero: never).
fn arm(timer: usize, every: Duration) -> Result<(), String> {
    let span = libc::timespec {
        tv_sec: every.as_secs() as libc::time_t,
        tv_nsec: every.subsec_nanos() as libc::c_long,
    };
    let spec = libc::itimerspec {
        it_interval: span,
        it_value: span,
    };
    // SAFETY: `timer` was made by `timer_create` and is never deleted; the
    // new setting is a live local, the old one is not asked for.
    if unsafe { libc::timer_settime(timer as libc::timer_t, 0, &spec, std::ptr::null_mut()) } != 0 {
        return Err(format!(
            "setting the policies' time-limit timer: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
