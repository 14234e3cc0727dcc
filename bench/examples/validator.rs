//! How long the first validation takes (building the runtime-spec schema
//! validator) and a warm one, for profiling the CLI's start-up:
//! `cargo run --release -p specwright-bench --example validator`.

use std::time::Instant;

use anyhow::Result;
use specwright_bench::cases_dir;

fn main() -> Result<()> {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cases_dir().join("minimal.expected.json"))?)?;
    let spec = expected["spec"].to_string();
    let t0 = Instant::now();
    specwright_host_core::validate::validate_json(&spec)?;
    let t1 = Instant::now();
    specwright_host_core::validate::validate_json(&spec)?;
    let t2 = Instant::now();
    println!("first validation {:?}, warm {:?}", t1 - t0, t2 - t1);
    Ok(())
}
