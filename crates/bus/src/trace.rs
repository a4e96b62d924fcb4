//! W3C trace context on NATS messages: every message henvis stores carries the
//! `traceparent` (and `tracestate`) of the span that stored it, and whoever takes it from
//! a stream continues that trace, so one referral is one trace from Submit to every
//! delivery. The propagator is the process's global one (W3C trace context, set by
//! `henvis_runtime::init_telemetry`); without it nothing is added.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct Writer<'a>(&'a mut HeaderMap);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct Reader<'a>(&'a HeaderMap);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Adds the current span's trace context to `headers`.
pub fn inject_current(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Writer(headers)));
}

/// The trace context a message carries (an empty one when it has none).
pub fn extract(headers: Option<&HeaderMap>) -> opentelemetry::Context {
    match headers {
        Some(h) => opentelemetry::global::get_text_map_propagator(|p| p.extract(&Reader(h))),
        None => opentelemetry::Context::new(),
    }
}

/// A span named `name` continuing the trace `headers` carry.
pub fn continue_trace(name: &'static str, headers: Option<&HeaderMap>) -> tracing::Span {
    let span = tracing::info_span!("henvis", otel.name = name, otel.kind = "consumer");
    // fails only when the span is disabled (no OpenTelemetry layer): nothing to continue
    let _ = span.set_parent(extract(headers));
    span
}
