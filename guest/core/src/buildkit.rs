//! BuildKit v0.8.1's `GenerateSpec`, as one pipeline of spec options.

use crate::facts::HostFacts;
use crate::mounts::{with_request_mounts, Mounter};
use crate::opts::*;
use crate::request::{parse_user, ProcessMode, Request, SecurityMode};
use crate::spec::Spec;
use crate::PolicyError;

/// BuildKit's hostname when the step names none.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// The spec BuildKit would generate for `request` on a host with `facts`,
/// asking `mounter` for the step's mounts.
pub fn generate<M: Mounter>(request: &Request, facts: &HostFacts, mounter: &mut M) -> Result<Spec, PolicyError> {
    let mut spec = generate_without_mounts(request, facts)?;
    with_request_mounts(&mut spec, request, mounter)?;
    Ok(spec)
}

/// Everything but the request's own mounts: needs no host operation.
pub fn generate_without_mounts(request: &Request, facts: &HostFacts) -> Result<Spec, PolicyError> {
    let mut spec = default_unix_spec(&request.namespace, &request.id);

    // What the runc executor passes in, applied before GenerateSpec's own options.
    if !request.user.is_empty() {
        let (uid, gid) = parse_user(&request.user)?;
        with_uid_gid(&mut spec, uid, gid);
    }

    with_removed_mount(&mut spec, "/run");
    with_ro_bind(&mut spec, &request.resolv_conf, "/etc/resolv.conf");
    with_ro_bind(&mut spec, &request.hosts_file, "/etc/hosts");
    with_cgroup_mount(&mut spec);

    match request.security_mode {
        SecurityMode::Sandbox => {
            if facts.seccomp {
                with_default_seccomp(&mut spec, facts);
            }
        }
        SecurityMode::Insecure => {
            // Device nodes cannot be created inside a user namespace, whether
            // the host runs in one or the step asks for one.
            let in_userns = facts.in_user_namespace || request.idmap.is_some();
            with_insecure_spec(&mut spec, facts.first_free_loop, in_userns);
            with_writeable_mounts_of_type(&mut spec, "cgroup");
            with_writeable_mounts_of_type(&mut spec, "sysfs");
        }
    }

    if request.process_mode == ProcessMode::NoSandbox {
        with_host_namespace(&mut spec, "pid");
        with_bound_proc(&mut spec);
    }

    if let Some(idmap) = &request.idmap {
        with_user_namespace(&mut spec, &idmap.uids, &idmap.gids);
    }

    with_process_args(&mut spec, request.args.as_deref());
    with_env(&mut spec, request.env.as_deref());
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

    with_network(&mut spec, &request.network);
    without_rlimits(&mut spec);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::HostError;
    use crate::request::{IdMap, IdRange, MountRequest, Mountable, Network};
    use crate::spec::{Mount, Name};

    /// A host that records what it is asked and resolves by joining
    /// (the real, in-root resolution is tested in the host).
    #[derive(Default)]
    struct FakeHost {
        request: Vec<Vec<Mountable>>,
        log: Vec<String>,
        fail_resolve: Option<String>,
    }

    impl Mounter for FakeHost {
        type Source = usize;
        type Root = String;

        fn materialize(&mut self, index: u32) -> Result<(usize, Vec<Mountable>), HostError> {
            self.log.push(format!("materialize {index}"));
            let i = index as usize;
            Ok((i, self.request[i].clone()))
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
    }

    fn facts() -> HostFacts {
        HostFacts {
            kernel_release: "6.1.0".into(),
            seccomp: true,
            first_free_loop: 3,
            in_user_namespace: false,
            arch: "amd64".into(),
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

    fn run(req: &Request) -> (Spec, Vec<String>) {
        let mut host = FakeHost {
            request: req.mounts.iter().map(|m| m.materialize().unwrap()).collect(),
            ..FakeHost::default()
        };
        let spec = generate(req, &facts(), &mut host).unwrap();
        (spec, host.log)
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
        let spec = generate_without_mounts(&request(), &f).unwrap();
        assert!(spec.linux.unwrap().seccomp.is_none());
    }

    #[test]
    fn insecure_drops_seccomp_and_masks_and_adds_devices() {
        let mut req = request();
        req.security_mode = SecurityMode::Insecure;
        let spec = generate_without_mounts(&req, &facts()).unwrap();
        let linux = spec.linux.as_ref().unwrap();
        assert!(linux.seccomp.is_none());
        assert!(linux.masked_paths.is_empty() && linux.readonly_paths.is_empty());
        assert_eq!(linux.devices.len(), 14);
        assert_eq!(linux.devices[6].path, "/dev/loop3");
        let sys = spec.mounts.iter().find(|m| m.destination == "/sys").unwrap();
        assert_eq!(sys.options.last().unwrap(), "rw");
    }

    #[test]
    fn insecure_with_idmap_skips_device_nodes() {
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
        let spec = generate_without_mounts(&req, &facts()).unwrap();
        let linux = spec.linux.unwrap();
        assert!(linux.devices.is_empty());
        assert_eq!(linux.namespaces.last().unwrap().kind, "user");
        assert_eq!(linux.uid_mappings[0].host_id, 100000);
    }

    #[test]
    fn insecure_inside_a_user_namespace_host_skips_device_nodes() {
        let mut req = request();
        req.security_mode = SecurityMode::Insecure;
        let mut f = facts();
        f.in_user_namespace = true;
        assert!(generate_without_mounts(&req, &f)
            .unwrap()
            .linux
            .unwrap()
            .devices
            .is_empty());
    }

    #[test]
    fn no_sandbox_shares_pids_and_binds_proc_first() {
        let mut req = request();
        req.process_mode = ProcessMode::NoSandbox;
        let spec = generate_without_mounts(&req, &facts()).unwrap();
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
        let spec = generate_without_mounts(&req, &facts()).unwrap();
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
        let err = generate(&req, &facts(), &mut host).unwrap_err();
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
}
