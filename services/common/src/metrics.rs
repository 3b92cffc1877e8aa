//! A tiny Prometheus text-format registry: atomic counters and gauges with labels.
//!
//! Handles are cheap clones of an `Arc`; asking the registry again for the same name and labels
//! returns the same series. No global state: every service instance owns its registry, so
//! several instances can run in one test process.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A monotonically increasing counter.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }
    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds `n` (may be negative).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: Kind,
    series: BTreeMap<String, Series>,
}

/// A set of metric families, rendered with [`Registry::render`].
#[derive(Debug, Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<BTreeMap<String, Family>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Family>> {
        // A panic while holding this lock cannot leave the maps inconsistent: keep going.
        self.families.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counter `name` with `labels`, created at zero on first use.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        let mut families = self.lock();
        let family = families.entry(name.to_string()).or_insert_with(|| Family {
            help: help.to_string(),
            kind: Kind::Counter,
            series: BTreeMap::new(),
        });
        if family.kind != Kind::Counter {
            tracing::error!(
                metric = name,
                "metric registered as a gauge, asked as a counter"
            );
            return Counter::default();
        }
        match family
            .series
            .entry(render_labels(labels))
            .or_insert_with(|| Series::Counter(Counter::default()))
        {
            Series::Counter(c) => c.clone(),
            Series::Gauge(_) => Counter::default(),
        }
    }

    /// The gauge `name` with `labels`, created at zero on first use.
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        let mut families = self.lock();
        let family = families.entry(name.to_string()).or_insert_with(|| Family {
            help: help.to_string(),
            kind: Kind::Gauge,
            series: BTreeMap::new(),
        });
        if family.kind != Kind::Gauge {
            tracing::error!(
                metric = name,
                "metric registered as a counter, asked as a gauge"
            );
            return Gauge::default();
        }
        match family
            .series
            .entry(render_labels(labels))
            .or_insert_with(|| Series::Gauge(Gauge::default()))
        {
            Series::Gauge(g) => g.clone(),
            Series::Counter(_) => Gauge::default(),
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every family, sorted by name.
    pub fn render(&self) -> String {
        let families = self.lock();
        let mut out = String::new();
        for (name, family) in families.iter() {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, series) in &family.series {
                let value = match series {
                    Series::Counter(c) => c.get().to_string(),
                    Series::Gauge(g) => g.get().to_string(),
                };
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let body: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The value of the series `name{labels}` in a rendered exposition, if present. `labels` is
/// the exact label text, e.g. `{route="/x"}`, or empty. Handy in tests.
pub fn parse_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{labels} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_sorted_with_escaped_labels() {
        let r = Registry::new();
        let c = r.counter(
            "b_total",
            "Things.",
            &[("route", "/x"), ("q", "a\"b\\c\nd")],
        );
        c.inc();
        c.inc_by(2);
        r.gauge("a_depth", "Depth\nof it.", &[]).set(-4);
        let text = r.render();
        assert_eq!(
            text,
            "# HELP a_depth Depth\\nof it.\n# TYPE a_depth gauge\na_depth -4\n\
             # HELP b_total Things.\n# TYPE b_total counter\n\
             b_total{route=\"/x\",q=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }

    #[test]
    fn same_name_and_labels_share_one_series() {
        let r = Registry::new();
        r.counter("x_total", "x", &[("a", "1")]).inc();
        r.counter("x_total", "x", &[("a", "1")]).inc();
        r.counter("x_total", "x", &[("a", "2")]).inc();
        let text = r.render();
        assert_eq!(parse_value(&text, "x_total", "{a=\"1\"}"), Some(2.0));
        assert_eq!(parse_value(&text, "x_total", "{a=\"2\"}"), Some(1.0));
        assert_eq!(parse_value(&text, "x_total", "{a=\"3\"}"), None);
    }

    #[test]
    fn kind_mismatch_does_not_panic() {
        let r = Registry::new();
        r.counter("m", "m", &[]).inc();
        let g = r.gauge("m", "m", &[]);
        g.set(10);
        assert_eq!(parse_value(&r.render(), "m", ""), Some(1.0));
    }

    #[test]
    fn separate_registries_are_independent() {
        let a = Registry::new();
        let b = Registry::new();
        a.counter("n_total", "n", &[]).inc();
        assert_eq!(parse_value(&b.render(), "n_total", ""), None);
    }
}
