//! The default policy: the spec BuildKit v0.32.2 would generate. Ignores
//! settings and any previous spec, as BuildKit has neither.

use specwright_sdk::buildkit::{generate_release, Release};
use specwright_sdk::{export_policy, Host, Input, Policy, PolicyError, Spec};

struct BuildKit;

impl Policy for BuildKit {
    const NAME: &'static str = "default";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "BuildKit v0.32.2's GenerateSpec, exactly: containerd v2's default spec, moby/profiles' seccomp profile, BuildKit's mounts, pinned selectors, ulimits, resources, tracing and CDI devices.";

    fn generate(input: Input, host: &mut Host) -> Result<Spec, PolicyError> {
        generate_release(Release::V0_32, &input.request, &input.facts, host)
    }
}

export_policy!(BuildKit);
