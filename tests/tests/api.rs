//! The library API as a build system embeds it, with real mounts in a
//! private mount namespace: what a step holds while prepared, and nothing
//! after it is released, dropped, kept and released by id, or denied.

use serde_json::{json, Value};
use specwright_tests::run_in_private_mount_namespace;

const HELPER: &str = env!("CARGO_BIN_EXE_sw-testhelper");

#[test]
fn a_step_holds_its_mounts_until_released_dropped_or_kept() {
    let work = tempfile::tempdir().unwrap();
    let out = run_in_private_mount_namespace(HELPER.as_ref(), &["api", work.path().to_str().unwrap()]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Four request mounts with selectors, as BuildKit v0.32 makes them (the
    // oracle cases count BuildKit's mounts): the two read-only binds and
    // the overlay are mounted and their selectors pinned, the read-write
    // bind's selector pinned in place: 3 + 3 + 1.
    assert_eq!(r["held_released"], 7, "{r}");
    assert_eq!(r["released"], 7, "{r}");
    assert_eq!(r["after_release"], 0, "{r}");
    assert_eq!(r["held_dropped"], 7, "{r}");
    assert_eq!(r["after_drop"], 0, "dropping a step releases it: {r}");
    assert_eq!(r["after_keep"], 7, "a kept step keeps its mounts: {r}");
    assert!(
        r["again"].as_str().is_some_and(|e| e.contains("already holds mounts")),
        "a kept step is not prepared twice: {r}"
    );
    assert_eq!(r["released_by_id"], 7, "Workspace::release undoes a kept step: {r}");
    assert_eq!(r["after_release_by_id"], 0, "{r}");
    assert_eq!(r["held_orphaned"], 7, "{r}");
    assert_eq!(
        r["collected"],
        json!(["released faulty"]),
        "gc collects the orphan: {r}"
    );
    assert_eq!(r["after_gc"], 0, "{r}");
    assert!(
        r["foreign"]
            .as_str()
            .is_some_and(|e| e.contains("loaded by another engine")),
        "a chain of another engine is an error, not a panic: {r}"
    );
    assert_eq!(r["counted_hostname"], "call-1", "settings given as a value: {r}");
    assert!(
        r["held_when_cancelled"].as_u64().is_some_and(|n| n > 0),
        "the policy held a mount when the token was cancelled: {r}"
    );
    assert!(
        r["cancelled"]
            .as_str()
            .is_some_and(|e| e.contains("interrupted by cancellation")),
        "the step stopped for the token, not the ten-minute limit: {r}"
    );
    assert_eq!(r["after_cancel"], 0, "a cancelled step leaves no mount: {r}");
    assert!(
        r["denied"].as_str().is_some_and(|e| e.contains("denied on purpose")),
        "{r}"
    );
    assert_eq!(r["written_args"], json!(["/bin/true"]), "{r}");
    assert_eq!(r["left"]["mounts"], 0, "{r}");
    assert_eq!(r["left"]["records"], json!([]), "{r}");
}
