//! The default policy: the spec BuildKit v0.8.1 would generate. Ignores
//! settings and any previous spec, as BuildKit has neither.

use specwright_sdk::{export_policy, Host, Input, Policy, PolicyError, Spec};

struct BuildKit;

impl Policy for BuildKit {
    const NAME: &'static str = "default";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "BuildKit v0.8.1's GenerateSpec, exactly: containerd's default spec, Docker's seccomp profile, BuildKit's mounts and selectors.";

    fn generate(input: Input, host: &mut Host) -> Result<Spec, PolicyError> {
        specwright_sdk::buildkit::generate(&input.request, &input.facts, host)
    }
}

export_policy!(BuildKit);
