//! Builds the default policy for wasm32-wasip2 with a nested cargo and
//! hands its path to `policy.rs`, which embeds it.

use specwright_build_support::{build_wasm, export_wasm_path, workspace_root};

fn main() {
    let root = workspace_root();
    build_wasm(
        &root,
        &root,
        &["--profile", "guest", "-p", "specwright-policy-buildkit"],
    );
    export_wasm_path(
        &root,
        "SPECWRIGHT_DEFAULT_POLICY_WASM",
        "guest",
        "specwright_policy_buildkit.wasm",
    );
}
