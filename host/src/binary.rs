//! What the two binaries (`specwright`, `specwright-runc`) share and a
//! library user does not get: SIGINT and SIGTERM turned into the
//! cancellation of the process's token, and the exit that follows.

use crate::step::StepOptions;

/// SIGINT and SIGTERM ask the process to stop: at once while it holds
/// nothing, after releasing what it holds otherwise (see `interrupt`).
pub(crate) fn stop_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let _ = std::thread::Builder::new().name("signals".to_string()).spawn(move || {
        for signal in signals.forever() {
            crate::interrupt::request(signal);
        }
    });
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
