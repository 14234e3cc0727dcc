//! The default seccomp profiles of BuildKit's releases (Docker's, as
//! BuildKit v0.8.1 vendored it, and moby/profiles' of v0.32.2), kept as
//! data (`data/seccomp-*.profile`, turned into static tables by `build.rs`)
//! and filtered for one process:
//! by the capabilities in its bounding set, the host's architecture and
//! the kernel release.

use std::borrow::Cow;

use crate::facts::{HostFacts, KernelVersion};
use crate::spec::{same_text, Extra, Name, Names, PartOf, Seccomp, SeccompArg, StaticNames, Syscall};

/// The seccomp architectures of one Go architecture, with their JSON.
pub struct StaticArch {
    pub goarch: &'static str,
    pub architectures: &'static StaticNames,
}

pub struct StaticRule {
    /// The rule's names, whose [`StaticNames::part_of`] is [`Self::rest`].
    pub names: &'static StaticNames,
    /// The rule's action and arguments.
    pub rest: &'static RuleRest,
    pub min_kernel: Option<KernelVersion>,
    /// Architectures and capabilities as masks of `arch_bit` and `cap_bit`.
    pub include_arches: u64,
    pub exclude_arches: u64,
    pub include_caps: u64,
    pub exclude_caps: u64,
}

/// What a rule of the profile holds besides its names, with the JSON that
/// follows them (`,"action":...}`), made at build time: a spec's rule
/// whose names are still the rule's, and whose action and arguments equal
/// these, is written as its names' JSON and this.
#[derive(Debug)]
pub struct RuleRest {
    pub action: &'static str,
    pub errno_ret: Option<u32>,
    pub args: &'static [SeccompArg],
    pub json: &'static str,
}

impl RuleRest {
    /// The JSON after the names of `rule`, when it is still this rule.
    pub fn json_for(&self, rule: &Syscall) -> Option<&'static str> {
        // Equal by content; arguments still borrowing the rule's own are
        // equal without reading them (as `same_text` does for strings).
        let same_args = std::ptr::eq(&*rule.args, self.args) || *rule.args == *self.args;
        (rule.extra.is_empty() && same_text(&rule.action, self.action) && rule.errno_ret == self.errno_ret && same_args)
            .then_some(self.json)
    }
}

/// `DEFAULT_ACTION`, `DEFAULT_ERRNO_RET`, `ARCHES` and `RULES`, and the
/// bit of each architecture and capability a rule mentions, generated from
/// one profile.
macro_rules! table {
    ($module:ident, $file:literal) => {
        mod $module {
            use super::{KernelVersion, PartOf, RuleRest, SeccompArg, StaticArch, StaticNames, StaticRule};
            use std::borrow::Cow;
            include!(concat!(env!("OUT_DIR"), "/", $file));
        }
    };
}
table!(table_v0_8, "seccomp_table_v0_8.rs");
table!(table_v0_32, "seccomp_table_v0_32.rs");

/// One release's default profile, as generated tables.
pub struct Profile {
    pub default_action: &'static str,
    pub default_errno_ret: Option<u32>,
    pub arches: &'static [StaticArch],
    pub rules: &'static [StaticRule],
    /// The bit of an architecture and of a capability in a rule's masks.
    pub arch_bit: fn(&str) -> u64,
    pub cap_bit: fn(&str) -> u64,
    /// The profile's name for a Go architecture.
    pub native_arch: fn(&str) -> &str,
}

/// Docker's profile, as BuildKit v0.8.1 applies it.
pub static V0_8: Profile = Profile {
    default_action: table_v0_8::DEFAULT_ACTION,
    default_errno_ret: table_v0_8::DEFAULT_ERRNO_RET,
    arches: table_v0_8::ARCHES,
    rules: table_v0_8::RULES,
    arch_bit: table_v0_8::arch_bit,
    cap_bit: table_v0_8::cap_bit,
    native_arch: docker_native_arch,
};

/// moby/profiles' profile, as BuildKit v0.32.2 applies it.
pub static V0_32: Profile = Profile {
    default_action: table_v0_32::DEFAULT_ACTION,
    default_errno_ret: table_v0_32::DEFAULT_ERRNO_RET,
    arches: table_v0_32::ARCHES,
    rules: table_v0_32::RULES,
    arch_bit: table_v0_32::arch_bit,
    cap_bit: table_v0_32::cap_bit,
    native_arch: moby_native_arch,
};

impl StaticRule {
    /// `arch` and `caps` as masks (`arch_bit`, `cap_bit`).
    fn applies(&self, arch: u64, caps: u64, kernel: Option<KernelVersion>) -> bool {
        if self.exclude_arches & arch != 0 || self.exclude_caps & caps != 0 {
            return false;
        }
        if let Some(min) = self.min_kernel {
            // An unparsable release fails the gate: the rule stays out.
            if kernel.is_none_or(|k| k < min) {
                return false;
            }
        }
        if self.include_arches != 0 && self.include_arches & arch == 0 {
            return false;
        }
        self.include_caps & !caps == 0
    }

    /// The rule as a spec's syscall rule, borrowing everything from the table.
    pub fn to_syscall(&self) -> Syscall {
        Syscall {
            extra: Extra::NONE,
            names: Names::Static(self.names),
            action: Cow::Borrowed(self.rest.action),
            errno_ret: self.rest.errno_ret,
            args: Cow::Borrowed(self.rest.args),
        }
    }
}

/// `profile` for a process with bounding set `caps` on this host.
pub fn default_seccomp(profile: &Profile, caps: &[Name], facts: &HostFacts) -> Seccomp {
    let arch = (profile.native_arch)(&facts.arch);
    let arch_mask = (profile.arch_bit)(arch);
    let cap_mask = caps.iter().fold(0, |mask, cap| mask | (profile.cap_bit)(cap));
    let kernel = KernelVersion::parse(&facts.kernel_release);
    let architectures = profile
        .arches
        .iter()
        .find(|e| e.goarch == arch)
        .map_or(Names::EMPTY, |e| Names::Static(e.architectures));
    // Sized for every rule: one allocation instead of a growing vector.
    let mut syscalls = Vec::with_capacity(profile.rules.len());
    syscalls.extend(
        profile
            .rules
            .iter()
            .filter(|r| r.applies(arch_mask, cap_mask, kernel))
            .map(StaticRule::to_syscall),
    );
    Seccomp {
        extra: Extra::NONE,
        default_action: Cow::Borrowed(profile.default_action),
        default_errno_ret: profile.default_errno_ret,
        architectures,
        syscalls,
    }
}

/// Go's architecture names where Docker's profile uses others.
fn docker_native_arch(goarch: &str) -> &str {
    match goarch {
        "386" => "x86",
        other => other,
    }
}

/// moby/profiles' `goToNative`.
fn moby_native_arch(goarch: &str) -> &str {
    match goarch {
        "386" => "x86",
        "loong64" => "loongarch64",
        "mips64p32" => "mips64n32",
        "mips64le" => "mipsel64",
        "mips64p32le" => "mips3l64n32",
        "mipsle" => "mipsel",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opts::DEFAULT_CAPS;
    use crate::seccomp_profile::parse_profile;

    fn facts(kernel: &str, arch: &str) -> HostFacts {
        HostFacts {
            kernel_release: kernel.into(),
            arch: arch.into(),
            ..HostFacts::example()
        }
    }

    fn caps<S: AsRef<str>>(list: &[S]) -> Vec<Name> {
        list.iter().map(|c| Name::from(c.as_ref().to_string())).collect()
    }

    fn has_rule(s: &Seccomp, name: &str) -> bool {
        s.syscalls.iter().any(|r| r.names.iter().any(|n| n == name))
    }

    /// Each release's tables with the text they were generated from.
    fn profiles() -> [(&'static Profile, &'static str); 2] {
        [
            (&V0_8, include_str!("../data/seccomp-v0.8.profile")),
            (&V0_32, include_str!("../data/seccomp-v0.32.profile")),
        ]
    }

    #[test]
    fn the_generated_table_matches_the_profile() {
        for (profile, text) in profiles() {
            let parsed = parse_profile(text).unwrap();
            assert_eq!(profile.default_action, parsed.default_action);
            assert_eq!(profile.default_errno_ret, parsed.default_errno_ret);
            assert_eq!(profile.rules.len(), parsed.rules.len());
            for (table, text) in profile.rules.iter().zip(&parsed.rules) {
                assert_eq!(table.names.names, text.names.as_slice());
                assert_eq!(table.rest.args.len(), text.args.len());
                assert_eq!(table.rest.errno_ret, text.errno_ret);
            }
            assert!(profile.rules[0].names.names.len() > 300);
        }
        assert_eq!(V0_32.default_errno_ret, Some(1));
        assert!(
            V0_32.rules.iter().any(|r| r.rest.errno_ret == Some(38)),
            "clone3 gives ENOSYS"
        );
    }

    #[test]
    fn each_rule_s_json_is_made_at_build_time_and_kept_only_while_unchanged() {
        for rule in profiles().iter().flat_map(|(p, _)| p.rules) {
            assert_eq!(rule.names.json, serde_json::to_string(rule.names.names).unwrap());
            let Some(PartOf::Rule(rest)) = rule.names.part_of else {
                panic!("a rule's names carry the rule's rest")
            };
            let syscall = rule.to_syscall();
            let mut serde = serde_json::to_string(&syscall).unwrap();
            assert!(serde.starts_with("{\"names\":"), "{serde}");
            serde.replace_range(..9 + rule.names.json.len(), "");
            assert_eq!(rest.json_for(&syscall), Some(serde.as_str()));
            let mut edited = rule.to_syscall();
            edited.action = "SCMP_ACT_LOG".into();
            assert_eq!(rest.json_for(&edited), None);
            let mut edited = rule.to_syscall();
            edited.extra.insert("errnoRet".to_string(), 1.into());
            assert_eq!(rest.json_for(&edited), None);
        }
        for arch in profiles().iter().flat_map(|(p, _)| p.arches) {
            assert_eq!(
                arch.architectures.json,
                serde_json::to_string(arch.architectures.names).unwrap()
            );
        }
    }

    /// The rules the profile's text selects, by string comparison: what the
    /// masks in the generated table must reproduce.
    fn selected_by_text(tables: &Profile, text: &str, caps: &[Name], facts: &HostFacts) -> Vec<Vec<String>> {
        let profile = parse_profile(text).unwrap();
        let arch = (tables.native_arch)(&facts.arch);
        let kernel = KernelVersion::parse(&facts.kernel_release).map(|k| (k.major, k.minor));
        let has = |c: &String| caps.iter().any(|b| b == c);
        profile
            .rules
            .into_iter()
            .filter(|r| {
                !r.exclude_arches.iter().any(|a| a == arch)
                    && !r.exclude_caps.iter().any(has)
                    && r.min_kernel.is_none_or(|min| kernel.is_some_and(|k| k >= min))
                    && (r.include_arches.is_empty() || r.include_arches.iter().any(|a| a == arch))
                    && r.include_caps.iter().all(has)
            })
            .map(|r| r.names)
            .collect()
    }

    #[test]
    fn rule_masks_select_what_the_profile_text_selects() {
        for (tables, text) in profiles() {
            masks_select_what_the_text_selects(tables, text);
        }
    }

    fn masks_select_what_the_text_selects(tables: &Profile, text: &str) {
        let profile = parse_profile(text).unwrap();
        let mut mentioned: Vec<String> = profile
            .rules
            .iter()
            .flat_map(|r| r.include_caps.iter().chain(&r.exclude_caps))
            .cloned()
            .collect();
        mentioned.sort();
        mentioned.dedup();
        assert!(mentioned.len() > 5, "the profile gates rules on capabilities");
        let default = caps(DEFAULT_CAPS.names);
        let mut cap_sets = vec![Vec::new(), default.clone(), caps(&["CAP_NOT_IN_ANY_RULE"])];
        for cap in &mentioned {
            let mut with = default.clone();
            with.push(cap.clone().into());
            cap_sets.push(with);
            cap_sets.push(default.iter().filter(|c| *c != cap).cloned().collect());
            cap_sets.push(vec![cap.clone().into()]);
        }
        cap_sets.push(mentioned.iter().cloned().map(Name::from).collect());
        let mut arches: Vec<String> = profile.arches.iter().map(|(_, go, _)| go.clone()).collect();
        arches.extend(["386".to_string(), "riscv64".to_string(), "wasm".to_string()]);
        for arch in &arches {
            for kernel in ["4.4.0", "4.8", "5.10.0-28-amd64", "6.18.44", "weird"] {
                let host = facts(kernel, arch);
                for set in &cap_sets {
                    let by_masks: Vec<Vec<String>> = default_seccomp(tables, set, &host)
                        .syscalls
                        .iter()
                        .map(|r| r.names.iter().map(|n| n.to_string()).collect())
                        .collect();
                    assert_eq!(
                        by_masks,
                        selected_by_text(tables, text, set, &host),
                        "{arch} {kernel} {set:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_rule_with_other_arguments_is_not_the_profile_s() {
        let rule = V0_8.rules.iter().find(|r| !r.rest.args.is_empty()).unwrap();
        let Some(PartOf::Rule(rest)) = rule.names.part_of else {
            panic!("a rule's names carry the rule's rest")
        };
        let mut args = rule.to_syscall();
        args.args.to_mut()[0].value += 1;
        assert_eq!(rest.json_for(&args), None, "argument edited");
        let mut action = rule.to_syscall();
        action.action = rule.rest.action.to_string().into();
        assert!(rest.json_for(&action).is_some(), "the same action, held as a copy");
    }

    #[test]
    fn architecture_lists_follow_the_profile_and_carry_their_json() {
        for (tables, text) in profiles() {
            let profile = parse_profile(text).unwrap();
            for (native, goarch, subs) in &profile.arches {
                let entry = tables.arches.iter().find(|e| e.goarch == goarch).unwrap();
                let names = entry.architectures.names;
                let at = names.iter().position(|a| a == native).unwrap();
                assert_eq!(names[at + 1..at + 1 + subs.len()], subs[..]);
            }
        }
        for entry in profiles().iter().flat_map(|(p, _)| p.arches) {
            assert_eq!(
                entry.architectures.json,
                serde_json::to_string(entry.architectures.names).unwrap()
            );
        }
    }

    #[test]
    fn ptrace_is_gated_on_kernel_4_8() {
        let default = caps(DEFAULT_CAPS.names);
        let old = default_seccomp(&V0_8, &default, &facts("4.4.0-210-generic", "amd64"));
        let new = default_seccomp(&V0_8, &default, &facts("4.8.0", "amd64"));
        assert!(!has_rule(&old, "ptrace"));
        assert!(has_rule(&new, "ptrace"));
        assert_eq!(new.syscalls.len(), old.syscalls.len() + 1);
    }

    #[test]
    fn unparsable_kernel_keeps_gated_rules_out() {
        let s = default_seccomp(&V0_8, &caps(DEFAULT_CAPS.names), &facts("weird", "amd64"));
        assert!(!has_rule(&s, "ptrace"));
    }

    #[test]
    fn caps_gate_rules() {
        let default = caps(DEFAULT_CAPS.names);
        let s = default_seccomp(&V0_8, &default, &facts("6.1", "amd64"));
        assert!(has_rule(&s, "chroot"), "CAP_SYS_CHROOT is a default cap");
        assert!(!has_rule(&s, "mount"));
        assert!(!has_rule(&s, "reboot"));
        let clone = s.syscalls.iter().find(|r| r.names[..] == ["clone"]).unwrap();
        assert_eq!(clone.args[0].op, "SCMP_CMP_MASKED_EQ");

        let mut admin = default.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let s = default_seccomp(&V0_8, &admin, &facts("6.1", "amd64"));
        assert!(has_rule(&s, "mount"));
        assert!(
            !s.syscalls.iter().any(|r| r.names[..] == ["clone"]),
            "the masked clone rule is only for processes without CAP_SYS_ADMIN"
        );

        let no_chroot: Vec<Name> = default.into_iter().filter(|c| c != "CAP_SYS_CHROOT").collect();
        let s = default_seccomp(&V0_8, &no_chroot, &facts("6.1", "amd64"));
        assert!(!has_rule(&s, "chroot"));
    }

    #[test]
    fn arches_follow_the_host() {
        let default = caps(DEFAULT_CAPS.names);
        let amd = default_seccomp(&V0_8, &default, &facts("6.1", "amd64"));
        assert_eq!(
            amd.architectures[..],
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        assert!(has_rule(&amd, "arch_prctl"));
        let arm = default_seccomp(&V0_8, &default, &facts("6.1", "arm64"));
        assert_eq!(arm.architectures[..], ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
        assert!(!has_rule(&arm, "arch_prctl"));
        assert!(has_rule(&arm, "cacheflush"));
        let s390 = default_seccomp(&V0_8, &default, &facts("6.1", "s390x"));
        let clone = s390.syscalls.iter().find(|r| r.names[..] == ["clone"]).unwrap();
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
