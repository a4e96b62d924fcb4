//! The router: the single policy enforcement point. It consumes submitted events from IN,
//! decides per recipient with the policy engine, builds each delivery from the granted
//! fields only, and publishes deliveries, status and audit records. It acknowledges an
//! event only after everything it produced is stored, each under a deterministic message
//! id, so a crash and redelivery create no duplicates.
//!
//! Stateless apart from what it reads from JetStream: run any number of replicas.

mod audit;
mod chain;
mod dead_letters;
mod decisions;
mod linkage;
mod plan;
mod reconcile;
mod retention;
mod route;
mod rules;
mod simulate;

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use futures::StreamExt;
use henvis_bus::{Bus, Offered, RoutingConsumer};
use henvis_policy::Schema;
use std::collections::HashMap;

pub use chain::{CHECKPOINT_EVERY, CHECKPOINT_SECS};
pub use reconcile::Report;
pub use rules::{ActiveRules, DEFAULT_RULES};
pub use simulate::{NotRoutable, SimulatedDelivery, Simulation, simulate};

/// Configuration of the router: flags, or `HENVIS_*` environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct RouterConfig {
    /// NATS, PKI, directory and stream settings shared with the sector services.
    #[command(flatten)]
    pub service: henvis_runtime::ServiceConfig,
    /// Rule file used until a rule set is published to the rules bucket; the shipped
    /// default rules when absent.
    #[arg(long, env = "HENVIS_RULES")]
    pub rules: Option<PathBuf>,
    /// Address of the router's own gRPC endpoint (health service and reflection).
    #[arg(long, env = "HENVIS_ROUTER_LISTEN", default_value = "127.0.0.1:50050")]
    pub listen: std::net::SocketAddr,
    /// Seconds before a delivery would expire unacknowledged that an administrator alert
    /// is raised.
    #[arg(long, env = "HENVIS_EXPIRY_WARNING_SECS", default_value_t = 3 * 24 * 3600)]
    pub expiry_warning_secs: u64,
    /// Seconds between scans for deliveries about to expire.
    #[arg(long, env = "HENVIS_EXPIRY_SCAN_SECS", default_value_t = 3600)]
    pub expiry_scan_secs: u64,
    /// Seconds between looks for closed cases whose retention has ended.
    #[arg(long, env = "HENVIS_RETENTION_SCAN_SECS", default_value_t = 3600)]
    pub retention_scan_secs: u64,
    /// Seconds after its closure that a case's record, alerts and alert details are erased
    /// (the audit keeps its ids for its own retention).
    #[arg(long, env = "HENVIS_CLOSED_CASE_RETENTION_SECS", default_value_t = 365 * 24 * 3600)]
    pub closed_case_retention_secs: u64,
    /// Events one router routes at once (of different cases; one case's events one at a
    /// time, in order). Routing an event is a chain of NATS round trips, so throughput
    /// grows with this until nats-server's CPU is the limit.
    #[arg(long, env = "HENVIS_ROUTER_IN_FLIGHT", default_value_t = DEFAULT_IN_FLIGHT)]
    pub in_flight: usize,
    /// The Ed25519 key (PKCS#8 DER) audit checkpoints are signed with; default
    /// `<pki dir>/service/audit-signing.p8`. Without it the chain is kept but not signed.
    #[arg(long, env = "HENVIS_AUDIT_SIGNING_KEY")]
    pub audit_signing_key: Option<PathBuf>,
}

/// A running router's shared state.
pub struct Router {
    bus: Bus,
    schema: Schema,
    directory: Arc<henvis_runtime::LiveDirectory>,
    rules: ActiveRules,
    tls: Arc<henvis_runtime::tls::TlsServer>,
    keeper: Arc<dead_letters::Keeper>,
    signer: Option<chain::Signer>,
    /// How long a police deferral of a guardian's report lasts at most, seconds.
    deferral_max_secs: i64,
    /// How long a closed case's data is kept, seconds.
    closed_case_retention_secs: i64,
    /// How often closed cases are looked at.
    retention_scan: Duration,
    /// Events routed at once.
    in_flight: usize,
}

impl Router {
    /// The version of the rule set deciding now.
    pub fn rule_set_version(&self) -> String {
        self.rules.current().version().to_owned()
    }
}

/// Validates everything `config` names before any port opens (`--check-config`).
pub fn check(config: &RouterConfig) -> anyhow::Result<()> {
    config
        .service
        .check(&henvis_domain::Principal::Service("router".into()), true)?;
    anyhow::ensure!(
        (1..=10_000).contains(&config.in_flight),
        "in_flight: expected 1 to 10000 events, got {}",
        config.in_flight
    );
    if let Some(p) = &config.rules {
        check_rule_file(p, &config.service)?;
    }
    if let Some(p) = &config.audit_signing_key {
        chain::Signer::load(p).map_err(|e| anyhow::anyhow!("audit_signing_key: {e}"))?;
    }
    Ok(())
}

/// Validates the rule file at `path` against the schema and the configured directory.
pub fn check_rule_file(path: &std::path::Path, service: &henvis_runtime::ServiceConfig) -> anyhow::Result<()> {
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET)?;
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("rules: reading `{}`: {e}", path.display()))?;
    henvis_policy::RuleSet::from_toml(&path.display().to_string(), &text, &schema, &service.directory()?)
        .map_err(|e| anyhow::anyhow!("rules: {e}"))?;
    Ok(())
}

/// The router's whole life, as its binary runs it: the configuration (file, environment,
/// flags; `--check-config`), the operator port, NATS (waiting through an outage), then
/// routing and its gRPC port until SIGTERM.
pub async fn main(parsed: henvis_runtime::cli::Parsed<RouterConfig>) -> anyhow::Result<()> {
    henvis_runtime::telemetry::init("henvis-router", &parsed.args.service.telemetry)?;
    if parsed.check(|| check(&parsed.args))? {
        return Ok(());
    }
    let config = parsed.args;
    henvis_runtime::run(config.service.metrics_listen, config.listen, build(&config), serve).await
}

/// Loads the directory and rules, connects and creates the topology.
pub async fn build(config: &RouterConfig) -> anyhow::Result<Arc<Router>> {
    let router = henvis_domain::Principal::Service("router".into());
    let directory = config.service.directory()?;
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET)?;
    let tls =
        henvis_runtime::tls::TlsServer::load(henvis_runtime::tls::PkiFiles::of(&config.service.pki_dir, &router))?;
    let bus = config.service.connect_sealing(&router).await?;
    let directory = henvis_runtime::LiveDirectory::load(directory, &bus).await?;
    let rules = ActiveRules::load(&bus, config.rules.as_deref(), &schema, &directory.current()).await?;
    let key = config
        .audit_signing_key
        .clone()
        .unwrap_or_else(|| config.service.pki_dir.join("service/audit-signing.p8"));
    let signer = match chain::Signer::load(&key) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "no audit signing key: the audit chain is kept, but no checkpoint is signed");
            None
        }
    };
    tracing::info!(rule_set_version = %rules.current().version(), "router ready");
    Ok(Arc::new(Router {
        bus: bus.clone(),
        schema,
        directory,
        rules,
        tls,
        keeper: Arc::new(dead_letters::Keeper {
            bus: bus.clone(),
            retention: config.service.retention(),
            expiry_warning: Duration::from_secs(config.expiry_warning_secs),
            expiry_scan: Duration::from_secs(config.expiry_scan_secs.max(1)),
        }),
        signer,
        deferral_max_secs: config.service.deferral_max_secs(),
        closed_case_retention_secs: i64::try_from(config.closed_case_retention_secs).unwrap_or(i64::MAX),
        retention_scan: Duration::from_secs(config.retention_scan_secs.max(1)),
        in_flight: config.in_flight,
    }))
}

/// Routes until `shutdown` resolves, follows published rule sets, and serves the health
/// service and reflection on `listener`.
pub async fn serve(
    router: Arc<Router>,
    listener: tokio::net::TcpListener,
    readiness: henvis_runtime::Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let wait = henvis_runtime::fan_out(shutdown);
    henvis_runtime::metrics::watch_nats(router.bus.client().clone(), readiness.clone());
    // health and reflection, for henvis services and administrators
    let dir = router.directory.clone();
    let admit: henvis_runtime::Admit = Arc::new(move |p| match p {
        henvis_domain::Principal::Service(_) => Ok(()),
        henvis_domain::Principal::Admin(a) if dir.current().is_administrator(a) => Ok(()),
        henvis_domain::Principal::Admin(_) => Err("an administrator the directory does not list (or disabled)".into()),
        _ => Err(
            "this port serves henvis services and administrators only; agencies and contact persons \
                  call their sector's service"
                .into(),
        ),
    });
    let grpc = henvis_runtime::serve_grpc(
        listener,
        router.tls.clone(),
        admit,
        tonic::service::Routes::default(),
        &[],
        readiness,
        wait(),
    );
    let reload = router.clone().follow_rules(wait());
    let directory = tokio::spawn(router.directory.clone().follow(router.bus.clone(), wait()));
    let dead = tokio::spawn(dead_letters::run(router.keeper.clone(), wait()));
    let expiry = tokio::spawn(dead_letters::watch_expiry(router.keeper.clone(), wait()));
    let questions = tokio::spawn(decisions::serve(router.clone(), wait()));
    let chain = tokio::spawn(chain::run(router.clone(), wait()));
    let retention = tokio::spawn(retention::run(router.clone(), wait()));
    let backlog = tokio::spawn(measure_backlog(router.clone(), wait()));
    tokio::spawn(backfill_guardian_index(router.clone()));
    let routing = router.run(wait());
    let (a, b, c) = tokio::join!(grpc, routing, reload);
    let _ = tokio::join!(dead, expiry, questions, directory, chain, retention, backlog);
    a.and(b).and(c)
}

/// Notes the guardian of every case standing when the guardian index began (new
/// appointments are noted as they are routed), once per deployment: a guardian's list of
/// cases then holds its older cases too. Idempotent; several routers may run it at once.
async fn backfill_guardian_index(router: Arc<Router>) {
    match router.bus.guardian_index_built().await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "guardian index state unreadable; the next start tries again");
            return;
        }
    }
    // every revision of every case record, a chunk at a time (memory bounded however many
    // cases there are): a guardian noted from an older revision is harmless, the list
    // answers from each case record as it stands. Where a stopped build got to is noted
    // after each chunk, and the next start goes on from there.
    let mut from = match router.bus.guardian_index_from().await {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(error = %e, "guardian index progress unreadable; the next start tries again");
            return;
        }
    };
    let (mut revisions, mut noted) = (0usize, 0usize);
    while let Some(f) = from {
        let page = match router.bus.case_revisions(f).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "case records unreadable; the guardian index is built at the next start");
                return;
            }
        };
        let guardians: std::collections::BTreeSet<(&henvis_domain::AgencyId, &str)> = page
            .revisions
            .iter()
            .filter_map(|(case, r)| Some((r.as_ref()?.guardian.as_ref()?, case.as_str())))
            .collect();
        for (guardian, case) in guardians {
            if let Err(e) = router.bus.index_guardian(guardian, case).await {
                tracing::warn!(error = %e, "guardian index not built; the next start tries again");
                return;
            }
            noted += 1;
        }
        revisions += page.revisions.len();
        from = page.next;
        if let Some(next) = from
            && let Err(e) = router.bus.note_guardian_index_from(next).await
        {
            tracing::warn!(error = %e, "guardian index progress not noted; a later start reads these cases again");
        }
    }
    match router.bus.mark_guardian_index_built().await {
        Ok(()) => tracing::info!(revisions, guardians_noted = noted, "guardian index built"),
        Err(e) => tracing::warn!(error = %e, "guardian index built but not marked; the next start notes again"),
    }
}

/// How often the router measures every agency's inbox backlog for the metrics.
const BACKLOG_SCAN: Duration = Duration::from_secs(15);

/// Keeps `henvis_inbox_backlog` and `henvis_inbox_oldest_unacked_seconds` for every agency
/// in the directory (0 when nothing waits) until `shutdown`.
async fn measure_backlog(router: Arc<Router>, shutdown: impl Future<Output = ()> + Send) {
    let mut tick = tokio::time::interval(BACKLOG_SCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let waiting = match router.bus.inbox_backlog().await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "inbox backlog not measured");
                continue;
            }
        };
        let m = henvis_runtime::metrics::metrics();
        let now = std::time::SystemTime::now();
        let mut found: HashMap<String, (u64, u64)> = waiting
            .into_iter()
            .map(|(agency, n, oldest)| (agency, (n, now.duration_since(oldest).map_or(0, |d| d.as_secs()))))
            .collect();
        let mut agencies: std::collections::BTreeSet<String> = router
            .directory
            .current()
            .agencies()
            .map(|a| a.id.to_string())
            .collect();
        agencies.extend(found.keys().cloned());
        for agency in agencies {
            let (n, age) = found.remove(&agency).unwrap_or((0, 0));
            let label = henvis_runtime::metrics::AgencyLabel { agency };
            m.inbox_backlog
                .get_or_create(&label)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
            m.inbox_oldest_seconds
                .get_or_create(&label)
                .set(i64::try_from(age).unwrap_or(i64::MAX));
        }
    }
}

impl Router {
    /// Consumes IN until `shutdown` resolves. Finishes the event in hand, then returns;
    /// events not yet acknowledged are redelivered to the next router.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        // Many events in flight, one at a time per case: events of one case are decided in
        // the order they were stored; events of different cases do not wait for each other.
        // Each case's events form a queue: an event's task waits for the one before it of
        // its case (its completion signal, the last one kept per case), so this loop never
        // waits for a case and an event of a busy case holds up no other case's.
        let mut in_flight = tokio::task::JoinSet::new();
        let mut case_tails: HashMap<String, tokio::sync::oneshot::Receiver<()>> = HashMap::new();
        tokio::pin!(shutdown);
        // the consumer is opened again whenever NATS goes away and comes back
        'consume: loop {
            let mut messages = match self
                .bus
                .routing_consumer(RoutingConsumer {
                    batch: self.in_flight,
                    // what a crashed router held is offered to the others after this
                    ack_wait: ACK_WAIT,
                    // events held for absent recipients wait here too; room for many
                    max_ack_pending: 20_000,
                })
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "router consumer unavailable; retrying");
                    tokio::select! {
                        () = &mut shutdown => break 'consume,
                        () = tokio::time::sleep(RECONNECT_PAUSE) => continue 'consume,
                    }
                }
            };
            loop {
                tokio::select! {
                    () = &mut shutdown => break 'consume,
                    Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                        // a case whose last event is done needs no queue: the finished
                        // event's case is looked at (every case only after a panic)
                        let finished = |done: &mut tokio::sync::oneshot::Receiver<()>| {
                            !matches!(done.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Empty))
                        };
                        match joined {
                            Ok(case) => {
                                if case_tails.get_mut(&case).is_some_and(finished) {
                                    case_tails.remove(&case);
                                }
                            }
                            Err(_) => case_tails.retain(|_, done| !finished(done)),
                        }
                    }
                    m = messages.next(), if in_flight.len() < self.in_flight => {
                        let m = match m {
                            Some(Ok(m)) => m,
                            Some(Err(e)) => { tracing::warn!(error = %e, "router consumer error"); continue; }
                            None => continue 'consume,
                        };
                        let case = henvis_bus::case_of_inbound_subject(m.subject())
                            .map(|c| c.to_string())
                            .unwrap_or_default();
                        let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
                        let before = case_tails.insert(case.clone(), done_rx);
                        let router = self.clone();
                        // the trace the event's Submit started continues here
                        let span = m.span("route");
                        in_flight.spawn(tracing::Instrument::instrument(async move {
                            // the case's previous event is done when its signal is
                            // dropped; a long queue keeps this one from being offered to
                            // another router meanwhile, for a while: should the one before
                            // never finish here, this one goes to another router after all
                            if let Some(mut before) = before {
                                let mut signals = 0;
                                loop {
                                    tokio::select! {
                                        _ = &mut before => break,
                                        () = tokio::time::sleep(ACK_WAIT / 2), if signals < QUEUED_PROGRESS_MAX => {
                                            signals += 1;
                                            m.working().await;
                                        }
                                    }
                                }
                            }
                            router.handle(m).await;
                            drop(done);
                            case
                        }, span));
                    }
                }
            }
        }
        // finish what is in hand; nothing half-done is acknowledged
        while in_flight.join_next().await.is_some() {}
        tracing::info!("router stopped");
        Ok(())
    }

    /// Routes one inbound message and acknowledges it only when everything is stored.
    async fn handle(&self, m: Offered) {
        let in_sequence = m.sequence();
        // per-case order across router replicas: wait while an earlier event of the case
        // has not been routed (by this router or another)
        let case = henvis_bus::case_of_inbound_subject(m.subject());
        // the payload is opened (a new case's key is one read) while the turn is read
        let turn_read = async {
            match &case {
                Some(case) => Some(self.bus.turn_of_case(case, in_sequence).await),
                None => None,
            }
        };
        let (turn_read, opened) = tokio::join!(turn_read, self.bus.open(m.payload()));
        let turn = match (&case, turn_read) {
            (Some(case), Some(read)) => match read {
                Ok(Some(turn)) => Some((case, turn)),
                Ok(None) => {
                    tracing::debug!(case_id = %case, seq = in_sequence, "an earlier event of the case is pending; waiting");
                    m.retry_after(ORDER_PAUSE).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, seq = in_sequence, "routing order unknown; will retry");
                    m.retry_after(Duration::from_secs(1)).await;
                    return;
                }
            },
            _ => None,
        };
        // an event offered before, or routed before (its case's mark covers it), may have
        // deliveries stored by an earlier attempt
        let redelivered = !m.first_offer() || turn.as_ref().is_some_and(|(_, t)| t.covers(in_sequence));
        // the case's routed mark moves only once everything the event produced is stored
        let routed = || async {
            match turn {
                Some((case, turn)) => self.bus.mark_routed(case, in_sequence, turn).await,
                None => Ok(()),
            }
        };
        match self
            .route(m.subject(), m.payload(), opened, in_sequence, redelivered)
            .await
        {
            Ok(()) => {
                if let Err(e) = routed().await {
                    tracing::warn!(error = %e, seq = in_sequence, "routing order not recorded; will route again");
                    m.retry_after(Duration::from_secs(1)).await;
                    return;
                }
                if let Err(e) = m.done().await {
                    tracing::warn!(error = %e, "ack not confirmed; the event will be redelivered and de-duplicated");
                }
            }
            Err(route::RouteError::Poison(why)) => {
                // never dropped silently: kept in DEAD with an administrator alert first
                tracing::error!(reason = why, seq = in_sequence, "inbound message cannot be routed");
                let id = format!("poison:{in_sequence}");
                let alert = henvis_domain::AuditRecord::UnroutableEvent {
                    in_sequence,
                    reason: why.to_owned(),
                };
                let kept = self
                    .bus
                    .publish_stored(henvis_bus::dead_inbound_subject(), &id, m.payload().clone())
                    .await;
                let alerted = self.bus.audit(henvis_bus::ROUTER_WRITER, &id, &alert).await;
                if kept.is_ok() && alerted.is_ok() && routed().await.is_ok() {
                    henvis_runtime::metrics::metrics()
                        .dead_letters
                        .get_or_create(&henvis_runtime::metrics::DeadLetterLabels {
                            reason: "unroutable".into(),
                        })
                        .inc();
                    m.finish_unroutable().await;
                } else {
                    m.retry_after(FULL_PAUSE).await;
                }
            }
            Err(route::RouteError::Retry(e)) => {
                tracing::warn!(error = %e, seq = in_sequence, "routing failed; will retry");
                m.retry_after(Duration::from_secs(1)).await;
            }
            Err(route::RouteError::Held(recipient)) => {
                // the recipient's share of OUT is full (it is not taking its deliveries):
                // the event waits in IN, longer each time, and nobody else's deliveries do
                let attempt = m.attempt().clamp(1, 100) as u32;
                let pause = (FULL_PAUSE * attempt).min(HELD_PAUSE_MAX);
                tracing::warn!(recipient = %recipient, seq = in_sequence, pause_secs = pause.as_secs(), "a recipient's share of the deliveries stream is full; the event waits");
                self.bus
                    .alert_stream_full(henvis_bus::ROUTER_WRITER, henvis_bus::STREAM_OUT, recipient.as_str())
                    .await;
                m.retry_after(pause).await;
            }
            Err(route::RouteError::Full(e)) => {
                // the deliveries (or status, audit) stream is full: nothing is evicted, the
                // event waits in IN and is routed once agencies have taken their deliveries
                tracing::error!(error = %e, seq = in_sequence, "an output stream is full; will retry");
                self.bus
                    .alert_stream_full(
                        henvis_bus::ROUTER_WRITER,
                        henvis_bus::STREAM_OUT,
                        henvis_bus::ROUTER_WRITER,
                    )
                    .await;
                m.retry_after(FULL_PAUSE).await;
            }
        }
    }
}

/// Events one router routes at once unless configured otherwise.
pub const DEFAULT_IN_FLIGHT: usize = 256;

/// How long an unacknowledged event stays with one router before another gets it.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// How often an event waiting behind its case's previous one keeps it from other routers
/// (every half ack wait: a minute in all).
const QUEUED_PROGRESS_MAX: u32 = 12;
/// Pause before trying an event again whose case has an earlier event pending.
const ORDER_PAUSE: Duration = Duration::from_millis(100);
/// Pause before routing an event again after an output stream was full.
const FULL_PAUSE: Duration = Duration::from_secs(5);
/// Longest pause before routing again an event held for a recipient whose share is full.
const HELD_PAUSE_MAX: Duration = Duration::from_secs(15);
/// Pause before opening the consumer again after NATS went away.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
