//! The embedded `buildkit-v0.8` policy: the spec BuildKit v0.8.1 would
//! generate. The same pipeline as the default policy, for another release.

use specwright_sdk::buildkit::{generate_release, Release};
use specwright_sdk::{export_policy, Host, Input, Policy, PolicyError, Spec};

struct BuildKitV08;

impl Policy for BuildKitV08 {
    const NAME: &'static str = "buildkit-v0.8";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "BuildKit v0.8.1's GenerateSpec, exactly: containerd 1.4's default spec, Docker's seccomp profile, BuildKit's mounts and selectors.";

    fn generate(input: Input, host: &mut Host) -> Result<Spec, PolicyError> {
        generate_release(Release::V0_8, &input.request, &input.facts, host)
    }
}

export_policy!(BuildKitV08);
