//! What the two binaries (`specwright`, `specwright-runc`) share and a
//! library user does not get: SIGINT and SIGTERM turned into the
//! cancellation of the process's token, and the exit that follows.

use crate::step::StepOptions;

/// SIGINT and SIGTERM ask the process to stop: at once while it holds
/// nothing, after releasing what it holds otherwise (see `interrupt`).
/// A handler, not a thread watching for them: a second thread costs a
/// short-lived process its creation and, from then on, a TLB shootdown on
/// the other core at every `munmap` and `mprotect`.
pub(crate) fn stop_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // The token exists before a handler may look for it.
    let _ = crate::interrupt::process();
    for signal in [SIGINT, SIGTERM] {
        // SAFETY: the action is async-signal-safe: `interrupt::request`
        // only loads and stores atomics, and `low_level::exit` is `_exit`;
        // nothing allocates or takes a lock.
        let _ = unsafe {
            signal_hook::low_level::register(signal, move || {
                if crate::interrupt::request(signal) {
                    signal_hook::low_level::exit(128 + signal);
                }
            })
        };
    }
}

/// How the binaries' steps are treated: as given, cancelled by the
/// process's SIGINT and SIGTERM.
pub(crate) fn step_options(options: StepOptions) -> StepOptions {
    StepOptions {
        cancel: crate::interrupt::process().clone(),
        ..options
    }
}

/// Tracing events go to stderr when `SPECWRIGHT_LOG` is set (e.g. `info`).
pub(crate) fn init_tracing() {
    if let Ok(filter) = std::env::var("SPECWRIGHT_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
}
