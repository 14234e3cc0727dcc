//! BuildKit's `GenerateSpec`, as one pipeline of spec options, for each
//! release specwright reproduces: what differs between them is data (the
//! default spec, the seccomp profile) and the steps only one applies.

use crate::facts::HostFacts;
use crate::mounts::{
    with_deduplicated_mounts, with_pinned_request_mounts, with_request_mounts, with_unprivileged_bind_options,
};
use crate::opts::*;
use crate::request::{parse_user, ProcessMode, Request, SecurityMode};
use crate::seccomp::{self, Profile};
use crate::spec::Spec;
use crate::{HostCalls, PolicyError};

/// BuildKit's hostname when the step names none.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// A BuildKit release whose `GenerateSpec` a policy reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// v0.8.1 (containerd 1.4's default spec, Docker's seccomp profile).
    V0_8,
    /// v0.32.2 (containerd v2's default spec, moby/profiles' seccomp
    /// profile, and everything v0.32 adds: cgroup parents, ulimits,
    /// resources, AppArmor, SELinux, tracing, CDI devices, a cgroup
    /// namespace, compacted overlays, pinned selectors, deduplicated mounts).
    V0_32,
}

impl Release {
    /// The release specwright's default policy follows.
    pub const DEFAULT: Release = Release::V0_32;

    pub fn seccomp_profile(self) -> &'static Profile {
        match self {
            Release::V0_8 => &seccomp::V0_8,
            Release::V0_32 => &seccomp::V0_32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Release::V0_8 => "v0.8.1",
            Release::V0_32 => "v0.32.2",
        }
    }
}

/// The spec today's BuildKit would generate for `request` on a host with
/// `facts`, asking `mounter` for the step's mounts.
pub fn generate<M: HostCalls>(request: &Request, facts: &HostFacts, mounter: &mut M) -> Result<Spec, PolicyError> {
    generate_release(Release::DEFAULT, request, facts, mounter)
}

/// The spec `release` would generate.
pub fn generate_release<M: HostCalls>(
    release: Release,
    request: &Request,
    facts: &HostFacts,
    mounter: &mut M,
) -> Result<Spec, PolicyError> {
    if release == Release::V0_8 {
        check_v0_8_fields(request)?;
    }
    let tracing = tracing_socket(request, mounter)?;
    let mut spec = spec_before_mounts(release, request, facts, tracing, mounter)?;
    match release {
        Release::V0_8 => with_request_mounts(&mut spec, request, mounter)?,
        Release::V0_32 => {
            with_pinned_request_mounts(&mut spec, request, mounter)?;
            if let Some(socket) = tracing {
                with_tracing_socket_mount(&mut spec, socket);
            }
            with_deduplicated_mounts(&mut spec);
            if facts.in_user_namespace {
                with_unprivileged_bind_options(&mut spec, |source| mounter.mount_flags(source))?;
            }
        }
    }
    Ok(spec)
}

/// The step's tracing socket when it exists on the host: BuildKit v0.32
/// sets the exporter variables and binds the socket only then (its code
/// sets the variables for any socket it is given; the specs it produced
/// for a socket that does not exist have neither).
fn tracing_socket<'r, M: HostCalls>(request: &'r Request, mounter: &mut M) -> Result<Option<&'r str>, PolicyError> {
    let Some(socket) = request.tracing_socket.as_deref() else {
        return Ok(None);
    };
    let exists = mounter
        .exists(socket)
        .map_err(|e| PolicyError::Internal(format!("tracing socket {socket}: {e}")))?;
    Ok(exists.then_some(socket))
}

/// Everything but the request's own mounts, for today's BuildKit, on a
/// host that performs nothing (a step with CDI devices fails; a tracing
/// socket is taken to exist).
pub fn generate_without_mounts(request: &Request, facts: &HostFacts) -> Result<Spec, PolicyError> {
    generate_release_without_mounts(Release::DEFAULT, request, facts)
}

/// Everything but the request's own mounts, for `release`.
pub fn generate_release_without_mounts(
    release: Release,
    request: &Request,
    facts: &HostFacts,
) -> Result<Spec, PolicyError> {
    if release == Release::V0_8 {
        check_v0_8_fields(request)?;
    }
    let tracing = request.tracing_socket.as_deref();
    spec_before_mounts(release, request, facts, tracing, &mut NoHost)
}

/// What BuildKit v0.8.1 has no field for: a request for it is refused,
/// naming the field, instead of being ignored.
fn check_v0_8_fields(request: &Request) -> Result<(), PolicyError> {
    let set = [
        ("cgroup_parent", request.cgroup_parent.is_some()),
        ("ulimits", !request.ulimits.is_empty()),
        ("resources", request.resources.is_some()),
        ("tracing_socket", request.tracing_socket.is_some()),
        ("apparmor_profile", !request.apparmor_profile.is_empty()),
        ("selinux", request.selinux),
        ("cdi_devices", !request.cdi_devices.is_empty()),
    ];
    match set.iter().find(|(_, is_set)| *is_set) {
        Some((field, _)) => Err(PolicyError::InvalidRequest(format!(
            "request field `{field}`: BuildKit v0.8.1 has no such setting (the default policy follows v0.32.2)"
        ))),
        None => Ok(()),
    }
}

fn spec_before_mounts<M: HostCalls>(
    release: Release,
    request: &Request,
    facts: &HostFacts,
    tracing_socket: Option<&str>,
    mounter: &mut M,
) -> Result<Spec, PolicyError> {
    let v0_32 = release == Release::V0_32;
    let mut spec = default_unix_spec(release, &request.namespace, &request.id);

    // What the runc executor passes in, applied before GenerateSpec's own options.
    if !request.user.is_empty() {
        let (uid, gid) = parse_user(&request.user)?;
        with_uid_gid(&mut spec, uid, gid);
        if v0_32 {
            with_primary_group_listed(&mut spec);
        }
    }
    if let Some(parent) = &request.cgroup_parent {
        with_cgroup_parent(&mut spec, parent, &request.id);
    }

    with_removed_mount(&mut spec, "/run");
    with_ro_bind(&mut spec, &request.resolv_conf, "/etc/resolv.conf");
    with_ro_bind(&mut spec, &request.hosts_file, "/etc/hosts");
    with_cgroup_mount(&mut spec);

    if request.selinux && !facts.selinux {
        return Err(PolicyError::InvalidRequest(
            "request field `selinux`: selinux is not available on this host".to_string(),
        ));
    }
    match request.security_mode {
        SecurityMode::Sandbox => {
            if facts.seccomp {
                with_default_seccomp(&mut spec, release.seccomp_profile(), facts);
            }
            if !request.apparmor_profile.is_empty() {
                if !facts.apparmor {
                    return Err(PolicyError::InvalidRequest(format!(
                        "request field `apparmor_profile`: AppArmor is not supported on this host, but the profile '{}' was specified",
                        request.apparmor_profile
                    )));
                }
                with_apparmor_profile(&mut spec, &request.apparmor_profile);
            }
            if request.selinux {
                with_selinux_labels(&mut spec, &selinux_labels(mounter, false)?);
            }
        }
        SecurityMode::Insecure => {
            with_insecure_spec(&mut spec, release, facts);
            with_writeable_mounts_of_type(&mut spec, "cgroup");
            with_writeable_mounts_of_type(&mut spec, "sysfs");
            if request.selinux {
                with_selinux_labels(&mut spec, &selinux_labels(mounter, true)?);
            }
        }
    }

    if request.process_mode == ProcessMode::NoSandbox {
        with_host_namespace(&mut spec, "pid");
        with_bound_proc(&mut spec);
    }

    if let Some(idmap) = &request.idmap {
        with_user_namespace(&mut spec, &idmap.uids, &idmap.gids);
    }
    if !request.ulimits.is_empty() {
        with_rlimits(&mut spec, &request.ulimits);
    }
    if let Some(resources) = &request.resources {
        with_resources(&mut spec, resources);
    }

    with_process_args(&mut spec, request.args.as_deref());
    match tracing_socket {
        Some(_) => with_env(
            &mut spec,
            Some(&env_with_tracing(request.env.as_deref().unwrap_or_default())),
        ),
        None => with_env(&mut spec, request.env.as_deref()),
    }
    with_process_cwd(&mut spec, &request.cwd);
    with_new_privileges(&mut spec);
    match request.hostname.as_str() {
        "" => with_hostname(&mut spec, DEFAULT_HOSTNAME),
        name => with_hostname(&mut spec, name.to_string()),
    }
    if let Some(path) = &request.cgroup_path {
        with_cgroups_path(&mut spec, path);
    }
    if request.readonly_rootfs {
        with_readonly_rootfs(&mut spec);
    }
    if !request.cdi_devices.is_empty() {
        let registry = mounter
            .cdi_registry()
            .map_err(|e| PolicyError::Internal(format!("CDI device injection failed: {e}")))?;
        if let Some(edits) = registry.edits_for(&request.cdi_devices)? {
            crate::cdi::apply_edits(&mut spec, &edits)?;
        }
    }

    if v0_32 && facts.cgroup_namespace {
        with_cgroup_namespace(&mut spec);
    }
    if request.ulimits.is_empty() {
        without_rlimits(&mut spec);
    }
    with_network(&mut spec, &request.network);
    Ok(spec)
}

/// The step's SELinux labels from the host (`label.InitLabels(nil)`, or
/// `InitLabels(["disable"])` for a privileged step).
fn selinux_labels<M: HostCalls>(mounter: &mut M, privileged: bool) -> Result<crate::selinux::Labels, PolicyError> {
    mounter
        .selinux_labels(privileged)
        .map_err(|e| PolicyError::Internal(format!("SELinux labels: {e}")))
}

/// A host that performs nothing: for the parts of a spec that need none.
struct NoHost;

impl HostCalls for NoHost {
    type Source = ();
    type Root = ();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{IdMap, IdRange, MountRequest, Mountable, Network};
    use crate::spec::{Mount, Name};
    use crate::HostError;

    /// A host that records what it is asked and resolves by joining
    /// (the real, in-root resolution is tested in the host).
    #[derive(Default)]
    struct FakeHost {
        request: Vec<Vec<Mountable>>,
        log: Vec<String>,
        fail_resolve: Option<String>,
    }

    impl HostCalls for FakeHost {
        type Source = usize;
        type Root = String;

        fn materialize(&mut self, index: u32) -> Result<usize, HostError> {
            self.log.push(format!("materialize {index}"));
            Ok(index as usize)
        }

        fn source_mounts(&mut self, source: &usize) -> Result<Vec<Mountable>, HostError> {
            Ok(self.request[*source].clone())
        }

        fn resolve_in_source(&mut self, source: &usize, entry: u32, selector: &str) -> Result<String, HostError> {
            self.log.push(format!("resolve-source {source}/{entry} {selector}"));
            if let Some(e) = &self.fail_resolve {
                return Err(HostError::Failed(e.clone()));
            }
            let m = &self.request[*source][entry as usize];
            Ok(format!("{}{}", m.source, crate::mounts::clean_absolute(selector)))
        }

        fn mount_temporary(&mut self, source: &usize, entries: &[u32]) -> Result<String, HostError> {
            let root = format!(
                "/state/mounts/t{}",
                self.log.iter().filter(|l| l.starts_with("mount")).count()
            );
            self.log.push(format!("mount {source}/{entries:?} at {root}"));
            Ok(root)
        }

        fn resolve_in_root(&mut self, root: &String, selector: &str) -> Result<String, HostError> {
            self.log.push(format!("resolve-root {root} {selector}"));
            if let Some(e) = &self.fail_resolve {
                return Err(HostError::Failed(e.clone()));
            }
            Ok(format!("{root}{}", crate::mounts::clean_absolute(selector)))
        }

        fn pin_in_source(&mut self, source: &usize, entry: u32, selector: &str) -> Result<String, HostError> {
            let resolved = self.resolve_in_source(source, entry, selector)?;
            self.pin(resolved)
        }

        fn pin_in_root(&mut self, root: &String, selector: &str) -> Result<String, HostError> {
            let resolved = self.resolve_in_root(root, selector)?;
            self.pin(resolved)
        }

        fn root_path(&mut self, root: &String) -> Result<String, HostError> {
            Ok(root.clone())
        }

        fn exists(&mut self, path: &str) -> Result<bool, HostError> {
            self.log.push(format!("exists {path}"));
            Ok(path.starts_with("/exists"))
        }

        fn cdi_registry(&mut self) -> Result<crate::cdi::Registry, HostError> {
            Ok(crate::cdi::Registry::default())
        }

        fn mount_flags(&mut self, path: &str) -> Result<u64, HostError> {
            self.log.push(format!("statfs {path}"));
            // Every source as if on a nosuid,nodev file system.
            Ok(2 | 4)
        }

        fn selinux_labels(&mut self, privileged: bool) -> Result<crate::selinux::Labels, HostError> {
            self.log.push(format!("selinux-labels privileged={privileged}"));
            Ok(crate::selinux::Labels {
                process: if privileged {
                    String::new()
                } else {
                    "u:r:container_t:s0:c1,c2".into()
                },
                mount: if privileged {
                    "u:object_r:f_t:s0:c1022,c1023"
                } else {
                    "u:object_r:f_t:s0:c1,c2"
                }
                .into(),
            })
        }
    }

    impl FakeHost {
        fn pin(&mut self, resolved: String) -> Result<String, HostError> {
            let root = format!(
                "/state/mounts/t{}",
                self.log
                    .iter()
                    .filter(|l| l.starts_with("mount") || l.starts_with("pin"))
                    .count()
            );
            self.log.push(format!("pin {resolved} at {root}"));
            Ok(root)
        }
    }

    fn facts() -> HostFacts {
        HostFacts {
            first_free_loop: 3,
            capabilities: vec!["CAP_CHOWN".into(), "CAP_SYS_ADMIN".into()],
            ..HostFacts::example()
        }
    }

    fn request() -> Request {
        Request::from_json(r#"{"id": "s1", "args": ["/bin/sh"], "env": ["PATH=/bin"], "cwd": "/"}"#).unwrap()
    }

    fn bind(dest: &str, source: &str, readonly: bool, selector: &str) -> MountRequest {
        MountRequest {
            dest: dest.into(),
            source: Some(source.into()),
            mountable: None,
            readonly,
            selector: selector.into(),
        }
    }

    fn run_release(release: Release, req: &Request) -> (Spec, Vec<String>) {
        let mut host = FakeHost {
            request: req.mounts.iter().map(|m| m.materialize().unwrap()).collect(),
            ..FakeHost::default()
        };
        let spec = generate_release(release, req, &facts(), &mut host).unwrap();
        (spec, host.log)
    }

    fn run(req: &Request) -> (Spec, Vec<String>) {
        run_release(Release::V0_8, req)
    }

    #[test]
    fn a_user_namespace_host_keeps_the_locked_flags_of_each_bind_under_v0_32_only() {
        let mut req = request();
        req.resolv_conf = "/run/resolv.conf".into();
        req.hosts_file = "/run/hosts".into();
        req.mounts = vec![bind("/src", "/data/src", false, "sub")];
        let mut f = facts();
        f.in_user_namespace = true;
        for release in [Release::V0_32, Release::V0_8] {
            let mut host = FakeHost {
                request: req.mounts.iter().map(|m| m.materialize().unwrap()).collect(),
                ..FakeHost::default()
            };
            let spec = generate_release(release, &req, &f, &mut host).unwrap();
            let statfs: Vec<&String> = host.log.iter().filter(|l| l.starts_with("statfs")).collect();
            let src = spec.mounts.iter().find(|m| m.destination == "/src").unwrap();
            let src_options: Vec<&str> = src.options.iter().map(|o| &**o).collect();
            if release == Release::V0_8 {
                assert!(statfs.is_empty(), "{statfs:?}");
                assert_eq!(src_options, ["rbind"]);
                continue;
            }
            // resolv.conf, hosts and the pinned selector: the binds; not
            // /proc, /dev and the other file systems of the default spec.
            assert_eq!(statfs.len(), 3, "{:?}", host.log);
            assert_eq!(src_options, ["rbind", "nodev", "nosuid"]);
            let hosts = spec.mounts.iter().find(|m| m.destination == "/etc/hosts").unwrap();
            let hosts_options: Vec<&str> = hosts.options.iter().map(|o| &**o).collect();
            assert_eq!(
                hosts_options,
                ["nosuid", "noexec", "nodev", "rbind", "ro"],
                "no duplicates"
            );
        }
    }

    fn without_mounts(req: &Request, facts: &HostFacts) -> Result<Spec, PolicyError> {
        generate_release_without_mounts(Release::V0_8, req, facts)
    }

    fn user_mounts(spec: &Spec) -> Vec<Mount> {
        spec.mounts.iter().skip(9).cloned().collect()
    }

    #[test]
    fn defaults_follow_containerd_and_buildkit() {
        let (spec, log) = run(&request());
        assert!(log.is_empty(), "no mounts, no host operations");
        let dests: Vec<_> = spec.mounts.iter().map(|m| &*m.destination).collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/etc/resolv.conf",
                "/etc/hosts",
                "/sys/fs/cgroup"
            ]
        );
        assert_eq!(spec.hostname, DEFAULT_HOSTNAME);
        let process = spec.process.as_ref().unwrap();
        assert!(!process.no_new_privileges);
        assert!(process.rlimits.is_empty());
        let linux = spec.linux.as_ref().unwrap();
        assert_eq!(linux.cgroups_path, "/buildkit/s1");
        assert!(linux.seccomp.is_some());
        assert!(linux.devices.is_empty());
    }

    #[test]
    fn no_seccomp_support_means_no_profile() {
        let mut f = facts();
        f.seccomp = false;
        let spec = without_mounts(&request(), &f).unwrap();
        assert!(spec.linux.unwrap().seccomp.is_none());
    }

    #[test]
    fn insecure_drops_seccomp_and_masks_and_adds_devices() {
        let mut req = request();
        req.security_mode = SecurityMode::Insecure;
        let spec = without_mounts(&req, &facts()).unwrap();
        let linux = spec.linux.as_ref().unwrap();
        assert!(linux.seccomp.is_none());
        assert!(linux.masked_paths.is_empty() && linux.readonly_paths.is_empty());
        assert_eq!(linux.devices.len(), 14);
        assert_eq!(linux.devices[6].path, "/dev/loop3");
        let sys = spec.mounts.iter().find(|m| m.destination == "/sys").unwrap();
        assert_eq!(sys.options.last().unwrap(), "rw");
    }

    #[test]
    fn insecure_with_idmap_keeps_device_nodes() {
        let mut req = request();
        req.security_mode = SecurityMode::Insecure;
        req.idmap = Some(IdMap {
            uids: vec![IdRange {
                container_id: 0,
                host_id: 100000,
                size: 65536,
            }],
            gids: vec![IdRange {
                container_id: 0,
                host_id: 100000,
                size: 65536,
            }],
        });
        let spec = without_mounts(&req, &facts()).unwrap();
        let linux = spec.linux.unwrap();
        // BuildKit leaves the nodes out only when the host runs in a user
        // namespace; the runtime binds them into the step's.
        assert_eq!(linux.devices.len(), 14);
        assert_eq!(linux.namespaces.last().unwrap().kind, "user");
        assert_eq!(linux.uid_mappings[0].host_id, 100000);
    }

    #[test]
    fn insecure_inside_a_user_namespace_host_skips_device_nodes() {
        let mut req = request();
        req.security_mode = SecurityMode::Insecure;
        let mut f = facts();
        f.in_user_namespace = true;
        assert!(without_mounts(&req, &f).unwrap().linux.unwrap().devices.is_empty());
    }

    #[test]
    fn no_sandbox_shares_pids_and_binds_proc_first() {
        let mut req = request();
        req.process_mode = ProcessMode::NoSandbox;
        let spec = without_mounts(&req, &facts()).unwrap();
        assert_eq!(spec.mounts[0].kind, "bind");
        assert_eq!(spec.mounts[0].source, "/proc");
        let linux = spec.linux.unwrap();
        assert!(!linux.namespaces.iter().any(|n| n.kind == "pid"));
        assert_eq!(linux.masked_paths[..], ["/sys/firmware"]);
    }

    #[test]
    fn request_fields_reach_the_spec() {
        let mut req = request();
        req.user = "1000:1001".into();
        req.hostname = "h".into();
        req.cgroup_path = Some("/custom/path".into());
        req.readonly_rootfs = true;
        req.network = Network::Path {
            path: "/run/netns/n".into(),
        };
        req.resolv_conf = "/etc/r".into();
        let spec = without_mounts(&req, &facts()).unwrap();
        assert_eq!(spec.hostname, "h");
        assert!(spec.root.as_ref().unwrap().readonly);
        let user = &spec.process.as_ref().unwrap().user;
        assert_eq!((user.uid, user.gid), (1000, 1001));
        let linux = spec.linux.as_ref().unwrap();
        assert_eq!(linux.cgroups_path, "/custom/path");
        assert_eq!(linux.namespaces[4].path, "/run/netns/n");
        let resolv = spec
            .mounts
            .iter()
            .find(|m| m.destination == "/etc/resolv.conf")
            .unwrap();
        assert_eq!(resolv.source, "/etc/r");
    }

    #[test]
    fn mounts_without_selector_pass_through_in_order() {
        let mut req = request();
        req.mounts = vec![
            bind("/a", "/s0", false, ""),
            bind("/b", "/s1", true, "/"),
            bind("/a", "/s0", false, "./"),
        ];
        let (spec, log) = run(&req);
        let got: Vec<_> = user_mounts(&spec)
            .into_iter()
            .map(|m| (m.destination, m.source, m.options.into_owned()))
            .collect();
        assert_eq!(
            got,
            [
                ("/a".into(), "/s0".into(), vec![Name::from("rbind")]),
                ("/b".into(), "/s1".into(), vec![Name::from("rbind"), "ro".into()]),
                ("/a".into(), "/s0".into(), vec![Name::from("rbind")]),
            ]
        );
        assert!(log.iter().all(|l| l.starts_with("materialize")), "{log:?}");
    }

    #[test]
    fn read_write_selector_resolves_on_the_source_without_mounting() {
        let mut req = request();
        req.mounts = vec![
            bind("/a", "/s0", false, "sub/dir"),
            bind("/b", "/s0", false, "sub/other"),
        ];
        let (spec, log) = run(&req);
        assert!(!log.iter().any(|l| l.starts_with("mount")), "{log:?}");
        let m = user_mounts(&spec);
        assert_eq!(m[0].source, "/s0/sub/dir");
        assert_eq!(m[1].source, "/s0/sub/other");
        assert_eq!(m[1].options[..], ["rbind"]);
    }

    #[test]
    fn read_only_selectors_share_one_temporary_mount() {
        let mut req = request();
        req.mounts = vec![
            bind("/a", "/s0", true, "sub/dir"),
            bind("/b", "/s0", true, "sub/other"),
            bind("/c", "/s1", true, "x"),
        ];
        let (spec, log) = run(&req);
        let mounts: Vec<_> = log.iter().filter(|l| l.starts_with("mount")).collect();
        assert_eq!(mounts.len(), 2, "{log:?}");
        let m = user_mounts(&spec);
        assert_eq!(m[0].source, "/state/mounts/t0/sub/dir");
        assert_eq!(m[1].source, "/state/mounts/t0/sub/other");
        assert_eq!(m[2].source, "/state/mounts/t1/x");
        assert_eq!(m[0].options[..], ["rbind", "ro"]);
    }

    #[test]
    fn a_multi_mount_source_applies_the_selector_to_each() {
        let mut req = request();
        req.mounts = vec![MountRequest {
            dest: "/m".into(),
            source: None,
            mountable: Some(vec![
                Mountable {
                    kind: "bind".into(),
                    source: "/s0".into(),
                    options: vec!["rbind".into()],
                },
                Mountable {
                    kind: "overlay".into(),
                    source: "overlay".into(),
                    options: vec!["lowerdir=/l".into()],
                },
            ]),
            readonly: false,
            selector: "sub".into(),
        }];
        let (spec, log) = run(&req);
        let m = user_mounts(&spec);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].source, "/s0/sub");
        assert_eq!(m[1].source, "/state/mounts/t0/sub");
        assert_eq!(m[1].options[..], ["rbind"]);
        assert!(log.contains(&"mount 0/[1] at /state/mounts/t0".to_string()), "{log:?}");
    }

    #[test]
    fn a_host_failure_names_the_mount() {
        let mut req = request();
        req.mounts = vec![bind("/loop", "/s0", false, "loop1")];
        let mut host = FakeHost {
            request: vec![req.mounts[0].materialize().unwrap()],
            fail_resolve: Some("too many links".into()),
            ..FakeHost::default()
        };
        let err = generate_release(Release::V0_8, &req, &facts(), &mut host).unwrap_err();
        assert_eq!(err, PolicyError::Internal("mount /loop: too many links".into()));
    }

    #[test]
    fn a_mount_without_source_fails_before_any_host_operation() {
        let mut req = request();
        req.mounts = vec![
            bind("/ok", "/s0", true, "sub"),
            MountRequest {
                dest: "/nosrc".into(),
                source: None,
                mountable: None,
                readonly: false,
                selector: String::new(),
            },
        ];
        let mut host = FakeHost {
            request: vec![req.mounts[0].materialize().unwrap(), vec![]],
            ..FakeHost::default()
        };
        let err = generate(&req, &facts(), &mut host).unwrap_err();
        assert!(err.to_string().contains("mount /nosrc has no source"));
        assert!(host.log.is_empty(), "{:?}", host.log);
    }

    #[test]
    fn v0_32_pins_each_selector_of_a_shared_parent() {
        let mut req = request();
        req.mounts = vec![
            bind("/a", "/s0", true, "sub/dir"),
            bind("/b", "/s0", true, "sub/other"),
            bind("/c", "/s0", true, "sub/dir"),
            bind("/d", "/s1", false, "x"),
        ];
        let (spec, log) = run_release(Release::V0_32, &req);
        let made: Vec<_> = log
            .iter()
            .filter(|l| l.starts_with("mount") || l.starts_with("pin"))
            .collect();
        assert_eq!(
            made.len(),
            4,
            "one parent mount, three pins (the rw bind needs no parent): {log:?}"
        );
        let m = user_mounts(&spec);
        assert_eq!(m[0].source, "/state/mounts/t1");
        assert_eq!(m[1].source, "/state/mounts/t2");
        assert_eq!(
            m[2].source, "/state/mounts/t1",
            "the same selector of the same parent: one pin"
        );
        assert_eq!(m[0].options[..], ["rbind", "ro"]);
        assert_eq!(m[3].options[..], ["rbind"]);
        assert!(log.contains(&"pin /s1/x at /state/mounts/t3".to_string()), "{log:?}");
    }

    #[test]
    fn v0_32_compacts_long_overlays_and_dedups_destinations() {
        let mut req = request();
        let lower = format!("lowerdir={}", "/l".repeat(2000));
        req.mounts = vec![
            MountRequest {
                dest: "/work".into(),
                source: None,
                mountable: Some(vec![Mountable {
                    kind: "overlay".into(),
                    source: "overlay".into(),
                    options: vec![lower],
                }]),
                readonly: true,
                selector: String::new(),
            },
            MountRequest {
                dest: "/dev/shm".into(),
                source: None,
                mountable: Some(vec![Mountable {
                    kind: "tmpfs".into(),
                    source: "tmpfs".into(),
                    options: vec!["size=1m".into()],
                }]),
                readonly: false,
                selector: String::new(),
            },
        ];
        let (spec, _) = run_release(Release::V0_32, &req);
        let work = spec.mounts.iter().find(|m| m.destination == "/work").unwrap();
        assert_eq!((&*work.kind, &*work.source), ("bind", "/state/mounts/t0"));
        assert_eq!(work.options[..], ["rbind", "ro"]);
        let shm: Vec<_> = spec
            .mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| m.destination == "/dev/shm")
            .collect();
        assert_eq!(shm.len(), 1);
        assert_eq!(
            (shm[0].0, &*shm[0].1.source),
            (3, "tmpfs"),
            "the step's tmpfs at the default's place"
        );
    }

    #[test]
    fn v0_32_request_fields_reach_the_spec() {
        let mut req = request();
        req.cgroup_parent = Some("system.slice:".into());
        req.ulimits = vec![crate::request::Ulimit {
            name: "Nofile".into(),
            soft: 10,
            hard: 20,
        }];
        req.tracing_socket = Some("/exists/otel.sock".into());
        req.env = Some(vec!["OTEL_TRACES_EXPORTER=none".into()]);
        let (spec, log) = run_release(Release::V0_32, &req);
        let linux = spec.linux.as_ref().unwrap();
        assert_eq!(linux.cgroups_path, "system.slice:s1");
        let process = spec.process.as_ref().unwrap();
        assert_eq!(process.rlimits[0].kind, "RLIMIT_NOFILE");
        assert_eq!((process.rlimits[0].soft, process.rlimits[0].hard), (10, 20));
        assert_eq!(
            process.env[0], "OTEL_TRACES_EXPORTER=none",
            "a variable the step sets is kept"
        );
        assert_eq!(process.env.len(), 3);
        assert!(log.contains(&"exists /exists/otel.sock".to_string()));
        let sock = spec.mounts.last().unwrap();
        assert_eq!(
            (&*sock.destination, &*sock.source),
            ("/dev/otel-grpc.sock", "/exists/otel.sock")
        );
        req.cgroup_parent = Some("mygroup".into());
        req.tracing_socket = Some("/missing".into());
        let (spec, _) = run_release(Release::V0_32, &req);
        assert_eq!(spec.linux.unwrap().cgroups_path, "/mygroup/buildkit/s1");
        assert!(!spec.mounts.iter().any(|m| m.destination == "/dev/otel-grpc.sock"));
    }

    #[test]
    fn v0_32_insecure_grants_the_runner_s_capabilities_and_loops_from_zero() {
        let mut req = request();
        req.security_mode = SecurityMode::Insecure;
        let mut f = facts();
        f.first_free_loop = 2;
        let spec = generate_release_without_mounts(Release::V0_32, &req, &f).unwrap();
        let caps = spec.process.as_ref().unwrap().capabilities.as_ref().unwrap();
        assert_eq!(caps.bounding.len(), 16);
        assert_eq!(caps.inheritable[..], ["CAP_CHOWN", "CAP_SYS_ADMIN"]);
        let devices = &spec.linux.as_ref().unwrap().devices;
        let loops: Vec<_> = devices.iter().filter(|d| d.kind == "b").map(|d| d.minor).collect();
        assert_eq!(loops, (0..=9).collect::<Vec<_>>());
        let v08 = generate_release_without_mounts(Release::V0_8, &req, &f).unwrap();
        let loops: Vec<_> = v08
            .linux
            .unwrap()
            .devices
            .iter()
            .filter(|d| d.kind == "b")
            .map(|d| d.minor)
            .collect();
        assert_eq!(loops, (2..=9).collect::<Vec<_>>());
    }

    #[test]
    fn host_support_is_checked_and_v0_8_refuses_what_it_lacks() {
        let mut req = request();
        req.apparmor_profile = "p".into();
        let err = generate_release_without_mounts(Release::V0_32, &req, &facts()).unwrap_err();
        assert!(err
            .to_string()
            .contains("AppArmor is not supported on this host, but the profile 'p' was specified"));
        let mut f = facts();
        f.apparmor = true;
        let spec = generate_release_without_mounts(Release::V0_32, &req, &f).unwrap();
        assert_eq!(spec.process.unwrap().apparmor_profile, "p");
        let err = generate_release_without_mounts(Release::V0_8, &req, &f).unwrap_err();
        assert!(err.to_string().contains("request field `apparmor_profile`"), "{err}");
        req.apparmor_profile.clear();
        req.selinux = true;
        let err = generate_release_without_mounts(Release::V0_32, &req, &facts()).unwrap_err();
        assert!(err.to_string().contains("selinux is not available"));
        let mut f = facts();
        f.cgroup_namespace = true;
        req.selinux = false;
        let spec = generate_release_without_mounts(Release::V0_32, &req, &f).unwrap();
        assert_eq!(spec.linux.unwrap().namespaces.last().unwrap().kind, "cgroup");
    }

    #[test]
    fn selinux_labels_come_from_the_host_sandboxed_or_privileged() {
        let mut req = request();
        req.selinux = true;
        let mut f = facts();
        f.selinux = true;
        let mut host = FakeHost::default();
        let spec = generate(&req, &f, &mut host).unwrap();
        assert_eq!(host.log, ["selinux-labels privileged=false"]);
        assert_eq!(spec.process.as_ref().unwrap().selinux_label, "u:r:container_t:s0:c1,c2");
        assert_eq!(spec.linux.as_ref().unwrap().mount_label, "u:object_r:f_t:s0:c1,c2");
        let json: serde_json::Value = serde_json::from_str(&spec.to_json()).unwrap();
        assert_eq!(json["process"]["selinuxLabel"], "u:r:container_t:s0:c1,c2");
        assert_eq!(json["linux"]["mountLabel"], "u:object_r:f_t:s0:c1,c2");

        req.security_mode = SecurityMode::Insecure;
        let mut host = FakeHost::default();
        let spec = generate(&req, &f, &mut host).unwrap();
        assert_eq!(host.log, ["selinux-labels privileged=true"]);
        assert_eq!(spec.process.as_ref().unwrap().selinux_label, "");
        assert_eq!(
            spec.linux.as_ref().unwrap().mount_label,
            "u:object_r:f_t:s0:c1022,c1023"
        );

        // Not asked for: the host is not asked.
        req.selinux = false;
        let mut host = FakeHost::default();
        generate(&req, &f, &mut host).unwrap();
        assert!(host.log.is_empty(), "{:?}", host.log);
        // A host that cannot label fails the step, saying so.
        req.selinux = true;
        let err = generate_release_without_mounts(Release::V0_32, &req, &f).unwrap_err();
        assert!(err.to_string().starts_with("SELinux labels: refused"), "{err}");
    }
}
