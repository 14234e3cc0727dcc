//! Counts for Prometheus, from processes that each live for one review
//! (specwright has no daemon to hold them): each process tallies what it
//! did ([`Metrics`]), then adds it, under a lock, to the totals kept in
//! the state dir (`metrics.json`) and writes the totals in Prometheus'
//! text exposition format to the file node_exporter's textfile collector
//! reads, replacing it atomically
//! ([`crate::state::StateDir::add_metrics`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::Mode;

/// The upper bounds of the duration histograms' buckets, in seconds.
pub const BUCKETS_SECONDS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Observations of a duration, in buckets (each counts the observations
/// up to its bound: not cumulative here; rendered cumulative).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Per bucket of [`BUCKETS_SECONDS`], then one past the last bound.
    buckets: Vec<u64>,
    count: u64,
    sum_us: u64,
}

impl Histogram {
    pub fn observe(&mut self, took: Duration) {
        self.buckets.resize(BUCKETS_SECONDS.len() + 1, 0);
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(took.as_micros() as u64);
    }

    fn add(&mut self, other: &Histogram) {
        self.buckets.resize(BUCKETS_SECONDS.len() + 1, 0);
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine = mine.saturating_add(*theirs);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// `NAME_bucket`, `NAME_sum`, `NAME_count` lines with `labels`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS_SECONDS.iter().enumerate() {
            cumulative += self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = |labels: &str| {
            if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// A review's outcome: the chain approved a spec, a policy denied it, or
/// something failed (a policy's error, trap or limit, an invalid spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Approved,
    Denied,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// One policy in one mode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyKey {
    pub policy: String,
    pub mode: Mode,
}

/// What a policy did in one mode: verdicts by name, and how long it took.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCounts {
    pub verdicts: BTreeMap<String, u64>,
    pub seconds: Histogram,
}

/// Counts: a process's tally, or the totals of every process.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub reviews: BTreeMap<Outcome, u64>,
    pub review_seconds: Histogram,
    /// By policy and mode (kept as a list: JSON keys are strings).
    pub policies: Vec<(PolicyKey, PolicyCounts)>,
    pub cache_hits: u64,
    pub cache_compiled: u64,
}

impl Metrics {
    /// Counts a review's outcome and the time the whole chain took.
    pub fn review(&mut self, outcome: Outcome, took: Duration) {
        *self.reviews.entry(outcome).or_default() += 1;
        self.review_seconds.observe(took);
    }

    /// Counts a policy's verdict (by name) in `mode` and its time.
    pub fn decision(&mut self, policy: &str, mode: Mode, verdict: &str, took: Duration) {
        let counts = self.policy_mut(PolicyKey {
            policy: policy.to_string(),
            mode,
        });
        *counts.verdicts.entry(verdict.to_string()).or_default() += 1;
        counts.seconds.observe(took);
    }

    fn policy_mut(&mut self, key: PolicyKey) -> &mut PolicyCounts {
        let at = match self.policies.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => at,
            Err(at) => {
                self.policies.insert(at, (key, PolicyCounts::default()));
                at
            }
        };
        &mut self.policies[at].1
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Metrics::default()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Metrics) {
        for (outcome, n) in &other.reviews {
            let mine = self.reviews.entry(*outcome).or_default();
            *mine = mine.saturating_add(*n);
        }
        self.review_seconds.add(&other.review_seconds);
        for (key, theirs) in &other.policies {
            let mine = self.policy_mut(key.clone());
            for (verdict, n) in &theirs.verdicts {
                let count = mine.verdicts.entry(verdict.clone()).or_default();
                *count = count.saturating_add(*n);
            }
            mine.seconds.add(&theirs.seconds);
        }
        self.cache_hits = self.cache_hits.saturating_add(other.cache_hits);
        self.cache_compiled = self.cache_compiled.saturating_add(other.cache_compiled);
    }

    /// The counts in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP specwright_reviews_total Reviews by the policy chain (build steps and containers), by outcome.\n",
        );
        out.push_str("# TYPE specwright_reviews_total counter\n");
        for outcome in [Outcome::Approved, Outcome::Denied, Outcome::Failed] {
            let n = self.reviews.get(&outcome).copied().unwrap_or(0);
            let _ = writeln!(out, "specwright_reviews_total{{outcome=\"{}\"}} {n}", outcome.as_str());
        }
        out.push_str("# HELP specwright_review_duration_seconds Time the whole policy chain took for a review.\n");
        out.push_str("# TYPE specwright_review_duration_seconds histogram\n");
        self.review_seconds
            .render(&mut out, "specwright_review_duration_seconds", "");
        out.push_str(
            "# HELP specwright_policy_decisions_total Policy decisions by policy, mode and verdict (in monitor mode, what it would have done).\n",
        );
        out.push_str("# TYPE specwright_policy_decisions_total counter\n");
        for (key, counts) in &self.policies {
            for (verdict, n) in &counts.verdicts {
                let _ = writeln!(
                    out,
                    "specwright_policy_decisions_total{{{},verdict=\"{}\"}} {n}",
                    policy_labels(key),
                    escape(verdict)
                );
            }
        }
        out.push_str("# HELP specwright_policy_duration_seconds Time one policy took for a review.\n");
        out.push_str("# TYPE specwright_policy_duration_seconds histogram\n");
        for (key, counts) in &self.policies {
            counts
                .seconds
                .render(&mut out, "specwright_policy_duration_seconds", &policy_labels(key));
        }
        out.push_str("# HELP specwright_compile_cache_total Policy loads through the compile cache, by result.\n");
        out.push_str("# TYPE specwright_compile_cache_total counter\n");
        let _ = writeln!(
            out,
            "specwright_compile_cache_total{{result=\"hit\"}} {}",
            self.cache_hits
        );
        let _ = writeln!(
            out,
            "specwright_compile_cache_total{{result=\"compiled\"}} {}",
            self.cache_compiled
        );
        out
    }
}

fn policy_labels(key: &PolicyKey) -> String {
    format!("policy=\"{}\",mode=\"{}\"", escape(&key.policy), key.mode.as_str())
}

/// A label value as the text format writes it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A compile cache's loads in this process: hits and compilations.
#[derive(Debug, Default)]
pub struct CacheUses {
    hits: AtomicU64,
    compiled: AtomicU64,
}

impl CacheUses {
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn compiled(&self) {
        self.compiled.fetch_add(1, Ordering::Relaxed);
    }

    /// (hits, compilations) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.compiled.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_and_render_cumulative_buckets_with_escaped_labels() {
        let mut a = Metrics::default();
        a.review(Outcome::Approved, Duration::from_micros(800));
        a.decision("/p/\"odd\"\\.wasm", Mode::Monitor, "denied", Duration::from_millis(3));
        let mut b = Metrics::default();
        b.review(Outcome::Denied, Duration::from_secs(9));
        b.decision("/p/\"odd\"\\.wasm", Mode::Monitor, "denied", Duration::from_micros(500));
        b.decision("default", Mode::Enforce, "changed", Duration::from_millis(2));
        b.cache_hits = 2;
        b.cache_compiled = 1;
        let mut total = Metrics::default();
        total.add(&a);
        total.add(&b);
        let text = total.render();
        for line in [
            "specwright_reviews_total{outcome=\"approved\"} 1",
            "specwright_reviews_total{outcome=\"denied\"} 1",
            "specwright_reviews_total{outcome=\"failed\"} 0",
            "specwright_review_duration_seconds_bucket{le=\"0.001\"} 1",
            "specwright_review_duration_seconds_bucket{le=\"5\"} 1",
            "specwright_review_duration_seconds_bucket{le=\"+Inf\"} 2",
            "specwright_review_duration_seconds_count 2",
            "specwright_review_duration_seconds_sum 9.0008",
            "specwright_policy_decisions_total{policy=\"/p/\\\"odd\\\"\\\\.wasm\",mode=\"monitor\",verdict=\"denied\"} 2",
            "specwright_policy_decisions_total{policy=\"default\",mode=\"enforce\",verdict=\"changed\"} 1",
            "specwright_policy_duration_seconds_bucket{policy=\"default\",mode=\"enforce\",le=\"0.0025\"} 1",
            "specwright_compile_cache_total{result=\"hit\"} 2",
            "specwright_compile_cache_total{result=\"compiled\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        let kept: Metrics = serde_json::from_str(&serde_json::to_string(&total).unwrap()).unwrap();
        assert_eq!(kept, total);
    }
}
