# Everyday commands. `just --list` shows them.

# Build the host (and, through host/build.rs, the default policy).
build:
    cargo build --release -p specwright

# Set up the machine and run every test.
test:
    scripts/setup
    cargo test

# Run the embedded default policy on the example request.
demo:
    cargo run -p specwright -- spec --request examples/minimal.request.json --host-facts examples/host-facts.json --state-dir target/demo-state

# Benchmarks side by side; writes BENCHMARKS.md.
bench:
    cargo build --release -p specwright -p specwright-bench
    target/release/specwright-bench --write BENCHMARKS.md

# This build's binaries beside an earlier commit's, in one run.
bench-baseline commit:
    scripts/bench-baseline {{commit}}

# Every cargo fuzz target for a bounded time (seconds each); installs
# nightly and cargo-fuzz when missing. CI runs it for 30 s a target.
fuzz seconds="60":
    scripts/fuzz {{seconds}}

# Formatting and lints, host and guest.
lint:
    cargo fmt --all --check
    cargo fmt --manifest-path fuzz/Cargo.toml --check
    cargo clippy --all-targets -- -D warnings
    cargo clippy -p specwright-sdk -p specwright-policy-buildkit -p specwright-policy-hardened -p specwright-policy-mount-allowlist -p specwright-testpolicy -p specwright-policy-compat-0-2-0 -p specwright-policy-env-guard --target wasm32-wasip2 --target-dir target/guest --profile guest -- -D warnings
