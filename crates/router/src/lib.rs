//! The router: the single policy enforcement point. It consumes submitted events from IN,
//! decides per recipient with the policy engine, builds each delivery from the granted
//! fields only, and publishes deliveries, status and audit records. It acknowledges an
//! event only after everything it produced is stored, each under a deterministic message
//! id, so a crash and redelivery create no duplicates.
//!
//! Stateless apart from what it reads from JetStream: run any number of replicas.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream::{
    AckKind,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use futures::StreamExt;
use henvis_bus::{Bus, ROUTER_CONSUMER, STREAM_IN, audit_decision_subject, outbound_subject, status_subject};
use henvis_domain::{AgencyId, CaseId, CaseRecord, Class, ClassSet, Directory, MessageType};
use henvis_policy::{CaseFacts, Decision, RuleSet, Schema, decide, redact};
use henvis_proto::henvis::{
    broker::v1::{Delivery, DeliveryState, Envelope, GetStatusResponse, RecipientStatus},
    events::v1::{Event, event::Kind},
};
use prost::Message;
use sha2::{Digest, Sha256};

/// The rule set shipped with henvis.
pub const DEFAULT_RULES: &str = include_str!("../../../rules/default.toml");

/// Configuration of the router: flags, or `HENVIS_*` environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct RouterConfig {
    /// NATS server URL.
    #[arg(long, env = "HENVIS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Rule file; the shipped default rules when absent.
    #[arg(long, env = "HENVIS_RULES")]
    pub rules: Option<PathBuf>,
    /// Agency directory file; the built-in Danish directory when absent.
    #[arg(long, env = "HENVIS_DIRECTORY")]
    pub directory: Option<PathBuf>,
    /// Address of the router's own gRPC endpoint (health service and reflection).
    #[arg(long, env = "HENVIS_ROUTER_LISTEN", default_value = "127.0.0.1:50050")]
    pub listen: std::net::SocketAddr,
}

/// Routes until `shutdown` resolves while serving the health service and reflection on
/// `listener`.
pub async fn serve(
    router: Arc<Router>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let grpc = henvis_runtime::serve_grpc(listener, tonic::service::Routes::default(), &[], wait());
    let routing = router.run(wait());
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let (a, b) = tokio::join!(grpc, routing);
    a.and(b)
}

/// A running router's shared state.
pub struct Router {
    bus: Bus,
    schema: Schema,
    directory: Directory,
    rules: RuleSet,
}

/// Loads rules and directory, connects and creates the topology.
pub async fn build(config: &RouterConfig) -> anyhow::Result<Arc<Router>> {
    let directory = match &config.directory {
        Some(p) => {
            Directory::from_toml(&std::fs::read_to_string(p).with_context(|| format!("reading `{}`", p.display()))?)?
        }
        None => Directory::denmark()?,
    };
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET)?;
    let (name, text) = match &config.rules {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading `{}`", p.display()))?,
        ),
        None => ("rules/default.toml".to_owned(), DEFAULT_RULES.to_owned()),
    };
    let rules = RuleSet::from_toml(&name, &text, &schema, &directory)?;
    let bus = Bus::connect(&config.nats_url, "henvis-router").await?;
    henvis_bus::Topology::default().ensure(&bus).await?;
    tracing::info!(rule_set_version = rules.version(), "router ready");
    Ok(Arc::new(Router {
        bus,
        schema,
        directory,
        rules,
    }))
}

/// An audit record of one routing decision: ids, classes, rules and a payload hash, never
/// the child's data.
#[derive(serde::Serialize)]
struct AuditDecision<'a> {
    kind: &'static str,
    event_id: &'a str,
    case_id: &'a str,
    message_type: &'a str,
    sender: &'a str,
    actor: &'a str,
    rule_set_version: &'a str,
    payload_sha256: String,
    delivered: Vec<AuditRecipient>,
    withheld: Vec<AuditWithheld>,
}

#[derive(serde::Serialize)]
struct AuditRecipient {
    agency: String,
    classes: Vec<&'static str>,
    rule_ids: Vec<String>,
    legal_bases: Vec<String>,
}

#[derive(serde::Serialize)]
struct AuditWithheld {
    rule_id: String,
    agency: Option<String>,
    reason: &'static str,
}

fn class_numbers(s: ClassSet) -> Vec<i32> {
    s.iter().map(|c| c as i32).collect()
}

impl Router {
    /// Consumes IN until `shutdown` resolves. Finishes the event in hand, then returns;
    /// events not yet acknowledged are redelivered to the next router.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let stream = self.bus.jetstream().get_stream(STREAM_IN).await?;
        let consumer = stream
            .get_or_create_consumer(
                ROUTER_CONSUMER,
                pull::Config {
                    durable_name: Some(ROUTER_CONSUMER.to_owned()),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 1000,
                    ..Default::default()
                },
            )
            .await?;
        let mut messages = consumer.messages().await?;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                m = messages.next() => {
                    let Some(m) = m else { break };
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => { tracing::warn!(error = %e, "router consumer error"); continue; }
                    };
                    match self.route(&m.payload).await {
                        Ok(()) => {
                            if let Err(e) = m.double_ack().await {
                                tracing::warn!(error = %e, "ack not confirmed; the event will be redelivered and de-duplicated");
                            }
                        }
                        Err(RouteError::Poison(why)) => {
                            tracing::error!(reason = why, "inbound message cannot be routed; terminated");
                            let _ = m.ack_with(AckKind::Term).await;
                        }
                        Err(RouteError::Retry(e)) => {
                            tracing::warn!(error = %e, "routing failed; will retry");
                            let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                        }
                    }
                }
            }
        }
        tracing::info!("router stopped");
        Ok(())
    }

    /// Routes one stored envelope: decide, redact, publish, and wait until all is stored.
    async fn route(&self, payload: &[u8]) -> Result<(), RouteError> {
        let env = Envelope::decode(payload).map_err(|_| RouteError::Poison("undecodable envelope"))?;
        let event = env.event.as_ref().ok_or(RouteError::Poison("envelope without event"))?;
        let event_bytes = event.encode_to_vec();
        let (mt, dynamic) = self
            .schema
            .decode_event(&event_bytes)
            .map_err(|_| RouteError::Poison("unknown event kind"))?;
        let sender = env
            .sender
            .as_ref()
            .ok_or(RouteError::Poison("envelope without sender"))?;
        let sender_id = AgencyId::parse(&sender.agency_id).map_err(|_| RouteError::Poison("malformed sender"))?;
        let sector = self
            .directory
            .agency(&sender_id)
            .map(|a| a.sector)
            .ok_or(RouteError::Poison("sender not in directory"))?;
        let case_id = CaseId::parse(&env.case_id).map_err(|_| RouteError::Poison("malformed case id"))?;

        let facts = self.case_facts(&case_id, &env, &sender_id).await?;
        let decision = decide(&self.rules, &self.directory, &mt, &sender_id, sector, &facts);

        let mut acks = Vec::with_capacity(decision.recipients.len() + 2);
        for r in &decision.recipients {
            let redacted = redact(&self.schema, &dynamic, r.classes);
            let event = Event::decode(redacted.event.encode_to_vec().as_slice())
                .map_err(|e| RouteError::Retry(e.to_string()))?;
            let delivery = Delivery {
                delivery_id: 0,
                envelope: Some(Envelope {
                    event_id: env.event_id.clone(),
                    idempotency_key: String::new(),
                    message_type: env.message_type.clone(),
                    sender: env.sender.clone(),
                    case_id: env.case_id.clone(),
                    submitted_at: env.submitted_at,
                    event: Some(event),
                }),
                granted_classes: class_numbers(r.classes),
                withheld_classes: class_numbers(redacted.withheld),
                rule_ids: r.rule_ids.clone(),
                rule_set_version: decision.rule_set_version.clone(),
                attempt: 0,
            };
            let msg_id = format!("{}:{}:{}", env.event_id, r.agency, decision.rule_set_version);
            acks.push(
                self.bus
                    .publish(
                        outbound_subject(&r.agency, &mt),
                        &msg_id,
                        delivery.encode_to_vec().into(),
                    )
                    .await?,
            );
        }
        let audit = self.audit_record(&env, &mt, &sender_id, &decision, &event_bytes);
        let audit_id = format!("decision:{}:{}", env.event_id, decision.rule_set_version);
        acks.push(
            self.bus
                .publish(audit_decision_subject(), &audit_id, audit.into())
                .await?,
        );
        let status = status_record(&env.event_id, &decision);
        let status_id = format!("routed:{}:{}", env.event_id, decision.rule_set_version);
        acks.push(
            self.bus
                .publish(
                    status_subject(&sender_id, &env.event_id),
                    &status_id,
                    status.encode_to_vec().into(),
                )
                .await?,
        );
        for ack in acks {
            ack.await?;
        }
        tracing::info!(
            event_id = %env.event_id,
            case_id = %case_id,
            message_type = %mt,
            delivered = decision.recipients.len(),
            withheld = decision.withheld.len(),
            rule_set_version = %decision.rule_set_version,
            "event routed"
        );
        Ok(())
    }

    /// The case facts for the decision, creating or updating the case record where the
    /// event opens the case or appoints its guardian.
    async fn case_facts(&self, case_id: &CaseId, env: &Envelope, sender: &AgencyId) -> Result<CaseFacts, RouteError> {
        let kind = env.event.as_ref().and_then(|e| e.kind.as_ref());
        let mut current = self.bus.case(case_id).await?;
        if current.is_none()
            && let Some(Kind::SuspectedVictimReported(r)) = kind
        {
            let record = CaseRecord {
                municipality_code: r.municipality_code.clone(),
                opened_by: sender.clone(),
                opened_by_event: env.event_id.clone(),
                guardian: None,
            };
            current = Some(self.bus.create_case(case_id, &record).await?);
        }
        if let (Some(Kind::GuardianAppointed(g)), Some(_)) = (kind, &current) {
            let guardian = AgencyId::parse(&g.guardian_agency_id)
                .map_err(|_| RouteError::Poison("malformed guardian agency id"))?;
            // compare-and-set, so concurrent routers never lose an update
            while let Some(c) = current.take() {
                if c.record.guardian.as_ref() == Some(&guardian) {
                    current = Some(c);
                    break;
                }
                let mut record = c.record.clone();
                record.guardian = Some(guardian.clone());
                if let Some(revision) = self.bus.update_case(case_id, &record, c.revision).await? {
                    current = Some(henvis_bus::VersionedCase { record, revision });
                    break;
                }
                current = self.bus.case(case_id).await?;
            }
        }
        Ok(current
            .map(|c| CaseFacts {
                municipality_code: Some(c.record.municipality_code),
                guardian: c.record.guardian,
            })
            .unwrap_or_default())
    }

    fn audit_record(
        &self,
        env: &Envelope,
        mt: &MessageType,
        sender: &AgencyId,
        d: &Decision,
        event_bytes: &[u8],
    ) -> Vec<u8> {
        let record = AuditDecision {
            kind: "routing_decision",
            event_id: &env.event_id,
            case_id: &env.case_id,
            message_type: mt.as_str(),
            sender: sender.as_str(),
            actor: env.sender.as_ref().map_or("", |s| s.actor_id.as_str()),
            rule_set_version: &d.rule_set_version,
            payload_sha256: hex::encode(Sha256::digest(event_bytes)),
            delivered: d
                .recipients
                .iter()
                .map(|r| AuditRecipient {
                    agency: r.agency.to_string(),
                    classes: r.classes.iter().map(Class::as_str).collect(),
                    rule_ids: r.rule_ids.clone(),
                    legal_bases: r.bases.clone(),
                })
                .collect(),
            withheld: d
                .withheld
                .iter()
                .map(|w| AuditWithheld {
                    rule_id: w.rule_id.clone(),
                    agency: w.recipient.as_ref().map(ToString::to_string),
                    reason: w.reason.describe(),
                })
                .collect(),
        };
        serde_json::to_vec(&record).unwrap_or_default()
    }
}

/// The sender's view of a decision: stored per recipient, withheld without the reason (a
/// reason can itself be sensitive; the guardian and administrators read it in the audit).
fn status_record(event_id: &str, d: &Decision) -> GetStatusResponse {
    let now = Some(std::time::SystemTime::now().into());
    let mut recipients: Vec<RecipientStatus> = d
        .recipients
        .iter()
        .map(|r| RecipientStatus {
            recipient_agency_id: r.agency.to_string(),
            state: DeliveryState::Stored as i32,
            reason: String::new(),
            at: now,
            rule_id: r.rule_ids.join(","),
        })
        .collect();
    recipients.extend(d.withheld.iter().map(|w| RecipientStatus {
        recipient_agency_id: w.recipient.as_ref().map(ToString::to_string).unwrap_or_default(),
        state: DeliveryState::Withheld as i32,
        reason: "withheld by policy".to_owned(),
        at: now,
        rule_id: w.rule_id.clone(),
    }));
    GetStatusResponse {
        event_id: event_id.to_owned(),
        routed: true,
        recipients,
    }
}

/// Why routing an event failed.
#[derive(Debug)]
enum RouteError {
    /// The stored message can never be routed (not written by a sector service).
    Poison(&'static str),
    /// A transient failure; the event is redelivered.
    Retry(String),
}

impl From<henvis_bus::BusError> for RouteError {
    fn from(e: henvis_bus::BusError) -> Self {
        RouteError::Retry(e.to_string())
    }
}
