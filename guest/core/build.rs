//! Turns `data/seccomp-default.profile` into static tables, so no policy
//! instance parses the profile at run time.

#[path = "src/seccomp_profile.rs"]
mod seccomp_profile;

fn main() {
    println!("cargo:rerun-if-changed=data/seccomp-default.profile");
    println!("cargo:rerun-if-changed=src/seccomp_profile.rs");
    let text = std::fs::read_to_string("data/seccomp-default.profile").expect("data/seccomp-default.profile");
    let profile = seccomp_profile::parse_profile(&text).unwrap_or_else(|e| panic!("data/seccomp-default.profile: {e}"));
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("seccomp_table.rs");
    std::fs::write(&out, seccomp_profile::to_rust(&profile)).expect("writing the seccomp table");
}
