//! The admin service: how administrators govern routing. A rule set is proposed
//! (validated against the schema and the directory, its own tests run), compared with the
//! live set in terms of effect, simulated on single events and replayed on recent traffic,
//! and goes live only when a second administrator approves it — or by break-glass, which
//! raises an administrator alert and stays unreviewed until another administrator reviews
//! it. Every step is an audit record naming the administrator the certificate proves.
//!
//! Its own NATS identity may keep the governance bucket, put the approved set into the
//! rules bucket (every router follows it) and read the audit; administrators themselves
//! have no NATS rights at all. It never reads a submitted event.

mod console;
mod directory;
mod erasure;
mod governance;
mod recorded;
mod report;
mod service;
mod stats;
mod verify;
mod whatif;

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use henvis_bus::Bus;
use henvis_domain::{PersonId, Principal};
use henvis_policy::Schema;
use henvis_proto::henvis::admin::v1::admin_service_server::AdminServiceServer;

/// Configuration of the admin service: flags, or `HENVIS_*` environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminConfig {
    /// NATS, PKI, directory and stream settings shared with the other services.
    #[command(flatten)]
    pub service: henvis_runtime::ServiceConfig,
    /// Address to listen on for gRPC.
    #[arg(long, env = "HENVIS_ADMIN_LISTEN", default_value = "127.0.0.1:50055")]
    pub listen: SocketAddr,
    /// The rule file the routers start with while nothing was ever approved (the shipped
    /// default when absent; must match the routers' `HENVIS_RULES`).
    #[arg(long, env = "HENVIS_RULES")]
    pub rules: Option<PathBuf>,
    /// The public keys (hex, one per line: the current one and any retired ones) audit
    /// checkpoints are verified with; default `<pki dir>/audit-signing.pub`.
    #[arg(long, env = "HENVIS_AUDIT_PUBLIC_KEY")]
    pub audit_public_key: Option<PathBuf>,
    /// Counts for the mapping study under this are suppressed (at least 2).
    #[arg(long, env = "HENVIS_STATS_THRESHOLD", default_value_t = henvis_domain::stats::DEFAULT_THRESHOLD)]
    pub stats_threshold: u64,
    /// Address of the administrators' web console (HTTPS with the administrators' client
    /// certificates, the same TLS material as the gRPC port); no console when absent.
    #[arg(long, env = "HENVIS_CONSOLE_LISTEN")]
    pub console_listen: Option<SocketAddr>,
}

/// The admin service's state.
pub struct Admin {
    bus: Bus,
    schema: Schema,
    directory: Arc<henvis_runtime::LiveDirectory>,
    /// The rule file routers fall back to while nothing was approved: (name, text).
    shipped: (String, String),
    /// The checkpoints' Ed25519 public keys (current and retired).
    audit_keys: Vec<Vec<u8>>,
    tls: Arc<henvis_runtime::tls::TlsServer>,
    /// How long a police deferral of a guardian's report lasts at most, seconds.
    deferral_max_secs: i64,
    /// How long the audit is kept, seconds (0: for ever): older links may have expired.
    audit_retention_secs: i64,
    /// The smallest count the mapping study publishes.
    stats_threshold: u64,
    /// Where the administrators' console listens, if anywhere.
    console_listen: Option<SocketAddr>,
    /// JetStream's de-duplication window: a record written again within it is stored once.
    duplicate_window: std::time::Duration,
    /// When a write of this service to the audit last failed (unix seconds; 0: not since
    /// the steps it may have left unrecorded were recorded).
    audit_refused_at: std::sync::atomic::AtomicI64,
}

/// Validates everything `config` names before any port opens (`--check-config`).
pub fn check(config: &AdminConfig) -> anyhow::Result<()> {
    config
        .service
        .check(&Principal::Service(henvis_bus::ADMIN_WRITER.into()), false)?;
    if let Some(p) = &config.rules {
        henvis_router::check_rule_file(p, &config.service)?;
    }
    if let Some(p) = &config.audit_public_key {
        std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("audit_public_key: reading `{}`: {e}", p.display()))?;
    }
    anyhow::ensure!(config.stats_threshold >= 2, "stats_threshold: expected 2 or more");
    Ok(())
}

/// The admin service's whole life, as its binary runs it: the configuration (file,
/// environment, flags; `--check-config`), the operator port, NATS (waiting through an
/// outage), then the gRPC port until SIGTERM.
pub async fn main(parsed: henvis_runtime::cli::Parsed<AdminConfig>) -> anyhow::Result<()> {
    henvis_runtime::telemetry::init("henvis-admin", &parsed.args.service.telemetry)?;
    if parsed.check(|| check(&parsed.args))? {
        return Ok(());
    }
    let config = parsed.args;
    henvis_runtime::run(config.service.metrics_listen, config.listen, build(&config), serve).await
}

/// Loads the configuration, connects to NATS as the admin service and finishes any
/// publication an earlier instance left half done.
pub async fn build(config: &AdminConfig) -> anyhow::Result<Arc<Admin>> {
    let me = Principal::Service(henvis_bus::ADMIN_WRITER.into());
    let directory = config.service.directory()?;
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET)?;
    let tls = henvis_runtime::tls::TlsServer::load(henvis_runtime::tls::PkiFiles::of(&config.service.pki_dir, &me))?;
    let shipped = match &config.rules {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading `{}`", p.display()))?,
        ),
        None => ("rules/default.toml".to_owned(), henvis_router::DEFAULT_RULES.to_owned()),
    };
    let key_path = config
        .audit_public_key
        .clone()
        .unwrap_or_else(|| config.service.pki_dir.join("audit-signing.pub"));
    let audit_keys: Vec<Vec<u8>> = std::fs::read_to_string(&key_path)
        .map(|t| t.lines().filter_map(|l| hex::decode(l.trim()).ok()).collect())
        .unwrap_or_default();
    if audit_keys.is_empty() {
        tracing::error!(path = %key_path.display(), "no audit public key: checkpoints cannot be verified");
    }
    let bus = config.service.connect(&me).await?;
    let directory = henvis_runtime::LiveDirectory::load(directory, &bus).await?;
    let admin = Arc::new(Admin {
        bus,
        schema,
        directory,
        shipped,
        audit_keys,
        tls,
        deferral_max_secs: config.service.deferral_max_secs(),
        audit_retention_secs: i64::try_from(config.service.topology().audit_max_age.as_secs()).unwrap_or(i64::MAX),
        stats_threshold: config.stats_threshold.max(2),
        console_listen: config.console_listen,
        duplicate_window: std::time::Duration::from_secs(config.service.duplicate_window_secs.max(1)),
        audit_refused_at: std::sync::atomic::AtomicI64::new(0),
    });
    admin.settle().await.context("finishing an earlier approval")?;
    admin
        .settle_directory()
        .await
        .context("finishing an earlier directory approval")?;
    admin.settle_erasures().await.context("finishing an earlier erasure")?;
    admin
        .complete_audit()
        .await
        .context("recording earlier steps in the audit")?;
    tracing::info!("admin service ready");
    Ok(admin)
}

/// Every [`RECORD_STEPS_EVERY`] until `shutdown`, while a write of this service to the
/// audit has failed since the last pass that succeeded: [`Admin::complete_audit`] (idle
/// otherwise; what a stopped service left is recorded when it starts again).
async fn record_steps(admin: Arc<Admin>, shutdown: impl Future<Output = ()> + Send) {
    let mut tick = tokio::time::interval(
        RECORD_STEPS_EVERY
            .min(admin.duplicate_window / 4)
            .max(std::time::Duration::from_secs(1)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {
                let refused = admin.audit_refused_at.load(std::sync::atomic::Ordering::SeqCst);
                if refused == 0 {
                    continue;
                }
                match admin.complete_audit().await {
                    Ok(n) => {
                        // done, unless another write failed meanwhile
                        let _ = admin.audit_refused_at.compare_exchange(refused, 0, std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst);
                        tracing::info!(records = n, "administrators' recent steps recorded in the audit again");
                    }
                    Err(e) => tracing::warn!(error = %e.message(), "administrators' steps not recorded in the audit yet; next pass"),
                }
            }
        }
    }
}

/// How often the admin service records in the audit what administrators did and the audit
/// has no record of yet.
const RECORD_STEPS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    admin: Arc<Admin>,
    listener: tokio::net::TcpListener,
    readiness: henvis_runtime::Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let max = henvis_proto::codec::MAX_TRANSPORT_BYTES;
    type S = AdminServiceServer<service::AdminApi>;
    henvis_runtime::metrics::watch_nats(admin.bus.client().clone(), readiness.clone());
    let routes = tonic::service::Routes::new(S::new(service::AdminApi(admin.clone())).max_decoding_message_size(max));
    // every authenticated principal reaches the handlers, which answer anyone but a listed
    // administrator with PERMISSION_DENIED naming why (health and reflection stay open to
    // the deployment's probes)
    let admit: henvis_runtime::Admit = Arc::new(|_| Ok(()));
    tracing::info!(addr = ?listener.local_addr().ok(), "admin service listening");
    let wait = henvis_runtime::fan_out(shutdown);
    let follow = tokio::spawn(admin.directory.clone().follow(admin.bus.clone(), wait()));
    // a step whose audit record was refused (the audit unavailable a moment) is recorded
    // on a later pass, well within the de-duplication window
    let recording = tokio::spawn(record_steps(admin.clone(), wait()));
    // the administrators' web console
    let console = match admin.console_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("console_listen: cannot listen on {addr}: {e}"))?;
            let app = console::router(admin.clone())?;
            let (tls, stop) = (admin.tls.clone(), wait());
            Some(tokio::spawn(async move {
                if let Err(e) = henvis_runtime::https::serve(listener, tls, app, stop).await {
                    tracing::error!(error = %e, "console stopped");
                }
            }))
        }
        None => None,
    };
    let served = henvis_runtime::serve_grpc(
        listener,
        admin.tls.clone(),
        admit,
        routes,
        &[henvis_runtime::service_name::<S>()],
        readiness,
        wait(),
    )
    .await;
    let _ = follow.await;
    let _ = recording.await;
    if let Some(console) = console {
        let _ = console.await;
    }
    served
}

impl Admin {
    /// The administrator a principal proves, if the directory lists them; a refusal is
    /// recorded.
    pub fn administrator(&self, principal: &Principal) -> Result<PersonId, tonic::Status> {
        self.admitted(principal).inspect_err(|_| {
            henvis_runtime::refusals::record(
                henvis_runtime::refusals::Refusal::NotAdmitted,
                &principal.to_string(),
                if matches!(principal, Principal::Admin(_)) {
                    "administrator not in the directory"
                } else {
                    "not an administrator"
                },
            );
        })
    }

    /// [`administrator`](Self::administrator) without recording a refusal (for a caller
    /// that records it itself, as the console's sign-in does).
    pub(crate) fn admitted(&self, principal: &Principal) -> Result<PersonId, tonic::Status> {
        match principal {
            Principal::Admin(id) if self.directory.current().is_administrator(id) => Ok(id.clone()),
            Principal::Admin(id) => Err(tonic::Status::permission_denied(format!(
                "`{id}` is not an administrator in the directory, or is disabled; ask an administrator to add you"
            ))),
            _ => Err(tonic::Status::permission_denied(
                "the admin service serves administrators only (a `henvis://admin/<id>` certificate listed in the directory)",
            )),
        }
    }
}

pub(crate) use henvis_runtime::unix_now as now;
