//! Logs and traces. Logs: a `RUST_LOG`-style filter, text or JSON lines, ids only — never
//! a payload. Traces: every process continues the W3C trace context it receives (gRPC
//! metadata, NATS headers) and passes it on, so one referral is one trace from Submit to
//! every delivery; spans are exported over OTLP/gRPC only when an endpoint is configured
//! (off by default). Span attributes are ids and codes, as in the logs.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::LevelFilter, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

/// How a service logs and traces: flags, `HENVIS_*` variables or the configuration file.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// Log filter, `RUST_LOG` syntax (e.g. `info`, `warn,henvis_router=debug`).
    #[arg(long = "log", env = "HENVIS_LOG", default_value = "info")]
    pub log: String,
    /// Log format: `text`, or `json` (one object per line).
    #[arg(long, env = "HENVIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint spans are exported to (e.g. `http://otel-collector:4317`); no
    /// export when absent. The usual `OTEL_BSP_*` variables tune the batching.
    #[arg(long, env = "HENVIS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// A log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log: "info".into(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
        }
    }
}

impl TelemetryConfig {
    /// Refuses a filter or endpoint that cannot work.
    pub fn check(&self) -> anyhow::Result<()> {
        EnvFilter::try_new(&self.log).map_err(|e| anyhow::anyhow!("log: `{}` is not a log filter ({e})", self.log))?;
        if let Some(e) = &self.otlp_endpoint {
            anyhow::ensure!(
                e.starts_with("http://") || e.starts_with("https://"),
                "otlp_endpoint: expected an http:// or https:// URL, got `{e}`"
            );
        }
        Ok(())
    }
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Sets up logging and tracing for `service` (its name in exported spans). Only the first
/// call in a process takes effect (tests run several services in one process).
pub fn init(service: &str, config: &TelemetryConfig) -> anyhow::Result<()> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut builder =
        SdkTracerProvider::builder().with_resource(Resource::builder().with_service_name(service.to_owned()).build());
    if let Some(endpoint) = &config.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| anyhow::anyhow!("otlp_endpoint: {e}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer("henvis");
    if PROVIDER.set(provider.clone()).is_ok() {
        opentelemetry::global::set_tracer_provider(provider);
    }
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    // colour only on a terminal: log files (run-local.sh) stay plain text
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none();
    let json = config.log_format == LogFormat::Json;
    // the log filter chooses what is logged; spans (info and above) are traced whatever it
    // says, so quiet logs do not break a trace
    let logs = if json {
        tracing_subscriber::fmt::layer().json().with_target(false).boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .boxed()
    };
    let result = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(LevelFilter::INFO),
        )
        .try_init();
    // already initialised (tests run several services in one process): keep the first
    let _ = result;
    Ok(())
}

/// Exports the spans still batched (at the end of a service's life).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.shutdown();
    }
}
