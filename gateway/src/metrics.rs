//! Operational metrics in the Prometheus text format, served on a separate plain-HTTP
//! listener (`--metrics-listen`, loopback by default) at `/metrics`.
//!
//! Labels are states and field offices only — never a person, a TCN or any payload — so the
//! metrics can leave the secure enclave without carrying case data.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `interop_receipts_total` | counter | `state` | submissions durably accepted (first receipt) |
//! | `interop_duplicates_total` | counter | `state` | repeats of a held TCN answered with the first receipt |
//! | `interop_refused_total` | counter | `state`, `code` | submissions refused (gRPC code name) |
//! | `interop_shed_total` | counter | — | submissions refused because the backlog was past its budget |
//! | `interop_completed_total` | counter | `state` | submissions taken to completion |
//! | `interop_ident_searches_total` | counter | `office` | IDENT searches, by field office covering the booking |
//! | `interop_notifications_total` | counter | `office` | outcomes appended to a field office's stream |
//! | `interop_withheld_total` | counter | `state` | identifications withheld from bureaus whose jurisdiction chose not to receive them |
//! | `interop_detainers_total` | counter | `office` | detainers issued |
//! | `interop_stage_seconds` | histogram | `stage` | latency of `receipt` (validate + durable accept), `criminal_history`, `ident_search`, `notification` (receipt to durable notification) |
//! | `interop_pipeline_queued` | gauge | — | receipted submissions waiting for a worker |
//! | `interop_pipeline_in_flight` | gauge | — | submissions being processed |
//! | `interop_backlog_bytes` | gauge | — | encoded bytes of the receipted, unfinished submissions |
//! | `interop_backlog_oldest_wait_seconds` | gauge | — | how long the oldest waiting submission has waited |
//! | `interop_backlog_parked` | gauge | — | shared work (JetStream): submissions receipted here, waiting in the shared log or being processed by another replica |
//! | `interop_backlog_bureaus` | gauge | — | bureaus with work in the backlog |
//! | `interop_backlog_completions_per_second` | gauge | — | recent completion rate (10 s moving average) |
//! | `interop_backlog_drain_seconds` | gauge | — | estimated time to drain the backlog at that rate (`+Inf` when nothing completes) |
//! | `interop_search_waiting` | gauge | — | in-process searches waiting for a search thread (see [`crate::engines::slots`]) |
//! | `interop_search_running` | gauge | — | in-process searches running |
//! | `interop_search_threads` | gauge | — | search threads (both galleries share them) |
//! | `interop_subscriptions_active` | gauge | `kind` | open `field_office` / `bureau` streams |
//! | `interop_connections_open` | gauge | — | client connections past their TLS handshake |
//! | `interop_connections_total` | counter | `outcome` | TCP connections by fate: `accepted` (given a slot), `refused_over_limit`, `handshake_timeout`, `handshake_failed`, `idle_closed` (see `crate::server::listener`) |
//! | `process_resident_memory_bytes` | gauge | — | the gateway process's resident memory (Linux) |
//! | `process_open_fds` | gauge | — | its open file descriptors (Linux) |
//! | `interop_store_file_bytes` | gauge | — | size of the embedded store's file (`DATA/interop.redb`), or of a JetStream replica's view of the log (`DATA/view-STREAM.redb`; absent for a view in memory) |
//! | `interop_store_archive_bytes` | gauge | — | bytes of disclosure archive segments in `DATA/archive` |
//! | `interop_store_archive_segments` | gauge | — | disclosure archive segments in `DATA/archive` |
//! | `interop_store_events_kept` | gauge | `kind` | events held, `field_office` / `bureau` streams: bounded by retention |
//! | `interop_store_events_appended_total` | counter | `kind` | events ever appended (the sum of stream heads) |
//! | `interop_store_disclosures_kept` | gauge | — | disclosure records held in the store |
//! | `interop_store_disclosures_archived_total` | counter | — | disclosure records archived, then pruned |
//! | `interop_store_commits_total` | counter | — | embedded store transactions committed (one fsync each) |
//! | `interop_store_ops_total` | counter | — | embedded store writes committed (accepts, completions, acks, disclosures, ...) |
//!
//! The `interop_store_*` figures are read from the store at scrape time (one read per stream,
//! never per row: see [`crate::store::Store::usage`]).

use dashmap::DashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

/// The registry. Cheap to update from any task: atomics behind a concurrent map.
#[derive(Default)]
pub struct Metrics {
    counters: DashMap<(&'static str, String), AtomicU64>,
    stages: DashMap<&'static str, Histogram>,
    subscriptions: DashMap<&'static str, AtomicI64>,
}

const HELP: &[(&str, &str, &str)] = &[
    (
        "interop_receipts_total",
        "counter",
        "Submissions durably accepted.",
    ),
    (
        "interop_duplicates_total",
        "counter",
        "Repeats of a held TCN answered with the first receipt.",
    ),
    (
        "interop_refused_total",
        "counter",
        "Submissions refused, by gRPC code.",
    ),
    (
        "interop_shed_total",
        "counter",
        "Submissions refused because the backlog was past its budget.",
    ),
    (
        "interop_completed_total",
        "counter",
        "Submissions taken to completion.",
    ),
    (
        "interop_ident_searches_total",
        "counter",
        "IDENT searches by covering field office.",
    ),
    (
        "interop_notifications_total",
        "counter",
        "Outcomes appended to a field office stream.",
    ),
    (
        "interop_withheld_total",
        "counter",
        "Identifications withheld from bureaus whose jurisdiction chose not to receive them.",
    ),
    ("interop_detainers_total", "counter", "Detainers issued."),
];

impl Metrics {
    /// Adds one to a counter; `label` is `name="value"` (a state or an office), or empty.
    pub fn inc(&self, name: &'static str, label: String) {
        self.counters
            .entry((name, label))
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe(&self, stage: &'static str, d: Duration) {
        let h = self.stages.entry(stage).or_default();
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts an open stream until the guard is dropped.
    pub fn subscription(self: &std::sync::Arc<Self>, kind: &'static str) -> SubscriptionGuard {
        self.subscriptions
            .entry(kind)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
        SubscriptionGuard {
            metrics: self.clone(),
            kind,
        }
    }

    /// The Prometheus text exposition; the backlog's figures are read at scrape time.
    pub fn render(&self, backlog: &crate::pipeline::backlog::Figures) -> String {
        let (queued, in_flight) = (backlog.waiting, backlog.in_flight);
        let mut out = String::new();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let mut rows: Vec<(String, u64)> = self
                .counters
                .iter()
                .filter(|e| e.key().0 == *name)
                .map(|e| (e.key().1.clone(), e.value().load(Ordering::Relaxed)))
                .collect();
            rows.sort();
            if rows.is_empty() {
                let _ = writeln!(out, "{name} 0");
            }
            for (label, v) in rows {
                if label.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{label}}} {v}");
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP interop_stage_seconds Latency of each pipeline stage.\n# TYPE interop_stage_seconds histogram"
        );
        let mut stages: Vec<&'static str> = self.stages.iter().map(|e| *e.key()).collect();
        stages.sort();
        for stage in stages {
            let h = self.stages.get(stage).expect("listed");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "interop_stage_seconds_bucket{{stage=\"{stage}\",le=\"{b}\"}} {}",
                    h.buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "interop_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "interop_stage_seconds_sum{{stage=\"{stage}\"}} {}",
                h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "interop_stage_seconds_count{{stage=\"{stage}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP interop_pipeline_queued Submissions waiting for a worker.\n# TYPE interop_pipeline_queued gauge\ninterop_pipeline_queued {queued}"
        );
        let _ = writeln!(
            out,
            "# HELP interop_pipeline_in_flight Submissions being processed.\n# TYPE interop_pipeline_in_flight gauge\ninterop_pipeline_in_flight {in_flight}"
        );
        let drain = backlog
            .drain()
            .map_or("+Inf".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
        for (name, help, value) in [
            (
                "interop_backlog_bytes",
                "Encoded bytes of the receipted, unfinished submissions.",
                backlog.bytes.to_string(),
            ),
            (
                "interop_backlog_oldest_wait_seconds",
                "How long the oldest waiting submission has waited for a worker.",
                format!("{:.3}", backlog.oldest_wait.as_secs_f64()),
            ),
            (
                "interop_backlog_parked",
                "Shared work: submissions receipted here, waiting in the shared log or being processed by another replica.",
                backlog.parked.to_string(),
            ),
            (
                "interop_backlog_bureaus",
                "Bureaus with work in the backlog.",
                backlog.bureaus.to_string(),
            ),
            (
                "interop_backlog_completions_per_second",
                "Recent completion rate (10 s moving average).",
                format!("{:.2}", backlog.completions_per_s),
            ),
            (
                "interop_backlog_drain_seconds",
                "Estimated time to drain the backlog at the recent completion rate.",
                drain,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP interop_subscriptions_active Open response streams.\n# TYPE interop_subscriptions_active gauge"
        );
        for kind in ["bureau", "field_office"] {
            let v = self
                .subscriptions
                .get(kind)
                .map_or(0, |a| a.load(Ordering::Relaxed));
            let _ = writeln!(out, "interop_subscriptions_active{{kind=\"{kind}\"}} {v}");
        }
        out
    }
}

/// The `interop_store_*` lines for `u` (see the table above).
/// The search threads' gauges (nothing for a gateway with no in-process gallery).
pub fn render_search(load: Option<crate::engines::slots::SearchLoad>) -> String {
    let Some(l) = load else {
        return String::new();
    };
    let mut out = String::new();
    for (name, help, value) in [
        (
            "interop_search_waiting",
            "In-process searches waiting for a search thread.",
            l.waiting,
        ),
        (
            "interop_search_running",
            "In-process searches running.",
            l.running,
        ),
        (
            "interop_search_threads",
            "Search threads, shared by both in-process galleries.",
            l.threads,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    out
}

pub fn render_store(u: &crate::store::StoreUsage) -> String {
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, rows: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (label, v) in rows {
            match label.is_empty() {
                true => writeln!(out, "{name} {v}"),
                false => writeln!(out, "{name}{{{label}}} {v}"),
            }
            .ok();
        }
    };
    if let Some(bytes) = u.file_bytes {
        let help = "Size of the store's database file.";
        one("interop_store_file_bytes", "gauge", help, &[("", bytes)]);
    }
    let help = "Bytes of disclosure archive segments.";
    one(
        "interop_store_archive_bytes",
        "gauge",
        help,
        &[("", u.archive_bytes)],
    );
    let help = "Disclosure archive segments.";
    let segments = [("", u.archive_segments)];
    one("interop_store_archive_segments", "gauge", help, &segments);
    let (office, bureau) = ("kind=\"field_office\"", "kind=\"bureau\"");
    let help = "Events held, by kind of stream.";
    let kept = [
        (office, u.office_events_kept),
        (bureau, u.bureau_events_kept),
    ];
    one("interop_store_events_kept", "gauge", help, &kept);
    let help = "Events ever appended, by kind of stream.";
    let appended = [
        (office, u.office_events_appended),
        (bureau, u.bureau_events_appended),
    ];
    one(
        "interop_store_events_appended_total",
        "counter",
        help,
        &appended,
    );
    let help = "Submissions held (their receipts answer resends and status), pending or completed.";
    let kept = [("", u.receipts_kept)];
    one("interop_store_receipts_kept", "gauge", help, &kept);
    let help = "Completed submissions forgotten by receipt retention.";
    let expired = [("", u.receipts_expired)];
    one(
        "interop_store_receipts_expired_total",
        "counter",
        help,
        &expired,
    );
    let help = "Disclosure records held in the store.";
    let kept = [("", u.disclosures_kept)];
    one("interop_store_disclosures_kept", "gauge", help, &kept);
    let help = "Disclosure records archived, then pruned.";
    let archived = [("", u.disclosures_archived)];
    one(
        "interop_store_disclosures_archived_total",
        "counter",
        help,
        &archived,
    );
    out
}

/// Decrements the active-subscription gauge when the stream ends.
pub struct SubscriptionGuard {
    metrics: std::sync::Arc<Metrics>,
    kind: &'static str,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        if let Some(a) = self.metrics.subscriptions.get(self.kind) {
            a.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

pub fn state(s: &str) -> String {
    format!("state=\"{s}\"")
}

pub fn office(o: &str) -> String {
    format!("office=\"{o}\"")
}

/// The process's resident memory and open file descriptors, in the Prometheus conventional
/// names (Linux; nothing elsewhere), so a soak can see both stay flat over hours.
pub fn process() -> String {
    let mut out = String::new();
    #[cfg(target_os = "linux")]
    {
        // statm: sizes in pages; the second field is the resident set.
        let page = 4096u64;
        if let Some(resident) = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
                resident * page
            );
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            let _ = writeln!(
                out,
                "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
                fds.count()
            );
        }
    }
    out
}
