//! Turns each seccomp profile in `data/` into static tables, so no policy
//! instance parses a profile at run time.

#[path = "src/seccomp_profile.rs"]
mod seccomp_profile;

/// (profile file, generated table) for each BuildKit release.
const PROFILES: &[(&str, &str)] = &[
    ("data/seccomp-v0.8.profile", "seccomp_table_v0_8.rs"),
    ("data/seccomp-v0.32.profile", "seccomp_table_v0_32.rs"),
];

fn main() {
    println!("cargo:rerun-if-changed=src/seccomp_profile.rs");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (file, table) in PROFILES {
        println!("cargo:rerun-if-changed={file}");
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let profile = seccomp_profile::parse_profile(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        std::fs::write(out_dir.join(table), seccomp_profile::to_rust(&profile)).expect("writing a seccomp table");
    }
}
