//! Builds the hostile test policy, the example policies and the policy
//! template for wasm32-wasip2, and hands their paths to the tests.

use specwright_build_support::{build_wasm, export_wasm_path, workspace_root};

fn main() {
    let root = workspace_root();
    build_wasm(
        &root,
        &root,
        &[
            "--profile",
            "guest",
            "-p",
            "specwright-testpolicy",
            "-p",
            "specwright-policy-hardened",
            "-p",
            "specwright-policy-mount-allowlist",
            "-p",
            "specwright-policy-compat-0-2-0",
            "-p",
            "specwright-policy-env-guard",
        ],
    );
    // The template is a standalone crate, built as an author would build it.
    build_wasm(&root, &root.join("guest/template"), &["--release"]);
    for (var, profile, file) in [
        ("SPECWRIGHT_TEST_POLICY_WASM", "guest", "specwright_testpolicy.wasm"),
        ("SPECWRIGHT_HARDENED_WASM", "guest", "specwright_policy_hardened.wasm"),
        (
            "SPECWRIGHT_MOUNT_ALLOWLIST_WASM",
            "guest",
            "specwright_policy_mount_allowlist.wasm",
        ),
        ("SPECWRIGHT_TEMPLATE_WASM", "release", "my_policy.wasm"),
        ("SPECWRIGHT_ENV_GUARD_WASM", "guest", "specwright_policy_env_guard.wasm"),
        (
            "SPECWRIGHT_COMPAT_0_2_0_WASM",
            "guest",
            "specwright_policy_compat_0_2_0.wasm",
        ),
    ] {
        export_wasm_path(&root, var, profile, file);
    }
}
