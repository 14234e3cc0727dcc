//! The `specwright` binary; the command line lives in `specwright::cli`.

fn main() {
    grow_the_heap_in_large_steps();
    // Started by the `specwright-runc` front for a review.
    if specwright::runc::started_as_wrapper() {
        std::process::exit(specwright::runc::main());
    }
    std::process::exit(specwright::cli::main());
}

/// glibc grows each heap by 32 MiB of address space at a time instead of
/// 128 KiB (only touched pages become memory): a `spec` run allocates on
/// two threads at once, the policy runtime and the schema validator (why:
/// BENCHMARKS.md, the note on the CLI against `crun spec`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn grow_the_heap_in_large_steps() {
    // SAFETY: mallopt only sets a glibc malloc tunable; it is called before
    // any other thread exists, and a failure (return 0) leaves the default.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 32 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn grow_the_heap_in_large_steps() {}
