//! The shared library of the four sector services (police, health, social, ngo). It does
//! the mechanics: authenticate the calling agency, validate, stamp the sender, publish the
//! envelope and wait for JetStream, serve the agency's inbox and its referrals' status.
//!
//! It holds no routing policy: who receives what is the router's alone. The sectors differ
//! only by data (their [`SectorProfile`]) and the typed API each adds on top.

mod alerts;
mod auth;
mod decisions;
mod error;
mod inbox;
mod profile;
mod status;
mod submit;
mod typed;

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use henvis_bus::Bus;
use henvis_domain::{Directory, Sector};
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
    /// NATS server URL.
    #[arg(long, env = "HENVIS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// PKI folder: `ca.pem`, `crl.pem` and this service's `service/<sector>.pem` and
    /// `.key` (created by `henvis dev-pki` for development). Read again when they change.
    #[arg(long, env = "HENVIS_PKI_DIR")]
    pub pki_dir: PathBuf,
    /// Agency directory file; the built-in Danish directory when absent.
    #[arg(long, env = "HENVIS_DIRECTORY")]
    pub directory: Option<PathBuf>,
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
    /// JetStream de-duplication window in seconds (set when the streams are created).
    #[arg(long, env = "HENVIS_DUPLICATE_WINDOW_SECS", default_value_t = 600)]
    pub duplicate_window_secs: u64,
    /// Days submitted events and undelivered deliveries are kept (set when the streams are
    /// created).
    #[arg(long, env = "HENVIS_RETENTION_SECS", default_value_t = 30 * 24 * 3600)]
    pub retention_secs: u64,
    /// Byte limit of each of IN and OUT (set when the streams are created); past it Submit
    /// answers RESOURCE_EXHAUSTED and nothing stored is evicted.
    #[arg(long, env = "HENVIS_STREAM_MAX_BYTES", default_value_t = 1 << 30)]
    pub stream_max_bytes: i64,
    /// Replicas of every stream and bucket when created (1 for one server, 3 in a cluster).
    #[arg(long, env = "HENVIS_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// Each agency's share of IN: events (one per started 16 KiB) it may submit within the
    /// retention time; past it, its Submit answers RESOURCE_EXHAUSTED and nobody else's
    /// (set when the streams are created).
    #[arg(long, env = "HENVIS_AGENCY_QUOTA", default_value_t = 10_000)]
    pub agency_quota: i64,
    /// Each recipient's share of OUT: deliveries of one message type waiting for it; past
    /// it, its further deliveries wait in IN and nobody else's (set when the streams are
    /// created).
    #[arg(long, env = "HENVIS_RECIPIENT_SHARE", default_value_t = 10_000)]
    pub recipient_share: i64,
    /// Police alert escalation (used by the police service only).
    #[command(flatten)]
    pub alerts: AlertConfig,
}

/// Everything a sector service needs, shared by its gRPC services.
pub struct Core {
    profile: SectorProfile,
    bus: Bus,
    directory: Directory,
    schema: Schema,
    tls: Arc<henvis_runtime::tls::TlsServer>,
    max_event_bytes: usize,
    agency_quota: i64,
    ack_wait: Duration,
    inbox_max_attempts: i64,
    inbox_window: usize,
    heartbeat: Duration,
    alerts: AlertConfig,
}

/// Loads the configured files, connects to NATS and creates the JetStream topology.
pub async fn build(sector: Sector, config: &SectorConfig) -> anyhow::Result<Arc<Core>> {
    use anyhow::Context as _;
    let directory = match &config.directory {
        Some(p) => {
            Directory::from_toml(&std::fs::read_to_string(p).with_context(|| format!("reading `{}`", p.display()))?)?
        }
        None => Directory::denmark()?,
    };
    let tls = henvis_runtime::tls::TlsServer::load(henvis_runtime::tls::PkiFiles::of(
        &config.pki_dir,
        &henvis_domain::Principal::Service(sector.to_string()),
    ))?;
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET)?;
    let bus = Bus::connect(
        &config.nats_url,
        &format!("henvis-{sector}"),
        Some(&henvis_bus::NatsIdentity::of(
            &config.pki_dir,
            &henvis_domain::Principal::Service(sector.to_string()),
        )),
    )
    .await?;
    henvis_bus::Topology {
        duplicate_window: Duration::from_secs(config.duplicate_window_secs.max(1)),
        replicas: config.stream_replicas.max(1),
        max_age: Duration::from_secs(config.retention_secs.max(60)),
        max_bytes: config.stream_max_bytes,
        agency_quota: config.agency_quota,
        recipient_share: config.recipient_share,
        ..Default::default()
    }
    .ensure(&bus)
    .await?;
    Ok(Arc::new(Core {
        profile: SectorProfile::of(sector),
        bus,
        directory,
        schema,
        tls,
        max_event_bytes: config.max_event_bytes,
        agency_quota: config.agency_quota,
        ack_wait: Duration::from_secs(config.ack_wait_secs.max(1)),
        inbox_max_attempts: config.inbox_max_attempts.max(1),
        inbox_window: config.inbox_window.clamp(1, 1000),
        heartbeat: Duration::from_secs(config.heartbeat_secs.max(1)),
        alerts: config.alerts.clone(),
    }))
}

/// Serves the sector's common and typed APIs on `listener` until `shutdown` resolves.
pub async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let sector = core.profile.sector;
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
    let dir = core.directory.clone();
    let admit: henvis_runtime::Admit = Arc::new(move |p| auth::admit(&dir, p));
    let served = henvis_runtime::serve_grpc(listener, core.tls.clone(), admit, routes, &names, wait()).await;
    for task in background {
        let _ = task.await;
    }
    served
}
