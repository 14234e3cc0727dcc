//! The specwright policy SDK.
//!
//! A policy is one type implementing [`Policy`], exported with
//! [`export_policy!`] and built for `wasm32-wasip2` as a `cdylib`:
//!
//! ```ignore
//! use specwright_sdk::{export_policy, Input, Policy, PolicyError, Spec};
//!
//! struct NoHostNetwork;
//!
//! impl Policy for NoHostNetwork {
//!     const NAME: &'static str = "no-host-network";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     const DESCRIPTION: &'static str = "Denies steps on the host network.";
//!
//!     fn generate(input: Input, host: &mut specwright_sdk::Host) -> Result<Spec, PolicyError> {
//!         if input.request.network == specwright_sdk::request::Network::Host {
//!             return Err(PolicyError::Denied("host network is not allowed".into()));
//!         }
//!         input.previous.ok_or_else(|| PolicyError::Internal("run me after the default policy".into()))
//!     }
//! }
//!
//! export_policy!(NoHostNetwork);
//! ```
//!
//! A policy has no files, network, clock or randomness: everything it knows
//! arrives in [`Input`], and everything privileged goes through [`Host`].

pub use specwright_core::{
    buildkit, facts, mounts, opts, request, spec, HostError, HostFacts, Mounter, PolicyError, Request, Spec,
};

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
        default_bindings_module: "specwright_sdk::bindings",
    });
}

use bindings::specwright::policy::host as wit_host;
use bindings::specwright::policy::types as wit_types;

/// Everything a policy knows about the step.
#[derive(Debug, Clone)]
pub struct Input {
    pub request: Request,
    pub facts: HostFacts,
    /// This policy's settings; `Value::Null` when none were given.
    pub settings: serde_json::Value,
    /// The spec from the previous policy in the chain; `None` for the first.
    pub previous: Option<Spec>,
}

/// What a policy implements.
pub trait Policy {
    /// Short name, e.g. "hardened".
    const NAME: &'static str;
    /// The policy's own version, e.g. `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// One sentence on what it enforces.
    const DESCRIPTION: &'static str;

    /// The spec for one step, or why there is none.
    fn generate(input: Input, host: &mut Host) -> Result<Spec, PolicyError>;
}

/// The host's privileged operations, as safe Rust. Also a [`Mounter`], so
/// the pipelines in `specwright_core` run on it unchanged.
#[derive(Debug, Default)]
pub struct Host {
    _private: (),
}

/// A materialized request mount.
pub struct Source {
    handle: wit_host::Materialized,
}

/// A temporary mountpoint the host made for this step.
pub struct MountedRoot {
    handle: wit_host::MountedRoot,
}

impl MountedRoot {
    /// The mountpoint's host path.
    pub fn path(&self) -> String {
        self.handle.path()
    }
}

fn from_wit_error(e: wit_types::HostError) -> HostError {
    match e {
        wit_types::HostError::Refused(m) => HostError::Refused(m),
        wit_types::HostError::Failed(m) => HostError::Failed(m),
    }
}

fn from_wit_mount(m: wit_types::Mount) -> request::Mountable {
    request::Mountable {
        kind: m.kind,
        source: m.source,
        options: m.options,
    }
}

impl Host {
    /// Unmounts a temporary mountpoint before the step is released.
    pub fn release(&mut self, root: MountedRoot) -> Result<(), HostError> {
        wit_host::release(root.handle).map_err(from_wit_error)
    }
}

impl Mounter for Host {
    type Source = Source;
    type Root = MountedRoot;

    fn materialize(&mut self, index: u32) -> Result<(Source, Vec<request::Mountable>), HostError> {
        let handle = wit_host::materialize(index).map_err(from_wit_error)?;
        let mounts = handle.mounts().into_iter().map(from_wit_mount).collect();
        Ok((Source { handle }, mounts))
    }

    fn resolve_in_source(&mut self, source: &Source, entry: u32, selector: &str) -> Result<String, HostError> {
        source.handle.resolve(entry, selector).map_err(from_wit_error)
    }

    fn mount_temporary(&mut self, source: &Source, entries: &[u32]) -> Result<MountedRoot, HostError> {
        wit_host::mount_temporary(&source.handle, entries)
            .map(|handle| MountedRoot { handle })
            .map_err(from_wit_error)
    }

    fn resolve_in_root(&mut self, root: &MountedRoot, selector: &str) -> Result<String, HostError> {
        root.handle.resolve(selector).map_err(from_wit_error)
    }
}

fn to_wit_error(e: PolicyError) -> wit_types::PolicyError {
    match e {
        PolicyError::InvalidRequest(m) => wit_types::PolicyError::InvalidRequest(m),
        PolicyError::Denied(m) => wit_types::PolicyError::Denied(m),
        PolicyError::Internal(m) => wit_types::PolicyError::Internal(m),
    }
}

/// Decodes the inputs, runs `P`, encodes the spec. Called by [`export_policy!`].
#[doc(hidden)]
pub fn run<P: Policy>(
    request: String,
    facts: wit_types::HostFacts,
    settings: String,
    previous: Option<String>,
) -> Result<String, wit_types::PolicyError> {
    let input = decode_input(&request, facts, &settings, previous.as_deref()).map_err(to_wit_error)?;
    let spec = P::generate(input, &mut Host::default()).map_err(to_wit_error)?;
    Ok(spec.to_json())
}

fn decode_input(
    request: &str,
    facts: wit_types::HostFacts,
    settings: &str,
    previous: Option<&str>,
) -> Result<Input, PolicyError> {
    let request = Request::from_json(request)?;
    let settings = if settings.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(settings).map_err(|e| PolicyError::InvalidRequest(format!("settings: {e}")))?
    };
    let previous = previous
        .map(serde_json::from_str::<Spec>)
        .transpose()
        .map_err(|e| PolicyError::Internal(format!("previous spec: {e}")))?;
    Ok(Input {
        request,
        facts: HostFacts {
            kernel_release: facts.kernel_release,
            seccomp: facts.seccomp,
            first_free_loop: facts.first_free_loop,
            in_user_namespace: facts.in_user_namespace,
            arch: facts.arch,
        },
        settings,
        previous,
    })
}

/// Exports a [`Policy`] as the component's `generate` function.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        struct __SpecwrightExport;

        impl $crate::bindings::Guest for __SpecwrightExport {
            fn generate(
                request: ::std::string::String,
                facts: $crate::bindings::specwright::policy::types::HostFacts,
                settings: ::std::string::String,
                previous: ::std::option::Option<::std::string::String>,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::specwright::policy::types::PolicyError,
            > {
                $crate::run::<$policy>(request, facts, settings, previous)
            }

            fn metadata() -> $crate::bindings::specwright::policy::types::PolicyMetadata {
                $crate::bindings::specwright::policy::types::PolicyMetadata {
                    name: <$policy as $crate::Policy>::NAME.into(),
                    version: <$policy as $crate::Policy>::VERSION.into(),
                    description: <$policy as $crate::Policy>::DESCRIPTION.into(),
                }
            }
        }

        $crate::bindings::__export_policy_world!(__SpecwrightExport with_types_in $crate::bindings);
    };
}
