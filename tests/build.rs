//! Builds the hostile test policy and the example policies for wasm32-wasip2, like host/build.rs
//! builds the default one, and hands its path to the tests.

use std::path::PathBuf;
use std::process::Command;

const SCRUBBED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_LLVM_COV",
    "CARGO_LLVM_COV_SHOW_ENV",
    "CARGO_LLVM_COV_TARGET_DIR",
    "LLVM_PROFILE_FILE",
    "CARGO_INCREMENTAL",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf();
    for watched in ["guest", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("target").join("guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(["-p", "specwright-testpolicy"])
        .args(["-p", "specwright-policy-hardened"])
        .args(["-p", "specwright-policy-mount-allowlist"])
        .arg("--target-dir")
        .arg(&target_dir);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running the nested cargo for the test policies");
    assert!(
        status.success(),
        "building the test policies for wasm32-wasip2 failed ({status})"
    );
    // The template is a standalone crate (as authors copy it), built the same way.
    let mut template = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()));
    template
        .current_dir(root.join("guest/template"))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    for var in SCRUBBED_ENV {
        template.env_remove(var);
    }
    let status = template
        .status()
        .expect("running the nested cargo for the policy template");
    assert!(
        status.success(),
        "building guest/template for wasm32-wasip2 failed ({status})"
    );
    for (var, file) in [
        ("SPECWRIGHT_TEST_POLICY_WASM", "specwright_testpolicy.wasm"),
        ("SPECWRIGHT_HARDENED_WASM", "specwright_policy_hardened.wasm"),
        (
            "SPECWRIGHT_MOUNT_ALLOWLIST_WASM",
            "specwright_policy_mount_allowlist.wasm",
        ),
        ("SPECWRIGHT_TEMPLATE_WASM", "my_policy.wasm"),
    ] {
        let wasm = target_dir.join("wasm32-wasip2/release").join(file);
        assert!(wasm.exists(), "{} was not produced", wasm.display());
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
}
