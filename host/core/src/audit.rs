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
    /// What this process's reviews decided, for the metrics.
    tally: Mutex<crate::metrics::Metrics>,
}

/// Whether a policy's verdict counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Its denial stops the container or step, its changes are kept, its
    /// failure is fatal (fail closed).
    #[default]
    Enforce,
    /// It runs on the same input but never blocks and never changes the
    /// spec: what it would have done is recorded, and the chain goes on
    /// with the spec it received; its failure is recorded, never fatal.
    Monitor,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

/// What one policy did with the spec it received.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// It returned the spec unchanged.
    Allowed,
    /// It returned another spec: the RFC 6902 patch from the one it
    /// received ([`crate::patch::diff`]).
    Changed(Vec<Value>),
    /// It denied the step or container, saying why.
    Denied(String),
    /// It failed: an error, a trap, a limit, an invalid spec.
    Failed(String),
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Changed(_) => "changed",
            Verdict::Denied(_) => "denied",
            Verdict::Failed(_) => "failed",
        }
    }
}

/// One policy's decision on one step or container: the decision log's
/// record.
#[derive(Clone, Debug)]
pub struct Decision<'a> {
    pub step: &'a str,
    pub policy: &'a str,
    /// `sha256:<hex>` of the component, when the host knew it (a policy
    /// loaded through the compile cache, or embedded).
    pub digest: Option<&'a str>,
    pub mode: Mode,
    pub verdict: Verdict,
    pub took: Duration,
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
            tally: Mutex::default(),
        }
    }

    /// Tracing events only (dry runs write nothing to the state dir).
    pub fn events_only() -> Audit {
        Audit {
            file: None,
            tally: Mutex::default(),
        }
    }

    /// Counts a review's outcome and the time the chain took (the
    /// metrics'; the decisions are in the log).
    pub fn review(&self, outcome: crate::metrics::Outcome, took: Duration) {
        if let Ok(mut tally) = self.tally.lock() {
            tally.review(outcome, took);
        }
    }

    /// What this process's reviews decided so far: reviews, and each
    /// policy's verdicts.
    pub fn tally(&self) -> crate::metrics::Metrics {
        self.tally.lock().map(|t| t.clone()).unwrap_or_default()
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

    /// Records a policy's decision (op `policy`): its name, component
    /// digest, mode, verdict, the time it took and, by verdict, the denial
    /// (`denial`), the failure (`error`) or the patch (`patch`). `result` is
    /// `ok` for a spec allowed or changed, `error` otherwise, whatever the
    /// mode.
    pub fn decision(&self, decision: Decision<'_>) {
        let Decision {
            step,
            policy,
            digest,
            mode,
            verdict,
            took,
        } = decision;
        let duration_us = took.as_micros() as u64;
        let verdict_name = verdict.name();
        if let Ok(mut tally) = self.tally.lock() {
            tally.decision(policy, mode, verdict_name, took);
        }
        match &verdict {
            Verdict::Allowed | Verdict::Changed(_) => {
                tracing::info!(
                    step,
                    policy,
                    mode = mode.as_str(),
                    verdict = verdict_name,
                    duration_us,
                    "policy decision"
                )
            }
            Verdict::Denied(message) | Verdict::Failed(message) => {
                tracing::warn!(step, policy, mode = mode.as_str(), verdict = verdict_name, message = %message, duration_us, "policy decision")
            }
        }
        if self.file.is_none() {
            return;
        }
        let mut line = json!({
            "ts_unix_ms": now_ms(),
            "step": step,
            "policy": policy,
            "op": "policy",
            "digest": digest,
            "mode": mode,
            "verdict": verdict_name,
            "result": if matches!(verdict, Verdict::Allowed | Verdict::Changed(_)) { "ok" } else { "error" },
            "duration_us": duration_us,
        });
        let (key, value) = match verdict {
            Verdict::Allowed => ("patch", json!([])),
            Verdict::Changed(mut patch) => {
                patch.iter_mut().for_each(redact_env);
                ("patch", Value::from(patch))
            }
            Verdict::Denied(message) => ("denial", Value::String(message)),
            Verdict::Failed(message) => ("error", Value::String(message)),
        };
        line[key] = value;
        self.write_line(&line);
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
        if self.file.is_none() {
            return 0;
        }
        let line = json!({
            "ts_unix_ms": now_ms(),
            "step": step,
            "policy": actor,
            "op": op,
            "args": args,
            "result": outcome,
            "detail": detail,
            "duration_us": took.as_micros() as u64,
        });
        self.write_line(&line)
    }

    /// Appends `line` to the log file; returns the bytes it took.
    fn write_line(&self, line: &Value) -> usize {
        let Some(file) = &self.file else { return 0 };
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

/// The environment's values written in the log, in place of each
/// `NAME=VALUE` of an `env` list (the process's, a hook's) a patch
/// operation carries: `NAME=` and this.
pub const REDACTED: &str = "<redacted>";

/// Patch operation `op` with the values of environment variables it
/// carries redacted (names kept): a step's env holds secrets (BuildKit's
/// secret env, `-e DB_PASSWORD=...`), which the decision log keeps.
fn redact_env(op: &mut Value) {
    let path = op["path"].as_str().unwrap_or_default().to_string();
    let mut tokens = path.rsplit('/');
    let (last, parent) = (tokens.next(), tokens.next());
    if let Some(value) = op.get_mut("value") {
        if parent == Some("env") {
            redact_entry(value);
        } else if last == Some("env") {
            redact_list(value);
        } else {
            redact_within(value);
        }
    }
}

fn redact_entry(entry: &mut Value) {
    if let Value::String(text) = entry {
        if let Some((name, _)) = text.split_once('=') {
            *text = format!("{name}={REDACTED}");
        }
    }
}

fn redact_list(list: &mut Value) {
    if let Value::Array(entries) = list {
        entries.iter_mut().for_each(redact_entry);
    }
}

fn redact_within(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if key == "env" {
                    redact_list(inner);
                } else {
                    redact_within(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_within),
        _ => {}
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// A decision log summed up by policy and mode (`specwright audit`).
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Steps and containers reviewed (distinct step ids).
    pub reviews: usize,
    /// Every policy decision.
    pub decisions: usize,
    /// By policy name and mode, sorted.
    pub policies: Vec<PolicySummary>,
    /// Lines that are not records (a write torn by a full disk, an
    /// edit), skipped.
    pub unreadable: usize,
}

/// One policy's decisions in one mode. In monitor mode `denied` and
/// `changed` count what it would have done.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicySummary {
    pub policy: String,
    pub mode: Mode,
    /// The component digests it was run as, sorted.
    pub digests: Vec<String>,
    pub decisions: u64,
    pub allowed: u64,
    pub changed: u64,
    pub denied: u64,
    pub failed: u64,
    /// The time its decisions took, in all.
    pub total_us: u64,
}

/// Why a decision log could not be summed up: names the line.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("reading line {line}: {source}")]
    Read {
        line: usize,
        #[source]
        source: std::io::Error,
    },
}

/// The longest audit line read.
pub const MAX_LINE_BYTES: usize = 16 << 20;

impl Summary {
    /// Sums up the audit log `log` (JSON lines; every record that is not a
    /// policy decision is skipped; a line that is not a record, or a
    /// decision without its fields, or a line longer than
    /// [`MAX_LINE_BYTES`], is counted as unreadable and skipped).
    pub fn read(log: impl std::io::BufRead) -> Result<Summary, SummaryError> {
        use std::collections::{BTreeMap, BTreeSet, HashSet};
        use std::io::{BufRead, Read};
        let mut steps: HashSet<String> = HashSet::new();
        let mut by_policy: BTreeMap<(String, Mode), (PolicySummary, BTreeSet<String>)> = BTreeMap::new();
        let mut decisions = 0;
        let mut unreadable = 0;
        let mut log = log;
        let mut buf = Vec::new();
        for line in 1.. {
            buf.clear();
            let read = (&mut log)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|source| SummaryError::Read { line, source })?;
            if read == 0 {
                break;
            }
            if buf.len() > MAX_LINE_BYTES {
                // Not a record this host writes: skipped to its end.
                unreadable += 1;
                while buf.last() != Some(&b'\n') {
                    buf.clear();
                    let more = (&mut log)
                        .take(MAX_LINE_BYTES as u64)
                        .read_until(b'\n', &mut buf)
                        .map_err(|source| SummaryError::Read { line, source })?;
                    if more == 0 {
                        break;
                    }
                }
                continue;
            }
            let Ok(record) = serde_json::from_slice::<RecordLine>(&buf) else {
                unreadable += 1;
                continue;
            };
            if record.op != "policy" {
                continue;
            }
            let (Some(mode), Some(verdict)) = (record.mode, record.verdict) else {
                // A record of a version before decisions had modes.
                continue;
            };
            if !matches!(verdict.as_str(), "allowed" | "changed" | "denied" | "failed") {
                unreadable += 1;
                continue;
            }
            decisions += 1;
            steps.insert(record.step);
            let (summary, digests) = by_policy.entry((record.policy.clone(), mode)).or_default();
            summary.policy = record.policy;
            summary.mode = mode;
            summary.decisions += 1;
            summary.total_us += record.duration_us;
            match verdict.as_str() {
                "allowed" => summary.allowed += 1,
                "changed" => summary.changed += 1,
                "denied" => summary.denied += 1,
                "failed" => summary.failed += 1,
                _ => {}
            }
            if let Some(digest) = record.digest {
                digests.insert(digest);
            }
        }
        Ok(Summary {
            reviews: steps.len(),
            decisions,
            unreadable,
            policies: by_policy
                .into_values()
                .map(|(mut summary, digests)| {
                    summary.digests = digests.into_iter().collect();
                    summary
                })
                .collect(),
        })
    }
}

/// What a summary reads of an audit line.
#[derive(serde::Deserialize)]
struct RecordLine {
    step: String,
    policy: String,
    op: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    verdict: Option<String>,
    #[serde(default)]
    duration_us: u64,
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

    /// A patch's environment values never reach the log; their names do.
    #[test]
    fn a_decisions_patch_keeps_env_names_and_not_their_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&path).unwrap();
        let patch = vec![
            json!({"op": "replace", "path": "", "value": {"process": {"env": ["PATH=/bin", "DB_PASSWORD=hunter2"]}, "hooks": {"prestart": [{"path": "/h", "env": ["K=v"]}]}}}),
            json!({"op": "add", "path": "/process/env/2", "value": "TOKEN=abc"}),
            json!({"op": "replace", "path": "/process/env", "value": ["A=b=c"]}),
            json!({"op": "replace", "path": "/process", "value": {"env": ["X=1"], "cwd": "/"}}),
            json!({"op": "remove", "path": "/process/env/0"}),
        ];
        audit.decision(Decision {
            step: "s",
            policy: "p",
            digest: None,
            mode: Mode::Enforce,
            verdict: Verdict::Changed(patch),
            took: Duration::ZERO,
        });
        let text = std::fs::read_to_string(&path).unwrap();
        for secret in ["hunter2", "/bin", "abc", "b=c", "K=v", "X=1"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let line: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            line["patch"],
            json!([
                {"op": "replace", "path": "", "value": {"process": {"env": ["PATH=<redacted>", "DB_PASSWORD=<redacted>"]}, "hooks": {"prestart": [{"path": "/h", "env": ["K=<redacted>"]}]}}},
                {"op": "add", "path": "/process/env/2", "value": "TOKEN=<redacted>"},
                {"op": "replace", "path": "/process/env", "value": ["A=<redacted>"]},
                {"op": "replace", "path": "/process", "value": {"env": ["X=<redacted>"], "cwd": "/"}},
                {"op": "remove", "path": "/process/env/0"},
            ])
        );
    }

    /// Decisions summed by policy and mode; other records skipped; a line
    /// that is not a record named by its number.
    #[test]
    fn a_summary_counts_verdicts_by_policy_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&path).unwrap();
        let decide = |step: &str, policy: &str, mode: Mode, verdict: Verdict| {
            audit.decision(Decision {
                step,
                policy,
                digest: Some("sha256:ab"),
                mode,
                verdict,
                took: Duration::from_micros(10),
            })
        };
        decide("a", "guard", Mode::Monitor, Verdict::Denied("no".into()));
        decide(
            "a",
            "hardened",
            Mode::Enforce,
            Verdict::Changed(vec![json!({"op": "remove", "path": "/x"})]),
        );
        audit.record("a", "hardened", "exists", json!({}), Ok(json!({})), Duration::ZERO);
        decide("b", "guard", Mode::Monitor, Verdict::Allowed);
        decide("b", "hardened", Mode::Enforce, Verdict::Denied("no".into()));
        decide("c", "guard", Mode::Enforce, Verdict::Failed("trapped".into()));
        let summary = Summary::read(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
        assert_eq!((summary.reviews, summary.decisions), (3, 5));
        let rows: Vec<(&str, Mode, [u64; 5])> = summary
            .policies
            .iter()
            .map(|p| {
                (
                    p.policy.as_str(),
                    p.mode,
                    [p.decisions, p.allowed, p.changed, p.denied, p.failed],
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("guard", Mode::Enforce, [1, 0, 0, 0, 1]),
                ("guard", Mode::Monitor, [2, 1, 0, 1, 0]),
                ("hardened", Mode::Enforce, [2, 0, 1, 1, 0]),
            ]
        );
        assert_eq!(summary.policies[1].digests, ["sha256:ab"]);
        assert_eq!(summary.policies[1].total_us, 20);
        // A torn line is skipped and counted; the rest is summed up.
        let first = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string();
        let torn = format!("{first}\n{{\"ts_unix_ms\": 1, \"st\n{first}\n");
        let summary = Summary::read(torn.as_bytes()).unwrap();
        assert_eq!((summary.decisions, summary.unreadable), (2, 1));
        // So is a line past the bound, to its end.
        let long = format!("{first}\n{}\n{first}\n", "x".repeat(MAX_LINE_BYTES + 10));
        let summary = Summary::read(long.as_bytes()).unwrap();
        assert_eq!((summary.decisions, summary.unreadable), (2, 1));
    }
}
