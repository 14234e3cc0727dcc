//! A policy that misbehaves on purpose, as its settings `{"mode": ...}` say,
//! so the tests can show the host contains it. It uses the raw bindings
//! (not `Policy`) so it can return what a well-typed policy cannot.

use specwright_sdk::bindings::specwright::policy::host;
use specwright_sdk::bindings::specwright::policy::types::{HostFacts, PolicyError, PolicyMetadata};
use specwright_sdk::bindings::Guest;

struct Hostile;

fn mode(settings: &str) -> String {
    serde_json::from_str::<serde_json::Value>(settings)
        .ok()
        .and_then(|v| v["mode"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn mount_first() -> Result<host::MountedRoot, PolicyError> {
    let source = host::materialize(0).map_err(|e| PolicyError::Internal(format!("{e:?}")))?;
    host::mount_temporary(&source, &[0]).map_err(|e| PolicyError::Internal(format!("{e:?}")))
}

#[allow(clippy::empty_loop)]
fn spin() -> ! {
    loop {}
}

impl Guest for Hostile {
    fn metadata() -> PolicyMetadata {
        PolicyMetadata {
            name: "hostile".into(),
            version: "0".into(),
            description: "Misbehaves as its settings say, for tests.".into(),
        }
    }

    fn generate(
        _request: String,
        _facts: HostFacts,
        settings: String,
        previous: Option<String>,
    ) -> Result<String, PolicyError> {
        match mode(&settings).as_str() {
            "spin" => spin(),
            "spin-after-mount" => {
                let root = mount_first()?;
                std::mem::forget(root);
                spin()
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                }
            }
            "bad-index" => match host::materialize(99) {
                Ok(_) => Err(PolicyError::Internal("the host handed out mount 99".into())),
                Err(e) => Err(PolicyError::Internal(format!("{e:?}"))),
            },
            "mount-then-fail" => {
                mount_first()?;
                Err(PolicyError::Internal("failing after a mount, on purpose".into()))
            }
            "mount-then-trap" => {
                mount_first()?;
                panic!("trapping after a mount, on purpose")
            }
            "release-early" => {
                let root = mount_first()?;
                host::release(root).map_err(|e| PolicyError::Internal(format!("{e:?}")))?;
                previous.ok_or_else(|| PolicyError::Internal("run me after the default policy".into()))
            }
            "invalid-json" => Ok("{this is not json".into()),
            "bad-schema" => Ok(r#"{"ociVersion": 5, "process": {"cwd": []}}"#.into()),
            "deny" => Err(PolicyError::Denied("denied on purpose".into())),
            "print" => {
                println!("to stdout from rust");
                eprintln!("to stderr from rust");
                previous.ok_or_else(|| PolicyError::Internal("no previous spec".into()))
            }
            "print-then-fail" => {
                println!("to stdout from rust");
                eprintln!("to stderr from rust");
                Err(PolicyError::Internal("failing after printing, on purpose".into()))
            }
            "count" => {
                // A fresh instance per step means this is always 1.
                static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let mut spec: serde_json::Value = previous
                    .as_deref()
                    .and_then(|p| serde_json::from_str(p).ok())
                    .ok_or_else(|| PolicyError::Internal("no previous spec".into()))?;
                spec["hostname"] = serde_json::Value::String(format!("call-{n}"));
                Ok(spec.to_string())
            }
            "passthrough" => previous.ok_or_else(|| PolicyError::Internal("no previous spec".into())),
            // `calls` host calls (settings), each answered or refused;
            // fails if the last one was refused for the step's limit,
            // else passes the previous spec on.
            "host-calls" => {
                let calls = serde_json::from_str::<serde_json::Value>(&settings)
                    .ok()
                    .and_then(|v| v["calls"].as_u64())
                    .unwrap_or(1);
                let mut last = Ok(false);
                for _ in 0..calls {
                    last = host::exists("/");
                }
                match last {
                    Err(e) if format!("{e:?}").contains("limit") => {
                        Err(PolicyError::Internal(format!("a host call refused: {e:?}")))
                    }
                    _ => previous.ok_or_else(|| PolicyError::Internal("no previous spec".into())),
                }
            }
            // The previous spec with fields spelled out at their default
            // values (what a typed spec leaves out).
            "spell-out-defaults" => {
                let mut spec: serde_json::Value = previous
                    .as_deref()
                    .and_then(|p| serde_json::from_str(p).ok())
                    .ok_or_else(|| PolicyError::Internal("no previous spec".into()))?;
                spec["process"]["terminal"] = serde_json::Value::Bool(false);
                spec["process"]["noNewPrivileges"] = serde_json::Value::Bool(false);
                Ok(spec.to_string())
            }
            "slow-passthrough" => {
                // Busy for a while (the settings' `iterations`), then fine.
                let iterations = serde_json::from_str::<serde_json::Value>(&settings)
                    .ok()
                    .and_then(|v| v["iterations"].as_u64())
                    .unwrap_or(0);
                let mut x = 0u64;
                for i in 0..iterations {
                    x = std::hint::black_box(x.wrapping_add(i));
                }
                std::hint::black_box(x);
                previous.ok_or_else(|| PolicyError::Internal("no previous spec".into()))
            }
            other => Err(PolicyError::InvalidRequest(format!("unknown test mode {other:?}"))),
        }
    }
}

specwright_sdk::bindings::__export_policy_world!(Hostile with_types_in specwright_sdk::bindings);
