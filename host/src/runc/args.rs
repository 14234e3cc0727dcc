//! The command line `specwright-runc` is given: runc's (and crun's), with
//! specwright's own global flags mixed in. Parsing takes ours out, keeps
//! every other argument in order for the real runtime, and reads what the
//! review needs: the subcommand, and for the subcommands that change what
//! a container may do (`create`, `run`, `restore`, `exec`, `update`)
//! their flags and the container id.
//!
//! runc (Go's `flag` under urfave/cli) and crun (glibc's argp) read some
//! command lines differently: runc takes `-root` for `--root` and moves
//! flags written after the container id in front of it; crun takes
//! abbreviations (`--bun=X`), attached short values (`-bX`, and `-b=X` as
//! `=X`), bundled short flags (`-dt`), hidden options (`--HANG`), and
//! reads `--rootless VALUE` as the state root. The wrapper accepts only
//! the forms both read alike (`--name`, `--name=VALUE`, `--name VALUE`,
//! `-n`, `-n VALUE`, `--`; flags before the container id; each scalar flag
//! once) and, when anything else is there, says why in
//! [`Invocation::uncertain`]: the wrapper then refuses the command line
//! when policies are configured, and passes it through untouched when
//! none are.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::policy::PolicyArg;

/// specwright's own global flags (none reaches the real runtime).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OwnFlags {
    /// `--policy FILE[:SETTINGS.json]` (enforced) and
    /// `--monitor-policy FILE[:SETTINGS.json]`, in the order given.
    pub policies: Vec<PolicyArg>,
    /// `--real-runtime PATH|runc|crun`.
    pub real_runtime: Option<String>,
    /// `--state-dir DIR`.
    pub state_dir: Option<PathBuf>,
    /// `--policy-timeout-ms MS`.
    pub policy_timeout_ms: Option<u64>,
    /// `--policy-memory-mib MIB`.
    pub policy_memory_mib: Option<usize>,
    /// `--metrics-file FILE`: where the metrics are written
    /// ([`crate::Workspace::write_metrics`]).
    pub metrics_file: Option<PathBuf>,
    /// `allow_restore` of the configuration file (no flag sets it).
    pub allow_restore: bool,
}

impl OwnFlags {
    /// Whether any flag other than `--policy` was given.
    pub fn sets_more_than_policies(&self) -> bool {
        self.real_runtime.is_some()
            || self.state_dir.is_some()
            || self.policy_timeout_ms.is_some()
            || self.policy_memory_mib.is_some()
            || self.metrics_file.is_some()
    }
}

/// How the runtime is asked to log (`--log`, `--log-format`): where an
/// engine such as containerd looks for the reason a `create` failed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogTarget {
    pub file: Option<PathBuf>,
    pub json: bool,
}

/// Which of the subcommands that make a container from a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateKind {
    Create,
    Run,
    Restore,
}

/// A container made from a bundle's config.json (`create`, `run`,
/// `restore`); its arguments reach the runtime unchanged.
#[derive(Debug, PartialEq, Eq)]
pub struct Creation {
    pub kind: CreateKind,
    /// The container id.
    pub id: String,
    /// `--bundle`/`-b`; `None` means the working directory.
    pub bundle: Option<PathBuf>,
    /// crun's `--config`/`-f` (a spec file other than config.json).
    pub config: Option<PathBuf>,
    /// `restore --lsm-profile`/`--lsm-mount-context`, which give the
    /// restored process labels config.json does not hold.
    pub lsm_override: Option<String>,
    /// The subcommand's flags as given, but `--bundle` and `--config`
    /// (the wrapper hands the runtime a bundle of its own).
    pub kept: Vec<OsString>,
    /// `--preserve-fds N`: descriptors 3 to 3+N-1 go to the container.
    pub preserve_fds: u32,
    /// Host files the runtime writes or connects to as root, by flag:
    /// `--pid-file`, `--console-socket`.
    pub host_files: Vec<(&'static str, PathBuf)>,
}

/// `exec`: a process to start in a running container.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Exec {
    pub id: String,
    /// `--process`/`-p FILE`: the whole process; the flags that describe
    /// one are then ignored, as both runtimes ignore them.
    pub process_file: Option<PathBuf>,
    /// The command: every argument after the id.
    pub args: Vec<String>,
    pub cwd: Option<String>,
    pub env: Vec<String>,
    pub tty: bool,
    pub user: Option<String>,
    pub additional_gids: Vec<String>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub apparmor: Option<String>,
    pub process_label: Option<String>,
    /// The flags that do not describe the process (`--detach`,
    /// `--pid-file`, `--console-socket`, `--preserve-fds`, `--cgroup`,
    /// `--ignore-paused`), as given, for the runtime.
    pub kept: Vec<OsString>,
    /// `--preserve-fds N`: descriptors 3 to 3+N-1 go to the process.
    pub preserve_fds: u32,
    /// `--cgroup [CONTROLLER:]PATH`: sub-cgroups of the container's.
    pub cgroups: Vec<String>,
    /// As [`Creation::host_files`].
    pub host_files: Vec<(&'static str, PathBuf)>,
}

/// `update`: new resources for a running container.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub id: String,
    /// `--resources`/`-r FILE` (`-` for standard input).
    pub resources_file: Option<PathBuf>,
    /// The resource flags (`--memory 64m`, ...), by name, in order.
    pub values: Vec<(String, String)>,
    /// `--l3-cache-schema`, `--mem-bw-schema` (Intel RDT, runc only), as
    /// given, for the runtime.
    pub kept: Vec<OsString>,
}

/// What the command line asks the runtime to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// No subcommand (`--version`, `--help`, nothing), or a subcommand's
    /// `--help`: nothing is run.
    Nothing,
    /// A subcommand that does not change what a container may do.
    PassThrough(String),
    /// `delete ID`: passes through; the container's approved spec is let go.
    Delete(String),
    Create(Creation),
    Exec(Exec),
    Update(Update),
    /// A subcommand the wrapper does not know.
    Unknown(String),
}

/// Subcommands that do not change what a container may do: they pass
/// through untouched even with policies configured.
pub const PASS_THROUGH: &[&str] = &[
    "start",
    "state",
    "kill",
    "delete",
    "ps",
    "pause",
    "resume",
    "events",
    "list",
    "features",
    "spec",
    "checkpoint",
    "help",
    "h",
];

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    pub own: OwnFlags,
    /// The runtime's own global arguments, in order (ours taken out).
    pub global: Vec<OsString>,
    /// The subcommand and every argument after it, as given.
    pub rest: Vec<OsString>,
    pub log: LogTarget,
    /// `--root`, as given.
    pub root: Option<OsString>,
    pub command: Command,
    /// Why runc and crun might read this command line differently, or
    /// the wrapper cannot read it at all; `None` when it is certain.
    pub uncertain: Option<String>,
}

impl Invocation {
    /// The real runtime's command line, unchanged but for our flags.
    pub fn passthrough(&self) -> Vec<OsString> {
        self.global.iter().chain(&self.rest).cloned().collect()
    }
}

/// A command line that cannot be parsed at all: it names the flag.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("flag --{0} needs a value")]
    MissingValue(String),
    #[error("flag --{flag}: {value:?} is not {expected}")]
    BadValue {
        flag: String,
        value: String,
        expected: &'static str,
    },
}

/// How a flag is written after its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// No value: `--detach`.
    Bool,
    /// One value, given once.
    Value,
    /// One value, and the flag may be repeated (`--env`).
    Repeated,
}

/// A flag a runtime knows: its long name, its one-letter name, its arity.
type Flag = (&'static str, Option<char>, Arity);

use Arity::{Bool, Repeated, Value};

/// Global flags of runc and crun (`--rootless` is not here: crun reads
/// it as the state root).
const GLOBAL_FLAGS: &[Flag] = &[
    ("debug", None, Bool),
    ("log", None, Value),
    ("log-format", None, Value),
    ("log-level", None, Value),
    ("root", None, Value),
    ("systemd-cgroup", None, Bool),
    ("cgroup-manager", None, Value),
];

/// Flags that ask for help or the version: the runtime prints and stops.
const HELP_FLAGS: &[&str] = &["--help", "-h", "-?", "--usage", "--version", "-v", "-V"];

const CREATE_FLAGS: &[Flag] = &[
    ("bundle", Some('b'), Value),
    ("console-socket", None, Value),
    ("pid-file", None, Value),
    ("no-pivot", None, Bool),
    ("no-new-keyring", None, Bool),
    ("no-subreaper", None, Bool),
    ("preserve-fds", None, Value),
    ("config", Some('f'), Value),
];

const RUN_FLAGS: &[Flag] = &[("detach", Some('d'), Bool), ("keep", None, Bool)];

const RESTORE_FLAGS: &[Flag] = &[
    ("bundle", Some('b'), Value),
    ("console-socket", None, Value),
    ("pid-file", None, Value),
    ("detach", Some('d'), Bool),
    ("no-subreaper", None, Bool),
    ("no-pivot", None, Bool),
    ("image-path", None, Value),
    ("work-path", None, Value),
    ("tcp-established", None, Bool),
    ("ext-unix-sk", None, Bool),
    ("shell-job", None, Bool),
    ("file-locks", None, Bool),
    ("manage-cgroups-mode", None, Value),
    ("empty-ns", None, Repeated),
    ("auto-dedup", None, Bool),
    ("lazy-pages", None, Bool),
    ("lsm-profile", None, Value),
    ("lsm-mount-context", None, Value),
];

const EXEC_FLAGS: &[Flag] = &[
    ("console-socket", None, Value),
    ("cwd", None, Value),
    ("env", Some('e'), Repeated),
    ("tty", Some('t'), Bool),
    ("user", Some('u'), Value),
    ("additional-gids", Some('g'), Repeated),
    ("process", Some('p'), Value),
    ("detach", Some('d'), Bool),
    ("pid-file", None, Value),
    ("process-label", None, Value),
    ("apparmor", None, Value),
    ("no-new-privs", None, Bool),
    ("cap", Some('c'), Repeated),
    ("preserve-fds", None, Value),
    ("cgroup", None, Repeated),
    ("ignore-paused", None, Bool),
];

/// Exec flags that do not describe the process: they go to the runtime.
const EXEC_KEPT: &[&str] = &[
    "console-socket",
    "detach",
    "pid-file",
    "preserve-fds",
    "cgroup",
    "ignore-paused",
];

/// Flags naming a host file the runtime writes (`--pid-file`) or hands
/// the container's terminal to (`--console-socket`), as root.
const HOST_FILE_FLAGS: &[&str] = &["pid-file", "console-socket"];

/// `update` flags that are not resource values: they go to the runtime.
const UPDATE_KEPT: &[&str] = &["l3-cache-schema", "mem-bw-schema"];

const UPDATE_FLAGS: &[Flag] = &[
    ("resources", Some('r'), Value),
    ("blkio-weight", None, Value),
    ("cpu-period", None, Value),
    ("cpu-quota", None, Value),
    ("cpu-share", None, Value),
    ("cpu-rt-period", None, Value),
    ("cpu-rt-runtime", None, Value),
    ("cpuset-cpus", None, Value),
    ("cpuset-mems", None, Value),
    ("kernel-memory", None, Value),
    ("kernel-memory-tcp", None, Value),
    ("memory", None, Value),
    ("memory-reservation", None, Value),
    ("memory-swap", None, Value),
    ("pids-limit", None, Value),
    ("l3-cache-schema", None, Value),
    ("mem-bw-schema", None, Value),
];

/// specwright's own flags, all taking a value.
const OWN_FLAGS: &[&str] = &[
    "policy",
    "monitor-policy",
    "real-runtime",
    "state-dir",
    "policy-timeout-ms",
    "policy-memory-mib",
    "metrics-file",
];

/// One argument, read as a flag.
enum Token<'a> {
    /// `--`.
    End,
    /// Not a flag: a positional argument (`-` alone is one too).
    Positional,
    /// `--name` or `--name=value`.
    Long(&'a str, Option<&'a OsStr>),
    /// `-n`, exactly one letter.
    Short(char),
    /// Any other form (`-name`, `-bX`, `-b=X`, `-dt`, `---x`).
    Other,
}

fn token(arg: &OsStr) -> Token<'_> {
    let bytes = arg.as_bytes();
    if bytes == b"--" {
        return Token::End;
    }
    if let Some(rest) = bytes.strip_prefix(b"--") {
        let (name, value) = match rest.iter().position(|&b| b == b'=') {
            Some(at) => (&rest[..at], Some(OsStr::from_bytes(&rest[at + 1..]))),
            None => (rest, None),
        };
        return match std::str::from_utf8(name) {
            Ok(name) if !name.is_empty() && !name.starts_with('-') => Token::Long(name, value),
            _ => Token::Other,
        };
    }
    match bytes {
        [b'-'] => Token::Positional,
        [b'-', letter] => Token::Short(*letter as char),
        [b'-', ..] => Token::Other,
        _ => Token::Positional,
    }
}

fn text(flag: &str, value: &OsStr) -> Result<String, ArgsError> {
    value.to_str().map(str::to_string).ok_or_else(|| ArgsError::BadValue {
        flag: flag.to_string(),
        value: value.to_string_lossy().into_owned(),
        expected: "UTF-8",
    })
}

fn number<T: std::str::FromStr>(flag: &str, value: &OsStr) -> Result<T, ArgsError> {
    let given = text(flag, value)?;
    given.parse().map_err(|_| ArgsError::BadValue {
        flag: flag.to_string(),
        value: given,
        expected: "a number",
    })
}

/// The flags of one subcommand, read up to its first positional argument.
struct Flags {
    /// (long name, value) in order; a bool flag's value is empty.
    given: Vec<(&'static str, OsString)>,
    /// The arguments each flag was written as, by flag, for the runtime.
    written: Vec<(&'static str, Vec<OsString>)>,
    /// Where the positional arguments start.
    positional: usize,
    uncertain: Option<String>,
    help: bool,
}

impl Flags {
    fn value(&self, name: &str) -> Option<&OsStr> {
        self.given
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_os_str())
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a OsStr> + 'a {
        self.given
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_os_str())
    }

    fn has(&self, name: &str) -> bool {
        self.given.iter().any(|(n, _)| *n == name)
    }
}

/// Reads `args` (a subcommand's, after its name) as flags from `table`
/// up to the first positional argument or `--`.
fn read_flags(subcommand: &str, args: &[OsString], table: &[Flag]) -> Flags {
    let mut flags = Flags {
        given: Vec::new(),
        written: Vec::new(),
        positional: args.len(),
        uncertain: None,
        help: false,
    };
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let found = match token(arg) {
            Token::End => {
                flags.positional = i + 1;
                return flags;
            }
            Token::Positional => {
                flags.positional = i;
                return flags;
            }
            Token::Long(name, inline) => table.iter().find(|f| f.0 == name).map(|f| (*f, inline)),
            Token::Short(letter) => table.iter().find(|f| f.1 == Some(letter)).map(|f| (*f, None)),
            Token::Other => None,
        };
        if HELP_FLAGS.contains(&arg.to_string_lossy().as_ref()) {
            flags.help = true;
        }
        let Some(((name, _, arity), inline)) = found else {
            if !flags.help {
                flags.uncertain.get_or_insert_with(|| {
                    format!(
                        "{subcommand}: {:?} is not a flag specwright-runc reads as runc and crun both do",
                        arg.to_string_lossy()
                    )
                });
            }
            i += 1;
            continue;
        };
        let mut written = vec![arg.clone()];
        let value = match (arity, inline) {
            (Bool, None) => OsString::new(),
            (Bool, Some(_)) => {
                flags.uncertain.get_or_insert_with(|| {
                    format!("{subcommand}: --{name} takes no value (runc and crun read `--{name}=...` differently)")
                });
                OsString::new()
            }
            (_, Some(value)) => value.to_os_string(),
            (_, None) => {
                i += 1;
                match args.get(i) {
                    Some(value) => {
                        written.push(value.clone());
                        value.clone()
                    }
                    None => {
                        flags
                            .uncertain
                            .get_or_insert_with(|| format!("{subcommand}: --{name} needs a value"));
                        OsString::new()
                    }
                }
            }
        };
        if arity != Repeated && flags.has(name) {
            flags
                .uncertain
                .get_or_insert_with(|| format!("{subcommand}: --{name} is given twice"));
        }
        flags.given.push((name, value));
        flags.written.push((name, written));
        i += 1;
    }
    flags
}

/// Parses `args` (without the program name).
pub fn parse(args: &[OsString]) -> Result<Invocation, ArgsError> {
    let mut own = OwnFlags::default();
    let mut global = Vec::new();
    let mut log = LogTarget::default();
    let mut root = None;
    let mut uncertain: Option<String> = None;
    let mut help = false;
    let mut i = 0;
    // Global flags, up to the subcommand.
    let subcommand_at = loop {
        let Some(arg) = args.get(i) else {
            break None;
        };
        let (name, inline) = match token(arg) {
            Token::Positional => break Some(i),
            Token::End => {
                global.push(arg.clone());
                break (i + 1 < args.len()).then_some(i + 1);
            }
            Token::Long(name, inline) => (name, inline),
            Token::Short(_) | Token::Other => {
                if HELP_FLAGS.contains(&arg.to_string_lossy().as_ref()) {
                    help = true;
                } else {
                    uncertain.get_or_insert_with(|| {
                        format!(
                            "global flag {:?} is not one specwright-runc reads as runc and crun both do",
                            arg.to_string_lossy()
                        )
                    });
                }
                global.push(arg.clone());
                i += 1;
                continue;
            }
        };
        let own_flag = OWN_FLAGS.contains(&name);
        let known = GLOBAL_FLAGS.iter().find(|f| f.0 == name);
        let takes_value = own_flag || known.is_some_and(|f| f.2 != Bool) || ["rootless", "criu"].contains(&name);
        if !own_flag && known.is_none() {
            if HELP_FLAGS.contains(&arg.to_string_lossy().as_ref()) {
                help = true;
            } else {
                uncertain.get_or_insert_with(|| match name {
                    "rootless" => {
                        "--rootless: crun reads it as the state root, runc as a mode; not accepted with policies"
                            .to_string()
                    }
                    "criu" => "--criu names a program the runtime runs as root, which no policy reviews; not accepted with policies"
                        .to_string(),
                    _ => format!("global flag --{name} is not one specwright-runc reads as runc and crun both do"),
                });
            }
        }
        if !takes_value && inline.is_some() && !own_flag {
            uncertain.get_or_insert_with(|| {
                format!("--{name} takes no value (runc and crun read `--{name}=...` differently)")
            });
        }
        let value = match (takes_value, inline) {
            (false, _) => None,
            (true, Some(v)) => Some(v.to_os_string()),
            (true, None) => {
                i += 1;
                Some(
                    args.get(i)
                        .ok_or_else(|| ArgsError::MissingValue(name.to_string()))?
                        .clone(),
                )
            }
        };
        match (name, value) {
            ("policy", Some(v)) => own.policies.push(PolicyArg::enforced(text(name, &v)?)),
            ("monitor-policy", Some(v)) => own.policies.push(PolicyArg::monitored(text(name, &v)?)),
            ("real-runtime", Some(v)) => own.real_runtime = Some(text(name, &v)?),
            ("state-dir", Some(v)) => own.state_dir = Some(PathBuf::from(v)),
            ("policy-timeout-ms", Some(v)) => own.policy_timeout_ms = Some(number(name, &v)?),
            ("policy-memory-mib", Some(v)) => own.policy_memory_mib = Some(number(name, &v)?),
            ("metrics-file", Some(v)) => own.metrics_file = Some(PathBuf::from(v)),
            (_, value) => {
                match name {
                    "log" => log.file = value.as_ref().map(PathBuf::from),
                    "log-format" => log.json = value.as_deref() == Some(OsStr::new("json")),
                    "root" => root = value.clone(),
                    _ => {}
                }
                // Kept as the engine wrote it: one argument or two.
                global.push(arg.clone());
                if inline.is_none() {
                    global.extend(value);
                }
            }
        }
        i += 1;
    };
    if root.as_ref().is_some_and(|r| !std::path::Path::new(r).is_absolute()) {
        uncertain.get_or_insert_with(|| {
            "--root is relative (runc takes it from the working directory, crun from the bundle)".to_string()
        });
    } else if root.as_ref().is_some_and(|r| !is_plain_absolute(r)) {
        uncertain.get_or_insert_with(|| {
            "--root is not spelled plainly ('.', '..', '//' or a trailing '/': runc cleans it, crun makes what is missing and walks '..' after it)".to_string()
        });
    }
    let rest: Vec<OsString> = subcommand_at.map(|at| args[at..].to_vec()).unwrap_or_default();
    let command = match (help, rest.split_first()) {
        (true, _) | (_, None) => Command::Nothing,
        (false, Some((subcommand, args))) => {
            let subcommand = subcommand.to_string_lossy().into_owned();
            match read_command(&subcommand, args) {
                Ok((command, why)) => {
                    if let Some(why) = why {
                        uncertain.get_or_insert(why);
                    }
                    command
                }
                // The runtime's to report when nothing is reviewed.
                Err(e) => {
                    uncertain.get_or_insert(format!("{subcommand}: {e}"));
                    Command::Unknown(subcommand)
                }
            }
        }
    };
    Ok(Invocation {
        own,
        global,
        rest,
        log,
        root,
        command,
        uncertain,
    })
}

/// Whether `path` is absolute and spelled plainly: every component a name
/// (no `.`, `..` or empty one, so no `//` and no trailing `/`), so that
/// cleaning it lexically changes nothing.
pub fn is_plain_absolute(path: &std::ffi::OsStr) -> bool {
    let bytes = path.as_encoded_bytes();
    match bytes.strip_prefix(b"/") {
        Some(b"") => true,
        Some(rest) => rest
            .split(|b| *b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b".."),
        None => false,
    }
}

/// The command a subcommand and its arguments stand for, and why it is
/// uncertain, if it is.
fn read_command(subcommand: &str, args: &[OsString]) -> Result<(Command, Option<String>), ArgsError> {
    let kind = match subcommand {
        "create" => Some(CreateKind::Create),
        "run" => Some(CreateKind::Run),
        "restore" => Some(CreateKind::Restore),
        _ => None,
    };
    let table: Vec<Flag> = match subcommand {
        "create" => CREATE_FLAGS.to_vec(),
        "run" => CREATE_FLAGS.iter().chain(RUN_FLAGS).copied().collect(),
        "restore" => RESTORE_FLAGS.to_vec(),
        "exec" => EXEC_FLAGS.to_vec(),
        "update" => UPDATE_FLAGS.to_vec(),
        "delete" => {
            const DELETE_FLAGS: &[Flag] = &[("force", Some('f'), Bool), ("regex", Some('r'), Bool)];
            let flags = read_flags(subcommand, args, DELETE_FLAGS);
            let positionals = &args[flags.positional.min(args.len())..];
            let command = match positionals {
                [id] if flags.uncertain.is_none() && !flags.help && !flags.has("regex") => {
                    Command::Delete(text("<container-id>", id)?)
                }
                _ => Command::PassThrough(subcommand.to_string()),
            };
            return Ok((command, None));
        }
        other if PASS_THROUGH.contains(&other) => return Ok((Command::PassThrough(other.to_string()), None)),
        other => return Ok((Command::Unknown(other.to_string()), None)),
    };
    let flags = read_flags(subcommand, args, &table);
    if flags.help {
        return Ok((Command::Nothing, None));
    }
    let mut uncertain = flags.uncertain.clone();
    let positionals = &args[flags.positional..];
    let Some((id, after)) = positionals.split_first() else {
        // The runtime says an id is missing; there is nothing to review.
        let why = format!("{subcommand}: no container id");
        return Ok((Command::Unknown(subcommand.to_string()), Some(uncertain.unwrap_or(why))));
    };
    let id = text("<container-id>", id)?;
    if subcommand != "exec" && !after.is_empty() {
        uncertain.get_or_insert_with(|| {
            format!(
                "{subcommand}: {:?} after the container id (runc moves flags written there in front of it, crun does not)",
                after[0].to_string_lossy()
            )
        });
    }
    let path = |name: &str| flags.value(name).map(PathBuf::from);
    // `--preserve-fds N` (create, run, exec): descriptors 3 to 3+N-1.
    let preserve_fds = flags
        .value("preserve-fds")
        .map(|v| number("preserve-fds", v))
        .transpose()?
        .unwrap_or(0);
    let host_files: Vec<(&'static str, PathBuf)> = HOST_FILE_FLAGS
        .iter()
        .filter_map(|name| Some((*name, PathBuf::from(flags.value(name)?))))
        .collect();
    let string = |name: &str| flags.value(name).map(|v| text(name, v)).transpose();
    let strings = |name: &str| flags.values(name).map(|v| text(name, v)).collect::<Result<Vec<_>, _>>();
    let command = match (subcommand, kind) {
        (_, Some(kind)) => {
            let lsm_override = ["lsm-profile", "lsm-mount-context"]
                .into_iter()
                .find(|f| flags.has(f))
                .map(|f| format!("--{f}"));
            let kept = flags
                .written
                .iter()
                .filter(|(name, _)| !["bundle", "config"].contains(name))
                .flat_map(|(_, written)| written.iter().cloned())
                .collect();
            Command::Create(Creation {
                kind,
                id,
                bundle: path("bundle"),
                config: path("config"),
                lsm_override,
                kept,
                preserve_fds,
                host_files,
            })
        }
        ("exec", _) => {
            let kept = flags
                .written
                .iter()
                .filter(|(name, _)| EXEC_KEPT.contains(name))
                .flat_map(|(_, written)| written.iter().cloned())
                .collect();
            Command::Exec(Exec {
                id,
                process_file: path("process"),
                args: after.iter().map(|a| text("<command>", a)).collect::<Result<_, _>>()?,
                cwd: string("cwd")?,
                env: strings("env")?,
                tty: flags.has("tty"),
                user: string("user")?,
                additional_gids: strings("additional-gids")?,
                caps: strings("cap")?,
                no_new_privs: flags.has("no-new-privs"),
                apparmor: string("apparmor")?,
                process_label: string("process-label")?,
                kept,
                preserve_fds,
                cgroups: strings("cgroup")?,
                host_files,
            })
        }
        _ => {
            let values = flags
                .given
                .iter()
                .filter(|(name, _)| *name != "resources" && !UPDATE_KEPT.contains(name))
                .map(|(name, v)| Ok((name.to_string(), text(name, v)?)))
                .collect::<Result<Vec<_>, ArgsError>>()?;
            let kept = flags
                .written
                .iter()
                .filter(|(name, _)| UPDATE_KEPT.contains(name))
                .flat_map(|(_, written)| written.iter().cloned())
                .collect();
            Command::Update(Update {
                id,
                resources_file: path("resources"),
                values,
                kept,
            })
        }
    };
    Ok((command, uncertain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    fn joined(list: &[OsString]) -> String {
        list.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn creation(inv: &Invocation) -> &Creation {
        match &inv.command {
            Command::Create(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn containerds_create_keeps_every_runtime_argument_in_order() {
        let line = "--root /run/containerd/runc/default --log /run/c/log.json --log-format json --systemd-cgroup \
                    create --bundle /run/c/b --pid-file /run/c/init.pid --console-socket /tmp/s ctr1";
        let inv = parse(&args(line)).unwrap();
        assert_eq!(
            joined(&inv.passthrough()),
            line.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        assert_eq!(inv.own, OwnFlags::default());
        assert_eq!(inv.uncertain, None);
        assert_eq!(inv.root.as_deref(), Some(OsStr::new("/run/containerd/runc/default")));
        assert_eq!(
            inv.log,
            LogTarget {
                file: Some("/run/c/log.json".into()),
                json: true
            }
        );
        let c = creation(&inv);
        assert_eq!((c.kind, c.id.as_str()), (CreateKind::Create, "ctr1"));
        assert_eq!(c.bundle, Some("/run/c/b".into()));
    }

    #[test]
    fn our_flags_are_taken_out_in_both_forms() {
        let inv = parse(&args(
            "--policy=/p/hardened.wasm --root /r --policy /p/allow.wasm:/p/allow.json --real-runtime=crun \
             --state-dir /s --policy-timeout-ms 50 --policy-memory-mib=128 run -b /b --keep -d id9",
        ))
        .unwrap();
        assert_eq!(inv.own.policies, ["/p/hardened.wasm", "/p/allow.wasm:/p/allow.json"]);
        assert_eq!(inv.own.real_runtime.as_deref(), Some("crun"));
        assert_eq!(inv.own.state_dir, Some(PathBuf::from("/s")));
        assert_eq!(inv.own.policy_timeout_ms, Some(50));
        assert_eq!(inv.own.policy_memory_mib, Some(128));
        assert_eq!(joined(&inv.passthrough()), "--root /r run -b /b --keep -d id9");
        assert_eq!(inv.uncertain, None);
        let c = creation(&inv);
        assert_eq!(
            (c.kind, c.id.as_str(), c.bundle.clone()),
            (CreateKind::Run, "id9", Some("/b".into()))
        );
    }

    #[test]
    fn the_subcommands_that_pass_through_are_a_short_list() {
        for line in [
            "state c1",
            "kill c1 KILL",
            "kill --all c1 9",
            "delete -r c.*",
            "features",
            "--debug ps c1",
            "start c1",
            "pause c1",
            "resume c1",
            "events --stats c1",
            "list -q",
            "spec --bundle /b",
            "checkpoint --image-path /i c1",
        ] {
            let inv = parse(&args(line)).unwrap();
            assert_eq!(joined(&inv.passthrough()), line, "{line}");
            assert!(
                matches!(inv.command, Command::PassThrough(_)),
                "{line}: {:?}",
                inv.command
            );
            assert_eq!(inv.uncertain, None, "{line}");
        }
        for line in ["--version", "-v", "--help", "create --help", "exec -h"] {
            let inv = parse(&args(line)).unwrap();
            assert_eq!(inv.command, Command::Nothing, "{line}");
        }
        let inv = parse(&args("mounts add c1 /x")).unwrap();
        assert_eq!(inv.command, Command::Unknown("mounts".into()));
        let inv = parse(&args("delete --force c1")).unwrap();
        assert_eq!(inv.command, Command::Delete("c1".into()));
    }

    /// Each of these read differently by runc and crun, or by the wrapper
    /// before it knew them, so that it reviewed the wrong bundle or none.
    #[test]
    fn forms_runc_and_crun_read_differently_are_uncertain() {
        for (line, needle) in [
            // runc moves the flag in front of the id; crun does not.
            ("create c1 --bundle /evil", "after the container id"),
            ("run c1 -b /evil", "after the container id"),
            ("update c1 --memory 1", "after the container id"),
            // crun's abbreviations, attached and bundled short values.
            ("create --bun=/evil c1", "--bun=/evil"),
            ("create --b /evil c1", "\"--b\""),
            ("create -b/evil c1", "-b/evil"),
            ("create -b=/evil c1", "-b=/evil"),
            ("run -dt c1", "-dt"),
            ("exec -tfalse c1 sh", "-tfalse"),
            // runc's single-dash long names; crun reads letters.
            ("-root /r create c1", "-root"),
            ("create -bundle /b c1", "-bundle"),
            // crun's hidden options.
            ("create --HANG=1 c1", "--HANG=1"),
            ("--rootless true create c1", "--rootless"),
            ("--criu /tmp/evil checkpoint c1", "--criu names a program"),
            // A value on a flag that takes none.
            ("--debug=false create c1", "--debug takes no value"),
            ("run --detach=false c1", "--detach takes no value"),
            // runc refuses two forms; crun takes the last.
            ("create -b /a --bundle /b c1", "given twice"),
            ("create --bogus c1", "--bogus"),
            ("--root run/r create c1", "--root is relative"),
            // runc cleans a root lexically; crun makes the missing part
            // and walks `..` after it: both reach /r, not /r/nx/...
            ("--root /r/nx/.. create c1", "not spelled plainly"),
            ("--root /r/./x exec c1 sh", "not spelled plainly"),
            ("--root //r delete c1", "not spelled plainly"),
            ("--root /r/ state c1", "not spelled plainly"),
        ] {
            let inv = parse(&args(line)).unwrap();
            let why = inv.uncertain.unwrap_or_else(|| panic!("{line}: taken as certain"));
            assert!(why.contains(needle), "{line}: {why}");
        }
    }

    #[test]
    fn a_plain_absolute_path_is_one_cleaning_leaves_alone() {
        for plain in ["/", "/run/runc", "/a.b/..c/d.", "/run/user/0/crun"] {
            assert!(is_plain_absolute(plain.as_ref()), "{plain}");
        }
        for odd in [
            "",
            "run",
            "//",
            "/r/",
            "/r//x",
            "/r/.",
            "/r/./x",
            "/r/..",
            "/r/x/../y",
            "./r",
        ] {
            assert!(!is_plain_absolute(odd.as_ref()), "{odd}");
        }
    }

    #[test]
    fn double_dash_ends_the_flags_as_both_runtimes_read_it() {
        let inv = parse(&args("--root /r -- create -b /b -- c1")).unwrap();
        assert_eq!(inv.uncertain, None);
        let c = creation(&inv);
        assert_eq!((c.id.as_str(), c.bundle.clone()), ("c1", Some("/b".into())));
        assert_eq!(joined(&inv.passthrough()), "--root /r -- create -b /b -- c1");
        // Not a subcommand named "--".
        let inv = parse(&args("-- run c2")).unwrap();
        assert_eq!(creation(&inv).kind, CreateKind::Run);
    }

    #[test]
    fn exec_flags_describe_one_process_and_the_rest_is_kept_for_the_runtime() {
        let inv = parse(&args(
            "--root /r exec -d --pid-file /p --cwd /w -e A=1 --env B=2 -t -u 1000:100 -g 5 --cap CAP_KILL -c CAP_CHOWN \
             --no-new-privs --apparmor prof --preserve-fds 2 --cgroup sub c1 sh -c --cap",
        ))
        .unwrap();
        assert_eq!(inv.uncertain, None);
        let Command::Exec(exec) = inv.command else { panic!() };
        assert_eq!(exec.id, "c1");
        assert_eq!(exec.args, ["sh", "-c", "--cap"], "after the id, all is the command");
        assert_eq!(exec.cwd.as_deref(), Some("/w"));
        assert_eq!(exec.env, ["A=1", "B=2"]);
        assert!(exec.tty && exec.no_new_privs);
        assert_eq!(exec.user.as_deref(), Some("1000:100"));
        assert_eq!(exec.additional_gids, ["5"]);
        assert_eq!(exec.caps, ["CAP_KILL", "CAP_CHOWN"]);
        assert_eq!(exec.apparmor.as_deref(), Some("prof"));
        assert_eq!(exec.preserve_fds, 2);
        assert_eq!(joined(&exec.kept), "-d --pid-file /p --preserve-fds 2 --cgroup sub");
        let inv = parse(&args("exec --process /tmp/p.json --detach c1")).unwrap();
        let Command::Exec(exec) = inv.command else { panic!() };
        assert_eq!(exec.process_file, Some("/tmp/p.json".into()));
    }

    #[test]
    fn update_reads_the_resources_file_or_the_flags() {
        let inv = parse(&args("update --resources - c1")).unwrap();
        let Command::Update(update) = inv.command else { panic!() };
        assert_eq!(update.resources_file, Some("-".into()));
        let inv = parse(&args("update --memory 64m --pids-limit=10 --l3-cache-schema L3:0=f c1")).unwrap();
        let Command::Update(update) = inv.command else { panic!() };
        assert_eq!(
            update.values,
            [
                ("memory".to_string(), "64m".to_string()),
                ("pids-limit".into(), "10".into())
            ]
        );
        assert_eq!(joined(&update.kept), "--l3-cache-schema L3:0=f");
    }

    #[test]
    fn restore_names_the_flags_that_label_the_process() {
        let inv = parse(&args(
            "restore --image-path /i --lsm-profile apparmor:unconfined -b /b c1",
        ))
        .unwrap();
        let c = creation(&inv);
        assert_eq!(c.kind, CreateKind::Restore);
        assert_eq!(c.lsm_override.as_deref(), Some("--lsm-profile"));
    }

    #[test]
    fn a_missing_or_bad_value_of_ours_names_the_flag() {
        assert_eq!(
            parse(&args("--policy")).unwrap_err(),
            ArgsError::MissingValue("policy".into())
        );
        let err = parse(&args("--policy-timeout-ms soon create c"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--policy-timeout-ms") && err.contains("soon"), "{err}");
        let inv = parse(&args("create --bundle")).unwrap();
        assert!(inv.uncertain.is_some());
        // A value of the runtime's that cannot be read: its to report.
        let inv = parse(&args("exec --preserve-fds many c sh")).unwrap();
        assert!(inv.uncertain.unwrap().contains("--preserve-fds"));
    }
}
