//! The state dir on real directories: records, planted files, ownership.

use std::sync::atomic::Ordering;

use nix::sys::stat::Mode;

use super::at::TMP_SEQ;
use super::dir::MAX_RECORD_BYTES;
use super::record::{HeldMount, MountpointKind, Owner};
use super::*;

#[test]
fn records_round_trip_and_corruption_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    assert!(state.read_record("s").unwrap().is_none());
    let mut record = StepRecord::new("s", Owner::of_pid(std::process::id()));
    record.mounts.push(HeldMount {
        name: "s-0".into(),
        kind: MountpointKind::File,
        stacked: 1,
    });
    state.write_record(&record).unwrap();
    assert_eq!(state.read_record("s").unwrap(), Some(record));
    assert_eq!(state.step_ids().unwrap(), ["s"]);

    std::fs::write(dir.path().join("steps/t.json"), "{not json").unwrap();
    assert!(matches!(state.read_record("t"), Err(StateError::Corrupt { .. })));
    std::fs::write(
        dir.path().join("steps/u.json"),
        r#"{"id":"u","owner":{"pid":1,"start_time":null},"mounts":[{"name":"../../etc","stacked":1}]}"#,
    )
    .unwrap();
    let err = state.read_record("u").unwrap_err().to_string();
    assert!(err.contains("not a plain name"), "{err}");
    std::fs::write(
        dir.path().join("steps/v.json"),
        r#"{"id":"w","owner":{"pid":1,"start_time":null},"mounts":[]}"#,
    )
    .unwrap();
    assert!(state.read_record("v").is_err());
    std::fs::write(
        dir.path().join("steps/a.json"),
        r#"{"id":"a","owner":{"pid":1,"start_time":null},"mounts":[{"name":"a-1-0","stacked":1}]}"#,
    )
    .unwrap();
    let err = state.read_record("a").unwrap_err().to_string();
    assert!(err.contains("not one of step a's"), "{err}");
}

/// Regression: records were read by path with no bound: a FIFO hung
/// `gc`, a link to /dev/zero exhausted memory, a symlink was followed.
#[test]
fn records_that_are_not_plain_bounded_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let steps = dir.path().join("steps");
    nix::unistd::mkfifo(&steps.join("fifo.json"), Mode::from_bits_truncate(0o600)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", steps.join("zero.json")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", steps.join("passwd.json")).unwrap();
    std::fs::write(steps.join("big.json"), vec![b' '; (MAX_RECORD_BYTES + 1) as usize]).unwrap();
    for (id, says) in [
        ("fifo", "not a regular file"),
        ("zero", "a symlink"),
        ("passwd", "a symlink"),
        ("big", "more than"),
    ] {
        let err = state.read_record(id).unwrap_err().to_string();
        assert!(err.contains(says), "{id}: {err}");
    }
}

/// Regression: a symlink at the record's temporary name made a write
/// overwrite the file it pointed to.
#[test]
fn a_planted_symlink_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    // The next temporary names this process would take, as a killed
    // process of the same pid would have left them.
    let next = TMP_SEQ.load(Ordering::Relaxed);
    let taken = (next..next + 8).map(|n| format!(".s.json.{}.{n}.tmp", std::process::id()));
    for name in ["s.json.tmp", ".s.json.tmp", "s.json"]
        .map(String::from)
        .into_iter()
        .chain(taken)
    {
        let _ = std::fs::remove_file(dir.path().join("steps").join(&name));
        std::os::unix::fs::symlink(&victim, dir.path().join("steps").join(&name)).unwrap();
    }
    state
        .write_record(&StepRecord::new("s", Owner::this_process()))
        .unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::os::unix::fs::symlink(&victim, bundle.join("config.json.tmp")).unwrap();
    GivenBundle::open(&bundle).unwrap().write_config(b"{}").unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(std::fs::read_to_string(bundle.join("config.json")).unwrap(), "{}");
}

/// Regression: the state dir was used whoever could write it: another
/// user's `bundles`, `mounts` or `audit.jsonl` symlink was followed.
#[test]
fn a_state_dir_others_can_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open_root = dir.path().join("open");
    std::fs::create_dir(&open_root).unwrap();
    std::fs::set_permissions(&open_root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = StateDir::open(&open_root).unwrap_err().to_string();
    assert!(err.contains("lets others write"), "{err}");
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let err = StateDir::open(&foreign).unwrap_err().to_string();
    assert!(err.contains("owned by uid 65534"), "{err}");
    let below_open = open_root.join("state");
    std::fs::create_dir(&below_open).unwrap();
    let err = StateDir::open(&below_open).unwrap_err().to_string();
    assert!(err.contains("lets another user replace it"), "{err}");
    // Refused before anything is made below a directory others can change.
    let err = StateDir::open(&open_root.join("new/state")).unwrap_err().to_string();
    assert!(err.contains("lets another user replace it"), "{err}");
    assert!(!open_root.join("new").exists());

    // Another user's symlink in a sticky directory is not followed;
    // ours is.
    let sticky = dir.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
    let planted = sticky.join("st2");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &planted,
        Some(nix::unistd::Uid::from_raw(65534)),
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    let err = StateDir::open(&planted.join("state")).unwrap_err().to_string();
    assert!(err.contains("symlink owned by uid 65534"), "{err}");
    let err = StateDir::open(&planted).unwrap_err().to_string();
    assert!(err.contains("symlink owned by uid 65534"), "{err}");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
    let ours = sticky.join("ours");
    std::os::unix::fs::symlink(&victim, &ours).unwrap();
    let state = StateDir::open(&ours).unwrap();
    assert_eq!(state.root(), std::fs::canonicalize(&victim).unwrap());
    let state = StateDir::open(&ours.join("./../victim/deeper")).unwrap();
    assert_eq!(state.root(), std::fs::canonicalize(&victim).unwrap().join("deeper"));

    let outside = dir.path().join("elsewhere");
    std::fs::create_dir(&outside).unwrap();
    let root = dir.path().join("state");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("mounts")).unwrap();
    let err = StateDir::open(&root).unwrap_err().to_string();
    assert!(err.contains("mounts") && err.contains("not a directory"), "{err}");
    std::fs::remove_file(root.join("mounts")).unwrap();
    let state = StateDir::open(&root).unwrap();
    std::os::unix::fs::symlink(outside.join("log"), root.join("audit.jsonl")).unwrap();
    assert!(state.open_audit_log().unwrap_err().to_string().contains("symlink"));
    assert!(!outside.join("log").exists());
    std::fs::create_dir_all(outside.join("s1")).unwrap();
    std::fs::write(outside.join("s1/keep"), "x").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("bundles")).unwrap();
    assert!(state
        .remove_bundle("s1")
        .unwrap_err()
        .to_string()
        .contains("not a directory"));
    assert!(outside.join("s1/keep").exists());
}

/// Regression: `spec --bundle DIR` went through another user's symlink
/// and wrote into directories anyone could change, so root replaced a
/// config.json of the other user's choosing.
#[test]
fn a_bundle_dir_others_can_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("config.json"), "precious").unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink(&victim, shared.join("bundle")).unwrap();
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &shared.join("bundle"),
        Some(nobody),
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    let err = GivenBundle::open(&shared.join("bundle")).unwrap_err().to_string();
    assert!(err.contains("a symlink owned by uid 65534"), "{err}");
    assert_eq!(std::fs::read_to_string(victim.join("config.json")).unwrap(), "precious");

    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let err = GivenBundle::open(&open).unwrap_err().to_string();
    assert!(err.contains("lets others write"), "{err}");
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    nix::unistd::chown(&theirs, Some(nobody), None).unwrap();
    let err = GivenBundle::open(&theirs).unwrap_err().to_string();
    assert!(err.contains("owned by uid 65534"), "{err}");
    let err = GivenBundle::open(&theirs.join("below")).unwrap_err().to_string();
    assert!(err.contains("lets another user replace it"), "{err}");
    assert!(
        !theirs.join("below").exists(),
        "nothing is made below another user's directory"
    );

    let nested = dir.path().join("made/for/this");
    let bundle = GivenBundle::open(&nested).unwrap();
    bundle.write_config(b"{}").unwrap();
    std::fs::remove_file(nested.join("config.json")).unwrap();
    bundle.remove_created();
    assert!(!dir.path().join("made").exists(), "what it made goes again");
}

/// Regression: the audit log was appended to through a planted hard link.
#[test]
fn a_hard_linked_audit_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::hard_link(&victim, dir.path().join("audit.jsonl")).unwrap();
    let err = state.open_audit_log().unwrap_err().to_string();
    assert!(err.contains("2 links"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

/// Regression: a compile's temporary name was `<entry>.tmp<pid>`, so a file
/// left by a killed process of the same pid, or a second thread writing
/// the same entry, failed the write; every state file, cache entries
/// included, now takes a fresh `.<name>.<pid>.<n>.tmp` and passes over a
/// taken one, and a sweep reads the pid back.
#[test]
fn a_temporary_name_says_whose_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let next = TMP_SEQ.load(Ordering::Relaxed);
    let pid = std::process::id();
    let cache = StateDir::open(dir.path()).unwrap().open_cache_dir().unwrap();
    for n in next..next + 4 {
        std::os::unix::fs::symlink("/nonexistent", cache.path().join(format!(".abc-0.cwasm.{pid}.{n}.tmp"))).unwrap();
    }
    cache.write_entry("abc-0.cwasm", &[b"head", b"code"]).unwrap();
    assert_eq!(
        cache.read_entry("abc-0.cwasm", 64).unwrap().unwrap().bytes(),
        b"headcode"
    );
    assert!(cache.read_entry("abc-0.cwasm", 4).unwrap().is_none(), "over the bound");
    cache.write_entry("empty-0.cwasm", &[]).unwrap();
    assert_eq!(cache.read_entry("empty-0.cwasm", 64).unwrap().unwrap().bytes(), b"");
    assert_eq!(temporary_owner(&format!(".abc-0.cwasm.{pid}.{next}.tmp")), Some(pid));
    assert_eq!(temporary_owner("abc-0.cwasm"), None);
    assert_eq!(temporary_owner("abc-0.tmp12"), None);
}

/// A compile lock is one process's (one open file's) at a time: a second
/// taker waits for it, up to its bound, then is told who to wait for; it
/// gets the lock as soon as the first lets go. A planted symlink or FIFO
/// is no lock.
#[test]
fn a_compile_lock_is_waited_for_up_to_a_bound() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let cache = StateDir::open(dir.path()).unwrap().open_cache_dir().unwrap();
    let first = cache.lock_entry("abc-0.cwasm", Duration::ZERO).unwrap();
    let start = Instant::now();
    let err = cache.lock_entry("abc-0.cwasm", Duration::from_millis(200)).unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(200), "{:?}", start.elapsed());
    let message = err.to_string();
    assert!(
        matches!(err, StateError::CompileBusy { .. })
            && message.contains("abc-0.cwasm.lock")
            && message.contains("another process has been compiling"),
        "{message}"
    );
    // Another entry is not held up.
    drop(cache.lock_entry("def-0.cwasm", Duration::ZERO).unwrap());
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(first);
    });
    let start = Instant::now();
    let second = cache.lock_entry("abc-0.cwasm", Duration::from_secs(10));
    assert!(second.is_ok(), "{:?}", second.err());
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    holder.join().unwrap();
    std::os::unix::fs::symlink("/etc/passwd", cache.path().join("planted.cwasm.lock")).unwrap();
    assert!(cache.lock_entry("planted.cwasm", Duration::ZERO).is_err());
    nix::unistd::mkfifo(&cache.path().join("fifo.cwasm.lock"), Mode::from_bits_truncate(0o600)).unwrap();
    let err = cache.lock_entry("fifo.cwasm", Duration::ZERO).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn a_fixed_path_is_one_no_other_user_can_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let own = |path: &std::path::Path, uid: u32| {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
    };
    std::fs::create_dir_all(root.join("mine/sub")).unwrap();
    std::fs::create_dir_all(root.join("theirs/sub")).unwrap();
    own(&root.join("theirs"), 4242);
    std::fs::create_dir_all(root.join("sticky/roots")).unwrap();
    std::fs::create_dir_all(root.join("sticky/theirs")).unwrap();
    std::fs::set_permissions(
        root.join("sticky"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    own(&root.join("sticky/theirs"), 4242);
    std::os::unix::fs::symlink(root.join("mine/sub"), root.join("my-link")).unwrap();
    std::os::unix::fs::symlink(root.join("mine/sub"), root.join("their-link")).unwrap();
    own(&root.join("their-link"), 4242);
    let fixed = |path: &str, owners: &[u32]| check_fixed_path(&root.join(path), owners).map_err(|e| e.to_string());
    // Another user's object in a directory only root may write: its owner
    // may change what is in it, not put another in its place.
    for path in [
        "mine/sub",
        "mine/missing",
        "sticky/roots",
        "my-link",
        "my-link/x",
        "mine/sub/../sub",
        "theirs",
    ] {
        assert_eq!(fixed(path, &[]), Ok(()), "{path}");
    }
    for (path, needle) in [
        ("theirs/sub", "theirs (uid 4242, mode 755) is another user's to change"),
        ("sticky/theirs", "(uid 4242) may be moved by its owner"),
        ("sticky/missing", "lets others make it"),
        ("their-link", "is a symlink of uid 4242"),
    ] {
        let error = fixed(path, &[]).unwrap_err();
        assert!(error.contains(needle), "{path}: {error}");
    }
    // The user a container's root is, trusted for its own storage.
    assert_eq!(fixed("theirs/sub", &[4242]), Ok(()));
    assert_eq!(fixed("sticky/theirs", &[4242]), Ok(()));
    assert_eq!(fixed("their-link", &[4242]), Ok(()));
    // The kernel's links: a namespace or a process's executable at the
    // end (the process's directory checked), none on the way.
    for path in ["/proc/self/ns/net", "/proc/1/ns/mnt", "/proc/thread-self/exe"] {
        assert_eq!(
            check_fixed_path(std::path::Path::new(path), &[]).map_err(|e| e.to_string()),
            Ok(()),
            "{path}"
        );
    }
    for path in ["/proc/self/root/etc/shadow", "/proc/self/cwd/x", "/proc/1/root/etc"] {
        let error = check_fixed_path(std::path::Path::new(path), &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("link of the kernel's"), "{path}: {error}");
    }
}
