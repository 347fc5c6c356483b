//! `GET /metrics`: Prometheus (OpenMetrics) text from `prometheus-client` — requests by route
//! and status, latency histograms by route, LLM tokens, errors by kind and requests in flight.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

type Histograms = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// 1 ms to ~33 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms,
    tokens: Family<KindLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    in_flight: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Histograms::new_with_constructor(latency_histogram);
        let tokens = Family::<KindLabels, Counter>::default();
        let errors = Family::<KindLabels, Counter>::default();
        let in_flight = Gauge::default();
        registry.register(
            "ragloop_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "ragloop_request_duration_seconds",
            "Time to answer a request (to the end of the body for streams), by route",
            latency.clone(),
        );
        registry.register(
            "ragloop_llm_tokens",
            "LLM tokens used by answers, by kind (prompt, completion)",
            tokens.clone(),
        );
        registry.register(
            "ragloop_errors",
            "Error responses by kind (invalid_request_error, authentication_error, overloaded, timeout, upstream_error, not_found, internal_error)",
            errors.clone(),
        );
        registry.register(
            "ragloop_requests_in_flight",
            "Requests being answered now",
            in_flight.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            tokens,
            errors,
            in_flight,
        }
    }
}

impl Metrics {
    /// Records a response of `route`.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Records an error response of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Records an answer's token usage.
    pub fn tokens(&self, usage: &rag_core::Usage) {
        for (kind, n) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
        ] {
            self.tokens
                .get_or_create(&KindLabels { kind: kind.into() })
                .inc_by(u64::from(n));
        }
    }

    /// One more request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the metrics");
        }
        out
    }
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
