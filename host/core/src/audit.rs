//! The audit trail: every privileged operation (step, policy, operation,
//! arguments, result, duration) as a JSON line in the state dir and as a
//! tracing event.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub struct Audit {
    file: Option<Mutex<std::fs::File>>,
}

impl Audit {
    /// Appends to `path`, creating it.
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Audit {
            file: Some(Mutex::new(file)),
        })
    }

    /// Tracing events only (dry runs write nothing to the state dir).
    pub fn events_only() -> Audit {
        Audit { file: None }
    }

    /// Records one operation; a failure to write the log is reported as a
    /// tracing event and does not fail the operation.
    pub fn record(&self, step: &str, actor: &str, op: &str, args: Value, result: Result<&Value, &str>, took: Duration) {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let (outcome, detail) = match result {
            Ok(v) => ("ok", v.clone()),
            Err(e) => ("error", Value::String(e.to_string())),
        };
        match result {
            Ok(_) => {
                tracing::info!(step, policy = actor, op, args = %args, result = %detail, duration_us = took.as_micros() as u64, "privileged operation")
            }
            Err(_) => {
                tracing::warn!(step, policy = actor, op, args = %args, error = %detail, duration_us = took.as_micros() as u64, "privileged operation failed")
            }
        }
        let Some(file) = &self.file else { return };
        let line = json!({
            "ts_unix_ms": ts as u64,
            "step": step,
            "policy": actor,
            "op": op,
            "args": args,
            "result": outcome,
            "detail": detail,
            "duration_us": took.as_micros() as u64,
        });
        let written = file
            .lock()
            .map_err(|_| std::io::Error::other("audit log lock poisoned"))
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            tracing::error!(error = %e, "writing the audit log");
        }
    }
}
