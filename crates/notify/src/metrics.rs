//! Prometheus metrics for the notification paths: one counter per (kind, outcome) and a
//! latency histogram per kind. Each [`crate::Application`] has its own registry, so several
//! services in one test process do not share counts.

use actix_web::{HttpResponse, web};
use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

/// The notify service's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    notifications: IntCounterVec,
    seconds: HistogramVec,
    group_size: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let notifications = IntCounterVec::new(
            Opts::new("minipay_notify_notifications_total", "Notifications received, by kind and outcome"),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new("minipay_notify_seconds", "Time to handle a notification, by kind")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["kind"],
        )
        .expect("valid metric");
        let group_size = Histogram::with_opts(
            HistogramOpts::new(
                "minipay_notify_payment_group_size",
                "Payment notifications applied by one group-commit statement",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(notifications.clone())).expect("register once");
        registry.register(Box::new(seconds.clone())).expect("register once");
        registry.register(Box::new(group_size.clone())).expect("register once");
        Metrics { registry, notifications, seconds, group_size }
    }

    pub(crate) fn observe(&self, kind: &str, outcome: &str, seconds: f64) {
        self.notifications.with_label_values(&[kind, outcome]).inc();
        self.seconds.with_label_values(&[kind]).observe(seconds);
    }

    pub(crate) fn observe_group(&self, size: usize) {
        self.group_size.observe(size as f64);
    }

    /// Payment groups run so far and the notifications in them (for the benchmark).
    pub fn groups(&self) -> (u64, f64) {
        (self.group_size.get_sample_count(), self.group_size.get_sample_sum())
    }

    /// How many notifications of `kind` ended with `outcome` (for tests and the benchmark).
    pub fn count(&self, kind: &str, outcome: &str) -> u64 {
        self.notifications.with_label_values(&[kind, outcome]).get()
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

pub(crate) async fn serve(state: web::Data<crate::State>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}
