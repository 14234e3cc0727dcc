//! Builds the embedded policies (`default` and `buildkit-v0.8`) for wasm32-wasip2 with a nested cargo and
//! hands their paths to `policy.rs`, which embeds them; and the example
//! policies `hardened` and `mount-allowlist` and the hostile test policy,
//! whose paths the tests of `specwright-runc` (in `tests/`, beside the
//! binary) load as users do.

use sha2::{Digest, Sha256};
use specwright_build_support::{build_wasm, built_wasm, export_wasm_path, workspace_root};

/// Hands an embedded policy's path to the crate as `env!(var)`, and its
/// SHA-256 (hex) as `env!("{var}_SHA256")`: the compile cache's key for
/// it, known without hashing it again at every start.
fn export_embedded(root: &std::path::Path, var: &str, file: &str) {
    export_wasm_path(root, var, "guest", file);
    let bytes = std::fs::read(built_wasm(root, "guest", file)).expect("reading a built policy");
    let hex: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env={var}_SHA256={hex}");
}

fn main() {
    // Relative relocations packed (DT_RELR): the dynamic loader of a
    // binary this size otherwise reads a megabyte of them at every start.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    let root = workspace_root();
    build_wasm(
        &root,
        &root,
        &[
            "--profile",
            "guest",
            "-p",
            "specwright-policy-buildkit",
            "-p",
            "specwright-policy-buildkit-v0-8",
            "-p",
            "specwright-policy-hardened",
            "-p",
            "specwright-policy-mount-allowlist",
            "-p",
            "specwright-testpolicy",
            "-p",
            "specwright-policy-env-guard",
        ],
    );
    export_embedded(
        &root,
        "SPECWRIGHT_DEFAULT_POLICY_WASM",
        "specwright_policy_buildkit.wasm",
    );
    export_embedded(
        &root,
        "SPECWRIGHT_BUILDKIT_V0_8_POLICY_WASM",
        "specwright_policy_buildkit_v0_8.wasm",
    );
    export_wasm_path(
        &root,
        "SPECWRIGHT_HARDENED_WASM",
        "guest",
        "specwright_policy_hardened.wasm",
    );
    export_wasm_path(
        &root,
        "SPECWRIGHT_MOUNT_ALLOWLIST_WASM",
        "guest",
        "specwright_policy_mount_allowlist.wasm",
    );
    export_wasm_path(
        &root,
        "SPECWRIGHT_TEST_POLICY_WASM",
        "guest",
        "specwright_testpolicy.wasm",
    );
    export_wasm_path(
        &root,
        "SPECWRIGHT_ENV_GUARD_WASM",
        "guest",
        "specwright_policy_env_guard.wasm",
    );
}
