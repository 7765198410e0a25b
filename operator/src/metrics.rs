//! Prometheus metrics of the operator: reconciles, errors and durations per resource kind, leadership.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use std::time::Instant;

/// The operator's metrics, registered in their own registry (served at `/metrics`).
#[derive(Clone)]
pub struct Metrics {
    /// Registry holding them.
    pub registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    events: IntCounterVec,
    /// 1 while this replica holds the Lease.
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("clip_operator_reconciles_total", "Reconciles run, per resource kind."),
            &["kind"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new("clip_operator_reconcile_errors_total", "Reconciles that failed, per kind and error class."),
            &["kind", "error"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new("clip_operator_reconcile_duration_seconds", "Time per reconcile, per kind.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["kind"],
        )
        .expect("valid metric");
        let events = IntCounterVec::new(
            Opts::new("clip_operator_events_total", "Kubernetes Events published, per kind and reason."),
            &["kind", "reason"],
        )
        .expect("valid metric");
        let leader = IntGauge::new("clip_operator_leader", "1 while this replica holds the leader Lease.")
            .expect("valid metric");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(events.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics { registry, reconciles, errors, duration, events, leader }
    }
}

impl Metrics {
    /// Starts timing one reconcile of `kind`; the time is recorded when the guard drops.
    pub fn reconcile(&self, kind: &'static str) -> ReconcileTimer {
        self.reconciles.with_label_values(&[kind]).inc();
        ReconcileTimer { histogram: self.duration.with_label_values(&[kind]), start: Instant::now() }
    }

    /// Counts a failed reconcile.
    pub fn error(&self, kind: &'static str, error: &crate::Error) {
        self.errors.with_label_values(&[kind, error.metric_label()]).inc();
    }

    /// Counts a published Event.
    pub fn event(&self, kind: &'static str, reason: &str) {
        self.events.with_label_values(&[kind, reason]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out).expect("text encoding");
        out
    }
}

/// Records a reconcile's duration on drop.
pub struct ReconcileTimer {
    histogram: prometheus::Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
