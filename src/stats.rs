//! What rekey counts, as Prometheus metrics (`rekey_*`, via the `metrics` facade and
//! `metrics-exporter-prometheus`). Handles are registered once, so counting on the request
//! path is an atomic add: no label formatting, no lookup, no allocation. Labels are bounded:
//! command names come from the command table (else `other`), rule names from the config.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Latency buckets (seconds), fine below a millisecond.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
    1.0, 5.0,
];

/// Per command: replies that were not errors, and errors.
pub struct CommandCounters {
    pub ok: Counter,
    pub error: Counter,
}

pub struct Stats {
    pub clients: Gauge,
    pub clients_total: Counter,
    pub clients_rejected: Counter,
    pub protocol_errors: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub latency: LatencyHistogram,
    /// Keys no rule matched: a plain atomic on the request path, published at scrape time.
    pub unmatched_keys: AtomicU64,
    unmatched_counter: Counter,
    pub upstream_pooled: Gauge,
    pub upstream_pinned: Gauge,
    pub upstream_errors: Counter,
    pub upstream_reconnects: Counter,
    pub reloads_ok: Counter,
    pub reloads_error: Counter,
    pub config_generation: Gauge,
    /// `limits.max_clients` and `pool.max_pinned` in force, so alerts compare against them.
    pub clients_limit: Gauge,
    pub pinned_limit: Gauge,
    /// `rekey_command_duration_seconds{command}` (opt-in), registered on first use.
    command_latency: Vec<OnceLock<Histogram>>,
}

/// Name of the opt-in per-command latency histogram.
const COMMAND_LATENCY: &str = "rekey_command_duration_seconds";

/// `rekey_commands_total{command, result, app}` of one client label: registered on first use,
/// so `/metrics` lists only commands that were seen. Sessions hold the one of their label.
pub struct AppCommands {
    label: String,
    commands: Vec<OnceLock<CommandCounters>>,
}

impl AppCommands {
    /// The client label these count (`app` in the metrics).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Counters of the command with table id `id`.
    pub fn command(&self, id: u16) -> &CommandCounters {
        let id = (id as usize).min(self.commands.len() - 1);
        self.commands[id].get_or_init(|| {
            let name = crate::commands::names()[id];
            let app = self.label.clone();
            CommandCounters {
                ok: counter!("rekey_commands_total", "command" => name, "result" => "ok", "app" => app.clone()),
                error: counter!("rekey_commands_total", "command" => name, "result" => "error", "app" => app),
            }
        })
    }

    /// The counters of client label `label` (created on first use; labels are bounded by the
    /// config).
    pub fn of(label: &str) -> Arc<AppCommands> {
        type Registry = Mutex<HashMap<String, Arc<AppCommands>>>;
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        let mut map = REGISTRY
            .get_or_init(Default::default)
            .lock()
            .expect("command registry poisoned");
        map.entry(label.to_string())
            .or_insert_with(|| {
                Arc::new(AppCommands {
                    label: label.to_string(),
                    commands: crate::commands::names()
                        .iter()
                        .map(|_| OnceLock::new())
                        .collect(),
                })
            })
            .clone()
    }
}

impl Stats {
    fn register() -> Stats {
        let command_latency = crate::commands::names()
            .iter()
            .map(|_| OnceLock::new())
            .collect();
        Stats {
            clients: gauge!("rekey_client_connections"),
            clients_total: counter!("rekey_client_connections_total"),
            clients_rejected: counter!("rekey_client_rejected_total"),
            protocol_errors: counter!("rekey_protocol_errors_total"),
            bytes_in: counter!("rekey_client_bytes_in_total"),
            bytes_out: counter!("rekey_client_bytes_out_total"),
            latency: LatencyHistogram::default(),
            unmatched_keys: AtomicU64::new(0),
            unmatched_counter: counter!("rekey_keys_unmatched_total"),
            upstream_pooled: gauge!("rekey_upstream_connections", "kind" => "pooled"),
            upstream_pinned: gauge!("rekey_upstream_connections", "kind" => "pinned"),
            upstream_errors: counter!("rekey_upstream_errors_total"),
            upstream_reconnects: counter!("rekey_upstream_reconnects_total"),
            reloads_ok: counter!("rekey_config_reloads_total", "result" => "ok"),
            reloads_error: counter!("rekey_config_reloads_total", "result" => "error"),
            config_generation: gauge!("rekey_config_generation"),
            clients_limit: gauge!("rekey_client_connections_limit"),
            pinned_limit: gauge!("rekey_upstream_pinned_limit"),
            command_latency,
        }
    }

    /// Counts a failed TLS handshake: `side` is `upstream` or `client`, `reason` one of the
    /// bounded reasons `crate::tls` names (`unknown_ca`, `name_mismatch`, `timeout`, …).
    pub fn tls_handshake_failure(&self, side: &'static str, reason: &'static str) {
        counter!("rekey_tls_handshake_failures_total", "side" => side, "reason" => reason)
            .increment(1);
    }

    /// Counts a finished TLS handshake (`side` as above).
    pub fn tls_handshake_ok(&self, side: &'static str) {
        counter!("rekey_tls_handshakes_total", "side" => side).increment(1);
    }

    /// The latency histogram of the command with table id `id` (`metrics.command_latency`).
    pub fn command_latency(&self, id: u16) -> &Histogram {
        let id = (id as usize).min(self.command_latency.len() - 1);
        self.command_latency[id]
            .get_or_init(|| histogram!(COMMAND_LATENCY, "command" => crate::commands::names()[id]))
    }
}

/// Registers `rekey_commands_total` at zero for every command in the table and every client
/// label (`-` and each configured app or user), at start and after every reload: a series
/// that first appears during a burst has no earlier sample, so `rate()` would miss the burst.
pub fn register_command_counters(labels: &[String]) {
    for label in labels {
        let counters = AppCommands::of(label);
        for id in 0..counters.commands.len() {
            counters.command(id as u16);
        }
    }
}

/// Why an ACL refused a request (`rekey_acl_denied_total`'s `reason`).
pub const ACL_REASONS: [&str; 4] = ["command", "key", "channel", "auth"];

/// Counts one refusal by the ACL of the identity labelled `app`.
pub fn acl_denied(app: &str, reason: &'static str) {
    counter!("rekey_acl_denied_total", "app" => app.to_string(), "reason" => reason).increment(1);
}

/// Adds to the time the identity labelled `app` was paused over its `max_requests_per_sec`
/// (a total that only grows; kept as a gauge because counters here count whole numbers).
pub fn app_throttled(app: &str, paused: std::time::Duration) {
    gauge!("rekey_app_throttled_seconds_total", "app" => app.to_string())
        .increment(paused.as_secs_f64());
}

/// Registers `rekey_acl_denied_total` at zero for every label and reason (see
/// [`register_command_counters`]).
pub fn register_acl_counters(labels: &[String]) {
    for label in labels {
        for reason in ACL_REASONS {
            counter!("rekey_acl_denied_total", "app" => label.clone(), "reason" => reason)
                .increment(0);
        }
    }
}

/// Publishes one identity's limit (`rekey_app_limit{app, limit}`).
pub fn publish_app_limit(app: &str, limit: &'static str, value: f64) {
    gauge!("rekey_app_limit", "app" => app.to_string(), "limit" => limit).set(value);
}

/// Publishes the limits a config sets (at start and after every reload).
pub fn publish_limits(max_clients: usize, max_pinned: usize) {
    stats().clients_limit.set(max_clients as f64);
    stats().pinned_limit.set(max_pinned as f64);
}

/// The process's counters. Without an installed recorder (library use, `--check`) they count
/// nowhere.
pub fn stats() -> &'static Stats {
    static STATS: OnceLock<Stats> = OnceLock::new();
    STATS.get_or_init(Stats::register)
}

/// Installs the Prometheus recorder for this process; call before anything counts.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(COMMAND_LATENCY.into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .expect("spawn metrics upkeep thread");
    let _ = stats();
    Ok(handle)
}

/// Keys rewritten by one rule name, both directions. One per rule name for the life of the
/// process, so counts survive reloads and stay monotonic. The request path does one relaxed
/// atomic add per key; the Prometheus counters are brought up to date when `/metrics` is read.
pub struct RuleHits {
    pub forward: AtomicU64,
    pub reverse: AtomicU64,
    forward_counter: Counter,
    reverse_counter: Counter,
}

type RuleRegistry = Mutex<HashMap<(String, String), Arc<RuleHits>>>;

fn rule_registry() -> &'static RuleRegistry {
    static REGISTRY: OnceLock<RuleRegistry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl RuleHits {
    /// The counts of rule `name` for clients labelled `app` (created on first use).
    pub fn of(name: &str, app: &str) -> Arc<RuleHits> {
        let mut map = rule_registry().lock().expect("rule registry poisoned");
        map.entry((name.to_string(), app.to_string()))
            .or_insert_with(|| {
                let (rule, app) = (name.to_string(), app.to_string());
                Arc::new(RuleHits {
                    forward: AtomicU64::new(0),
                    reverse: AtomicU64::new(0),
                    forward_counter: counter!("rekey_keys_rewritten_total", "rule" => rule.clone(), "direction" => "forward", "app" => app.clone()),
                    reverse_counter: counter!("rekey_keys_rewritten_total", "rule" => rule, "direction" => "reverse", "app" => app),
                })
            })
            .clone()
    }
}

/// Copies the counts kept as plain atomics (rule hits, unmatched keys) into their Prometheus
/// counters, before a scrape is rendered.
pub fn publish_key_counts() {
    let s = stats();
    s.unmatched_counter
        .absolute(s.unmatched_keys.load(Ordering::Relaxed));
    let map = rule_registry().lock().expect("rule registry poisoned");
    for hits in map.values() {
        hits.forward_counter
            .absolute(hits.forward.load(Ordering::Relaxed));
        hits.reverse_counter
            .absolute(hits.reverse.load(Ordering::Relaxed));
    }
}

/// `rekey_request_duration_seconds`: request latency, from the read that brought the request
/// to the write of its reply. Kept as plain atomic buckets (one add per group of replies, no
/// timestamps, no allocation) and rendered into `/metrics` beside the recorder's output.
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Records `n` requests that each took `took`.
    pub fn record(&self, took: Duration, n: u64) {
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(n, Ordering::Relaxed);
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(took.as_nanos() as u64 * n, Ordering::Relaxed);
    }

    /// Prometheus text exposition (cumulative buckets).
    pub fn render(&self) -> String {
        let name = "rekey_request_duration_seconds";
        let mut out = format!("# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (le, b) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}
