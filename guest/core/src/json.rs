//! The spec written as JSON by hand, byte for byte what `serde_json` writes
//! from the derived `Serialize` (tests and the `policy_output` fuzz target
//! hold the two equal).
//!
//! The output is sized once, a string is checked for characters to escape a
//! word at a time and then copied whole, and a list that is still one of
//! the static lists ([`crate::spec::StaticNames`]: the default spec's
//! capability, path and mount-option lists, the seccomp architectures, a
//! rule's names) is copied as the JSON made for it at build time, as is a
//! whole seccomp rule of the profile while its action and arguments are
//! the rule's. (Why by hand: BENCHMARKS.md, the note on the native minimal step.)

use std::borrow::Cow;

use crate::spec::{
    Capabilities, Device, DeviceCgroup, Extra, Hook, Hooks, IdMapping, Linux, Mount, Names, Namespace, PartOf, Process,
    Resources, Rlimit, Root, Seccomp, SeccompArg, Spec, Syscall, User,
};

/// What a default spec takes, rounded up: one allocation in the usual case.
const TYPICAL_SPEC_BYTES: usize = 12 << 10;

pub fn spec_to_json(spec: &Spec) -> String {
    let mut w = Writer {
        out: String::with_capacity(TYPICAL_SPEC_BYTES),
    };
    w.spec(spec);
    w.out
}

struct Writer {
    out: String,
}

/// One JSON object being written: places the commas.
struct Object<'w> {
    w: &'w mut Writer,
    empty: bool,
}

/// A field name as the JSON that introduces it (`"name":`), made at
/// compile time: our field names need no escaping.
macro_rules! key {
    ($name:literal) => {
        concat!("\"", $name, "\":")
    };
}

impl Object<'_> {
    /// Starts a field; `key` comes from `key!`.
    fn key(&mut self, key: &'static str) -> &mut Writer {
        self.comma();
        self.w.out.push_str(key);
        self.w
    }

    fn comma(&mut self) {
        if !self.empty {
            self.w.out.push(',');
        }
        self.empty = false;
    }

    fn str(&mut self, key: &'static str, value: &str) {
        self.key(key).string(value);
    }

    fn str_unless_empty(&mut self, key: &'static str, value: &str) {
        if !value.is_empty() {
            self.str(key, value);
        }
    }

    fn strs_unless_empty<S: AsRef<str>>(&mut self, key: &'static str, values: &[S]) {
        if !values.is_empty() {
            self.key(key).strings(values);
        }
    }

    fn names_unless_empty(&mut self, key: &'static str, values: &Names) {
        if !values.is_empty() {
            self.key(key).names(values);
        }
    }

    fn uint(&mut self, key: &'static str, value: u64) {
        self.key(key).uint(value);
    }

    fn int(&mut self, key: &'static str, value: i64) {
        self.key(key).int(value);
    }

    fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key).out.push_str(if value { "true" } else { "false" });
    }

    fn true_only(&mut self, key: &'static str, value: bool) {
        if value {
            self.bool(key, true);
        }
    }

    /// Fields a struct does not name, after the ones it does (`flatten`).
    fn extra(&mut self, extra: &Extra) {
        for (key, value) in extra.iter() {
            // Writing a `Value` into a String cannot fail.
            let text = serde_json::to_string(value).unwrap_or_default();
            self.comma();
            self.w.string(key);
            self.w.out.push(':');
            self.w.out.push_str(&text);
        }
    }

    fn end(self) {
        self.w.out.push('}');
    }
}

impl Writer {
    fn object(&mut self) -> Object<'_> {
        self.out.push('{');
        Object { w: self, empty: true }
    }

    fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Writer, &T)) {
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            each(self, item);
        }
        self.out.push(']');
    }

    fn strings<S: AsRef<str>>(&mut self, items: &[S]) {
        self.list(items, |w, s| w.string(s.as_ref()));
    }

    /// A list that is still one of the static lists is written as the
    /// JSON made for it at build time; any other string by string.
    fn names(&mut self, values: &Names) {
        match values.as_static() {
            Some(list) => self.out.push_str(list.json),
            None => self.strings(values),
        }
    }

    fn uint(&mut self, value: u64) {
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn int(&mut self, value: i64) {
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        if needs_escape(s.as_bytes()) {
            escape_into(&mut self.out, s);
        } else {
            self.out.push_str(s);
        }
        self.out.push('"');
    }

    fn spec(&mut self, spec: &Spec) {
        let mut o = self.object();
        o.str(key!("ociVersion"), &spec.oci_version);
        if let Some(process) = &spec.process {
            o.key(key!("process")).process(process);
        }
        if let Some(root) = &spec.root {
            o.key(key!("root")).root(root);
        }
        o.str_unless_empty(key!("hostname"), &spec.hostname);
        if !spec.mounts.is_empty() {
            o.key(key!("mounts")).list(&spec.mounts, Writer::mount);
        }
        if let Some(hooks) = &spec.hooks {
            o.key(key!("hooks")).hooks(hooks);
        }
        if let Some(linux) = &spec.linux {
            o.key(key!("linux")).linux(linux);
        }
        o.extra(&spec.extra);
        o.end();
    }

    fn process(&mut self, p: &Process) {
        let mut o = self.object();
        o.true_only(key!("terminal"), p.terminal);
        o.key(key!("user")).user(&p.user);
        o.strs_unless_empty(key!("args"), &p.args);
        o.strs_unless_empty(key!("env"), &p.env);
        o.str(key!("cwd"), &p.cwd);
        if let Some(caps) = &p.capabilities {
            o.key(key!("capabilities")).capabilities(caps);
        }
        if !p.rlimits.is_empty() {
            o.key(key!("rlimits")).list(&p.rlimits, Writer::rlimit);
        }
        o.true_only(key!("noNewPrivileges"), p.no_new_privileges);
        o.str_unless_empty(key!("apparmorProfile"), &p.apparmor_profile);
        o.str_unless_empty(key!("selinuxLabel"), &p.selinux_label);
        o.extra(&p.extra);
        o.end();
    }

    fn user(&mut self, u: &User) {
        let mut o = self.object();
        o.uint(key!("uid"), u.uid.into());
        o.uint(key!("gid"), u.gid.into());
        if !u.additional_gids.is_empty() {
            o.key(key!("additionalGids"))
                .list(&u.additional_gids, |w, g| w.uint((*g).into()));
        }
        o.extra(&u.extra);
        o.end();
    }

    fn capabilities(&mut self, c: &Capabilities) {
        let mut o = self.object();
        o.names_unless_empty(key!("bounding"), &c.bounding);
        o.names_unless_empty(key!("effective"), &c.effective);
        o.names_unless_empty(key!("inheritable"), &c.inheritable);
        o.names_unless_empty(key!("permitted"), &c.permitted);
        o.names_unless_empty(key!("ambient"), &c.ambient);
        o.end();
    }

    fn rlimit(&mut self, r: &Rlimit) {
        let mut o = self.object();
        o.str(key!("type"), &r.kind);
        o.uint(key!("hard"), r.hard);
        o.uint(key!("soft"), r.soft);
        o.end();
    }

    fn root(&mut self, r: &Root) {
        let mut o = self.object();
        o.str(key!("path"), &r.path);
        o.true_only(key!("readonly"), r.readonly);
        o.end();
    }

    fn mount(&mut self, m: &Mount) {
        // A mount of the default spec, unchanged: its JSON made at build time.
        if let Some(PartOf::Mount(whole)) = m.options.as_static().and_then(|list| list.part_of) {
            if let Some(json) = whole.json_for(m) {
                self.out.push_str(json);
                return;
            }
        }
        let mut o = self.object();
        o.str(key!("destination"), &m.destination);
        o.str_unless_empty(key!("type"), &m.kind);
        o.str_unless_empty(key!("source"), &m.source);
        o.names_unless_empty(key!("options"), &m.options);
        o.extra(&m.extra);
        o.end();
    }

    fn linux(&mut self, l: &Linux) {
        let mut o = self.object();
        if !l.uid_mappings.is_empty() {
            o.key(key!("uidMappings")).list(&l.uid_mappings, Writer::id_mapping);
        }
        if !l.gid_mappings.is_empty() {
            o.key(key!("gidMappings")).list(&l.gid_mappings, Writer::id_mapping);
        }
        if let Some(resources) = &l.resources {
            o.key(key!("resources")).resources(resources);
        }
        o.str_unless_empty(key!("cgroupsPath"), &l.cgroups_path);
        if !l.namespaces.is_empty() {
            o.key(key!("namespaces")).list(&l.namespaces, Writer::namespace);
        }
        if !l.devices.is_empty() {
            o.key(key!("devices")).list(&l.devices, Writer::device);
        }
        if let Some(seccomp) = &l.seccomp {
            o.key(key!("seccomp")).seccomp(seccomp);
        }
        o.names_unless_empty(key!("maskedPaths"), &l.masked_paths);
        o.names_unless_empty(key!("readonlyPaths"), &l.readonly_paths);
        o.str_unless_empty(key!("mountLabel"), &l.mount_label);
        o.extra(&l.extra);
        o.end();
    }

    fn id_mapping(&mut self, m: &IdMapping) {
        let mut o = self.object();
        o.uint(key!("containerID"), m.container_id.into());
        o.uint(key!("hostID"), m.host_id.into());
        o.uint(key!("size"), m.size.into());
        o.end();
    }

    fn resources(&mut self, r: &Resources) {
        let mut o = self.object();
        if !r.devices.is_empty() {
            o.key(key!("devices")).list(&r.devices, Writer::device_cgroup);
        }
        if let Some(memory) = &r.memory {
            let mut m = o.key(key!("memory")).object();
            for (key, value) in [
                (key!("limit"), memory.limit),
                (key!("reservation"), memory.reservation),
                (key!("swap"), memory.swap),
            ] {
                if let Some(v) = value {
                    m.int(key, v);
                }
            }
            m.extra(&memory.extra);
            m.end();
        }
        if let Some(cpu) = &r.cpu {
            let mut c = o.key(key!("cpu")).object();
            if let Some(v) = cpu.shares {
                c.uint(key!("shares"), v);
            }
            if let Some(v) = cpu.quota {
                c.int(key!("quota"), v);
            }
            if let Some(v) = cpu.period {
                c.uint(key!("period"), v);
            }
            c.str_unless_empty(key!("cpus"), &cpu.cpus);
            c.str_unless_empty(key!("mems"), &cpu.mems);
            c.extra(&cpu.extra);
            c.end();
        }
        o.extra(&r.extra);
        o.end();
    }

    fn device_cgroup(&mut self, d: &DeviceCgroup) {
        let mut o = self.object();
        o.bool(key!("allow"), d.allow);
        o.str_unless_empty(key!("type"), &d.kind);
        if let Some(major) = d.major {
            o.int(key!("major"), major);
        }
        if let Some(minor) = d.minor {
            o.int(key!("minor"), minor);
        }
        o.str_unless_empty(key!("access"), &d.access);
        o.extra(&d.extra);
        o.end();
    }

    fn namespace(&mut self, n: &Namespace) {
        if let Some(json) = crate::static_lists::default_namespace_json(n) {
            self.out.push_str(json);
            return;
        }
        let mut o = self.object();
        o.str(key!("type"), &n.kind);
        o.str_unless_empty(key!("path"), &n.path);
        o.end();
    }

    fn device(&mut self, d: &Device) {
        let mut o = self.object();
        o.str(key!("path"), &d.path);
        o.str(key!("type"), &d.kind);
        o.int(key!("major"), d.major);
        o.int(key!("minor"), d.minor);
        for (key, value) in [
            (key!("fileMode"), d.file_mode),
            (key!("uid"), d.uid),
            (key!("gid"), d.gid),
        ] {
            if let Some(v) = value {
                o.uint(key, v.into());
            }
        }
        o.extra(&d.extra);
        o.end();
    }

    fn seccomp(&mut self, s: &Seccomp) {
        let mut o = self.object();
        o.str(key!("defaultAction"), &s.default_action);
        if let Some(errno) = s.default_errno_ret {
            o.uint(key!("defaultErrnoRet"), errno.into());
        }
        o.names_unless_empty(key!("architectures"), &s.architectures);
        if !s.syscalls.is_empty() {
            o.key(key!("syscalls")).list(&s.syscalls, Writer::syscall);
        }
        o.extra(&s.extra);
        o.end();
    }

    fn syscall(&mut self, s: &Syscall) {
        // A rule of the profile, unchanged: its JSON made at build time.
        if let Some(names) = s.names.as_static() {
            if let Some(rest) = match names.part_of {
                Some(PartOf::Rule(rule)) => rule.json_for(s),
                _ => None,
            } {
                self.out.push_str("{\"names\":");
                self.out.push_str(names.json);
                self.out.push_str(rest);
                return;
            }
        }
        let mut o = self.object();
        o.key(key!("names")).names(&s.names);
        o.str(key!("action"), &s.action);
        if let Some(errno) = s.errno_ret {
            o.uint(key!("errnoRet"), errno.into());
        }
        if !s.args.is_empty() {
            o.key(key!("args")).list(&s.args, Writer::seccomp_arg);
        }
        o.extra(&s.extra);
        o.end();
    }

    fn hooks(&mut self, h: &Hooks) {
        let mut o = self.object();
        for (key, list) in [
            (key!("prestart"), &h.prestart),
            (key!("createRuntime"), &h.create_runtime),
            (key!("createContainer"), &h.create_container),
            (key!("startContainer"), &h.start_container),
            (key!("poststart"), &h.poststart),
            (key!("poststop"), &h.poststop),
        ] {
            if !list.is_empty() {
                o.key(key).list(list, Writer::hook);
            }
        }
        o.extra(&h.extra);
        o.end();
    }

    fn hook(&mut self, h: &Hook) {
        let mut o = self.object();
        o.str(key!("path"), &h.path);
        o.strs_unless_empty(key!("args"), &h.args);
        o.strs_unless_empty(key!("env"), &h.env);
        if let Some(timeout) = h.timeout {
            o.int(key!("timeout"), timeout);
        }
        o.extra(&h.extra);
        o.end();
    }

    fn seccomp_arg(&mut self, a: &SeccompArg) {
        let mut o = self.object();
        o.uint(key!("index"), a.index.into());
        o.uint(key!("value"), a.value);
        if a.value_two != 0 {
            o.uint(key!("valueTwo"), a.value_two);
        }
        o.str(key!("op"), &a.op);
        o.end();
    }
}

/// Whether `bytes` holds a quote, a backslash or a control character (what
/// JSON requires escaped; serde_json escapes nothing else). Eight bytes at a
/// time: a byte below 0x20, or equal to `"` or `\`, sets its high bit in
/// one of the three masks (the classic "has a zero byte" test).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        if below_space | has_zero(x ^ (ONES * u64::from(b'"'))) | has_zero(x ^ (ONES * u64::from(b'\\'))) != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// serde_json's escapes: the short forms where JSON has them, `\u00XX`
/// (lower-case hex) for the other control characters.
fn escape_into(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped: Cow<'static, str> = match b {
            b'"' => "\\\"".into(),
            b'\\' => "\\\\".into(),
            b'\n' => "\\n".into(),
            b'\r' => "\\r".into(),
            b'\t' => "\\t".into(),
            0x08 => "\\b".into(),
            0x0c => "\\f".into(),
            0..=0x1f => format!("\\u{b:04x}").into(),
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(&escaped);
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_finds_every_character_json_escapes_at_every_offset() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for offset in 0..20 {
                let mut bytes = vec![b'a'; 20];
                bytes[offset] = special;
                assert!(needs_escape(&bytes), "{special:#x} at {offset}");
            }
        }
        for plain in (0x20u8..=0x7f).filter(|b| *b != b'"' && *b != b'\\') {
            assert!(!needs_escape(&[plain; 19]), "{plain:#x}");
        }
        assert!(!needs_escape("é\u{7f}€ 𝄞 ÿ".as_bytes()));
    }

    #[test]
    fn escapes_are_serde_json_s() {
        let all: String = (0u8..0x80).map(char::from).chain("é€𝄞".chars()).collect();
        let mut out = String::new();
        escape_into(&mut out, &all);
        assert_eq!(format!("\"{out}\""), serde_json::to_string(&all).unwrap());
    }
}
