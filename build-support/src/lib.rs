//! Used by `host/build.rs` and `tests/build.rs` to build policies for
//! `wasm32-wasip2` with a nested cargo, in one shared target directory
//! (`target/guest`) so every profile and lint run reuses the same build.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Variables of the outer build that break or slow the nested one: target
/// and flags meant for the host, wrappers (clippy, sccache) and coverage
/// instrumentation.
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

/// The shadow stack of our policies. rustc's default for wasm is 1 MiB,
/// placed first in linear memory, and the pooling allocator resets every
/// byte below the high-water mark after each step: 1 MiB of memset per fresh
/// instance for a policy that uses a few KiB. 64 KiB holds the deepest
/// document serde_json accepts (tested: `the_guest_stack_holds_...`); an
/// overflow runs below address 0 and traps, it cannot corrupt the heap.
const GUEST_STACK_BYTES: usize = 64 << 10;

/// Linear memory a policy starts with: enough for the stack, static data
/// and the heap of a typical step, so that it does not grow. Growing costs
/// an `mprotect` per instance and another to shrink the slot back on reset,
/// each a TLB shootdown on the other cores (7% of a step in perf).
const GUEST_INITIAL_MEMORY_BYTES: usize = 256 << 10;

/// The workspace root, from a build script's `CARGO_MANIFEST_DIR` (a
/// direct child of the root).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("the crate lives in the workspace root")
        .to_path_buf();
    for watched in ["guest", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    root
}

/// The shared target directory of the nested builds.
pub fn guest_target_dir(root: &Path) -> PathBuf {
    root.join("target").join("guest")
}

/// Runs `cargo build --target wasm32-wasip2 ARGS` in `dir` into the shared
/// target directory; panics (failing the build script) with a hint if it fails.
pub fn build_wasm(root: &Path, dir: &Path, args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--target", "wasm32-wasip2"])
        .args(args)
        .arg("--target-dir")
        .arg(guest_target_dir(root));
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    // The outer build's profile overrides (CARGO_PROFILE_RELEASE_DEBUG, ...)
    // would change the policies, whose profile `guest` inherits `release`.
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("CARGO_PROFILE_") {
            cmd.env_remove(var);
        }
    }
    cmd.env(
        "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
        format!(
            "-C link-arg=-zstack-size={GUEST_STACK_BYTES} -C link-arg=--initial-memory={GUEST_INITIAL_MEMORY_BYTES}"
        ),
    );
    let status = cmd.status().expect("running the nested cargo for wasm32-wasip2");
    assert!(
        status.success(),
        "building {args:?} for wasm32-wasip2 failed ({status}); is the target installed? `rustup target add wasm32-wasip2`"
    );
}

/// Hands the path of a built `.wasm` to the crate as `env!(var)`.
pub fn export_wasm_path(root: &Path, var: &str, profile: &str, file: &str) {
    println!("cargo:rustc-env={var}={}", built_wasm(root, profile, file).display());
}

/// Where the guest build put `file`, which it must have produced.
pub fn built_wasm(root: &Path, profile: &str, file: &str) -> PathBuf {
    let wasm = guest_target_dir(root).join("wasm32-wasip2").join(profile).join(file);
    assert!(wasm.exists(), "{} was not produced", wasm.display());
    wasm
}
