//! A step's SELinux labels: the host reads the container contexts file,
//! draws an MCS level no other live step holds and reserves it in the
//! state dir for the step, recorded before it is reserved and let go when
//! the step is released (go-selinux keeps its reservations in one process's
//! memory; specwright's steps span processes).

use std::path::Path;

use serde_json::json;
use specwright_core::selinux::{self, ContainerContexts, Labels, McsLevel};
use specwright_core::HostError;

use super::release::ReleaseError;
use super::{Mounting, StepHost};

/// The largest contexts file read (Fedora's is under 1 KiB).
pub const MAX_CONTEXTS_BYTES: u64 = 64 << 10;

/// How many levels are drawn before giving up: each one taken was drawn
/// again, and a state dir holding so many that this many draws all hit
/// taken ones is full of leaked reservations.
const LEVEL_DRAWS: usize = 4096;

impl StepHost {
    /// The step's labels (see the WIT `selinux-labels`). A sandboxed step's
    /// are made once; asking again gives the same ones.
    pub(super) fn labels(&mut self, privileged: bool) -> Result<Labels, HostError> {
        self.audited(
            "selinux-labels",
            || json!({"privileged": privileged}),
            |me| {
                if me.options.mounting == Mounting::Engine {
                    return Err(HostError::Refused(
                        "the engine labels this container (specwright-runc): a policy may keep its labels, not make new ones"
                            .to_string(),
                    ));
                }
                if let (false, Some(labels)) = (privileged, &me.selinux_labels) {
                    return Ok(labels.clone());
                }
                let contexts = me.container_contexts()?;
                if privileged {
                    return Ok(contexts.privileged_labels());
                }
                let level = if contexts.needs_level() {
                    Some(me.reserve_level()?)
                } else {
                    None
                };
                let labels = contexts.container_labels(level.as_ref());
                me.selinux_labels = Some(labels.clone());
                Ok(labels)
            },
            |_, labels| json!({"process": labels.process, "mount": labels.mount}),
        )
    }

    /// The contexts file the step's options name, or go-selinux's:
    /// container-selinux's, else the policy's `lxc_contexts`. A missing
    /// default file gives no labels (as go-selinux does); a missing named
    /// file or a broken one is an error naming it.
    fn container_contexts(&self) -> Result<ContainerContexts, HostError> {
        let (path, text) = match &self.options.selinux_contexts {
            Some(path) => match self.read_contexts_file(path)? {
                Some(text) => (path.clone(), text),
                None => {
                    return Err(HostError::Failed(format!(
                        "the SELinux contexts file {} does not exist",
                        path.display()
                    )))
                }
            },
            None => match self.default_contexts_file()? {
                Some(found) => found,
                None => return Ok(ContainerContexts::default()),
            },
        };
        ContainerContexts::parse(&text).map_err(|e| HostError::Failed(format!("{}: {e}", path.display())))
    }

    fn default_contexts_file(&self) -> Result<Option<(std::path::PathBuf, String)>, HostError> {
        let containers = Path::new(selinux::CONTAINERS_CONTEXTS_FILE);
        if let Some(text) = self.read_contexts_file(containers)? {
            return Ok(Some((containers.to_path_buf(), text)));
        }
        let Some(config) = self.read_contexts_file(Path::new(selinux::SELINUX_CONFIG_FILE))? else {
            return Ok(None);
        };
        let kind = selinux::selinux_type(&config);
        if kind.is_empty() || kind.contains('/') {
            return Ok(None);
        }
        let policy = std::path::PathBuf::from(selinux::policy_contexts_file(&kind));
        Ok(self.read_contexts_file(&policy)?.map(|text| (policy, text)))
    }

    fn read_contexts_file(&self, path: &Path) -> Result<Option<String>, HostError> {
        self.sys
            .read_host_file(path, MAX_CONTEXTS_BYTES)
            .map_err(|e| HostError::Failed(format!("reading {}: {e}", path.display())))
    }

    /// Draws levels until one no other step holds is reserved for this
    /// one; each is recorded before it is reserved.
    fn reserve_level(&mut self) -> Result<McsLevel, HostError> {
        for _ in 0..LEVEL_DRAWS {
            let bits = self
                .sys
                .random()
                .map_err(|e| HostError::Failed(format!("drawing an MCS level: {e}")))?;
            let (a, b) = ((bits >> 32) as u32, bits as u32);
            let Some(level) = McsLevel::from_draws(a, b).filter(|l| *l != McsLevel::PRIVILEGED) else {
                continue;
            };
            self.record.selinux_level = Some(level);
            if let Err(e) = self.write_record() {
                self.record.selinux_level = None;
                return Err(HostError::Failed(e.to_string()));
            }
            match self.sys.reserve_mcs_level(&self.state, &self.id, &level) {
                Ok(true) => return Ok(level),
                Ok(false) => self.forget_level(),
                Err(e) => {
                    self.forget_level();
                    return Err(HostError::Failed(format!("reserving MCS level {level}: {e}")));
                }
            }
        }
        Err(HostError::Failed(format!(
            "no free MCS level after {LEVEL_DRAWS} draws: {} is full of reservations",
            self.state.selinux_dir().display()
        )))
    }

    fn forget_level(&mut self) {
        self.record.selinux_level = None;
        if let Err(e) = self.write_record() {
            // The level stays recorded: release finds it names another
            // step and leaves it.
            tracing::warn!(step = %self.id, error = %e, "updating the step record");
        }
    }

    /// Lets the step's MCS level go; it stays recorded when that fails.
    pub(super) fn release_level(&mut self) -> Result<(), ReleaseError> {
        super::release::release_level(&self.state, self.sys.as_ref(), &self.id, &mut self.record.selinux_level)?;
        self.selinux_labels = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use serde_json::json;
    use specwright_core::request::Request;

    use super::super::{release_step, StepHost, StepOptions};
    use super::*;
    use crate::audit::Audit;
    use crate::state::{Owner, StateDir};
    use crate::sys::{Op, RealSyscalls, RecordingSyscalls};
    use specwright_core::HostCalls;

    const CONTEXTS: &str =
        "process = \"system_u:system_r:container_t:s0\"\nfile = \"system_u:object_r:container_file_t:s0\"\n";

    struct Fixture {
        dir: tempfile::TempDir,
        state: PathBuf,
        contexts: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let contexts = dir.path().join("lxc_contexts");
        std::fs::write(&contexts, CONTEXTS).unwrap();
        Fixture { dir, state, contexts }
    }

    /// A step over a real state dir whose draws come from the recorder's
    /// fixed sequence (the same for every recorder), so that two steps
    /// draw the same levels in the same order.
    fn step(f: &Fixture, id: &str, contexts: Option<&Path>) -> (StepHost, Arc<RecordingSyscalls>) {
        let sys = Arc::new(RecordingSyscalls::dry_run_over_state(Box::new(RealSyscalls)));
        let state = StateDir::open(&f.state).unwrap();
        let lock = state.lock(id).unwrap();
        let request = Request::from_json(&json!({"id": id}).to_string()).unwrap();
        let options = StepOptions {
            selinux_contexts: contexts.map(Path::to_path_buf),
            owner: Owner::of_pid(std::process::id()),
            ..StepOptions::default()
        };
        let host = StepHost::new(
            state,
            sys.clone(),
            Arc::new(Audit::events_only()),
            options,
            &request,
            lock,
        )
        .unwrap();
        (host, sys)
    }

    fn reservations(f: &Fixture) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(f.state.join("selinux")) else {
            return Vec::new();
        };
        let mut found: Vec<(String, String)> = entries
            .map(|e| {
                let e = e.unwrap();
                let holder = std::fs::read_to_string(e.path()).unwrap();
                (e.file_name().to_string_lossy().into_owned(), holder)
            })
            .collect();
        found.sort();
        found
    }

    fn level_of(labels: &Labels) -> String {
        labels.process.splitn(4, ':').nth(3).unwrap().to_string()
    }

    #[test]
    fn a_step_reserves_its_level_until_released_and_no_live_step_shares_it() {
        let f = fixture();
        let (mut a, _) = step(&f, "a", Some(&f.contexts));
        let labels = a.selinux_labels(false).unwrap();
        let level = level_of(&labels);
        assert!(level.parse::<McsLevel>().is_ok(), "{labels:?}");
        assert_eq!(labels.process, format!("system_u:system_r:container_t:{level}"));
        assert_eq!(labels.mount, format!("system_u:object_r:container_file_t:{level}"));
        assert_eq!(a.selinux_labels(false).unwrap(), labels, "asked again: the same labels");
        assert_eq!(reservations(&f), [(level.clone(), "a".to_string())]);
        let record = StateDir::open(&f.state).unwrap().read_record("a").unwrap().unwrap();
        assert_eq!(record.selinux_level.map(|l| l.to_string()), Some(level.clone()));

        // Step b draws a's level first (the same sequence), finds it held,
        // and draws again.
        let (mut b, sys) = step(&f, "b", Some(&f.contexts));
        let other = b.selinux_labels(false).unwrap();
        assert_ne!(level_of(&other), level);
        let tries = sys
            .ops()
            .into_iter()
            .filter(|op| matches!(op, Op::ReserveMcsLevel { level: _ }))
            .count();
        assert_eq!(tries, 2, "{:?}", sys.ops());
        assert_eq!(reservations(&f).len(), 2);

        // a is kept (as `spec` keeps a step) and released by a new process;
        // b goes with its error path (dropped without keep).
        drop(a.keep());
        drop(b);
        assert_eq!(reservations(&f), [(level.clone(), "a".to_string())]);
        let state = StateDir::open(&f.state).unwrap();
        release_step(&state, &RealSyscalls, &Audit::events_only(), "a").unwrap();
        assert!(reservations(&f).is_empty());
        assert!(state.read_record("a").unwrap().is_none());
    }

    #[test]
    fn release_leaves_a_level_another_step_holds() {
        let f = fixture();
        let (mut a, _) = step(&f, "a", Some(&f.contexts));
        let level: McsLevel = level_of(&a.selinux_labels(false).unwrap()).parse().unwrap();
        drop(a.keep());
        // A record naming a's level (b lost the race, then died).
        let state = StateDir::open(&f.state).unwrap();
        let mut record = crate::state::StepRecord::new(
            "b",
            Owner {
                pid: 0,
                start_time: None,
            },
        );
        record.selinux_level = Some(level);
        state.write_record(&record).unwrap();
        release_step(&state, &RealSyscalls, &Audit::events_only(), "b").unwrap();
        assert_eq!(reservations(&f), [(level.to_string(), "a".to_string())]);
        release_step(&state, &RealSyscalls, &Audit::events_only(), "a").unwrap();
        assert!(reservations(&f).is_empty());
    }

    #[test]
    fn a_privileged_step_reserves_nothing() {
        let f = fixture();
        let (mut a, sys) = step(&f, "a", Some(&f.contexts));
        let labels = a.selinux_labels(true).unwrap();
        assert_eq!(labels.process, "");
        assert_eq!(labels.mount, "system_u:object_r:container_file_t:s0:c1022,c1023");
        assert!(!sys
            .ops()
            .iter()
            .any(|op| matches!(op, Op::ReserveMcsLevel { level: _ } | Op::Random)));
        assert!(!a.holds_mounts());
    }

    #[test]
    fn a_missing_or_broken_contexts_file_is_an_error_naming_it() {
        let f = fixture();
        let missing = f.dir.path().join("nope");
        let (mut a, _) = step(&f, "a", Some(&missing));
        let err = a.selinux_labels(false).unwrap_err().to_string();
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("does not exist"),
            "{err}"
        );
        let broken = f.dir.path().join("broken");
        std::fs::write(&broken, "process = container_t\n").unwrap();
        let (mut b, _) = step(&f, "b", Some(&broken));
        let err = b.selinux_labels(false).unwrap_err().to_string();
        assert!(
            err.contains(&broken.display().to_string()) && err.contains("`process`"),
            "{err}"
        );
        assert!(reservations(&f).is_empty());
    }

    #[test]
    fn a_reservation_that_fails_is_forgotten_and_named() {
        let f = fixture();
        let state = StateDir::open(&f.state).unwrap();
        // `selinux` is a file: nothing can be reserved under it.
        std::fs::write(f.state.join("selinux"), "").unwrap();
        let (mut a, _) = step(&f, "a", Some(&f.contexts));
        let err = a.selinux_labels(false).unwrap_err().to_string();
        assert!(err.starts_with("reserving MCS level s0:c"), "{err}");
        assert!(!a.holds_mounts());
        drop(a);
        assert!(state.read_record("a").unwrap().is_none());
    }

    #[test]
    fn an_engine_s_container_keeps_the_engine_s_labels() {
        let f = fixture();
        let (mut a, _) = step(&f, "a", Some(&f.contexts));
        a.options.mounting = super::super::Mounting::Engine;
        let err = a.selinux_labels(false).unwrap_err().to_string();
        assert!(err.contains("the engine labels this container"), "{err}");
    }
}
