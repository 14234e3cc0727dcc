//! Request JSON, as a build system (or a stranger) hands it to `specwright
//! spec`: parsing and validation never panic, and a request that passes
//! them goes through the default pipeline to a spec that matches the
//! runtime-spec schema, or to a clean error.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use specwright_core::{HostFacts, Request};
use specwright_host_core::audit::Audit;
use specwright_host_core::state::StateDir;
use specwright_host_core::step::{StepHost, StepOptions};
use specwright_host_core::sys::RecordingSyscalls;

fn facts(variant: usize) -> HostFacts {
    let (kernel_release, arch) = [
        ("6.1.0", "amd64"),
        ("4.4.0", "arm64"),
        ("bogus", "s390x"),
        ("5.15.0", "riscv64"),
    ][variant % 4];
    HostFacts {
        kernel_release: kernel_release.to_string(),
        seccomp: variant % 2 == 0,
        first_free_loop: (variant % 3) as u32,
        in_user_namespace: variant % 5 == 0,
        arch: arch.to_string(),
        ..HostFacts::default()
    }
}

/// A dry run never writes here; it only names where mountpoints would be.
fn state() -> &'static StateDir {
    static STATE: OnceLock<StateDir> = OnceLock::new();
    STATE.get_or_init(|| StateDir::at(std::path::Path::new("/nonexistent/specwright-fuzz-state")))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let request = match Request::from_json(text) {
        Ok(request) => request,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an empty error for {text:?}");
            return;
        }
    };
    let sys = Arc::new(RecordingSyscalls::dry_run());
    let options = StepOptions::default();
    let lock = specwright_host_core::state::StepLock::planned(&request.id);
    let mut step = match StepHost::new(
        state().clone(),
        sys,
        Arc::new(Audit::events_only()),
        options,
        &request,
        lock,
    ) {
        Ok(step) => step,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    match specwright_core::buildkit::generate(&request, &facts(data.len()), &mut step) {
        Ok(spec) => {
            let json = spec.to_json();
            // The one spec a valid request may give that is refused: ids
            // past 2^31-1, which runc refuses and crun runs as root.
            let past_runc = request
                .user
                .split(':')
                .any(|id| id.parse::<u64>().is_ok_and(|id| id > i32::MAX as u64));
            match specwright_host_core::validate::validate_json(&json) {
                Err(e) if past_runc => assert!(e.to_string().contains("is past 2147483647"), "{e}"),
                Err(e) => panic!("a valid request gave an invalid spec: {e}\nrequest: {text}\nspec: {json}"),
                Ok(_) => assert!(!past_runc, "an id past 2^31-1 was let through: {json}"),
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
