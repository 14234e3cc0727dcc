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
pub fn generate<M: Mounter>(
    request: &Request,
    facts: &HostFacts,
    mounter: &mut M,
) -> Result<Spec, PolicyError> {
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
    let hostname = match request.hostname.as_str() {
        "" => DEFAULT_HOSTNAME,
        name => name,
    };
    with_hostname(&mut spec, hostname);
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
