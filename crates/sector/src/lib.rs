//! The shared library of the four sector services (police, health, social, ngo). It does
//! the mechanics: authenticate the calling agency, validate, stamp the sender, publish the
//! envelope and wait for JetStream, serve the agency's inbox and its referrals' status.
//!
//! It holds no routing policy: who receives what is the router's alone. The sectors differ
//! only by data (their [`SectorProfile`]) and the typed API each adds on top.

mod alerts;
mod auth;
mod console;
mod decisions;
mod error;
mod inbox;
mod profile;
mod status;
mod submit;
mod typed;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use henvis_bus::Bus;
use henvis_domain::Sector;
use henvis_policy::Schema;
use henvis_proto::henvis::broker::v1::referral_service_server::ReferralServiceServer;
use tokio::net::TcpListener;

pub use alerts::AlertConfig;
pub use auth::{Caller, admit};
pub use error::ApiError;
pub use profile::SectorProfile;

/// Configuration of a sector service: flags, or `HENVIS_*` environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct SectorConfig {
    /// Address to listen on for gRPC.
    #[arg(long, env = "HENVIS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// NATS, PKI, directory and stream settings shared with the router.
    #[command(flatten)]
    pub service: henvis_runtime::ServiceConfig,
    /// Largest accepted encoded event, in bytes.
    #[arg(long, env = "HENVIS_MAX_EVENT_BYTES", default_value_t = 64 * 1024)]
    pub max_event_bytes: usize,
    /// Seconds an inbox delivery may stay unacknowledged before it is offered again.
    #[arg(long, env = "HENVIS_ACK_WAIT_SECS", default_value_t = 30)]
    pub ack_wait_secs: u64,
    /// Attempts to deliver one inbox delivery (each unacknowledged offer counts) before it
    /// goes to the dead-letter stream and an administrator alert.
    #[arg(long, env = "HENVIS_INBOX_MAX_ATTEMPTS", default_value_t = 10)]
    pub inbox_max_attempts: i64,
    /// Unacknowledged deliveries one inbox stream holds at a time (and fetches ahead).
    #[arg(long, env = "HENVIS_INBOX_WINDOW", default_value_t = 8)]
    pub inbox_window: usize,
    /// Seconds between heartbeats on an idle inbox stream.
    #[arg(long, env = "HENVIS_HEARTBEAT_SECS", default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Police alert escalation (used by the police service only).
    #[command(flatten)]
    pub alerts: AlertConfig,
    /// Address of the web console (HTTPS with the people's client certificates, the same
    /// TLS material as the gRPC port); no console when absent.
    #[arg(long, env = "HENVIS_CONSOLE_LISTEN")]
    pub console_listen: Option<SocketAddr>,
}

/// Everything a sector service needs, shared by its gRPC services.
pub struct Core {
    profile: SectorProfile,
    bus: Bus,
    directory: Arc<henvis_runtime::LiveDirectory>,
    schema: Schema,
    tls: Arc<henvis_runtime::tls::TlsServer>,
    max_event_bytes: usize,
    agency_quota: i64,
    ack_wait: Duration,
    inbox_max_attempts: i64,
    inbox_window: usize,
    heartbeat: Duration,
    alerts: AlertConfig,
    console_listen: Option<SocketAddr>,
    /// JetStream's de-duplication window: a record written again within it is stored once.
    duplicate_window: Duration,
}

/// Validates everything `config` names before any port opens (`--check-config`).
pub fn check(sector: Sector, config: &SectorConfig) -> anyhow::Result<()> {
    config
        .service
        .check(&henvis_domain::Principal::Service(sector.to_string()), true)?;
    anyhow::ensure!(
        config.max_event_bytes > 0,
        "max_event_bytes: expected a positive number of bytes"
    );
    anyhow::ensure!(
        (1..=1000).contains(&config.inbox_window),
        "inbox_window: expected 1 to 1000 deliveries, got {}",
        config.inbox_window
    );
    anyhow::ensure!(config.inbox_max_attempts >= 1, "inbox_max_attempts: expected 1 or more");
    if sector == Sector::Police {
        henvis_domain::AgencyId::parse(&config.alerts.escalate_to)
            .map_err(|e| anyhow::anyhow!("escalate_to: `{}` is not an agency id ({e})", config.alerts.escalate_to))?;
    }
    Ok(())
}

/// A sector service's whole life, as its binary runs it: the configuration (file,
/// environment, flags; `--check-config`), the operator port, NATS (waiting through an
/// outage), then the gRPC port until SIGTERM.
pub async fn main(sector: Sector, parsed: henvis_runtime::cli::Parsed<SectorConfig>) -> anyhow::Result<()> {
    henvis_runtime::telemetry::init(&format!("henvis-{sector}"), &parsed.args.service.telemetry)?;
    if parsed.check(|| check(sector, &parsed.args))? {
        return Ok(());
    }
    let config = parsed.args;
    henvis_runtime::run(
        config.service.metrics_listen,
        config.listen,
        build(sector, &config),
        serve,
    )
    .await
}

/// Loads the configured files, connects to NATS and creates the JetStream topology.
pub async fn build(sector: Sector, config: &SectorConfig) -> anyhow::Result<Arc<Core>> {
    let principal = henvis_domain::Principal::Service(sector.to_string());
    let base = config.service.directory()?;
    let tls =
        henvis_runtime::tls::TlsServer::load(henvis_runtime::tls::PkiFiles::of(&config.service.pki_dir, &principal))?;
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET)?;
    let bus = config.service.connect_sealing(&principal).await?;
    let directory = henvis_runtime::LiveDirectory::load(base, &bus).await?;
    Ok(Arc::new(Core {
        profile: SectorProfile::of(sector),
        bus,
        directory,
        schema,
        tls,
        max_event_bytes: config.max_event_bytes,
        agency_quota: config.service.agency_quota,
        ack_wait: Duration::from_secs(config.ack_wait_secs.max(1)),
        inbox_max_attempts: config.inbox_max_attempts.max(1),
        inbox_window: config.inbox_window.clamp(1, 1000),
        heartbeat: Duration::from_secs(config.heartbeat_secs.max(1)),
        alerts: config.alerts.clone(),
        console_listen: config.console_listen,
        duplicate_window: Duration::from_secs(config.service.duplicate_window_secs.max(1)),
    }))
}

/// Serves the sector's common and typed APIs on `listener` until `shutdown` resolves.
pub async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    readiness: henvis_runtime::Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let sector = core.profile.sector;
    henvis_runtime::metrics::watch_nats(core.bus.client().clone(), readiness.clone());
    // the codec refuses requests over 256 KiB by name; the transport limit sits above it
    let max = henvis_proto::codec::MAX_TRANSPORT_BYTES;
    let common = ReferralServiceServer::new(submit::Referrals(core.clone())).max_decoding_message_size(max);
    let mut names = vec![henvis_runtime::service_name::<ReferralServiceServer<submit::Referrals>>()];
    let (mut routes, typed_name) = typed::add(tonic::service::Routes::new(common), core.clone(), max);
    names.push(typed_name);
    tracing::info!(%sector, addr = ?listener.local_addr().ok(), "sector service listening");
    let wait = henvis_runtime::fan_out(shutdown);
    let mut background = Vec::new();
    // what the sector's profile adds (the police service: case alerts and their escalation)
    for extra in core.profile.extras {
        match extra {
            profile::Extra::CaseAlerts => {
                type A = henvis_proto::henvis::police::v1::alert_service_server::AlertServiceServer<alerts::Alerts>;
                routes = routes.add_service(A::new(alerts::Alerts(core.clone())).max_decoding_message_size(max));
                names.push(henvis_runtime::service_name::<A>());
                background.push(tokio::spawn(alerts::escalate_loop(core.clone(), wait())));
            }
        }
    }
    // approved directory changes apply without a restart
    background.push(tokio::spawn(core.directory.clone().follow(core.bus.clone(), wait())));
    // the web console, for people
    if let Some(addr) = core.console_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("console_listen: cannot listen on {addr}: {e}"))?;
        let app = console::router(core.clone())?;
        let tls = core.tls.clone();
        let stop = wait();
        background.push(tokio::spawn(async move {
            if let Err(e) = henvis_runtime::https::serve(listener, tls, app, stop).await {
                tracing::error!(error = %e, "console stopped");
            }
        }));
    }
    let dir = core.directory.clone();
    let admit: henvis_runtime::Admit = Arc::new(move |p| auth::admit(&dir.current(), p));
    let served = henvis_runtime::serve_grpc(listener, core.tls.clone(), admit, routes, &names, readiness, wait()).await;
    for task in background {
        let _ = task.await;
    }
    served
}
