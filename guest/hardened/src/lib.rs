//! `hardened`: tightens whatever spec comes before it in the chain (or the
//! default policy's spec when it runs alone), and denies what would make
//! the container privileged, judged by what the spec really grants:
//!
//! - insecure mode, the host's PID namespace (`no-sandbox`), the host
//!   network;
//! - a namespace of any type joined by path, unless the host says what it
//!   really is and that is allowed: a path under the prefixes given for
//!   its type (settings `allowed_namespaces`, by default
//!   `{"network": ["/run/netns"]}`, where `ip netns` and CNI put them),
//!   or, with `join_process_namespaces`, another process's namespace
//!   (`/proc/<pid>/ns/<type>`, as a pod's containers join their
//!   sandbox's), never the host's own (the one specwright runs in);
//! - a capability in any set outside the default set (containerd's,
//!   Docker's and BuildKit's 14) but those in `allowed_capabilities`;
//! - no seccomp filter on a host that has seccomp, or one whose default
//!   action lets a call through (unless `allow_unconfined_seccomp`), or a
//!   seccomp agent (`listenerPath`) not in `allowed_seccomp_agents`;
//! - a device cgroup rule that allows every device, a block device, or a
//!   character device to be opened beyond the engines' defaults (null,
//!   zero, full, random, urandom, tty, console, ptmx, pts, tun) and those
//!   given in `linux.devices`;
//! - /proc's kernel knobs writable (`/proc/sys`, `/proc/sysrq-trigger`,
//!   ...) or the host's files in it unmasked (`/proc/kcore`, ...), as
//!   every engine's default spec keeps them, unless `allow_unmasked_proc`;
//! - the host's root cgroup, or a cgroup path that leaves the container's
//!   (`..`);
//! - host device nodes (`linux.devices`) but those in `allowed_devices`;
//! - hooks (which run as root, most of them on the host) but those whose
//!   program, as the host resolves it, is in `allowed_hooks` (Docker's
//!   `libnetwork-setkey` hook runs `/proc/<dockerd's pid>/exe`, which is
//!   `/usr/sbin/dockerd`).
//!
//! Then it drops CAP_NET_RAW and CAP_MKNOD from every capability set and
//! sets NoNewPrivileges; with `readonly_rootfs`, it makes the rootfs
//! read-only too (a build step writes files, so by default it stays as
//! the spec says). Every denial names the setting that would allow it,
//! where one does.

use std::collections::BTreeMap;

use serde::Deserialize;
use specwright_sdk::derive::HOST_NAMESPACE_PATHS;
use specwright_sdk::mounts::clean_absolute;
use specwright_sdk::opts::DEFAULT_CAPS;
use specwright_sdk::request::{Network, ProcessMode, SecurityMode};
use specwright_sdk::{buildkit, Host, HostCalls, HostFacts, Input, Policy, PolicyError, Request, Spec};

pub struct Hardened;

/// Capabilities a build step does not get.
pub const DROPPED_CAPS: &[&str] = &["CAP_NET_RAW", "CAP_MKNOD"];

/// Seccomp default actions that stop a call the filter does not name.
const DENYING_ACTIONS: &[&str] = &[
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
];

/// The character devices engines let every container open (runc's and
/// Docker's defaults): null, zero, full, random, urandom, tty, console,
/// ptmx, the pseudo-terminals, tun. `None` is any minor.
const DEFAULT_CHAR_DEVICES: &[(i64, Option<i64>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(1)),
    (5, Some(2)),
    (136, None),
    (10, Some(200)),
];

/// Where network namespaces may be joined from, by default.
pub const DEFAULT_ALLOWED_NETNS: &[&str] = &["/run/netns"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Prefixes a namespace joined by path must lie under, by type.
    #[serde(default)]
    pub allowed_namespaces: Option<BTreeMap<String, Vec<String>>>,
    /// `allowed_namespaces.network`, as earlier versions named it.
    #[serde(default)]
    pub allowed_netns: Option<Vec<String>>,
    /// Whether another process's namespace (not the host's) may be joined.
    #[serde(default)]
    pub join_process_namespaces: bool,
    /// Capabilities beyond the default set a container may have.
    #[serde(default)]
    pub allowed_capabilities: Vec<String>,
    /// Host device nodes a container may be given.
    #[serde(default)]
    pub allowed_devices: Vec<String>,
    /// Hook programs a spec may run.
    #[serde(default)]
    pub allowed_hooks: Vec<String>,
    /// Seccomp agents' sockets (`linux.seccomp.listenerPath`) a spec may
    /// hand its notified syscalls to.
    #[serde(default)]
    pub allowed_seccomp_agents: Vec<String>,
    /// Whether a container may run without a seccomp filter that denies
    /// by default.
    #[serde(default)]
    pub allow_unconfined_seccomp: bool,
    /// Whether the rootfs is made read-only.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// Whether /proc's kernel knobs may be writable and the host's files
    /// in it unmasked (engines' default specs keep them).
    #[serde(default)]
    pub allow_unmasked_proc: bool,
}

impl Settings {
    pub fn from_value(settings: &serde_json::Value) -> Result<Settings, PolicyError> {
        let settings: Settings = if settings.is_null() {
            serde_json::from_value(serde_json::json!({}))
        } else {
            serde_json::from_value(settings.clone())
        }
        .map_err(|e| PolicyError::InvalidRequest(format!("settings: {e}")))?;
        if settings.allowed_namespaces.is_some() && settings.allowed_netns.is_some() {
            return Err(PolicyError::InvalidRequest(
                "settings: give allowed_namespaces or allowed_netns, not both".to_string(),
            ));
        }
        Ok(settings)
    }

    /// The prefixes for namespaces of `kind`.
    fn prefixes(&self, kind: &str) -> Vec<String> {
        match (&self.allowed_namespaces, &self.allowed_netns) {
            (Some(by_kind), _) => by_kind.get(kind).cloned().unwrap_or_default(),
            (None, Some(netns)) if kind == "network" => netns.clone(),
            (None, None) if kind == "network" => DEFAULT_ALLOWED_NETNS.iter().map(|s| s.to_string()).collect(),
            _ => Vec::new(),
        }
    }

    fn allows_path(&self, kind: &str, path: &str) -> bool {
        path.starts_with('/')
            && self.prefixes(kind).iter().any(|prefix| {
                let prefix = clean_absolute(prefix);
                clean_absolute(path)
                    .strip_prefix(&prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

/// Why the request is denied, if it is.
pub fn request_denial(request: &Request) -> Option<String> {
    if request.security_mode == SecurityMode::Insecure {
        return Some("insecure mode is not allowed".to_string());
    }
    if request.process_mode == ProcessMode::NoSandbox {
        return Some("the host's PID namespace (process mode no-sandbox) is not allowed".to_string());
    }
    if request.network == Network::Host {
        return Some("the host network is not allowed".to_string());
    }
    None
}

/// Why `spec` is denied, if it is: namespaces it joins, and what it grants.
pub fn spec_denial(spec: &Spec, facts: &HostFacts, settings: &Settings, host: &mut impl HostCalls) -> Option<String> {
    namespace_denial(spec, settings, host)
        .or_else(|| privilege_denial(spec, facts, settings))
        .or_else(|| hook_denial(spec, settings, host))
}

fn namespace_denial(spec: &Spec, settings: &Settings, host: &mut impl HostCalls) -> Option<String> {
    let namespaces = spec.linux.as_ref().map_or(&[][..], |l| &l.namespaces[..]);
    for ns in namespaces.iter().filter(|n| !n.path.is_empty()) {
        let (kind, path) = (&*ns.kind, &*ns.path);
        // The host names a namespace by the kernel's name for it
        // (`net:[4026531840]`), however the path reaches it.
        let real = match host.canonical_path(path) {
            Ok(real) => real,
            Err(e) => return Some(format!("{kind} namespace {path}: the host cannot resolve it: {e}")),
        };
        if real.starts_with('/') {
            return Some(format!("{kind} namespace {path} (really {real}) is no namespace"));
        }
        let hosts = HOST_NAMESPACE_PATHS
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, host_path)| host.canonical_path(host_path));
        match hosts {
            Some(Ok(hosts)) if hosts == real => {
                return Some(format!("{kind} namespace {path} is the host's own ({real})"));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                return Some(format!(
                    "the host's {kind} namespace cannot be compared with {path}: {e}"
                ))
            }
            None => return Some(format!("{kind} namespace {path}: not a namespace type hardened knows")),
        }
        // Another namespace than the host's: by where it is named.
        if settings.allows_path(kind, path) {
            continue;
        }
        if settings.join_process_namespaces && is_process_namespace(path) {
            continue;
        }
        return Some(if is_process_namespace(path) {
            format!("{kind} namespace {path} ({real}) is another process's (settings: join_process_namespaces)")
        } else {
            format!(
                "{kind} namespace {path} is not under the allowed {:?} (settings: allowed_namespaces.{kind})",
                settings.prefixes(kind)
            )
        });
    }
    None
}

/// Whether `path` is `/proc/<pid>/ns/<name>`: another process's namespace.
fn is_process_namespace(path: &str) -> bool {
    let cleaned = clean_absolute(path);
    let mut parts = cleaned.trim_start_matches('/').split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("proc"), Some(pid), Some("ns"), Some(name), None)
            if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
    )
}

/// What of /proc and /sys every engine's default spec keeps from a
/// container: read-only (or masked) knobs of the kernel, and masked files
/// of the host's.
const READONLY_PATHS: &[&str] = &["/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs", "/proc/irq"];
const MASKED_PATHS: &[&str] = &["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"];

fn privilege_denial(spec: &Spec, facts: &HostFacts, settings: &Settings) -> Option<String> {
    if let Some(reason) = proc_denial(spec, settings).or_else(|| cgroup_denial(spec)) {
        return Some(reason);
    }
    let process = spec.process.as_ref();
    if let Some(caps) = process.and_then(|p| p.capabilities.as_ref()) {
        let sets = [
            ("bounding", &caps.bounding),
            ("effective", &caps.effective),
            ("inheritable", &caps.inheritable),
            ("permitted", &caps.permitted),
            ("ambient", &caps.ambient),
        ];
        for (set, names) in sets {
            let extra = names.iter().find(|c| {
                !DEFAULT_CAPS.names.iter().any(|d| d == *c) && !settings.allowed_capabilities.iter().any(|a| a == &***c)
            });
            if let Some(cap) = extra {
                return Some(format!(
                    "capability {cap} ({set}) is outside the default set (settings: allowed_capabilities)"
                ));
            }
        }
    }
    let linux = spec.linux.as_ref();
    if !settings.allow_unconfined_seccomp {
        match linux.and_then(|l| l.seccomp.as_ref()) {
            None if facts.seccomp => {
                return Some(
                    "no seccomp filter (the host has seccomp): the container would be unconfined (settings: allow_unconfined_seccomp)"
                        .to_string(),
                )
            }
            Some(seccomp) if !DENYING_ACTIONS.contains(&&*seccomp.default_action) => {
                return Some(format!(
                    "a seccomp filter whose default action is {}: calls it does not name get through (settings: allow_unconfined_seccomp)",
                    seccomp.default_action
                ))
            }
            _ => {}
        }
    }
    // A seccomp agent answers the container's notified syscalls (it can
    // make them succeed, fail, or hand back files of its own).
    let listener = linux
        .and_then(|l| l.seccomp.as_ref())
        .and_then(|s| s.extra.get("listenerPath"));
    if let Some(listener) = listener {
        let path = listener.as_str().unwrap_or_default();
        if !settings.allowed_seccomp_agents.iter().any(|a| a == path) {
            return Some(format!(
                "a seccomp agent at {listener}, which would answer the container's syscalls (settings: allowed_seccomp_agents)"
            ));
        }
    }
    let devices = linux.map_or(&[][..], |l| &l.devices[..]);
    if let Some(device) = devices
        .iter()
        .find(|d| !settings.allowed_devices.iter().any(|a| a == &*d.path))
    {
        return Some(format!(
            "host device {} is given to the container (settings: allowed_devices)",
            device.path
        ));
    }
    let rules = linux
        .and_then(|l| l.resources.as_ref())
        .map_or(&[][..], |r| &r.devices[..]);
    for rule in rules.iter().filter(|r| r.allow) {
        if rule.kind.is_empty() || rule.kind == "a" || rule.major.is_none_or(|m| m < 0) {
            return Some("a device cgroup rule that allows every device".to_string());
        }
        let listed = devices
            .iter()
            .any(|d| d.kind == rule.kind && Some(d.major) == rule.major && rule.minor.is_none_or(|m| m == d.minor));
        let shown = || {
            format!(
                "{}:{}",
                rule.major.unwrap_or(-1),
                rule.minor.map_or("*".to_string(), |m| m.to_string())
            )
        };
        if rule.kind == "b" && !listed {
            return Some(format!("a device cgroup rule that allows block device {}", shown()));
        }
        // A character device the engines allow by default, or one given
        // (and so checked against allowed_devices), or mknod alone; not
        // the host's consoles, input devices or kernel log through a node
        // the image brings.
        let opens = rule.access.contains('r') || rule.access.contains('w');
        let default = DEFAULT_CHAR_DEVICES
            .iter()
            .any(|(major, minor)| rule.major == Some(*major) && (minor.is_none() || *minor == rule.minor));
        if rule.kind == "c" && opens && !listed && !default {
            return Some(format!(
                "a device cgroup rule that allows character device {} (settings: allowed_devices, for the node given)",
                shown()
            ));
        }
    }
    None
}

/// A container with /proc must not write the kernel's knobs
/// (`/proc/sys/kernel/core_pattern` runs a program as root on the host)
/// nor read the host's masked files.
fn proc_denial(spec: &Spec, settings: &Settings) -> Option<String> {
    if settings.allow_unmasked_proc || !spec.mounts.iter().any(|m| m.destination == "/proc") {
        return None;
    }
    let linux = spec.linux.as_ref();
    let masked = linux.map_or(&[][..], |l| &l.masked_paths[..]);
    let readonly = linux.map_or(&[][..], |l| &l.readonly_paths[..]);
    let listed = |list: &[specwright_sdk::spec::Name], path: &str| list.iter().any(|p| p == path);
    if let Some(path) = READONLY_PATHS
        .iter()
        .find(|p| !listed(readonly, p) && !listed(masked, p))
    {
        return Some(format!(
            "{path} is neither read-only nor masked: the container could write the kernel's settings (settings: allow_unmasked_proc)"
        ));
    }
    if let Some(path) = MASKED_PATHS.iter().find(|p| !listed(masked, p)) {
        return Some(format!("{path} is not masked (settings: allow_unmasked_proc)"));
    }
    None
}

/// The root cgroup, or a path out of where the container's is put, would
/// give the container the host's limits (and its removal the host's
/// cgroups).
fn cgroup_denial(spec: &Spec) -> Option<String> {
    let path = spec.linux.as_ref().map(|l| l.cgroups_path.as_str()).unwrap_or_default();
    // systemd's "slice:prefix:name" names no path.
    if path.contains(':') {
        return None;
    }
    if !path.is_empty() && (path.trim_matches('/').is_empty() || path.split('/').any(|c| c == "..")) {
        return Some(format!(
            "linux.cgroupsPath {path:?} is the host's root cgroup or leaves the container's"
        ));
    }
    None
}

fn hook_denial(spec: &Spec, settings: &Settings, host: &mut impl HostCalls) -> Option<String> {
    let hooks = spec.hooks.as_ref()?;
    let all = [
        ("prestart", &hooks.prestart),
        ("createRuntime", &hooks.create_runtime),
        ("createContainer", &hooks.create_container),
        ("startContainer", &hooks.start_container),
        ("poststart", &hooks.poststart),
        ("poststop", &hooks.poststop),
    ];
    for (when, list) in all {
        for hook in list.iter() {
            let real = host.canonical_path(&hook.path);
            let allowed = |path: &str| settings.allowed_hooks.iter().any(|a| a == path);
            if allowed(&hook.path) && real.as_ref().is_ok_and(|real| real == &hook.path) {
                continue;
            }
            match real {
                Ok(real) if allowed(&real) => continue,
                Ok(real) if real != hook.path => {
                    return Some(format!(
                        "a {when} hook runs {} (really {real}) as root (settings: allowed_hooks)",
                        hook.path
                    ))
                }
                _ => {
                    return Some(format!(
                        "a {when} hook runs {} as root (settings: allowed_hooks)",
                        hook.path
                    ))
                }
            }
        }
    }
    None
}

/// The hardening itself, on any spec.
pub fn harden(mut spec: Spec, settings: &Settings) -> Spec {
    let process = spec.process_mut();
    process.no_new_privileges = true;
    if let Some(caps) = process.capabilities.as_mut() {
        for set in caps.sets_mut() {
            // A list borrowed from the default spec is copied only if it changes.
            if set.iter().any(|c| DROPPED_CAPS.contains(&&**c)) {
                set.to_mut().retain(|c| !DROPPED_CAPS.contains(&&**c));
            }
        }
    }
    if settings.readonly_rootfs {
        spec.root.get_or_insert_with(Default::default).readonly = true;
    }
    spec
}

impl Policy for Hardened {
    const NAME: &'static str = "hardened";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Denies insecure mode, the host PID namespace and network, namespaces joined outside allowed paths, capabilities beyond the default set, no seccomp, host devices and hooks; drops CAP_NET_RAW and CAP_MKNOD; sets NoNewPrivileges; a read-only rootfs if its settings ask.";

    fn generate(input: Input, host: &mut Host) -> Result<Spec, PolicyError> {
        let settings = Settings::from_value(&input.settings)?;
        if let Some(reason) = request_denial(&input.request) {
            return Err(PolicyError::Denied(reason));
        }
        let spec = match input.previous {
            Some(spec) => spec,
            None => buildkit::generate(&input.request, &input.facts, host)?,
        };
        if let Some(reason) = spec_denial(&spec, &input.facts, &settings, host) {
            return Err(PolicyError::Denied(reason));
        }
        Ok(harden(spec, &settings))
    }
}

specwright_sdk::export_policy!(Hardened);

#[cfg(test)]
mod tests {
    use super::*;
    use specwright_sdk::buildkit::generate_without_mounts;
    use specwright_sdk::HostError;

    fn request(extra: &str) -> Request {
        Request::from_json(&format!(r#"{{"id": "s", "args": ["/bin/true"]{extra}}}"#)).unwrap()
    }

    fn facts() -> HostFacts {
        HostFacts::example()
    }

    /// A host where `/run/netns/evil` is the host's network namespace
    /// bound there (`ip netns attach evil 1`), `/proc/77/ns/*` another
    /// process's namespaces, `/proc/self/ns/*` (the host's own) and
    /// `/proc/1/ns/*` the host's, and the other namespace paths name
    /// namespaces of their own.
    struct FakeHost;

    impl HostCalls for FakeHost {
        type Source = ();
        type Root = ();

        fn canonical_path(&mut self, path: &str) -> Result<String, HostError> {
            Ok(match path {
                "/proc/self/ns/net" | "/proc/1/ns/net" | "/run/netns/evil" => "net:[4026531840]".to_string(),
                "/proc/self/ns/pid" | "/proc/1/ns/pid" => "pid:[4026531836]".to_string(),
                "/proc/77/ns/pid" => "pid:[4026532999]".to_string(),
                "/proc/77/ns/ipc" => "ipc:[4026532998]".to_string(),
                "/proc/self/ns/ipc" => "ipc:[4026531839]".to_string(),
                "/proc/self/ns/uts" => "uts:[4026531838]".to_string(),
                "/run/netns/cni-1" | "/run/netnsx/a" | "/var/run/cni/n1" | "/run/netns/x" => {
                    "net:[4026532100]".to_string()
                }
                "/var/run/ipc-ns" => "ipc:[4026532101]".to_string(),
                "/etc/passwd" => "/etc/passwd".to_string(),
                "/missing" => return Err(HostError::Failed("ENOENT".into())),
                "/proc/99/exe" => "/usr/sbin/dockerd".to_string(),
                other => other.to_string(),
            })
        }
    }

    fn settings(json: serde_json::Value) -> Settings {
        Settings::from_value(&json).unwrap()
    }

    fn base() -> Spec {
        generate_without_mounts(&request(""), &facts()).unwrap()
    }

    fn denied(spec: &Spec, settings: &Settings) -> Option<String> {
        spec_denial(spec, &facts(), settings, &mut FakeHost)
    }

    fn joining(kind: &str, path: &str) -> Spec {
        let mut spec = base();
        let linux = spec.linux_mut();
        linux.namespaces.retain(|n| n.kind != kind);
        linux.namespaces.push(specwright_sdk::spec::Namespace {
            kind: kind.to_string().into(),
            path: path.to_string().into(),
        });
        spec
    }

    #[test]
    fn insecure_and_host_network_are_denied() {
        assert!(request_denial(&request(r#", "security_mode": "insecure""#))
            .unwrap()
            .contains("insecure"));
        assert!(request_denial(&request(r#", "network": {"mode": "host"}"#))
            .unwrap()
            .contains("host network"));
        assert!(request_denial(&request(r#", "process_mode": "no-sandbox""#))
            .unwrap()
            .contains("no-sandbox"));
        assert_eq!(request_denial(&request("")), None);
        assert_eq!(denied(&base(), &settings(serde_json::json!({}))), None);
    }

    /// Regression: the host's network namespace by path, and any other
    /// namespace by path, got through.
    #[test]
    fn every_namespace_joined_by_path_is_checked() {
        let none = settings(serde_json::Value::Null);
        assert_eq!(denied(&joining("network", "/run/netns/cni-1"), &none), None);
        for (kind, path, needle) in [
            ("network", "/proc/1/ns/net", "the host's own"),
            ("network", "/run/netns/evil", "the host's own"),
            ("network", "/run/netnsx/a", "not under the allowed"),
            ("pid", "/proc/1/ns/pid", "the host's own"),
            ("pid", "/proc/77/ns/pid", "join_process_namespaces"),
            ("ipc", "/var/run/ipc-ns", "allowed_namespaces.ipc"),
            ("uts", "/missing", "cannot resolve"),
            ("uts", "/etc/passwd", "is no namespace"),
        ] {
            let reason = denied(&joining(kind, path), &none).unwrap_or_else(|| panic!("{kind} {path} allowed"));
            assert!(reason.contains(needle), "{kind} {path}: {reason}");
        }
        let pods = settings(serde_json::json!({"join_process_namespaces": true}));
        assert_eq!(denied(&joining("ipc", "/proc/77/ns/ipc"), &pods), None);
        assert!(denied(&joining("pid", "/proc/1/ns/pid"), &pods)
            .unwrap()
            .contains("the host's own"));
        let custom = settings(serde_json::json!({"allowed_netns": ["/var/run/cni"]}));
        assert_eq!(denied(&joining("network", "/var/run/cni/n1"), &custom), None);
        let custom = settings(serde_json::json!({"allowed_namespaces": {"ipc": ["/var/run"]}}));
        assert_eq!(denied(&joining("ipc", "/var/run/ipc-ns"), &custom), None);
        assert!(denied(&joining("network", "/run/netns/x"), &custom).is_some());
        assert!(Settings::from_value(&serde_json::json!({"other": 1})).is_err());
    }

    /// Regression: privilege was judged by CAP_SYS_ADMIN in the bounding
    /// set alone.
    #[test]
    fn privilege_is_judged_by_what_the_spec_grants() {
        let none = settings(serde_json::Value::Null);
        let mut all_but_admin = base();
        let caps = all_but_admin.process_mut().capabilities.as_mut().unwrap();
        caps.effective.to_mut().push("CAP_SYS_PTRACE".into());
        let reason = denied(&all_but_admin, &none).unwrap();
        assert!(
            reason.contains("CAP_SYS_PTRACE") && reason.contains("allowed_capabilities"),
            "{reason}"
        );
        assert_eq!(
            denied(
                &all_but_admin,
                &settings(serde_json::json!({"allowed_capabilities": ["CAP_SYS_PTRACE"]}))
            ),
            None
        );
        let mut unconfined = base();
        unconfined.linux_mut().seccomp = None;
        assert!(denied(&unconfined, &none).unwrap().contains("no seccomp"));
        let mut allow_all = base();
        allow_all.linux_mut().seccomp = Some(specwright_sdk::spec::Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            ..Default::default()
        });
        assert!(denied(&allow_all, &none)
            .unwrap()
            .contains("default action is SCMP_ACT_ALLOW"));
        let unconfined_ok = settings(serde_json::json!({"allow_unconfined_seccomp": true}));
        assert_eq!(denied(&allow_all, &unconfined_ok), None);
        assert_eq!(denied(&unconfined, &unconfined_ok), None);
        let mut agent = base();
        if let Some(seccomp) = agent.linux_mut().seccomp.as_mut() {
            seccomp
                .extra
                .insert("listenerPath".to_string(), serde_json::json!("/run/agent.sock"));
        }
        assert!(denied(&agent, &none).unwrap().contains("allowed_seccomp_agents"));
        let agent_ok = settings(serde_json::json!({"allowed_seccomp_agents": ["/run/agent.sock"]}));
        assert_eq!(denied(&agent, &agent_ok), None);
        let mut devices = base();
        devices
            .linux_mut()
            .resources
            .get_or_insert_with(Default::default)
            .devices = vec![specwright_sdk::spec::DeviceCgroup {
            allow: true,
            kind: "a".into(),
            major: None,
            minor: None,
            access: "rwm".into(),
            extra: Default::default(),
        }];
        assert!(denied(&devices, &none).unwrap().contains("allows every device"));
        // The host's kernel log, opened through a node the image brings.
        let rule = |kind: &'static str, major: i64, minor: Option<i64>, access: &'static str| {
            specwright_sdk::spec::DeviceCgroup {
                allow: true,
                kind: kind.into(),
                major: Some(major),
                minor,
                access: access.into(),
                extra: Default::default(),
            }
        };
        for (kmsg, expected) in [
            (rule("c", 1, Some(11), "rwm"), Some("character device 1:11")),
            (rule("c", 13, None, "r"), Some("character device 13:*")),
            (rule("c", 136, Some(4), "rw"), None),
            (rule("c", 1, Some(3), "rwm"), None),
            (rule("c", 1, Some(11), "m"), None),
            (rule("c", 1, None, "rwm"), Some("character device 1:*")),
        ] {
            let mut spec = base();
            spec.linux_mut().resources.get_or_insert_with(Default::default).devices = vec![kmsg];
            let got = denied(&spec, &none);
            match expected {
                Some(needle) => assert!(got.as_deref().is_some_and(|g| g.contains(needle)), "{got:?}"),
                None => assert_eq!(got, None),
            }
        }
        let mut loop_device = base();
        loop_device.linux_mut().devices = vec![specwright_sdk::spec::Device {
            path: "/dev/loop0".into(),
            kind: "b".into(),
            major: 7,
            minor: 0,
            file_mode: None,
            uid: None,
            gid: None,
            extra: Default::default(),
        }];
        assert!(denied(&loop_device, &none).unwrap().contains("allowed_devices"));
        let mut hooked = base();
        hooked.hooks = Some(specwright_sdk::spec::Hooks {
            create_runtime: vec![specwright_sdk::spec::Hook {
                path: "/bin/sh".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(denied(&hooked, &none)
            .unwrap()
            .contains("createRuntime hook runs /bin/sh"));
        assert_eq!(
            denied(&hooked, &settings(serde_json::json!({"allowed_hooks": ["/bin/sh"]}))),
            None
        );
    }

    /// Regression (red team): /proc unmasked let a container open the
    /// host's core_pattern for writing; a cgroupsPath of "/" made runc's
    /// cleanup remove the host's cgroups.
    #[test]
    fn proc_knobs_and_the_root_cgroup_are_denied() {
        let none = settings(serde_json::Value::Null);
        let mut unmasked = base();
        unmasked.linux_mut().readonly_paths = Default::default();
        assert!(denied(&unmasked, &none)
            .unwrap()
            .contains("/proc/sys is neither read-only nor masked"));
        let mut unmasked = base();
        unmasked.linux_mut().masked_paths = Default::default();
        assert!(denied(&unmasked, &none).unwrap().contains("/proc/kcore is not masked"));
        assert_eq!(
            denied(&unmasked, &settings(serde_json::json!({"allow_unmasked_proc": true}))),
            None
        );
        for path in ["/", "//", "/a/../../b"] {
            let mut rooted = base();
            rooted.linux_mut().cgroups_path = path.to_string();
            assert!(denied(&rooted, &none).unwrap().contains("cgroupsPath"), "{path}");
        }
        let mut systemd = base();
        systemd.linux_mut().cgroups_path = "machine.slice:libpod:abc".to_string();
        assert_eq!(denied(&systemd, &none), None);
    }

    #[test]
    fn hardening_drops_caps_and_privileges() {
        let spec = harden(base(), &settings(serde_json::Value::Null));
        let process = spec.process.as_ref().unwrap();
        assert!(process.no_new_privileges);
        let caps = process.capabilities.as_ref().unwrap();
        // BuildKit v0.32 grants no inheritable capabilities at all.
        assert!(caps.inheritable.is_empty(), "{:?}", caps.inheritable);
        for set in [&caps.bounding, &caps.effective, &caps.permitted] {
            assert_eq!(set.len(), 12, "{set:?}");
            assert!(!set.iter().any(|c| c == "CAP_NET_RAW" || c == "CAP_MKNOD"));
            assert!(set.iter().any(|c| c == "CAP_CHOWN"));
        }
        assert!(!spec.root.unwrap().readonly, "a build step writes files");
        let spec = harden(base(), &settings(serde_json::json!({"readonly_rootfs": true})));
        assert!(spec.root.unwrap().readonly);
    }
}
