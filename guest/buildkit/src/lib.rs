//! The default policy: the spec BuildKit v0.8.1 would generate. Ignores
//! settings and any previous spec, as BuildKit has neither.

use specwright_sdk::{export_policy, Host, Input, Policy, PolicyError, Spec};

struct BuildKit;

impl Policy for BuildKit {
    fn generate(input: Input, host: &mut Host) -> Result<Spec, PolicyError> {
        specwright_sdk::buildkit::generate(&input.request, &input.facts, host)
    }
}

export_policy!(BuildKit);
