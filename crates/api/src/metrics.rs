//! Prometheus metrics of the api: requests by route and status, latency, WeChat calls by
//! endpoint and outcome, and (at scrape time) orders by state. Each [`Metrics`] has its own
//! registry so several apps can run in one test process; `/metrics` also includes the
//! process-wide default registry (worker jobs register there).

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use wxpay::Outcome;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub upstream: IntCounterVec,
    pub orders: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("minipay_http_requests_total", "API requests by route and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("minipay_http_request_duration_seconds", "API request latency")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["method", "route"],
        )
        .expect("valid metric");
        let upstream = IntCounterVec::new(
            Opts::new("minipay_wechat_calls_total", "WeChat calls by endpoint and outcome"),
            &["endpoint", "outcome"],
        )
        .expect("valid metric");
        let orders = IntGaugeVec::new(Opts::new("minipay_orders", "Orders by status (at scrape time)"), &["status"])
            .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(upstream.clone()),
            Box::new(orders.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        Metrics { registry, requests, latency, upstream, orders }
    }

    pub fn observe_upstream<T>(&self, endpoint: &str, outcome: &Outcome<T>) {
        let kind = match outcome {
            Outcome::Success(_) => "success",
            Outcome::Failed { .. } => "failed",
            Outcome::Unknown { .. } => "unknown",
        };
        self.upstream.with_label_values(&[endpoint, kind]).inc();
    }

    /// The text exposition of our registry plus the default one.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(prometheus::gather());
        let mut buf = Vec::new();
        TextEncoder::new().encode(&families, &mut buf).expect("encode metrics");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
