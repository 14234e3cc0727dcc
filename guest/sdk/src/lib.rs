//! The specwright policy SDK.
//!
//! A policy is one type implementing [`Policy`], exported with
//! [`export_policy!`] and built for `wasm32-wasip2` as a `cdylib`:
//!
//! ```no_run
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
    buildkit, cdi, derive, facts, mounts, opts, request, spec, HostCalls, HostError, HostFacts, PolicyError, Request,
    Spec,
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

/// The host's privileged operations, as safe Rust: a [`HostCalls`] over
/// the WIT imports, so the pipelines in `specwright_core` run on it
/// unchanged (bring the trait into scope: `use specwright_sdk::HostCalls`).
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

// Values cross the WIT boundary through `From`, one conversion per type
// (the host has the mirror images).

impl From<wit_types::HostError> for HostError {
    fn from(e: wit_types::HostError) -> Self {
        match e {
            wit_types::HostError::Refused(m) => HostError::Refused(m),
            wit_types::HostError::Failed(m) => HostError::Failed(m),
        }
    }
}

impl From<wit_types::Mount> for request::Mountable {
    fn from(m: wit_types::Mount) -> Self {
        request::Mountable {
            kind: m.kind,
            source: m.source,
            options: m.options,
        }
    }
}

impl From<wit_types::HostFacts> for HostFacts {
    fn from(facts: wit_types::HostFacts) -> Self {
        HostFacts {
            kernel_release: facts.kernel_release,
            seccomp: facts.seccomp,
            first_free_loop: facts.first_free_loop,
            in_user_namespace: facts.in_user_namespace,
            arch: facts.arch,
            capabilities: facts.capabilities,
            cgroup_namespace: facts.cgroup_namespace,
            apparmor: facts.apparmor,
            selinux: facts.selinux,
        }
    }
}

impl From<wit_host::StepLabels> for specwright_core::selinux::Labels {
    fn from(labels: wit_host::StepLabels) -> Self {
        specwright_core::selinux::Labels {
            process: labels.process,
            mount: labels.mount,
        }
    }
}

impl From<PolicyError> for wit_types::PolicyError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::InvalidRequest(m) => wit_types::PolicyError::InvalidRequest(m),
            PolicyError::Denied(m) => wit_types::PolicyError::Denied(m),
            PolicyError::Internal(m) => wit_types::PolicyError::Internal(m),
        }
    }
}

/// An argument of a host call as the WIT import takes it.
macro_rules! wit_arg {
    (u32, $arg:ident) => {
        $arg
    };
    (bool, $arg:ident) => {
        $arg
    };
    (str, $arg:ident) => {
        $arg
    };
    (u32s, $arg:ident) => {
        $arg
    };
    (source, $arg:ident) => {
        &$arg.handle
    };
    (root, $arg:ident) => {
        &$arg.handle
    };
    (owned_root, $arg:ident) => {
        $arg.handle
    };
}

/// A host call's result as the trait gives it, from the WIT import's.
macro_rules! from_wit {
    (unit, $value:ident) => {
        Ok($value)
    };
    (bool, $value:ident) => {
        Ok($value)
    };
    (u64, $value:ident) => {
        Ok($value)
    };
    (string, $value:ident) => {
        Ok($value)
    };
    (source, $value:ident) => {
        Ok(Source { handle: $value })
    };
    (root, $value:ident) => {
        Ok(MountedRoot { handle: $value })
    };
    (mounts, $value:ident) => {
        Ok($value.into_iter().map(request::Mountable::from).collect())
    };
    (cdi_registry, $value:ident) => {
        serde_json::from_str(&$value).map_err(|e| HostError::Failed(format!("the host's CDI registry: {e}")))
    };
    (labels, $value:ident) => {
        Ok(specwright_core::selinux::Labels::from($value))
    };
}

/// The WIT import's result, its `host-error` made the trait's.
macro_rules! wit_result {
    (fallible, $call:expr) => {
        $call.map_err(HostError::from)?
    };
    (total, $call:expr) => {
        $call
    };
}

/// A call of the WIT import: a function of the interface, or a method of
/// the resource its first argument is.
macro_rules! wit_call {
    (host, $wit:ident, $($arg:ident: $kind:ident),*) => { wit_host::$wit($(wit_arg!($kind, $arg)),*) };
    ($resource:ident, $wit:ident, $receiver:ident: $receiver_kind:ident $(, $arg:ident: $kind:ident)*) => {
        $receiver.handle.$wit($(wit_arg!($kind, $arg)),*)
    };
}

/// [`HostCalls`] over the WIT imports, made from
/// [`specwright_core::host_calls!`].
macro_rules! host_calls_over_wit {
    ($($place:ident {
        $( $(#[$attr:meta])* fn $name:ident($($arg:ident: $kind:ident),*) -> $result:ident = $wit:ident, $fallibility:ident; )*
    })*) => {
        impl HostCalls for Host {
            type Source = Source;
            type Root = MountedRoot;

            $($(
                fn $name(&mut self, $($arg: specwright_core::host_call_arg!($kind)),*) -> Result<specwright_core::host_call_result!($result), HostError> {
                    let value = wit_result!($fallibility, wit_call!($place, $wit, $($arg: $kind),*));
                    from_wit!($result, value)
                }
            )*)*
        }
    };
}

specwright_core::host_calls!(host_calls_over_wit);

/// Decodes the inputs, runs `P`, encodes the spec. Called by [`export_policy!`].
#[doc(hidden)]
pub fn run<P: Policy>(
    request: String,
    facts: wit_types::HostFacts,
    settings: String,
    previous: Option<String>,
) -> Result<String, wit_types::PolicyError> {
    let input = decode_input(&request, facts, &settings, previous.as_deref()).map_err(wit_types::PolicyError::from)?;
    let spec = P::generate(input, &mut Host::default()).map_err(wit_types::PolicyError::from)?;
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
        facts: facts.into(),
        settings,
        previous,
    })
}

/// For authors who prefer the `oci-spec` crate's model: implement this and
/// export `Oci<MyPolicy>`:
///
/// ```no_run
/// struct NoNewPrivs;
/// impl specwright_sdk::OciPolicy for NoNewPrivs {
///     const NAME: &'static str = "no-new-privs";
///     const VERSION: &'static str = "1.0.0";
///     const DESCRIPTION: &'static str = "Sets NoNewPrivileges.";
///     fn generate(input: specwright_sdk::OciInput, _host: &mut specwright_sdk::Host)
///         -> Result<oci_spec::runtime::Spec, specwright_sdk::PolicyError> {
///         let mut spec = input.spec;
///         if let Some(process) = spec.process_mut() {
///             process.set_no_new_privileges(Some(true));
///         }
///         Ok(spec)
///     }
/// }
/// specwright_sdk::export_policy!(specwright_sdk::Oci<NoNewPrivs>);
/// ```
///
/// `oci_spec` keeps capabilities in sets, so their order (and the
/// duplicates BuildKit's insecure mode emits) is not preserved; use
/// [`Policy`] when that matters.
pub trait OciPolicy {
    const NAME: &'static str;
    const VERSION: &'static str;
    const DESCRIPTION: &'static str;

    fn generate(input: OciInput, host: &mut Host) -> Result<oci_spec::runtime::Spec, PolicyError>;
}

/// What an [`OciPolicy`] gets: the spec so far (the previous policy's, or
/// the default policy's when this one runs first) as `oci_spec`'s model.
#[derive(Debug, Clone)]
pub struct OciInput {
    pub request: Request,
    pub facts: HostFacts,
    pub settings: serde_json::Value,
    pub spec: oci_spec::runtime::Spec,
}

/// Adapts an [`OciPolicy`] to [`Policy`].
pub struct Oci<P>(std::marker::PhantomData<P>);

/// specwright's spec model to `oci_spec`'s.
pub fn to_oci(spec: &Spec) -> Result<oci_spec::runtime::Spec, PolicyError> {
    serde_json::from_str(&spec.to_json()).map_err(|e| PolicyError::Internal(format!("converting to oci-spec: {e}")))
}

/// `oci_spec`'s spec model to specwright's.
pub fn from_oci(spec: &oci_spec::runtime::Spec) -> Result<Spec, PolicyError> {
    let json =
        serde_json::to_string(spec).map_err(|e| PolicyError::Internal(format!("encoding an oci-spec spec: {e}")))?;
    serde_json::from_str(&json).map_err(|e| PolicyError::Internal(format!("converting from oci-spec: {e}")))
}

impl<P: OciPolicy> Policy for Oci<P> {
    const NAME: &'static str = P::NAME;
    const VERSION: &'static str = P::VERSION;
    const DESCRIPTION: &'static str = P::DESCRIPTION;

    fn generate(input: Input, host: &mut Host) -> Result<Spec, PolicyError> {
        let base = match input.previous {
            Some(spec) => spec,
            None => buildkit::generate(&input.request, &input.facts, host)?,
        };
        let spec = P::generate(
            OciInput {
                request: input.request,
                facts: input.facts,
                settings: input.settings,
                spec: to_oci(&base)?,
            },
            host,
        )?;
        from_oci(&spec)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Rename;

    impl OciPolicy for Rename {
        const NAME: &'static str = "rename";
        const VERSION: &'static str = "0";
        const DESCRIPTION: &'static str = "Sets the hostname from its settings.";

        fn generate(input: OciInput, _host: &mut Host) -> Result<oci_spec::runtime::Spec, PolicyError> {
            let mut spec = input.spec;
            spec.set_hostname(input.settings["hostname"].as_str().map(str::to_string));
            Ok(spec)
        }
    }

    #[test]
    fn an_oci_policy_sees_and_returns_the_spec() {
        let request = Request::from_json(r#"{"id": "s", "args": ["/bin/true"]}"#).unwrap();
        let facts = HostFacts::example();
        let base = buildkit::generate_without_mounts(&request, &facts).unwrap();
        let input = Input {
            request,
            facts,
            settings: serde_json::json!({"hostname": "renamed"}),
            previous: Some(base.clone()),
        };
        let out = <Oci<Rename> as Policy>::generate(input, &mut Host::default()).unwrap();
        assert_eq!(out.hostname, "renamed");
        assert_eq!(out.mounts, base.mounts);
        assert_eq!(
            out.linux.as_ref().unwrap().seccomp,
            base.linux.as_ref().unwrap().seccomp
        );
        assert_eq!(<Oci<Rename> as Policy>::NAME, "rename");
    }
}
