//! The bus: the only place in henvis that knows NATS subject, stream, consumer and bucket
//! names, and how JetStream is set up. deploy/ mirrors these names in its permissions.
//!
//! It moves bytes and knows no policy: callers hand it encoded messages and ids.

mod audit;
mod chain;
pub use chain::{AppendError, ChainTail, LINKS_PER_MESSAGE};
mod inbound;
mod keys;
pub use keys::{MasterKey, Opened, sealed_case};
mod linkage;
pub use linkage::VersionedLink;
mod names;
mod permissions;
mod queries;
mod stored;
mod topology;
pub mod trace;

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{self, context::PublishErrorKind},
};
use bytes::Bytes;

pub use audit::{ALARM_REFRESH, AuditAlarm};
pub use inbound::{InboxConsumer, Offered, RoutingConsumer};
pub use names::*;
pub use permissions::{
    admin_service_permissions, denied_to_everyone, nats_authorization, nats_user, permissions_markdown, router_denied,
    sector_permissions,
};
pub use queries::{
    CaseStanding, CasesAnswer, CasesQuery, DECISIONS_PAGE, DecisionsAnswer, DecisionsQuery, GuardianCase,
    LinkAnswerAnswer, LinkAnswerQuery, LinkView, LinksAnswer, LinksQuery, REPORT_PAGE, ReportAnswer, ReportQuery,
};
pub use topology::Topology;

/// A failure talking to NATS, by kind, so callers map it to a status by type.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// NATS is unreachable or did not answer in time; the operation may be retried.
    #[error("message bus unavailable: {0}")]
    Unavailable(String),
    /// A stream refused the message because it is full; retry later.
    #[error("message bus full: {0}")]
    Full(String),
    /// The case's data was erased (its key destroyed): nothing of it can be read, and its
    /// id is never used again.
    #[error("the data of case `{0}` was erased")]
    Erased(String),
    /// Any other failure of the bus.
    #[error("message bus error: {0}")]
    Other(String),
}

/// Where a published message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Its sequence in the stream.
    pub sequence: u64,
    /// True when the stream already held a message with the same message id; `sequence`
    /// is then the original's.
    pub duplicate: bool,
}

/// Now, unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A connection to NATS with JetStream.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    cases: std::sync::Arc<tokio::sync::OnceCell<records::JsonBucket>>,
    alerts: std::sync::Arc<tokio::sync::OnceCell<records::JsonBucket>>,
    alert_details: std::sync::Arc<tokio::sync::OnceCell<records::JsonBucket>>,
    delivered: std::sync::Arc<tokio::sync::OnceCell<records::JsonBucket>>,
    idempotency: std::sync::Arc<tokio::sync::OnceCell<records::JsonBucket>>,
    order: std::sync::Arc<tokio::sync::OnceCell<records::JsonBucket>>,
    governance: std::sync::Arc<tokio::sync::OnceCell<records::JsonBucket>>,
    directory: std::sync::Arc<tokio::sync::OnceCell<records::JsonBucket>>,
    in_stream: std::sync::Arc<tokio::sync::OnceCell<jetstream::stream::Stream>>,
    alarms: std::sync::Arc<tokio::sync::OnceCell<records::JsonBucket>>,
    case_keys: std::sync::Arc<tokio::sync::OnceCell<records::JsonBucket>>,
    linkage: std::sync::Arc<tokio::sync::OnceCell<records::JsonBucket>>,
    keyring: std::sync::Arc<keys::Keyring>,
    /// The service this connection speaks for (its NATS connection name less `henvis-`),
    /// which names its alarms.
    service: std::sync::Arc<str>,
    /// When this connection last raised its audit alarm (None: not raised).
    audit_alarm: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// How a henvis component proves itself to NATS: TLS with its certificate, which the
/// server maps to the NATS user of its principal (deploy/nats/auth.conf), and the reply
/// inbox prefix that user may subscribe to.
#[derive(Debug, Clone)]
pub struct NatsIdentity {
    /// The CA that issued the server's certificate.
    pub ca: std::path::PathBuf,
    /// The component's certificate.
    pub cert: std::path::PathBuf,
    /// Its key.
    pub key: std::path::PathBuf,
    /// Its reply subject prefix, [`inbox_prefix`].
    pub inbox_prefix: String,
}

impl NatsIdentity {
    /// The identity of `principal` from a PKI folder (`ca.pem`, `<kind>/<id>.pem`, `.key`).
    pub fn of(pki_dir: &std::path::Path, principal: &henvis_domain::Principal) -> Self {
        let base = pki_dir.join(principal.path());
        Self {
            ca: pki_dir.join("ca.pem"),
            cert: base.with_extension("pem"),
            key: base.with_extension("key"),
            inbox_prefix: inbox_prefix(principal),
        }
    }

    /// `options` connecting over TLS as this identity, with its reply inbox prefix.
    pub fn apply(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        options
            .require_tls(true)
            .add_root_certificates(self.ca.clone())
            .add_client_certificate(self.cert.clone(), self.key.clone())
            .custom_inbox_prefix(&self.inbox_prefix)
    }
}

impl Bus {
    /// Connects to NATS at `url` (one URL, or several separated by commas) as `name`, over
    /// TLS as `identity` when given. Fails when no server can be reached.
    pub async fn connect(url: &str, name: &str, identity: Option<&NatsIdentity>) -> Result<Self, BusError> {
        Self::try_connect(url, name, identity).await.map_err(|(e, _)| e)
    }

    /// [`connect`](Self::connect), waiting while no server answers (a NATS outage at start:
    /// the service keeps trying rather than dies). Refusals (TLS, authorization, a bad
    /// URL) fail at once.
    pub async fn connect_waiting(url: &str, name: &str, identity: Option<&NatsIdentity>) -> Result<Self, BusError> {
        let mut pause = Duration::from_millis(250);
        loop {
            match Self::try_connect(url, name, identity).await {
                Ok(bus) => return Ok(bus),
                Err((e, true)) => {
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "NATS not reachable; waiting");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err((e, false)) => return Err(e),
            }
        }
    }

    /// Connects once; on failure also whether waiting may help (nobody answered).
    async fn try_connect(url: &str, name: &str, identity: Option<&NatsIdentity>) -> Result<Self, (BusError, bool)> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5));
        if let Some(id) = identity {
            options = id.apply(options);
        }
        let client = options
            .connect(
                url.split(',')
                    .map(str::parse)
                    .collect::<Result<Vec<async_nats::ServerAddr>, _>>()
                    .map_err(|e| (BusError::Unavailable(format!("nats url: {e}")), false))?,
            )
            .await
            .map_err(|e| {
                use async_nats::ConnectErrorKind as K;
                let transient = matches!(e.kind(), K::Io | K::TimedOut | K::Dns | K::MaxReconnects);
                (BusError::Unavailable(e.to_string()), transient)
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(5));
        Ok(Self {
            client,
            js,
            cases: Default::default(),
            alerts: Default::default(),
            alert_details: Default::default(),
            delivered: Default::default(),
            idempotency: Default::default(),
            order: Default::default(),
            governance: Default::default(),
            directory: Default::default(),
            in_stream: Default::default(),
            alarms: Default::default(),
            case_keys: Default::default(),
            linkage: Default::default(),
            keyring: Default::default(),
            service: name.strip_prefix("henvis-").unwrap_or(name).into(),
            audit_alarm: Default::default(),
        })
    }

    /// The JetStream context, for consumers.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The core client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes `payload` to `subject` with JetStream de-duplication on `msg_id` and waits
    /// for the stream's acknowledgement.
    pub async fn publish_stored(&self, subject: String, msg_id: &str, payload: Bytes) -> Result<Stored, BusError> {
        if !self.is_connected() {
            return Err(BusError::Unavailable("not connected".into()));
        }
        let ack = self.publish(subject, msg_id, payload).await?;
        ack.await
    }

    /// Publishes without waiting for the acknowledgement; await the returned future to
    /// learn where it was stored. Lets callers keep many publishes in flight.
    pub async fn publish(&self, subject: String, msg_id: &str, payload: Bytes) -> Result<PendingAck, BusError> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        trace::inject_current(&mut headers);
        let fut = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(publish_error)?;
        Ok(PendingAck(fut))
    }

    async fn case_bucket(&self) -> Result<&records::JsonBucket, BusError> {
        self.cases
            .get_or_try_init(|| records::JsonBucket::open(&self.js, BUCKET_CASES))
            .await
    }

    /// The idempotency bucket.
    pub async fn idempotency_bucket(&self) -> Result<&records::JsonBucket, BusError> {
        self.idempotency
            .get_or_try_init(|| records::JsonBucket::open(&self.js, BUCKET_IDEMPOTENCY))
            .await
    }

    /// The delivery-marks bucket.
    pub async fn delivered_bucket(&self) -> Result<&records::JsonBucket, BusError> {
        self.delivered
            .get_or_try_init(|| records::JsonBucket::open(&self.js, BUCKET_DELIVERED))
            .await
    }

    /// The rule-set governance bucket (the admin service's).
    pub async fn governance_bucket(&self) -> Result<&records::JsonBucket, BusError> {
        self.governance
            .get_or_try_init(|| records::JsonBucket::open(&self.js, BUCKET_GOVERNANCE))
            .await
    }

    /// The approved directory changes' bucket.
    pub async fn directory_bucket(&self) -> Result<&records::JsonBucket, BusError> {
        self.directory
            .get_or_try_init(|| records::JsonBucket::open(&self.js, BUCKET_DIRECTORY))
            .await
    }

    /// The alerts bucket.
    pub async fn alert_bucket(&self) -> Result<&records::JsonBucket, BusError> {
        self.alerts
            .get_or_try_init(|| records::JsonBucket::open(&self.js, BUCKET_ALERTS))
            .await
    }

    /// Writes a `stream_full` administrator alert as `writer` ([`ROUTER_WRITER`] or a sector
    /// service's sector): `stream` refused a message from `by` (an agency id or a service
    /// name). At most one per stream, writer and minute, however often the writer retries.
    pub async fn alert_stream_full(&self, writer: &str, stream: &str, by: &str) {
        let now = u64::try_from(unix_now()).unwrap_or_default();
        let alert = henvis_domain::AuditRecord::StreamFull {
            stream: stream.to_owned(),
            by: by.to_owned(),
            at_unix: now,
        };
        let id = format!("full:{stream}:{by}:{}", now / 60);
        if let Err(e) = self.audit(writer, &id, &alert).await {
            tracing::error!(stream, error = %e, "stream-full alert not stored");
        }
    }

    /// Takes the units an event of `bytes` costs from `agency`'s share of IN; false when its
    /// share is used up (the server refuses the unit past the limit; nothing is evicted).
    pub async fn take_quota(&self, agency: &henvis_domain::AgencyId, bytes: usize) -> Result<bool, BusError> {
        let units = bytes.div_ceil(QUOTA_UNIT_BYTES).max(1);
        let mut acks = Vec::with_capacity(units);
        for _ in 0..units {
            acks.push(
                self.js
                    .publish(quota_subject(agency), Bytes::new())
                    .await
                    .map_err(publish_error)?,
            );
        }
        for ack in acks {
            match ack.await.map_err(publish_error) {
                Ok(_) => {}
                Err(BusError::Full(_)) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The bucket of alerted events, redacted for their district.
    pub async fn alert_details_bucket(&self) -> Result<&records::JsonBucket, BusError> {
        self.alert_details
            .get_or_try_init(|| records::JsonBucket::open(&self.js, BUCKET_ALERT_DETAILS))
            .await
    }

    /// Flushes buffered publishes to the server.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }
}

/// A publish whose acknowledgement has not arrived yet.
pub struct PendingAck(jetstream::context::PublishAckFuture);

impl std::future::IntoFuture for PendingAck {
    type Output = Result<Stored, BusError>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let ack = self.0.await.map_err(publish_error)?;
            Ok(Stored {
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            })
        })
    }
}

fn publish_error(e: jetstream::context::PublishError) -> BusError {
    use jetstream::ErrorCode;
    let text = e.to_string();
    // the server's error code decides, never the text
    let code = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code);
    match (e.kind(), code) {
        (PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::StreamNotFound, _) => {
            BusError::Unavailable(text)
        }
        // a stream at its limits with discard-new refuses the message (and keeps the old)
        (_, Some(ErrorCode::STREAM_STORE_FAILED | ErrorCode::INSUFFICIENT_RESOURCES)) => BusError::Full(text),
        _ => BusError::Other(text),
    }
}

mod cases;
mod records;
pub use cases::VersionedCase;
pub use read::Followed;
pub use records::{Change, JsonBucket, Versioned};
pub use stored::{MaxDeliveries, StoredMessage};
mod details;
mod order;
pub use order::CaseTurn;
mod delivered;
pub use delivered::{CASE_PAGE, CaseRevisions, DecisionMark, Delivered};
mod submitted;
pub use submitted::{Opening, Submitted};
mod read;
