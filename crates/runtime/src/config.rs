//! What every henvis service is configured with, and the one path by which it connects:
//! NATS, the PKI, the directory and the JetStream topology. The router and the sector
//! services read the same `HENVIS_*` variables, so whichever starts first creates the
//! streams exactly as the others would.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use henvis_bus::{Bus, NatsIdentity, Topology};
use henvis_domain::{Directory, Principal};

/// Configuration shared by the router and the sector services: flags, or `HENVIS_*`
/// environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceConfig {
    /// NATS server URL (several separated by commas).
    #[arg(long, env = "HENVIS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// PKI folder: `ca.pem`, `crl.pem` and this service's `service/<name>.pem` and `.key`
    /// (created by `henvis dev-pki` for development). Read again when they change.
    #[arg(long, env = "HENVIS_PKI_DIR")]
    pub pki_dir: PathBuf,
    /// Agency directory file; the built-in Danish directory when absent.
    #[arg(long, env = "HENVIS_DIRECTORY")]
    pub directory: Option<PathBuf>,
    /// JetStream de-duplication window in seconds (set when the streams are created).
    #[arg(long, env = "HENVIS_DUPLICATE_WINDOW_SECS", default_value_t = 600)]
    pub duplicate_window_secs: u64,
    /// Seconds submitted events and undelivered deliveries are kept (set when the streams
    /// are created).
    #[arg(long, env = "HENVIS_RETENTION_SECS", default_value_t = 30 * 24 * 3600)]
    pub retention_secs: u64,
    /// Byte limit of each of IN and OUT (set when the streams are created); past it Submit
    /// answers RESOURCE_EXHAUSTED and nothing stored is evicted.
    #[arg(long, env = "HENVIS_STREAM_MAX_BYTES", default_value_t = 1 << 30)]
    pub stream_max_bytes: i64,
    /// Replicas of every stream and bucket when created (1 for one server, 3 or more in a
    /// cluster, where fewer are refused).
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
    /// Days the audit (records and chain links) is kept; longer than every data retention.
    /// 0 keeps it for ever. Signed checkpoints are always kept. Set when the streams are
    /// created.
    #[arg(long, env = "HENVIS_AUDIT_RETENTION_DAYS", default_value_t = 10 * 365)]
    pub audit_retention_days: u64,
    /// Days at most that a police deferral (§ 262 a) keeps the police-side part of a
    /// case's subject access report from its guardian, counted from the first mark.
    #[arg(long, env = "HENVIS_DEFERRAL_MAX_DAYS", default_value_t = henvis_domain::report::DEFAULT_DEFERRAL_MAX_DAYS)]
    pub deferral_max_days: u64,
    /// The master key that wraps every case's data key (64 hex digits, a file readable by
    /// the service only); default `<pki dir>/service/case-master.key` (`henvis dev-pki`
    /// makes one). Without it a service cannot seal or open case data.
    #[arg(long, env = "HENVIS_CASE_MASTER_KEY_FILE")]
    pub case_master_key_file: Option<PathBuf>,
    /// Address of the plain-HTTP operator port: `/metrics` (Prometheus), `/livez`,
    /// `/readyz`. Off when absent. Nothing on it is personal data.
    #[arg(long, env = "HENVIS_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryConfig,
}

impl ServiceConfig {
    /// The settings of a service on `nats_url` with the PKI in `pki_dir`, every other
    /// setting at its default.
    pub fn new(nats_url: impl Into<String>, pki_dir: impl Into<PathBuf>) -> Self {
        let t = Topology::default();
        Self {
            nats_url: nats_url.into(),
            pki_dir: pki_dir.into(),
            directory: None,
            duplicate_window_secs: t.duplicate_window.as_secs(),
            retention_secs: t.max_age.as_secs(),
            stream_max_bytes: t.max_bytes,
            stream_replicas: t.replicas,
            agency_quota: t.agency_quota,
            recipient_share: t.recipient_share,
            audit_retention_days: t.audit_max_age.as_secs() / (24 * 3600),
            deferral_max_days: henvis_domain::report::DEFAULT_DEFERRAL_MAX_DAYS,
            case_master_key_file: None,
            metrics_listen: None,
            telemetry: Default::default(),
        }
    }

    /// How long a police deferral lasts at most, seconds.
    pub fn deferral_max_secs(&self) -> i64 {
        i64::try_from(self.deferral_max_days.saturating_mul(24 * 3600)).unwrap_or(i64::MAX)
    }

    /// The configured directory, or the built-in Danish one.
    pub fn directory(&self) -> anyhow::Result<Directory> {
        match &self.directory {
            Some(p) => Ok(Directory::from_toml(
                &std::fs::read_to_string(p).with_context(|| format!("reading `{}`", p.display()))?,
            )?),
            None => Ok(Directory::denmark()?),
        }
    }

    /// How long stored events and deliveries are kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs.max(60))
    }

    /// The JetStream topology these settings ask for.
    pub fn topology(&self) -> Topology {
        Topology {
            duplicate_window: Duration::from_secs(self.duplicate_window_secs.max(1)),
            replicas: self.stream_replicas.max(1),
            max_age: self.retention(),
            max_bytes: self.stream_max_bytes,
            agency_quota: self.agency_quota,
            recipient_share: self.recipient_share,
            audit_max_age: Duration::from_secs(self.audit_retention_days.saturating_mul(24 * 3600)),
            ..Default::default()
        }
    }

    /// Connects to NATS as `principal` (its certificate from the PKI folder) and creates
    /// the topology where missing (refusing a weaker one).
    pub async fn connect(&self, principal: &Principal) -> anyhow::Result<Bus> {
        let name = match principal {
            Principal::Service(s) => format!("henvis-{s}"),
            other => format!("henvis-{}", other.path().replace('/', "-")),
        };
        let mut bus =
            Bus::connect_waiting(&self.nats_url, &name, Some(&NatsIdentity::of(&self.pki_dir, principal))).await?;
        if let Some(master) = self.case_master_key()? {
            bus = bus.with_master_key(master);
        }
        // JetStream may not answer yet (a cluster electing its leaders, a node catching
        // up): wait for it as for NATS itself; a weaker existing topology is refused at once
        let mut pause = Duration::from_millis(250);
        loop {
            match self.topology().ensure(&bus).await {
                Ok(()) => return Ok(bus),
                Err(henvis_bus::BusError::Unavailable(e)) => {
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "JetStream not ready; waiting");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// [`connect`](Self::connect) for a service that seals and opens case data (the router,
    /// the sector services): refused without the case master key.
    pub async fn connect_sealing(&self, principal: &Principal) -> anyhow::Result<Bus> {
        let bus = self.connect(principal).await?;
        anyhow::ensure!(
            bus.has_master_key(),
            "no case master key: every child's data is sealed with its case's key, wrapped by it; set HENVIS_CASE_MASTER_KEY_FILE (64 hex digits, mode 600) or put one at <pki dir>/{}",
            henvis_bus::CASE_MASTER_KEY_FILE
        );
        Ok(bus)
    }

    /// Validates everything these settings name before any port opens: the NATS URLs,
    /// the directory, `principal`'s certificate and key with the CA and revocation list,
    /// the case master key (required when `sealing`), and the retention settings.
    pub fn check(&self, principal: &Principal, sealing: bool) -> anyhow::Result<()> {
        for url in self.nats_url.split(',') {
            url.parse::<async_nats::ServerAddr>().map_err(|e| {
                anyhow::anyhow!("nats_url: `{url}` is not a NATS URL ({e}); expected e.g. nats://127.0.0.1:4222")
            })?;
        }
        self.directory().context("directory")?;
        crate::tls::TlsServer::load(crate::tls::PkiFiles::of(&self.pki_dir, principal))
            .with_context(|| format!("pki_dir `{}`", self.pki_dir.display()))?;
        let key = self.case_master_key()?;
        anyhow::ensure!(
            !sealing || key.is_some(),
            "case_master_key_file: no case master key at `{}` (64 hex digits, mode 600)",
            self.pki_dir.join(henvis_bus::CASE_MASTER_KEY_FILE).display()
        );
        anyhow::ensure!(self.stream_replicas >= 1, "stream_replicas: expected 1 or more");
        anyhow::ensure!(
            self.stream_max_bytes > 0,
            "stream_max_bytes: expected a positive number of bytes"
        );
        anyhow::ensure!(
            self.agency_quota > 0,
            "agency_quota: expected a positive number of events"
        );
        anyhow::ensure!(
            self.recipient_share > 0,
            "recipient_share: expected a positive number of deliveries"
        );
        self.topology().check()?;
        self.telemetry.check()?;
        Ok(())
    }

    /// The case master key: from the configured file (which must exist), else from the
    /// default place in the PKI folder when it is there.
    pub fn case_master_key(&self) -> anyhow::Result<Option<henvis_bus::MasterKey>> {
        let (path, required) = match &self.case_master_key_file {
            Some(p) => (p.clone(), true),
            None => (self.pki_dir.join(henvis_bus::CASE_MASTER_KEY_FILE), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
            Err(e) => return Err(anyhow::anyhow!("reading the case master key `{}`: {e}", path.display())),
        };
        henvis_bus::MasterKey::from_hex(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("the case master key `{}`: {e}", path.display()))
    }
}
