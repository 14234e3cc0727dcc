//! The state directory's step records, as `release` and `gc` read them: a
//! corrupt or hostile record (any file name, any content) is reported, not
//! trusted. Property: whatever the record says, every privileged operation
//! stays on a mountpoint directly under `<state>/mounts/`, and nothing
//! outside the step's own files is removed.
//!
//! Input: the record's file name under `steps/` (without `.json`), a
//! newline, then the record's content.

#![no_main]

use libfuzzer_sys::fuzz_target;
use specwright_host_core::audit::Audit;
use specwright_host_core::state::StateDir;
use specwright_host_core::step::{gc, release_step};
use specwright_host_core::sys::{Op, RealSyscalls, RecordingSyscalls};

/// A directory entry's name that the file system accepts.
fn file_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 200 && !name.contains('/') && !name.contains('\0')
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (id, content) = text.split_once('\n').unwrap_or((text, ""));
    if !file_name(&format!("{id}.json")) {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path().join("state");
    let state = StateDir::open(&root).expect("the state directory");
    // What must survive: a bystander step's bundle and mountpoint, and a
    // file beside the state directory.
    let bystander_bundle = root.join("bundles/bystander/config.json");
    std::fs::create_dir_all(bystander_bundle.parent().expect("a parent")).expect("a bundle");
    std::fs::write(&bystander_bundle, "{}").expect("a bundle file");
    std::fs::create_dir(root.join("mounts/bystander-0")).expect("a mountpoint");
    let outside = dir.path().join("outside");
    std::fs::write(&outside, "keep").expect("a file outside");
    // And a bystander's SELinux level, which a record may name.
    std::fs::create_dir_all(root.join("selinux")).expect("the selinux dir");
    let bystander_level = root.join("selinux/s0:c1,c2");
    std::fs::write(&bystander_level, "bystander").expect("a reservation");
    std::fs::write(root.join("steps").join(format!("{id}.json")), content).expect("the record");

    if let Ok(Some(record)) = state.read_record(id) {
        assert_eq!(record.id, id, "a record for another step was accepted");
    }
    // The state dir's own files are real (the bystander's must survive
    // the step's removal); mounts are only planned.
    let sys = RecordingSyscalls::dry_run_over_state(Box::new(RealSyscalls));
    let audit = Audit::events_only();
    let _ = release_step(&state, &sys, &audit, id);
    let _ = gc(&state, &sys, &audit);

    let mounts = root.join("mounts");
    for op in sys.ops() {
        if let Op::DeleteContainer { id: container, .. } = &op {
            assert_eq!(container, id, "another step's container was deleted");
            continue;
        }
        if let Op::WriteRecord { step }
        | Op::RemoveRecord { step }
        | Op::ReadRecord { step }
        | Op::LockStep { step }
        | Op::RemoveLock { step }
        | Op::HasBundle { step }
        | Op::CreateBundle { step }
        | Op::RemoveBundle { step } = &op
        {
            assert_eq!(step, id, "another step's files were touched");
            continue;
        }
        let Some(path) = op.path() else { continue };
        assert!(
            path.parent() == Some(mounts.as_path()) && path.file_name().is_some_and(|n| n != ".." && n != "."),
            "{op:?} is not on a mountpoint under {}\nrecord {id:?}: {content}",
            mounts.display()
        );
        assert_ne!(
            path,
            root.join("mounts/bystander-0"),
            "a bystander's mountpoint was touched"
        );
    }
    assert!(outside.is_file(), "a file outside the state directory was removed");
    assert!(
        id == "bystander" || bystander_level.is_file(),
        "a bystander's SELinux level was let go"
    );
    assert!(
        mounts.is_dir() && root.join("steps").is_dir(),
        "the state directory was removed"
    );
    if id != "bystander" {
        assert!(
            bystander_bundle.is_file(),
            "another step's bundle was removed (record {id:?})"
        );
    }
});
