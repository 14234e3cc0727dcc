//! Docker's default seccomp profile, kept as data (`data/seccomp-default.profile`,
//! turned into static tables by `build.rs`) and filtered for one process:
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
    pub args: &'static [SeccompArg],
    pub json: &'static str,
}

impl RuleRest {
    /// The JSON after the names of `rule`, when it is still this rule.
    pub fn json_for(&self, rule: &Syscall) -> Option<&'static str> {
        // Equal by content; arguments still borrowing the rule's own are
        // equal without reading them (as `same_text` does for strings).
        let same_args = std::ptr::eq(&*rule.args, self.args) || *rule.args == *self.args;
        (rule.extra.is_empty() && same_text(&rule.action, self.action) && same_args).then_some(self.json)
    }
}

/// `DEFAULT_ACTION`, `ARCHES` and `RULES`, and the bit of each
/// architecture and capability a rule mentions, generated from the profile.
mod table {
    use super::{KernelVersion, PartOf, RuleRest, SeccompArg, StaticArch, StaticNames, StaticRule};
    use std::borrow::Cow;
    include!(concat!(env!("OUT_DIR"), "/seccomp_table.rs"));
}

pub use table::{arch_bit, cap_bit, ARCHES, DEFAULT_ACTION, RULES};

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
            args: Cow::Borrowed(self.rest.args),
        }
    }
}

/// The default profile for a process with bounding set `caps` on this host.
pub fn default_seccomp(caps: &[Name], facts: &HostFacts) -> Seccomp {
    let arch = go_to_native_arch(&facts.arch);
    let arch_mask = arch_bit(arch);
    let cap_mask = caps.iter().fold(0, |mask, cap| mask | cap_bit(cap));
    let kernel = KernelVersion::parse(&facts.kernel_release);
    let architectures = ARCHES
        .iter()
        .find(|e| e.goarch == arch)
        .map_or(Names::EMPTY, |e| Names::Static(e.architectures));
    // Sized for every rule: one allocation instead of a growing vector.
    let mut syscalls = Vec::with_capacity(RULES.len());
    syscalls.extend(
        RULES
            .iter()
            .filter(|r| r.applies(arch_mask, cap_mask, kernel))
            .map(StaticRule::to_syscall),
    );
    Seccomp {
        extra: Extra::NONE,
        default_action: Cow::Borrowed(DEFAULT_ACTION),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opts::DEFAULT_CAPS;
    use crate::seccomp_profile::parse_profile;

    fn facts(kernel: &str, arch: &str) -> HostFacts {
        HostFacts {
            kernel_release: kernel.into(),
            seccomp: true,
            first_free_loop: 0,
            in_user_namespace: false,
            arch: arch.into(),
        }
    }

    fn caps<S: AsRef<str>>(list: &[S]) -> Vec<Name> {
        list.iter().map(|c| Name::from(c.as_ref().to_string())).collect()
    }

    fn has_rule(s: &Seccomp, name: &str) -> bool {
        s.syscalls.iter().any(|r| r.names.iter().any(|n| n == name))
    }

    #[test]
    fn the_generated_table_matches_the_profile() {
        let text = include_str!("../data/seccomp-default.profile");
        let parsed = parse_profile(text).unwrap();
        assert_eq!(DEFAULT_ACTION, parsed.default_action);
        assert_eq!(RULES.len(), parsed.rules.len());
        for (table, text) in RULES.iter().zip(&parsed.rules) {
            assert_eq!(table.names.names, text.names.as_slice());
            assert_eq!(table.rest.args.len(), text.args.len());
        }
        assert!(RULES[0].names.names.len() > 300);
    }

    #[test]
    fn each_rule_s_json_is_made_at_build_time_and_kept_only_while_unchanged() {
        for rule in RULES {
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
        for arch in ARCHES {
            assert_eq!(
                arch.architectures.json,
                serde_json::to_string(arch.architectures.names).unwrap()
            );
        }
    }

    /// The rules the profile's text selects, by string comparison: what the
    /// masks in the generated table must reproduce.
    fn selected_by_text(caps: &[Name], facts: &HostFacts) -> Vec<Vec<String>> {
        let profile = parse_profile(include_str!("../data/seccomp-default.profile")).unwrap();
        let arch = go_to_native_arch(&facts.arch);
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
        let profile = parse_profile(include_str!("../data/seccomp-default.profile")).unwrap();
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
                    let by_masks: Vec<Vec<String>> = default_seccomp(set, &host)
                        .syscalls
                        .iter()
                        .map(|r| r.names.iter().map(|n| n.to_string()).collect())
                        .collect();
                    assert_eq!(by_masks, selected_by_text(set, &host), "{arch} {kernel} {set:?}");
                }
            }
        }
    }

    #[test]
    fn a_rule_with_other_arguments_is_not_the_profile_s() {
        let rule = RULES.iter().find(|r| !r.rest.args.is_empty()).unwrap();
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
        let profile = parse_profile(include_str!("../data/seccomp-default.profile")).unwrap();
        for (native, goarch, subs) in &profile.arches {
            let entry = ARCHES.iter().find(|e| e.goarch == goarch).unwrap();
            let names = entry.architectures.names;
            let at = names.iter().position(|a| a == native).unwrap();
            assert_eq!(names[at + 1..at + 1 + subs.len()], subs[..]);
        }
        for entry in ARCHES {
            assert_eq!(
                entry.architectures.json,
                serde_json::to_string(entry.architectures.names).unwrap()
            );
        }
    }

    #[test]
    fn ptrace_is_gated_on_kernel_4_8() {
        let default = caps(DEFAULT_CAPS.names);
        let old = default_seccomp(&default, &facts("4.4.0-210-generic", "amd64"));
        let new = default_seccomp(&default, &facts("4.8.0", "amd64"));
        assert!(!has_rule(&old, "ptrace"));
        assert!(has_rule(&new, "ptrace"));
        assert_eq!(new.syscalls.len(), old.syscalls.len() + 1);
    }

    #[test]
    fn unparsable_kernel_keeps_gated_rules_out() {
        let s = default_seccomp(&caps(DEFAULT_CAPS.names), &facts("weird", "amd64"));
        assert!(!has_rule(&s, "ptrace"));
    }

    #[test]
    fn caps_gate_rules() {
        let default = caps(DEFAULT_CAPS.names);
        let s = default_seccomp(&default, &facts("6.1", "amd64"));
        assert!(has_rule(&s, "chroot"), "CAP_SYS_CHROOT is a default cap");
        assert!(!has_rule(&s, "mount"));
        assert!(!has_rule(&s, "reboot"));
        let clone = s.syscalls.iter().find(|r| r.names[..] == ["clone"]).unwrap();
        assert_eq!(clone.args[0].op, "SCMP_CMP_MASKED_EQ");

        let mut admin = default.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let s = default_seccomp(&admin, &facts("6.1", "amd64"));
        assert!(has_rule(&s, "mount"));
        assert!(
            !s.syscalls.iter().any(|r| r.names[..] == ["clone"]),
            "the masked clone rule is only for processes without CAP_SYS_ADMIN"
        );

        let no_chroot: Vec<Name> = default.into_iter().filter(|c| c != "CAP_SYS_CHROOT").collect();
        let s = default_seccomp(&no_chroot, &facts("6.1", "amd64"));
        assert!(!has_rule(&s, "chroot"));
    }

    #[test]
    fn arches_follow_the_host() {
        let default = caps(DEFAULT_CAPS.names);
        let amd = default_seccomp(&default, &facts("6.1", "amd64"));
        assert_eq!(
            amd.architectures[..],
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        assert!(has_rule(&amd, "arch_prctl"));
        let arm = default_seccomp(&default, &facts("6.1", "arm64"));
        assert_eq!(arm.architectures[..], ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
        assert!(!has_rule(&arm, "arch_prctl"));
        assert!(has_rule(&arm, "cacheflush"));
        let s390 = default_seccomp(&default, &facts("6.1", "s390x"));
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
