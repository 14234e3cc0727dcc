//! Builds the Rust `env-guard` for wasm32-wasip2, for the benchmark of
//! policies by language.

use specwright_build_support::{build_wasm, export_wasm_path, workspace_root};

fn main() {
    let root = workspace_root();
    build_wasm(
        &root,
        &root,
        &["--profile", "guest", "-p", "specwright-policy-env-guard"],
    );
    export_wasm_path(
        &root,
        "SPECWRIGHT_ENV_GUARD_WASM",
        "guest",
        "specwright_policy_env_guard.wasm",
    );
}
