//! Docker's default seccomp profile, kept as data (`data/seccomp-default.profile`)
//! and filtered for one process: by the capabilities in its bounding set,
//! the host's architecture and the kernel release.

use std::sync::OnceLock;

use crate::facts::{HostFacts, KernelVersion};
use crate::spec::{Seccomp, SeccompArg, Syscall};

const PROFILE_TEXT: &str = include_str!("../data/seccomp-default.profile");

#[derive(Debug, Default)]
pub struct Profile {
    pub default_action: String,
    pub arches: Vec<ArchEntry>,
    pub rules: Vec<Rule>,
}

#[derive(Debug)]
pub struct ArchEntry {
    pub native: String,
    pub goarch: String,
    pub sub_arches: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Rule {
    pub syscall: Syscall,
    pub min_kernel: Option<KernelVersion>,
    pub include_arches: Vec<String>,
    pub exclude_arches: Vec<String>,
    pub include_caps: Vec<String>,
    pub exclude_caps: Vec<String>,
}

impl Rule {
    fn applies(&self, arch: &str, caps: &[String], kernel: Option<KernelVersion>) -> bool {
        let has_cap = |c: &String| caps.iter().any(|b| b == c);
        if self.exclude_arches.iter().any(|a| a == arch) {
            return false;
        }
        if self.exclude_caps.iter().any(has_cap) {
            return false;
        }
        if let Some(min) = self.min_kernel {
            // An unparsable release fails the gate: the rule stays out.
            if kernel.is_none_or(|k| k < min) {
                return false;
            }
        }
        if !self.include_arches.is_empty() && !self.include_arches.iter().any(|a| a == arch) {
            return false;
        }
        self.include_caps.iter().all(has_cap)
    }
}

/// The parsed default profile; parsed once per process (or wasm instance).
pub fn default_profile() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(|| {
        // The table is compiled in and covered by tests: a parse error is a
        // build defect, not input to recover from.
        parse_profile(PROFILE_TEXT).unwrap_or_else(|e| panic!("seccomp-default.profile: {e}"))
    })
}

/// The default profile for a process with bounding set `caps` on this host.
pub fn default_seccomp(caps: &[String], facts: &HostFacts) -> Seccomp {
    let profile = default_profile();
    let arch = go_to_native_arch(&facts.arch);
    let kernel = KernelVersion::parse(&facts.kernel_release);
    let mut architectures = Vec::new();
    for entry in profile.arches.iter().filter(|e| e.goarch == arch) {
        architectures.push(entry.native.clone());
        architectures.extend(entry.sub_arches.iter().cloned());
    }
    let syscalls = profile
        .rules
        .iter()
        .filter(|r| r.applies(arch, caps, kernel))
        .map(|r| r.syscall.clone())
        .collect();
    Seccomp {
        default_action: profile.default_action.clone(),
        architectures,
        syscalls,
    }
}

/// Go's architecture names where the profile uses others.
fn go_to_native_arch(goarch: &str) -> &str {
    match goarch {
        "386" => "x86",
        other => other,
    }
}

pub fn parse_profile(text: &str) -> Result<Profile, String> {
    let mut profile = Profile::default();
    let mut logical = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim_end();
        if let Some(body) = line.strip_suffix('\\') {
            logical.push_str(body);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let words: Vec<&str> = logical.split_whitespace().collect();
        let result = apply_directive(&mut profile, &words);
        logical.clear();
        result.map_err(|e| format!("line {}: {e}", n + 1))?;
    }
    if profile.default_action.is_empty() {
        return Err("no default-action".to_string());
    }
    Ok(profile)
}

fn apply_directive(profile: &mut Profile, words: &[&str]) -> Result<(), String> {
    let owned = |ws: &[&str]| ws.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let Some((&keyword, rest)) = words.split_first() else {
        return Ok(());
    };
    if keyword == "default-action" {
        profile.default_action = rest.first().ok_or("default-action needs an action")?.to_string();
        return Ok(());
    }
    if keyword == "arch" {
        if rest.len() < 2 {
            return Err("arch needs NATIVE GOARCH".to_string());
        }
        profile.arches.push(ArchEntry {
            native: rest[0].to_string(),
            goarch: rest[1].to_string(),
            sub_arches: owned(&rest[2..]),
        });
        return Ok(());
    }
    if keyword == "rule" {
        if rest.len() < 2 {
            return Err("rule needs an action and at least one name".to_string());
        }
        profile.rules.push(Rule {
            syscall: Syscall {
                names: owned(&rest[1..]),
                action: rest[0].to_string(),
                args: Vec::new(),
            },
            ..Rule::default()
        });
        return Ok(());
    }
    let rule = profile
        .rules
        .last_mut()
        .ok_or_else(|| format!("{keyword} outside a rule"))?;
    match keyword {
        "arg" => {
            let num = |s: &str| s.parse::<u64>().map_err(|_| format!("bad number {s:?}"));
            if !(3..=4).contains(&rest.len()) {
                return Err("arg needs INDEX OP VALUE [VALUE_TWO]".to_string());
            }
            rule.syscall.args.push(SeccompArg {
                index: rest[0].parse().map_err(|_| format!("bad index {:?}", rest[0]))?,
                op: rest[1].to_string(),
                value: num(rest[2])?,
                value_two: rest.get(3).map(|v| num(v)).transpose()?.unwrap_or(0),
            });
        }
        "min-kernel" => {
            let v = rest.first().ok_or("min-kernel needs a version")?;
            rule.min_kernel = Some(KernelVersion::parse(v).ok_or_else(|| format!("bad kernel version {v:?}"))?);
        }
        "include-arches" => rule.include_arches = owned(rest),
        "exclude-arches" => rule.exclude_arches = owned(rest),
        "include-caps" => rule.include_caps = owned(rest),
        "exclude-caps" => rule.exclude_caps = owned(rest),
        other => return Err(format!("unknown directive {other:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opts::DEFAULT_CAPS;

    fn facts(kernel: &str, arch: &str) -> HostFacts {
        HostFacts {
            kernel_release: kernel.into(),
            seccomp: true,
            first_free_loop: 0,
            in_user_namespace: false,
            arch: arch.into(),
        }
    }

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| c.to_string()).collect()
    }

    fn has_rule(s: &Seccomp, name: &str) -> bool {
        s.syscalls.iter().any(|r| r.names.iter().any(|n| n == name))
    }

    #[test]
    fn profile_parses() {
        let p = default_profile();
        assert_eq!(p.default_action, "SCMP_ACT_ERRNO");
        assert!(p.rules[0].syscall.names.len() > 300);
    }

    #[test]
    fn ptrace_is_gated_on_kernel_4_8() {
        let default = caps(DEFAULT_CAPS);
        let old = default_seccomp(&default, &facts("4.4.0-210-generic", "amd64"));
        let new = default_seccomp(&default, &facts("4.8.0", "amd64"));
        assert!(!has_rule(&old, "ptrace"));
        assert!(has_rule(&new, "ptrace"));
        assert_eq!(new.syscalls.len(), old.syscalls.len() + 1);
    }

    #[test]
    fn unparsable_kernel_keeps_gated_rules_out() {
        let s = default_seccomp(&caps(DEFAULT_CAPS), &facts("weird", "amd64"));
        assert!(!has_rule(&s, "ptrace"));
    }

    #[test]
    fn caps_gate_rules() {
        let default = caps(DEFAULT_CAPS);
        let s = default_seccomp(&default, &facts("6.1", "amd64"));
        assert!(has_rule(&s, "chroot"), "CAP_SYS_CHROOT is a default cap");
        assert!(!has_rule(&s, "mount"));
        assert!(!has_rule(&s, "reboot"));
        let clone = s.syscalls.iter().find(|r| r.names == ["clone"]).unwrap();
        assert_eq!(clone.args[0].op, "SCMP_CMP_MASKED_EQ");

        let mut admin = default.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let s = default_seccomp(&admin, &facts("6.1", "amd64"));
        assert!(has_rule(&s, "mount"));
        assert!(
            !s.syscalls.iter().any(|r| r.names == ["clone"]),
            "the masked clone rule is only for processes without CAP_SYS_ADMIN"
        );

        let no_chroot: Vec<String> = default.into_iter().filter(|c| c != "CAP_SYS_CHROOT").collect();
        let s = default_seccomp(&no_chroot, &facts("6.1", "amd64"));
        assert!(!has_rule(&s, "chroot"));
    }

    #[test]
    fn arches_follow_the_host() {
        let default = caps(DEFAULT_CAPS);
        let amd = default_seccomp(&default, &facts("6.1", "amd64"));
        assert_eq!(
            amd.architectures,
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        assert!(has_rule(&amd, "arch_prctl"));
        let arm = default_seccomp(&default, &facts("6.1", "arm64"));
        assert_eq!(arm.architectures, ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
        assert!(!has_rule(&arm, "arch_prctl"));
        assert!(has_rule(&arm, "cacheflush"));
        let s390 = default_seccomp(&default, &facts("6.1", "s390x"));
        let clone = s390.syscalls.iter().find(|r| r.names == ["clone"]).unwrap();
        assert_eq!(clone.args[0].index, 1);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = parse_profile("default-action X\nrule A\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let err = parse_profile("default-action X\nmin-kernel 4.8\n").unwrap_err();
        assert!(err.contains("outside a rule"), "{err}");
    }
}
