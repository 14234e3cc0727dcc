//! The `specwright` binary; the command line lives in `specwright::cli`.

fn main() {
    grow_the_heap_in_large_steps();
    std::process::exit(specwright::cli::main());
}

/// A `spec` run allocates a few megabytes on two threads at once (the
/// policy runtime, and the schema validator in the background); glibc grows
/// each heap 128 KiB at a time by default, and every step takes the
/// address-space lock that the other thread's page faults wait on. Growing
/// by 32 MiB of address space (only touched pages become memory) made a warm
/// `specwright spec` about 1.5 ms faster here (BENCHMARKS.md).
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
