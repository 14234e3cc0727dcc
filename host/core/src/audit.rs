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
        Ok(Audit::to_file(file))
    }

    /// Appends to `file`, opened for appending (the state dir's log:
    /// [`crate::state::StateDir::open_audit_log`]).
    pub fn to_file(file: std::fs::File) -> Audit {
        Audit {
            file: Some(Mutex::new(file)),
        }
    }

    /// Tracing events only (dry runs write nothing to the state dir).
    pub fn events_only() -> Audit {
        Audit { file: None }
    }

    /// Whether a record of an operation that succeeded (`ok`) or failed
    /// would go anywhere: a caller skips building its arguments and result
    /// when not (a dry run without `SPECWRIGHT_LOG` reads none of them).
    /// Events reach a tracing subscriber only: the `log` crate bridge of
    /// tracing (its `log` feature) is not used.
    pub fn wants(&self, ok: bool) -> bool {
        self.file.is_some()
            || if ok {
                tracing::enabled!(tracing::Level::INFO)
            } else {
                tracing::enabled!(tracing::Level::WARN)
            }
    }

    /// Records one operation; a failure to write the log is reported as a
    /// tracing event and does not fail the operation. Returns the bytes
    /// the log line took (0 when there is no log file).
    pub fn record(
        &self,
        step: &str,
        actor: &str,
        op: &str,
        args: Value,
        result: Result<Value, &str>,
        took: Duration,
    ) -> usize {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let ok = result.is_ok();
        let (outcome, detail) = match result {
            Ok(v) => ("ok", v),
            Err(e) => ("error", Value::String(e.to_string())),
        };
        if ok {
            tracing::info!(step, policy = actor, op, args = %args, result = %detail, duration_us = took.as_micros() as u64, "privileged operation")
        } else {
            tracing::warn!(step, policy = actor, op, args = %args, error = %detail, duration_us = took.as_micros() as u64, "privileged operation failed")
        }
        let Some(file) = &self.file else { return 0 };
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
        // One write(2) a line: with O_APPEND, lines from concurrent
        // processes never interleave (`writeln!` on the file wrote each JSON
        // token with its own syscall).
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let written = file
            .lock()
            .map_err(|_| std::io::Error::other("audit log lock poisoned"))
            .and_then(|mut f| f.write_all(&bytes));
        if let Err(e) = written {
            tracing::error!(error = %e, "writing the audit log");
        }
        bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines from concurrent writers (threads here, processes in use) stay
    /// whole: each is one write(2) to a file opened for appending.
    #[test]
    fn concurrent_records_do_not_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::thread::scope(|scope| {
            for t in 0..4 {
                let path = &path;
                scope.spawn(move || {
                    let audit = Audit::open(path).unwrap();
                    for i in 0..200 {
                        let args = json!({"thread": t, "i": i, "padding": "x".repeat(300)});
                        audit.record("s", "p", "op", args, Ok(json!({})), Duration::ZERO);
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 800);
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["op"], "op");
        }
    }
}
