//! Prometheus metrics and the operator's HTTP port: `/metrics` (OpenMetrics text),
//! `/livez` (the process answers) and `/readyz` (NATS, the streams and what the service
//! needs are ready, and it is not draining).
//!
//! Every label value is an id from a closed set (an RPC's path, a gRPC code, an outcome or
//! reason code, an agency or district id, a sector): never a child's data, never a
//! free-form text.

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// An RPC and the gRPC status code it ended with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `/package.Service/Method`.
    pub rpc: String,
    /// The gRPC code's name (`OK`, `INVALID_ARGUMENT`, …).
    pub code: String,
}

/// An RPC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcName {
    /// `/package.Service/Method`.
    pub rpc: String,
}

/// A sector service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SectorLabel {
    /// `police`, `health`, `social`, `ngo`.
    pub sector: String,
}

/// A submission's outcome at one sector service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubmitLabels {
    /// The sector service.
    pub sector: String,
    /// `accepted`, `duplicate` or the refusing gRPC code's name.
    pub outcome: String,
}

/// One recipient's part of a routing decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `delivered` or `withheld`.
    pub outcome: String,
    /// The withholding reason's code (`no_consent`, …); empty when delivered.
    pub reason: String,
}

/// An agency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgencyLabel {
    /// The agency's id from the directory.
    pub agency: String,
}

/// Alerts of one district in one state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// The police district (or national unit) holding them.
    pub district: String,
    /// `open`, `claimed`, `escalated`.
    pub state: String,
}

/// Why something went to the dead-letter stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// `max_deliveries` (an inbox delivery never acknowledged), `unroutable` (an event the
    /// router cannot route).
    pub reason: String,
}

/// Every metric henvis keeps. One set per process, shared by the services it runs.
pub struct Metrics {
    registry: Registry,
    /// gRPC calls by RPC and status.
    pub grpc_requests: Family<RpcLabels, Counter>,
    /// gRPC call durations by RPC, until the status is sent (for a stream: its lifetime).
    pub grpc_duration: Family<RpcName, Histogram>,
    /// Submissions by sector and outcome.
    pub submits: Family<SubmitLabels, Counter>,
    /// Submit latency, from the request's arrival to the answer, by sector.
    pub submit_duration: Family<SectorLabel, Histogram>,
    /// From an event's storage in IN to a recipient's confirmed acknowledgement, by sector
    /// of the recipient's service.
    pub delivery_latency: Family<SectorLabel, Histogram>,
    /// Inbox deliveries offered again (an earlier offer was not acknowledged), by sector.
    pub redeliveries: Family<SectorLabel, Counter>,
    /// Routing decisions per recipient by outcome and withholding reason.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Events the router routed (acknowledged in IN).
    pub events_routed: Counter,
    /// Deliveries waiting in an agency's inbox (not yet acknowledged).
    pub inbox_backlog: Family<AgencyLabel, Gauge>,
    /// Seconds the oldest unacknowledged delivery of an agency has waited.
    pub inbox_oldest_seconds: Family<AgencyLabel, Gauge>,
    /// Case alerts by district and state.
    pub alerts: Family<AlertLabels, Gauge>,
    /// Alerts escalated by this process.
    pub alerts_escalated: Counter,
    /// Dead letters written, by reason.
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    /// 1 while connected to NATS.
    pub nats_connected: Gauge,
    /// Times the NATS connection was lost.
    pub nats_disconnects: Counter,
    /// 1 while the service is ready (the health service says SERVING).
    pub ready: Gauge,
}

/// Buckets from 1 ms to ~65 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("henvis");
        let grpc_requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls by RPC and status code",
            grpc_requests.clone(),
        );
        let grpc_duration = Family::<RpcName, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call duration until its status (a stream: its lifetime)",
            grpc_duration.clone(),
        );
        let submits = Family::<SubmitLabels, Counter>::default();
        registry.register("submits", "submissions by sector and outcome", submits.clone());
        let submit_duration =
            Family::<SectorLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "submit_duration_seconds",
            "Submit latency by sector",
            submit_duration.clone(),
        );
        let delivery_latency =
            Family::<SectorLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "delivery_latency_seconds",
            "from an event's storage to a recipient's confirmed acknowledgement",
            delivery_latency.clone(),
        );
        let redeliveries = Family::<SectorLabel, Counter>::default();
        registry.register(
            "inbox_redeliveries",
            "inbox deliveries offered again",
            redeliveries.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "router_decisions",
            "routing decisions per recipient by outcome and withholding reason",
            decisions.clone(),
        );
        let events_routed = Counter::default();
        registry.register("router_events", "events routed", events_routed.clone());
        let inbox_backlog = Family::<AgencyLabel, Gauge>::default();
        registry.register(
            "inbox_backlog",
            "deliveries waiting unacknowledged in an agency's inbox",
            inbox_backlog.clone(),
        );
        let inbox_oldest_seconds = Family::<AgencyLabel, Gauge>::default();
        registry.register(
            "inbox_oldest_unacked_seconds",
            "age of an agency's oldest unacknowledged delivery",
            inbox_oldest_seconds.clone(),
        );
        let alerts = Family::<AlertLabels, Gauge>::default();
        registry.register("alerts", "case alerts by district and state", alerts.clone());
        let alerts_escalated = Counter::default();
        registry.register("alerts_escalated", "alerts escalated", alerts_escalated.clone());
        let dead_letters = Family::<DeadLetterLabels, Counter>::default();
        registry.register("dead_letters", "dead letters written by reason", dead_letters.clone());
        let nats_connected = Gauge::default();
        registry.register("nats_connected", "1 while connected to NATS", nats_connected.clone());
        let nats_disconnects = Counter::default();
        registry.register("nats_disconnects", "NATS connections lost", nats_disconnects.clone());
        let ready = Gauge::default();
        registry.register("ready", "1 while the service is ready", ready.clone());
        Self {
            registry,
            grpc_requests,
            grpc_duration,
            submits,
            submit_duration,
            delivery_latency,
            redeliveries,
            decisions,
            events_routed,
            inbox_backlog,
            inbox_oldest_seconds,
            alerts,
            alerts_escalated,
            dead_letters,
            nats_connected,
            nats_disconnects,
            ready,
        }
    }

    /// The metrics in OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The sector label of `sector`.
pub fn sector(sector: impl ToString) -> SectorLabel {
    SectorLabel {
        sector: sector.to_string(),
    }
}

/// The label of a gRPC code: its name as the gRPC specification spells it.
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Records one Submit at `sector`: its outcome and how long it took.
pub fn record_submit(sector: &str, outcome: Result<bool, tonic::Code>, took: Duration) {
    let m = metrics();
    let outcome = match outcome {
        Ok(false) => "accepted",
        Ok(true) => "duplicate",
        Err(code) => code_label(code),
    };
    m.submits
        .get_or_create(&SubmitLabels {
            sector: sector.to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
    m.submit_duration
        .get_or_create(&SectorLabel {
            sector: sector.to_owned(),
        })
        .observe(took.as_secs_f64());
}

/// The HTTP content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics`, `/livez` and `/readyz` on `listener` (plain HTTP: nothing on it is
/// personal data) for as long as the process runs: while draining it still answers,
/// `/readyz` with 503 `draining`.
pub async fn serve_http(listener: tokio::net::TcpListener, readiness: crate::Readiness) -> anyhow::Result<()> {
    use axum::{http::StatusCode, response::IntoResponse, routing::get};
    let ready = Arc::new(readiness);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], metrics().encode()) }),
        )
        .route("/livez", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    let state = ready.state();
                    let code = if state == crate::State::Ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, format!("{}\n", state.as_str())).into_response()
                }
            }),
        );
    tracing::info!(addr = ?listener.local_addr().ok(), "metrics and probes listening");
    axum::serve(listener, app).await?;
    Ok(())
}

/// Binds the metrics port if one is configured and serves it in the background.
pub async fn spawn_http(addr: Option<SocketAddr>, readiness: crate::Readiness) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics_listen: cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve_http(listener, readiness).await {
            tracing::error!(error = %e, "metrics port failed");
        }
    });
    Ok(Some(bound))
}

/// Follows `client`'s connection state into the `nats_connected` gauge and `readiness`
/// until the service drains.
pub fn watch_nats(client: async_nats::Client, readiness: crate::Readiness) {
    tokio::spawn(async move {
        let mut was = true;
        while readiness.state() != crate::State::Draining {
            let up = client.connection_state() == async_nats::connection::State::Connected;
            metrics().nats_connected.set(i64::from(up));
            if was && !up {
                metrics().nats_disconnects.inc();
                tracing::warn!("NATS connection lost; reconnecting");
            } else if !was && up {
                tracing::info!("NATS connection back");
            }
            readiness.set_nats(up);
            was = up;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
}
