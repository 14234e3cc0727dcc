//! The privileged operations a policy may ask of the host, defined once.
//!
//! [`host_calls!`](crate::host_calls) lists every operation of WIT's `host`
//! interface with the kinds of its arguments and result and where WIT
//! puts it (a function of the interface, or a method of the `materialized`
//! or `mounted-root` resource). [`HostCalls`] is made from the list here;
//! the host's WIT adapter and the policy SDK's are made from it too, each
//! mapping a kind to its side of the boundary, so an operation is written
//! in WIT, in the list, and in the host's one implementation.

/// Why a privileged operation did not happen; mirrors the WIT `host-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// Calls `$callback!` with the list of host operations, in three groups
/// by where WIT puts them: `host` (functions of the interface),
/// `materialized` and `mounted_root` (methods of those resources; an
/// operation's first argument is the resource). Each operation is
/// `fn NAME(ARG: KIND, ...) -> KIND = WIT_NAME, fallible|total;`, `total`
/// for one whose WIT result carries no `host-error`. Argument kinds:
/// `u32`, `bool`, `str`, `u32s` (a list), `source`, `root` (borrowed
/// handles), `owned_root` (a handle given back). Result kinds: `unit`,
/// `bool`, `u64`, `string`, `source`, `root`, `mounts`, `cdi_registry`,
/// `labels`.
#[macro_export]
macro_rules! host_calls {
    ($callback:ident) => {
        $callback! {
            host {
                /// Expands request mount `index` (0-based, in request order).
                fn materialize(index: u32) -> source = materialize, fallible;
                /// Mounts `entries` of `source` on a fresh temporary mountpoint.
                fn mount_temporary(source: source, entries: u32s) -> root = mount_temporary, fallible;
                /// Unmounts a temporary mountpoint now, before the step is released.
                fn release(root: owned_root) -> unit = release, fallible;
                /// What host path `path` (one the request names) really is,
                /// every symlink resolved.
                fn canonical_path(path: str) -> string = canonical_path, fallible;
                /// Whether `path`, a host path the request names, exists.
                fn exists(path: str) -> bool = exists, fallible;
                /// The CDI devices the host has registered (its CDI spec files).
                fn cdi_registry() -> cdi_registry = cdi_registry, fallible;
                /// `statfs(2)`'s `f_flags` for `path`, the source of a bind in
                /// the spec: a host path the request names, a temporary
                /// mountpoint of the step's (or a path in one), a CDI mount's
                /// host path, or the host's /proc for a no-sandbox step.
                fn mount_flags(path: str) -> u64 = mount_flags, fallible;
                /// The step's SELinux labels, as go-selinux's `label.InitLabels`
                /// makes them from the host's container contexts: for a
                /// sandboxed step a process and a mount label at an MCS level
                /// reserved for the step until it is released (asking again
                /// gives the same labels); for a `privileged` step no process
                /// label and the privileged mount label.
                fn selinux_labels(privileged: bool) -> labels = selinux_labels, fallible;
            }
            materialized {
                /// The mounts a materialized request mount stands for, in order.
                fn source_mounts(source: source) -> mounts = mounts, total;
                /// Resolves `selector` inside the source of a read-write bind entry.
                fn resolve_in_source(source: source, entry: u32, selector: str) -> string = resolve, fallible;
                /// Binds what `selector` names inside the source of a
                /// read-write bind entry, opened by file descriptor, onto a
                /// temporary mountpoint of its own; naming nothing is an error.
                fn pin_in_source(source: source, entry: u32, selector: str) -> root = pin, fallible;
            }
            mounted_root {
                /// The host path of a temporary mountpoint (for a pinned file,
                /// the file).
                fn root_path(root: root) -> string = path, total;
                /// Resolves `selector` inside a temporary mountpoint.
                fn resolve_in_root(root: root, selector: str) -> string = resolve, fallible;
                /// Binds what `selector` names inside a temporary mountpoint,
                /// opened by file descriptor, onto one of its own; naming
                /// nothing is an error.
                fn pin_in_root(root: root, selector: str) -> root = pin, fallible;
            }
        }
    };
}

/// The Rust type of an argument kind, in [`HostCalls`].
#[doc(hidden)]
#[macro_export]
macro_rules! host_call_arg {
    (u32) => {
        u32
    };
    (bool) => {
        bool
    };
    (str) => {
        &str
    };
    (u32s) => {
        &[u32]
    };
    (source) => {
        &Self::Source
    };
    (root) => {
        &Self::Root
    };
    (owned_root) => {
        Self::Root
    };
}

/// The Rust type of a result kind, in [`HostCalls`].
#[doc(hidden)]
#[macro_export]
macro_rules! host_call_result {
    (unit) => { () };
    (bool) => { bool };
    (u64) => { u64 };
    (string) => { String };
    (source) => { Self::Source };
    (root) => { Self::Root };
    (mounts) => { Vec<$crate::request::Mountable> };
    (cdi_registry) => { $crate::cdi::Registry };
    (labels) => { $crate::selinux::Labels };
}

macro_rules! define_host_calls {
    ($($place:ident {
        $( $(#[$attr:meta])* fn $name:ident($($arg:ident: $kind:ident),*) -> $result:ident = $wit:ident, $fallibility:ident; )*
    })*) => {
        /// The privileged operations a policy may ask of the host: WIT's
        /// `host` interface as one Rust trait, made from
        /// [`host_calls!`](crate::host_calls). The host implements it once
        /// (`StepHost`, which its WIT host and the native pipelines call),
        /// the policy SDK over the WIT imports, and a test double only what
        /// it fakes: every operation it does not implement is refused
        /// ([`not_offered`]).
        pub trait HostCalls {
            /// A materialized request mount.
            type Source;
            /// A temporary mountpoint the host made.
            type Root;

            $($(
                $(#[$attr])*
                fn $name(&mut self, $($arg: $crate::host_call_arg!($kind)),*) -> Result<$crate::host_call_result!($result), HostError> {
                    let _ = ($($arg,)*);
                    Err(not_offered(stringify!($wit)))
                }
            )*)*
        }
    };
}

crate::host_calls!(define_host_calls);

/// What a host that does not offer an operation answers (a test double,
/// or the spec parts that need no host).
pub fn not_offered(op: &str) -> HostError {
    HostError::Refused(format!("this host offers no {op}"))
}
