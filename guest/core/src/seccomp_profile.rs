//! The text format of `data/seccomp-*.profile`, parsed. Used by
//! `build.rs`, which turns the profile into static tables at build time,
//! and by the parser's own tests; nothing parses it at run time.

/// A parsed profile.
#[derive(Debug, Default, PartialEq)]
pub struct ProfileText {
    pub default_action: String,
    /// The errno of the default action, when the profile names one.
    pub default_errno_ret: Option<u32>,
    /// (seccomp arch, Go arch, sub-architectures)
    pub arches: Vec<(String, String, Vec<String>)>,
    pub rules: Vec<RuleText>,
}

#[derive(Debug, Default, PartialEq)]
pub struct RuleText {
    pub action: String,
    pub names: Vec<String>,
    pub errno_ret: Option<u32>,
    /// (index, op, value, value two)
    pub args: Vec<(u32, String, u64, u64)>,
    /// (major, minor)
    pub min_kernel: Option<(u32, u32)>,
    pub include_arches: Vec<String>,
    pub exclude_arches: Vec<String>,
    pub include_caps: Vec<String>,
    pub exclude_caps: Vec<String>,
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Parses the profile; an error names the line.
pub fn parse_profile(text: &str) -> Result<ProfileText, String> {
    let mut profile = ProfileText::default();
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

fn apply_directive(profile: &mut ProfileText, words: &[&str]) -> Result<(), String> {
    let owned = |ws: &[&str]| ws.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let Some((&keyword, rest)) = words.split_first() else {
        return Ok(());
    };
    match keyword {
        "default-action" => {
            profile.default_action = rest.first().ok_or("default-action needs an action")?.to_string();
            profile.default_errno_ret = rest
                .get(1)
                .map(|e| e.parse::<u32>().map_err(|_| format!("bad errno {e:?}")))
                .transpose()?;
            return Ok(());
        }
        "arch" => {
            if rest.len() < 2 {
                return Err("arch needs NATIVE GOARCH".to_string());
            }
            profile
                .arches
                .push((rest[0].to_string(), rest[1].to_string(), owned(&rest[2..])));
            return Ok(());
        }
        "rule" => {
            if rest.len() < 2 {
                return Err("rule needs an action and at least one name".to_string());
            }
            profile.rules.push(RuleText {
                action: rest[0].to_string(),
                names: owned(&rest[1..]),
                ..RuleText::default()
            });
            return Ok(());
        }
        _ => {}
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
            rule.args.push((
                rest[0].parse().map_err(|_| format!("bad index {:?}", rest[0]))?,
                rest[1].to_string(),
                num(rest[2])?,
                rest.get(3).map(|v| num(v)).transpose()?.unwrap_or(0),
            ));
        }
        "errno-ret" => {
            let e = rest.first().ok_or("errno-ret needs a number")?;
            rule.errno_ret = Some(e.parse().map_err(|_| format!("bad errno {e:?}"))?);
        }
        "min-kernel" => {
            let v = rest.first().ok_or("min-kernel needs a version")?;
            rule.min_kernel = Some(parse_version(v).ok_or_else(|| format!("bad kernel version {v:?}"))?);
        }
        "include-arches" => rule.include_arches = owned(rest),
        "exclude-arches" => rule.exclude_arches = owned(rest),
        "include-caps" => rule.include_caps = owned(rest),
        "exclude-caps" => rule.exclude_caps = owned(rest),
        other => return Err(format!("unknown directive {other:?}")),
    }
    Ok(())
}

/// The distinct items, in order of first appearance.
fn distinct<'a>(items: impl Iterator<Item = &'a String>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for item in items {
        if !seen.contains(&item.as_str()) {
            seen.push(item);
        }
    }
    seen
}

/// A condition list as a bit mask over `universe` (Rust source).
fn mask(list: &[String], universe: &[&str]) -> String {
    let bits = list
        .iter()
        .map(|item| universe.iter().position(|u| u == item).map_or(0, |i| 1u64 << i))
        .fold(0u64, |m, b| m | b);
    format!("{bits:#x}")
}

/// A function from a name to its bit in `universe`, 0 for any other name.
fn bit_fn(name: &str, universe: &[&str]) -> String {
    assert!(universe.len() <= 64, "more than 64 distinct values for {name}");
    let arms: Vec<String> = universe
        .iter()
        .enumerate()
        .map(|(i, u)| format!("        {u:?} => 1 << {i},\n"))
        .collect();
    format!(
        "pub fn {name}(name: &str) -> u64 {{\n    match name {{\n{}        _ => 0,\n    }}\n}}\n",
        arms.concat()
    )
}

/// The profile as Rust source for static tables (see `seccomp.rs`).
pub fn to_rust(profile: &ProfileText) -> String {
    // A rule's capability and architecture conditions are bit masks over
    // the values the rules mention: filtering the profile for a process is
    // then a few mask tests a rule, not string searches.
    let caps = distinct(
        profile
            .rules
            .iter()
            .flat_map(|r| r.include_caps.iter().chain(&r.exclude_caps)),
    );
    let arches = distinct(
        profile
            .rules
            .iter()
            .flat_map(|r| r.include_arches.iter().chain(&r.exclude_arches)),
    );
    let mut out = String::new();
    out.push_str(&bit_fn("cap_bit", &caps));
    out.push_str(&bit_fn("arch_bit", &arches));
    out.push_str(&format!(
        "pub static DEFAULT_ACTION: &str = {:?};\npub static DEFAULT_ERRNO_RET: Option<u32> = {:?};\n",
        profile.default_action, profile.default_errno_ret
    ));
    // One entry a Go architecture: the seccomp architectures of every
    // `arch` line naming it, in order, as a list a spec borrows whole.
    out.push_str("pub static ARCHES: &[StaticArch] = &[\n");
    for goarch in distinct(profile.arches.iter().map(|(_, goarch, _)| goarch)) {
        let list: Vec<&String> = profile
            .arches
            .iter()
            .filter(|(_, go, _)| go == goarch)
            .flat_map(|(native, _, subs)| std::iter::once(native).chain(subs))
            .collect();
        let names: Vec<String> = list.iter().map(|a| format!("Cow::Borrowed({a:?})")).collect();
        let json: Vec<String> = list
            .iter()
            .map(|a| {
                assert!(
                    a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "architecture {a:?} would need escaping in JSON"
                );
                format!("\"{a}\"")
            })
            .collect();
        out.push_str(&format!(
            "    StaticArch {{ goarch: {goarch:?}, architectures: &StaticNames {{ names: &[{}], json: {:?}, part_of: None }} }},\n",
            names.join(", "),
            format!("[{}]", json.join(","))
        ));
    }
    out.push_str("];\n");
    // Each rule's rest (action, arguments and the JSON after its names)
    // once: the rule holds it, and its names, a static list with their
    // JSON, point to it.
    for (i, r) in profile.rules.iter().enumerate() {
        let rest = rule_json_after_names(r);
        let args: Vec<String> = r
            .args
            .iter()
            .map(|(index, op, value, two)| {
                format!("SeccompArg {{ index: {index}, op: Cow::Borrowed({op:?}), value: {value}, value_two: {two} }}")
            })
            .collect();
        out.push_str(&format!(
            "static RULE_REST_{i}: RuleRest = RuleRest {{ action: {:?}, errno_ret: {:?}, args: &[{}], json: {rest:?} }};\n",
            r.action,
            r.errno_ret,
            args.join(", ")
        ));
    }
    out.push_str("pub static RULES: &[StaticRule] = &[\n");
    for (i, r) in profile.rules.iter().enumerate() {
        let min = match r.min_kernel {
            Some((major, minor)) => format!("Some(KernelVersion {{ major: {major}, minor: {minor} }})"),
            None => "None".to_string(),
        };
        let names: Vec<String> = r
            .names
            .iter()
            .map(|n| {
                assert!(
                    n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "syscall name {n:?} would need escaping in JSON"
                );
                format!("Cow::Borrowed({n:?})")
            })
            .collect();
        let names_json: Vec<String> = r.names.iter().map(|n| format!("\"{n}\"")).collect();
        let names = format!(
            "&StaticNames {{ names: &[{}], json: {:?}, part_of: Some(PartOf::Rule(&RULE_REST_{i})) }}",
            names.join(", "),
            format!("[{}]", names_json.join(",")),
        );
        out.push_str(&format!(
            "    StaticRule {{ names: {names}, rest: &RULE_REST_{i}, min_kernel: {min}, include_arches: {}, exclude_arches: {}, include_caps: {}, exclude_caps: {} }},\n",
            mask(&r.include_arches, &arches),
            mask(&r.exclude_arches, &arches),
            mask(&r.include_caps, &caps),
            mask(&r.exclude_caps, &caps),
        ));
    }
    out.push_str("];\n");
    out
}

/// What follows a rule's names in the JSON `Spec::to_json` writes for it
/// (the field order and omissions of runtime-spec's Go types).
fn rule_json_after_names(rule: &RuleText) -> String {
    let plain = |s: &str| {
        assert!(
            s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{s:?} would need escaping in JSON"
        );
        s.to_string()
    };
    let mut json = format!(",\"action\":\"{}\"", plain(&rule.action));
    if let Some(errno) = rule.errno_ret {
        json.push_str(&format!(",\"errnoRet\":{errno}"));
    }
    if !rule.args.is_empty() {
        let args: Vec<String> = rule
            .args
            .iter()
            .map(|(index, op, value, two)| {
                let two = if *two == 0 {
                    String::new()
                } else {
                    format!(",\"valueTwo\":{two}")
                };
                format!("{{\"index\":{index},\"value\":{value}{two},\"op\":\"{}\"}}", plain(op))
            })
            .collect();
        json.push_str(&format!(",\"args\":[{}]", args.join(",")));
    }
    json.push('}');
    json
}
