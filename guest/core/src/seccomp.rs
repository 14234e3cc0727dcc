//! Docker's default seccomp profile, kept as data (`data/seccomp-default.profile`,
//! turned into static tables by `build.rs`) and filtered for one process:
//! by the capabilities in its bounding set, the host's architecture and
//! the kernel release.

use std::borrow::Cow;

use crate::facts::{HostFacts, KernelVersion};
use crate::spec::{Extra, Name, Names, Seccomp, SeccompArg, Syscall};
use crate::static_lists::same_address;

/// The seccomp architectures of one Go architecture, with their JSON.
pub struct StaticArch {
    pub goarch: &'static str,
    pub architectures: &'static [Name],
    pub json: &'static str,
}

pub struct StaticRule {
    pub action: &'static str,
    pub names: &'static [Name],
    pub args: &'static [SeccompArg],
    pub min_kernel: Option<KernelVersion>,
    /// Architectures and capabilities as masks of `arch_bit` and `cap_bit`.
    pub include_arches: u64,
    pub exclude_arches: u64,
    pub include_caps: u64,
    pub exclude_caps: u64,
    /// The rule's JSON after its names (`],"action":...}`), made at build
    /// time; its names' JSON is a run of the names table's.
    pub json_after_names: &'static str,
}

/// `DEFAULT_ACTION`, `ARCHES` and `RULES`, and the bit of each
/// architecture and capability a rule mentions, generated from the profile.
mod table {
    use super::{KernelVersion, Name, SeccompArg, StaticArch, StaticRule};
    use std::borrow::Cow;
    include!(concat!(env!("OUT_DIR"), "/seccomp_table.rs"));
}

pub use table::{arch_bit, cap_bit, ARCHES, DEFAULT_ACTION, RULES};
use table::{NAMES, NAMES_JSON, NAME_JSON_STARTS, RULE_FIRST_NAME};

/// Where a name list borrowed from the static tables lies in `NAMES`:
/// `(first, end)`; `None` for any other list (a policy's own, or a copy).
///
/// A slice that starts inside the one static array of all rule names is a
/// run of its items (nothing else lives at those addresses, and a static
/// never changes).
fn names_run(names: &[Name]) -> Option<(usize, usize)> {
    let offset = (names.as_ptr() as usize).checked_sub(NAMES.as_ptr() as usize)?;
    let size = std::mem::size_of::<Name>();
    if names.is_empty() || offset % size != 0 {
        return None;
    }
    let first = offset / size;
    let end = first.checked_add(names.len()).filter(|end| *end <= NAMES.len())?;
    Some((first, end))
}

/// The JSON of a name list borrowed from the static tables (the items,
/// without brackets), written at build time: the matching run of
/// `NAMES_JSON`. `None` for any other list.
pub fn names_json(names: &[Name]) -> Option<&'static str> {
    let (first, end) = names_run(names)?;
    run_json(first, end)
}

/// The JSON of `NAMES[first..end]`: each name's JSON ends with a comma,
/// the last one's is left out.
fn run_json(first: usize, end: usize) -> Option<&'static str> {
    NAMES_JSON.get(NAME_JSON_STARTS[first]..NAME_JSON_STARTS[end] - 1)
}

/// The JSON of an architecture list borrowed whole from `ARCHES`.
pub fn architectures_json(list: &[Name]) -> Option<&'static str> {
    ARCHES
        .iter()
        .find(|e| std::ptr::eq(e.architectures, list))
        .map(|e| e.json)
}

/// The JSON of a rule that is one of the profile's, unchanged (its names,
/// action and arguments all borrowed from that rule), made at build time:
/// its names' JSON and what follows them; `{"names":[` goes before both.
/// `None` for any other rule.
pub fn rule_json(rule: &Syscall) -> Option<(&'static str, &'static str)> {
    let (first, end) = names_run(&rule.names)?;
    let table = &RULES[RULE_FIRST_NAME.binary_search(&first).ok()?];
    let whole = end - first == table.names.len();
    if !(whole && same_address(&rule.action, table.action) && std::ptr::eq(&*rule.args, table.args)) {
        return None;
    }
    Some((run_json(first, end)?, table.json_after_names))
}

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
            names: Cow::Borrowed(self.names),
            action: Cow::Borrowed(self.action),
            args: Cow::Borrowed(self.args),
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
        .map_or(Names::Borrowed(&[]), |e| Names::Borrowed(e.architectures));
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
            assert_eq!(table.names, text.names.as_slice());
            assert_eq!(table.args.len(), text.args.len());
        }
        assert!(RULES[0].names.len() > 300);
    }

    #[test]
    fn a_borrowed_name_list_is_written_from_the_build_time_json() {
        let expect = |names: &[Name]| {
            let json = serde_json::to_string(names).unwrap();
            json[1..json.len() - 1].to_string()
        };
        for rule in RULES {
            assert_eq!(names_json(rule.names).map(str::to_string), Some(expect(rule.names)));
            let inner = &rule.names[rule.names.len() / 2..];
            assert_eq!(names_json(inner).map(str::to_string), Some(expect(inner)));
        }
        let copy: Vec<Name> = RULES[0].names.to_vec();
        assert_eq!(names_json(&copy), None);
        static ELSEWHERE: [Name; 1] = [Cow::Borrowed("accept")];
        assert_eq!(names_json(&ELSEWHERE), None);
        assert_eq!(names_json(&RULES[0].names[..0]), None);
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
        let default = caps(DEFAULT_CAPS);
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
    fn an_unchanged_rule_is_written_from_its_build_time_json() {
        for rule in RULES {
            let syscall = rule.to_syscall();
            let (names, after) = rule_json(&syscall).unwrap();
            assert_eq!(
                format!("{{\"names\":[{names}{after}"),
                serde_json::to_string(&syscall).unwrap()
            );
            let mut copied = syscall.clone();
            copied.names = Cow::Owned(rule.names.to_vec());
            assert_eq!(rule_json(&copied), None, "names copied");
            let mut part = syscall.clone();
            part.names = Cow::Borrowed(&rule.names[..rule.names.len() - 1]);
            assert_eq!(rule_json(&part), None, "names in part");
            let mut action = syscall.clone();
            action.action = rule.action.to_string().into();
            assert_eq!(rule_json(&action), None, "action copied");
        }
        let with_args = RULES.iter().find(|r| !r.args.is_empty()).unwrap().to_syscall();
        let mut args = with_args.clone();
        args.args.to_mut()[0].value += 1;
        assert_eq!(rule_json(&args), None, "argument edited");
    }

    #[test]
    fn architecture_lists_follow_the_profile_and_carry_their_json() {
        let profile = parse_profile(include_str!("../data/seccomp-default.profile")).unwrap();
        for (native, goarch, subs) in &profile.arches {
            let entry = ARCHES.iter().find(|e| e.goarch == goarch).unwrap();
            let at = entry.architectures.iter().position(|a| a == native).unwrap();
            assert_eq!(entry.architectures[at + 1..at + 1 + subs.len()], subs[..]);
        }
        for entry in ARCHES {
            assert_eq!(entry.json, serde_json::to_string(entry.architectures).unwrap());
            assert_eq!(architectures_json(entry.architectures), Some(entry.json));
            let copy: Vec<Name> = entry.architectures.to_vec();
            assert_eq!(architectures_json(&copy), None, "a copy lies elsewhere");
        }
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
        let default = caps(DEFAULT_CAPS);
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
