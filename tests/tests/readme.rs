//! README's Quick start, run as README shows it: the first command read
//! from README itself (not copied here), from the repository's root, on
//! this machine as it is. It must print the embedded default policy's
//! config.json for the example step.

use std::path::Path;
use std::process::Command;

/// The commands of README's Quick start block, in order.
fn quick_start_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let section = readme
        .split("\n## Quick start")
        .nth(1)
        .expect("README has a Quick start section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("README's Quick start has a sh block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn readmes_first_command_prints_the_default_policys_spec() {
    let commands = quick_start_commands();
    assert_eq!(commands.len(), 2, "two commands: {commands:?}");
    let first = &commands[0];
    assert!(first.contains(" spec "), "the first runs the main job: {first}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("sh")
        .arg("-c")
        .arg(first)
        .current_dir(&root)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{first}\nfailed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // scripts/setup prints its own lines first; config.json is the JSON.
    let json = &stdout[stdout.find("{\n").expect("no JSON on standard output")..];
    let spec: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("examples/minimal.request.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], expected["args"], "{json}");
    assert!(
        spec["ociVersion"].is_string() && spec["linux"]["seccomp"].is_object(),
        "{json}"
    );
}
