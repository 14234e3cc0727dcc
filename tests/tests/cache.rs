//! The compile cache under `<state>/cache/`: filled ahead of time, and an
//! entry used only for the component it was compiled from, whole.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use specwright_tests::{oracle_cases_dir, oracle_facts_file, workdir};

const HELPER: &str = env!("CARGO_BIN_EXE_sw-testhelper");
const HARDENED: &str = env!("SPECWRIGHT_HARDENED_WASM");

fn cli(args: &[&str]) -> Output {
    Command::new(HELPER).arg("cli").args(args).output().unwrap()
}

/// The entries of the compile cache in `state` (not their compile locks).
fn cache_entries(state: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(state.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    entries.sort();
    entries
}

/// `spec` of the oracle's minimal request on `state`, which must succeed;
/// its spec.
fn minimal_spec(state: &Path) -> Value {
    let request = oracle_cases_dir().join("minimal.request.json");
    let out = cli(&[
        "spec",
        "--state-dir",
        state.to_str().unwrap(),
        "--request",
        request.to_str().unwrap(),
        "--host-facts",
        oracle_facts_file().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The spec BuildKit wrote for the minimal request.
fn minimal_expected() -> Value {
    let text = std::fs::read_to_string(oracle_cases_dir().join("minimal.expected.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["spec"].clone()
}

#[test]
fn compile_fills_the_cache_and_a_broken_cache_entry_is_replaced() {
    let (_dir, work) = workdir();
    let state = work.join("state");
    let state_str = state.to_str().unwrap();
    let out = cli(&["policy", "compile", "--state-dir", state_str, "default", HARDENED]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches(": compiled").count(), 2);
    let out = cli(&["policy", "compile", "--state-dir", state_str, "default"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("default: already cached"));
    let entries = cache_entries(&state);
    assert_eq!(entries.len(), 2, "{entries:?}");
    for entry in &entries {
        std::fs::write(entry, b"not precompiled code").unwrap();
    }
    assert_eq!(minimal_spec(&state), minimal_expected());
    let out = cli(&["policy", "compile", "--state-dir", state_str, "default"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("default: already cached"),
        "the entry was rewritten"
    );
}

/// Regression: a cache entry was trusted by its name, so another policy's
/// entry renamed to the default's ran as the default policy.
#[test]
fn a_cache_entry_is_used_only_for_the_component_it_was_compiled_from() {
    let (_dir, work) = workdir();
    let entry_of = |state: &Path, policy: &str| -> PathBuf {
        let out = cli(&["policy", "compile", "--state-dir", state.to_str().unwrap(), policy]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut entries = cache_entries(state);
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries.remove(0)
    };
    let state = work.join("state");
    let default_entry = entry_of(&state, "default");
    let hardened_entry = entry_of(&work.join("other"), HARDENED);
    std::fs::copy(&hardened_entry, &default_entry).unwrap();
    assert_eq!(
        minimal_spec(&state),
        minimal_expected(),
        "the hardened policy's code ran as the default"
    );
    let out = cli(&["policy", "compile", "--state-dir", state.to_str().unwrap(), "default"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("default: already cached"),
        "the entry was compiled over"
    );
}

/// Regression: an entry damaged on disk (a flipped byte in its code, a
/// torn end) passed wasmtime's own header checks and ran; each is now
/// compiled over, and the step's spec is the default's.
#[test]
fn a_damaged_cache_entry_is_compiled_over_not_run() {
    let (_dir, work) = workdir();
    let state = work.join("state");
    let state_str = state.to_str().unwrap();
    let out = cli(&["policy", "compile", "--state-dir", state_str, "default"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entry = cache_entries(&state).remove(0);
    let whole = std::fs::read(&entry).unwrap();
    let mut flipped = whole.clone();
    flipped[whole.len() / 2] ^= 0x01;
    let torn = whole[..whole.len() - 1].to_vec();
    let mut longer = whole.clone();
    longer.push(0);
    let expected = minimal_expected();
    for (name, damaged) in [("flipped", flipped), ("torn", torn), ("longer", longer)] {
        std::fs::write(&entry, &damaged).unwrap();
        let out = cli(&["policy", "compile", "--state-dir", state_str, "default"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("default: compiled"),
            "{name}: the damaged entry was used: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            std::fs::read(&entry).unwrap(),
            whole,
            "{name}: the entry is whole again"
        );
        std::fs::write(&entry, &damaged).unwrap();
        assert_eq!(minimal_spec(&state), expected, "{name}");
        assert_eq!(std::fs::read(&entry).unwrap(), whole, "{name}: spec rewrote the entry");
        let out = cli(&["release", "--state-dir", state_str, "test-id"]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The cache's entries go through the workspace's syscalls like every
/// other state file: a load that misses takes the entry's compile lock,
/// reads again (another process may have compiled it meanwhile), sweeps
/// and writes through them, a second load only reads, an entry that cannot be read is compiled over,
/// a fault in the write fails the load naming the entry, and a dry run
/// reads nothing back and writes nothing.
#[test]
fn cache_entries_are_read_and_written_through_the_workspaces_syscalls() {
    use specwright::{Engine, Limits, Op, RealSyscalls, RecordingSyscalls, Workspace};
    use std::sync::Arc;
    let (_dir, work) = workdir();
    let cache_ops = |recorder: &RecordingSyscalls| -> Vec<Op> {
        recorder
            .ops()
            .into_iter()
            .filter(|op| {
                matches!(
                    op,
                    Op::ReadCacheEntry { .. } | Op::LockCacheEntry { .. } | Op::WriteCacheEntry { .. } | Op::SweepCache
                )
            })
            .collect()
    };
    let load = |state: &Path, recorder: Arc<RecordingSyscalls>| {
        let workspace = Workspace::open_with(state, recorder).unwrap();
        let engine = Engine::new(Limits::default())
            .unwrap()
            .with_cache(workspace.compile_cache().unwrap());
        engine.load_default().map(|_| ())
    };

    let state = work.join("state");
    let first = Arc::new(RecordingSyscalls::failing_at(Box::new(RealSyscalls), None));
    load(&state, first.clone()).unwrap();
    let ops = cache_ops(&first);
    assert!(
        matches!(
            &ops[..],
            [
                Op::ReadCacheEntry { .. },
                Op::LockCacheEntry { .. },
                Op::ReadCacheEntry { .. },
                Op::SweepCache,
                Op::WriteCacheEntry { name }
            ] if name.ends_with(".cwasm")
        ),
        "{ops:?}"
    );
    let second = Arc::new(RecordingSyscalls::failing_at(Box::new(RealSyscalls), None));
    load(&state, second.clone()).unwrap();
    // The entry, and the memo saying whether its CRC was checked already.
    assert!(
        matches!(&cache_ops(&second)[..], [Op::ReadCacheEntry { .. }, Op::ReadCacheEntry { name }] if name.ends_with(".verified")),
        "{:?}",
        second.ops()
    );

    // An entry that cannot be read is a miss, not an error: read again
    // under the compile lock, and used when that read finds it whole.
    let read_at = second
        .ops()
        .iter()
        .position(|op| matches!(op, Op::ReadCacheEntry { .. }))
        .unwrap();
    let unreadable = Arc::new(RecordingSyscalls::failing_at(Box::new(RealSyscalls), Some(read_at)));
    load(&state, unreadable.clone()).unwrap();
    assert!(
        matches!(
            &cache_ops(&unreadable)[..],
            [
                Op::ReadCacheEntry { .. },
                Op::LockCacheEntry { .. },
                Op::ReadCacheEntry { .. },
                Op::ReadCacheEntry { .. }
            ]
        ),
        "{:?}",
        unreadable.ops()
    );
    // Failing under the lock too, it is compiled over (the inner recorder
    // does not see the read the outer one failed).
    let reread_at = read_at + 1;
    let twice = Arc::new(RecordingSyscalls::failing_at(
        Box::new(RecordingSyscalls::failing_at(Box::new(RealSyscalls), Some(reread_at))),
        Some(read_at),
    ));
    load(&state, twice.clone()).unwrap();
    assert!(
        matches!(
            &cache_ops(&twice)[..],
            [
                Op::ReadCacheEntry { .. },
                Op::LockCacheEntry { .. },
                Op::ReadCacheEntry { .. },
                Op::SweepCache,
                Op::WriteCacheEntry { .. }
            ]
        ),
        "{:?}",
        twice.ops()
    );

    let faulty_state = work.join("faulty");
    let write_at = first
        .ops()
        .iter()
        .position(|op| matches!(op, Op::WriteCacheEntry { .. }))
        .unwrap();
    let faulty = Arc::new(RecordingSyscalls::failing_at(Box::new(RealSyscalls), Some(write_at)));
    let err = load(&faulty_state, faulty).unwrap_err().to_string();
    assert!(err.contains("EIO") && err.contains(".cwasm"), "{err}");
    assert!(
        err.contains("compile cache") && !err.contains("not a valid WebAssembly component"),
        "a full disk is not a broken policy: {err}"
    );
    // Only the entry's compile lock, which is kept.
    let left: Vec<String> = std::fs::read_dir(faulty_state.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".cwasm.lock"))
        .collect();
    assert!(left.is_empty(), "the failed write left {left:?}");

    let planned = Arc::new(RecordingSyscalls::dry_run_over_state(Box::new(RealSyscalls)));
    let dry_state = work.join("dry");
    let workspace = Workspace::open_with(&dry_state, planned.clone()).unwrap();
    let cache = workspace.compile_cache().unwrap();
    let recorder = Arc::new(RecordingSyscalls::dry_run());
    let planned_cache = specwright::CompileCache::new(cache.dir().clone(), recorder.clone());
    Engine::new(Limits::default())
        .unwrap()
        .with_cache(planned_cache)
        .load_default()
        .unwrap();
    assert_eq!(cache_ops(&recorder).len(), 5, "{:?}", recorder.ops());
    assert_eq!(
        std::fs::read_dir(dry_state.join("cache")).unwrap().count(),
        0,
        "a dry run writes no entry"
    );
}

/// The memos: a policy file left unchanged is loaded from the cache
/// without being read and hashed again, and an entry whose CRC matched is
/// not checksummed again while it is the same file; a policy file changed
/// in place (its size and modification time kept) is hashed and compiled
/// anew, never run as the code compiled for what it held before, and an
/// entry damaged in place is checksummed again and compiled over.
#[test]
fn a_policy_file_or_an_entry_changed_in_place_is_checked_anew_despite_the_memos() {
    use specwright::{Engine, Limits, Op, RealSyscalls, RecordingSyscalls, Workspace};
    use std::sync::Arc;
    let (_dir, work) = workdir();
    let state = work.join("state");
    let policy = work.join("policy.wasm");
    std::fs::copy(HARDENED, &policy).unwrap();
    let policy_arg = policy.to_str().unwrap().to_string();
    // The cache operations of one load of the policy file.
    let load = || -> Vec<Op> {
        let recorder = Arc::new(RecordingSyscalls::failing_at(Box::new(RealSyscalls), None));
        let workspace = Workspace::open_with(&state, recorder.clone()).unwrap();
        let engine = Engine::new(Limits::default())
            .unwrap()
            .with_cache(workspace.compile_cache().unwrap());
        engine.load_arg(&policy_arg).unwrap();
        recorder
            .ops()
            .into_iter()
            .filter(|op| matches!(op, Op::ReadCacheEntry { .. } | Op::WriteCacheEntry { .. }))
            .collect()
    };
    let wrote = |ops: &[Op], suffix: &str| {
        ops.iter()
            .any(|op| matches!(op, Op::WriteCacheEntry { name } if name.ends_with(suffix)))
    };
    // Changes `file` in place: its size and modification time kept.
    let change_in_place = |file: &Path, at: usize| {
        let mut bytes = std::fs::read(file).unwrap();
        bytes[at] ^= 0x01;
        let modified = std::fs::metadata(file).unwrap().modified().unwrap();
        let handle = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        std::io::Write::write_all(&mut &handle, &bytes).unwrap();
        handle.set_modified(modified).unwrap();
    };

    let first = load();
    assert!(
        wrote(&first, ".cwasm") && !wrote(&first, ".sha256") && !wrote(&first, ".verified"),
        "files just written are not remembered: {first:?}"
    );
    std::thread::sleep(specwright::CompileCache::SETTLED + std::time::Duration::from_secs(2));
    let settled = load();
    assert!(
        !wrote(&settled, ".cwasm") && wrote(&settled, ".sha256") && wrote(&settled, ".verified"),
        "{settled:?}"
    );
    let remembered = load();
    assert!(
        matches!(&remembered[..], [Op::ReadCacheEntry { name: memo }, Op::ReadCacheEntry { name: entry }, Op::ReadCacheEntry { name: verified }]
            if memo.ends_with(".sha256") && entry.ends_with(".cwasm") && verified.ends_with(".cwasm.verified")),
        "a remembered file is loaded through its memos: {remembered:?}"
    );

    // The entry damaged in place, in its code: checksummed again.
    let entries = cache_entries(&state);
    assert_eq!(entries.len(), 1);
    change_in_place(&entries[0], 4096);
    let damaged = load();
    assert!(wrote(&damaged, ".cwasm"), "a damaged entry ran: {damaged:?}");

    // One byte of a string in the policy's producers section changed, in
    // place (rustc, the length of its version, the version).
    let bytes = std::fs::read(&policy).unwrap();
    let producers = bytes.windows(9).position(|w| w == b"producers").unwrap();
    let at = producers + bytes[producers..].windows(5).position(|w| w == b"rustc").unwrap() + 6;
    assert!(bytes[at].is_ascii_digit(), "{}", bytes[at] as char);
    change_in_place(&policy, at);
    let changed = load();
    assert!(
        wrote(&changed, ".cwasm"),
        "the changed file ran as the code of the old one: {changed:?}"
    );
    assert_eq!(cache_entries(&state).len(), 2);
}
