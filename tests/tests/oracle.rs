//! Every case in `../shared/oracle-v0.32/cases/` (BuildKit v0.32.2) through
//! the default policy and every case in `../shared/oracle/cases/` (BuildKit
//! v0.8.1) through the `buildkit-v0.8` policy, each by the command line and
//! by the library API, with real directories and real mounts in a private
//! mount namespace, compared with what BuildKit itself produced: as parsed
//! JSON, and in the order of its keys.

use std::path::Path;

use serde_json::Value;
use specwright_tests::{oracle_case_names, run_in_private_mount_namespace, shared_dir, OrderedJson};

const HELPER: &str = env!("CARGO_BIN_EXE_sw-testhelper");

/// The cases where specwright differs from BuildKit on purpose (see the
/// oracle README): BuildKit leaks a temporary mount after this error.
fn buildkit_leaks(name: &str) -> bool {
    name == "mount_no_source"
}

/// Where the cases of this run share the policies' compiled code (each
/// case has a state dir of its own): emptied once per run, so nothing a
/// former build compiled is reused.
fn compiled_policies() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oracle-compiled-policies");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn check_case(cases: &Path, name: &str, policy: &str, way: &str) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    check_case_in(cases, name, policy, way, work.path())
}

/// [`check_case`], the case's directories made under `work`.
fn check_case_in(cases: &Path, name: &str, policy: &str, way: &str, work: &Path) -> Result<(), String> {
    let expected_text =
        std::fs::read_to_string(cases.join(format!("{name}.expected.json"))).map_err(|e| e.to_string())?;
    let expected: Value = serde_json::from_str(&expected_text).map_err(|e| e.to_string())?;
    let out = run_in_private_mount_namespace(
        HELPER.as_ref(),
        &[
            "oracle",
            cases.to_str().unwrap(),
            name,
            work.to_str().unwrap(),
            policy,
            way,
            compiled_policies().to_str().unwrap(),
        ],
    )
    .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("helper failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let report_text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&report_text).map_err(|e| format!("report: {e}"))?;

    let mut problems = Vec::new();
    match (expected.get("spec"), expected.get("error").and_then(Value::as_str)) {
        (Some(want), _) => {
            if report["error"] != Value::Null {
                problems.push(format!("expected a spec, got error {}", report["error"]));
            } else if &report["spec"] != want {
                problems.push(format!("spec differs:\n{}", diff(want, &report["spec"])));
            } else {
                let order = ordered_spec(&expected_text)?.key_order_differences(&ordered_spec(&report_text)?);
                if !order.is_empty() {
                    problems.push(format!("keys in another order than BuildKit's:\n{}", order.join("\n")));
                }
            }
            let want_mounts = expected["local_mounts"].as_u64().unwrap_or(0);
            if report["mounts_during"].as_u64() != Some(want_mounts) {
                problems.push(format!(
                    "made {} temporary mounts, BuildKit made {want_mounts}",
                    report["mounts_during"]
                ));
            }
        }
        (None, Some(want_error)) => match report["error"].as_str() {
            Some(got) if got.contains(want_error) => {}
            Some(got) => problems.push(format!("error {got:?} does not contain {want_error:?}")),
            None => problems.push(format!("expected error {want_error:?}, got a spec")),
        },
        (None, None) => return Err("expected file has neither spec nor error".to_string()),
    }
    if !buildkit_leaks(name) || report["error"] != Value::Null {
        // After release, and after any error, nothing may remain.
        for key in ["mounts_after"] {
            if report[key].as_u64() != Some(0) {
                problems.push(format!("{key} = {}", report[key]));
            }
        }
        for key in ["leftover_mountpoints", "leftover_records"] {
            if report[key].as_array().is_none_or(|a| !a.is_empty()) {
                problems.push(format!("{key} = {}", report[key]));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The `spec` of an expected file or a report, keys in the text's order.
fn ordered_spec(text: &str) -> Result<OrderedJson, String> {
    let whole = OrderedJson::parse(text).map_err(|e| e.to_string())?;
    whole.get("spec").cloned().ok_or_else(|| "no spec".to_string())
}

/// The first differing paths between two JSON values.
fn diff(want: &Value, got: &Value) -> String {
    let mut out = Vec::new();
    diff_into(want, got, String::new(), &mut out);
    out.truncate(10);
    out.join("\n")
}

fn diff_into(want: &Value, got: &Value, at: String, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for key in w.keys().chain(g.keys().filter(|k| !w.contains_key(*k))) {
                diff_into(
                    w.get(key).unwrap_or(&Value::Null),
                    g.get(key).unwrap_or(&Value::Null),
                    format!("{at}/{key}"),
                    out,
                );
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                diff_into(a, b, format!("{at}/{i}"), out);
            }
        }
        _ if want != got => out.push(format!("  {at}: want {want}, got {got}")),
        _ => {}
    }
}

/// Every case of `oracle` (a directory beside the repository), at least
/// `at_least` of them, through `policy` the `way` given.
fn check_all(oracle: &str, at_least: usize, policy: &str, way: &str) {
    let cases = shared_dir().join(oracle).join("cases");
    let names = oracle_case_names(&cases).expect("the oracle cases beside the repository (../shared)");
    assert!(
        names.len() >= at_least,
        "only {} oracle cases found in {}",
        names.len(),
        cases.display()
    );
    let failures: Vec<String> = names
        .iter()
        .filter_map(|name| {
            check_case(&cases, name, policy, way)
                .err()
                .map(|e| format!("--- {name}:\n{e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed ({policy}, {way}):\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

#[test]
fn every_v0_32_case_is_reproduced_by_the_default_policy_through_the_cli() {
    check_all("oracle-v0.32", 48, "default", "cli");
}

#[test]
fn every_v0_32_case_is_reproduced_by_the_default_policy_through_the_api() {
    check_all("oracle-v0.32", 48, "default", "api");
}

#[test]
fn every_v0_8_case_is_reproduced_by_buildkit_v0_8_through_the_cli() {
    check_all("oracle", 31, "buildkit-v0.8", "cli");
}

#[test]
fn every_v0_8_case_is_reproduced_by_buildkit_v0_8_through_the_api() {
    check_all("oracle", 31, "buildkit-v0.8", "api");
}

/// Regression: BuildKit's long overlay (18 lower layers of some 230
/// characters) made under a temporary path of about 30 characters has
/// more options than the kernel's one page of mount data, and mounting it
/// failed (ENOENT: the kernel had cut the last layer's name).
#[test]
fn an_overlay_of_long_layers_mounts_under_a_long_temporary_path() {
    let cases = shared_dir().join("oracle-v0.32").join("cases");
    for way in ["cli", "api"] {
        let work = tempfile::Builder::new()
            .prefix("specwright-long-work-")
            .tempdir_in("/tmp")
            .unwrap();
        assert!(work.path().as_os_str().len() >= 30, "{}", work.path().display());
        check_case_in(&cases, "v32_overlay_long_options", "default", way, work.path())
            .unwrap_or_else(|e| panic!("{way}: {e}"));
    }
}
