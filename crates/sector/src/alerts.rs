//! Case alerts for police district contact persons: a live feed of the district's alerts
//! (open ones first, then changes, with heartbeats and a resume position), claim and hand
//! over, the authorised detail fetch with a read receipt, and escalation of urgent alerts
//! left unclaimed past their deadline to the national unit. Alert state lives in the alerts
//! bucket, so deadlines survive restarts of any service, and any number of police service
//! replicas may run: every change is a compare-and-set.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use henvis_bus::inbound_subject;
use henvis_domain::{
    ALERT_CLAIMED, ALERT_CLOSED_AS, ALERT_DETAILS_READ, ALERT_HANDED_OVER_TO, ALERT_REOPENED, AgencyId, AlertRecord,
    AlertState, AlertStep, AlertStepRecord, AuditRecord, CaseId, Class, ClassSet, EventId, MessageType, PersonId,
    Sector, Urgency,
};
use henvis_proto::henvis::{
    broker::v1::{Envelope, Heartbeat, Sender},
    events::v1::{AlertEscalated, Event, event::Kind},
    police::v1::{
        Alert, AlertUpdate, AlertsRequest, ClaimAlertRequest, CloseAlertRequest, FetchAlertDetailsRequest,
        FetchAlertDetailsResponse, HandOverAlertRequest, ListAlertsRequest, ListAlertsResponse, ReopenAlertRequest,
        alert_service_server::AlertService, alert_update,
    },
};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::{ApiError, Caller, Core};

/// Escalation settings of the police service.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertConfig {
    /// Seconds an urgent alert may stay unclaimed before it is escalated.
    #[arg(long, env = "HENVIS_URGENT_ALERT_DEADLINE_SECS", default_value_t = 900)]
    pub urgent_deadline_secs: u64,
    /// Seconds a normal alert may stay unclaimed before it is escalated; 0: never.
    #[arg(long, env = "HENVIS_NORMAL_ALERT_DEADLINE_SECS", default_value_t = 0)]
    pub normal_deadline_secs: u64,
    /// The national unit unclaimed alerts are escalated to.
    #[arg(long, env = "HENVIS_ESCALATE_TO", default_value = "politi-nsk")]
    pub escalate_to: String,
    /// Milliseconds between deadline checks.
    #[arg(long, env = "HENVIS_ESCALATION_TICK_MS", default_value_t = 1000)]
    pub tick_ms: u64,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            urgent_deadline_secs: 900,
            normal_deadline_secs: 0,
            escalate_to: "politi-nsk".into(),
            tick_ms: 1000,
        }
    }
}

use henvis_runtime::unix_now as now;

fn ts(secs: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

impl AlertConfig {
    /// The escalation deadline of an alert, if it has one.
    fn deadline(&self, a: &AlertRecord) -> Option<i64> {
        let secs = if a.urgency == Urgency::Urgent {
            self.urgent_deadline_secs
        } else {
            self.normal_deadline_secs
        };
        (secs > 0 && a.escalated_from.is_none()).then(|| a.open_since() + secs as i64)
    }
}

/// The contact person calling, and their district.
fn contact_person(caller: &Caller) -> Result<(PersonId, AgencyId), ApiError> {
    match &caller.person {
        Some(p) => Ok((p.clone(), caller.agency.clone())),
        None => Err(ApiError::PermissionDenied(
            "alerts are for contact persons: call with a contact person's own credential".into(),
        )),
    }
}

fn to_pb(a: &AlertRecord, revision: u64, config: &AlertConfig) -> Alert {
    use henvis_proto::henvis::police::v1::AlertState as Pb;
    let (state, claimed_by, state_at) = match &a.state {
        AlertState::Open => (Pb::Open, String::new(), a.raised_at),
        AlertState::Claimed { by, at } => (Pb::Claimed, by.to_string(), *at),
        AlertState::Escalated { at, .. } => (Pb::Escalated, String::new(), *at),
        AlertState::Closed { by, at, .. } => (Pb::Closed, by.to_string(), *at),
    };
    Alert {
        alert_id: a.alert_id.to_string(),
        case_id: a.case_id.clone(),
        kind: a.kind.clone(),
        urgency: a.urgency.as_str().to_owned(),
        district_agency_id: a.district.to_string(),
        raised_at: ts(a.raised_at),
        state: state as i32,
        claimed_by,
        state_at: ts(state_at),
        escalated_from: a.escalated_from.as_ref().map(ToString::to_string).unwrap_or_default(),
        deadline: if a.state == AlertState::Open {
            config.deadline(a).and_then(ts)
        } else {
            None
        },
        revision,
        outcome: match &a.state {
            AlertState::Closed { outcome, .. } => outcome_number(outcome),
            _ => 0,
        },
    }
}

fn alert_key(district: &AgencyId, alert_id: &str) -> Result<String, ApiError> {
    let id =
        EventId::parse(alert_id).map_err(|_| ApiError::field("alert_id", "an alert id as sent on the alert stream"))?;
    Ok(format!("{district}.{id}"))
}

/// The police service's alert API.
pub struct Alerts(pub Arc<Core>);

type AlertStream = Pin<Box<dyn Stream<Item = Result<AlertUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl AlertService for Alerts {
    type AlertsStream = AlertStream;

    async fn alerts(&self, request: Request<AlertsRequest>) -> Result<Response<AlertStream>, Status> {
        let caller = self.0.caller(request.extensions())?;
        let (person, district) = contact_person(&caller)?;
        let resume_after = request.into_inner().resume_after;
        let bucket = self.0.bus.alert_bucket().await.map_err(ApiError::from)?;
        let prefix = format!("{district}.");
        let open_now = keys(bucket).await?.iter().filter(|k| k.starts_with(&prefix)).count();
        // the district's current alerts first (last value per key), then every change
        let mut watch = bucket
            .watch::<AlertRecord>(&format!("{district}.*"))
            .await
            .map_err(ApiError::from)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<AlertUpdate, Status>>(64);
        let core = self.0.clone();
        tracing::info!(person = %person, district = %district, "alert stream opened");
        tokio::spawn(async move {
            let mut heartbeat = tokio::time::interval(core.heartbeat);
            heartbeat.tick().await;
            // with nothing stored, the watch says nothing: say caught up at once
            let mut caught_up = open_now == 0;
            if caught_up
                && tx
                    .send(Ok(AlertUpdate {
                        kind: Some(alert_update::Kind::CaughtUp(true)),
                    }))
                    .await
                    .is_err()
            {
                return;
            }
            loop {
                tokio::select! {
                    e = watch.next() => {
                        let Some(Ok(e)) = e else { break };
                        if e.revision > resume_after
                            && let Some(a) = &e.record {
                                let update = AlertUpdate { kind: Some(alert_update::Kind::Alert(to_pb(a, e.revision, &core.alerts))) };
                                if tx.send(Ok(update)).await.is_err() { break; }
                            }
                        if !caught_up && e.behind == 0 {
                            caught_up = true;
                            if tx.send(Ok(AlertUpdate { kind: Some(alert_update::Kind::CaughtUp(true)) })).await.is_err() { break; }
                        }
                    }
                    _ = heartbeat.tick() => {
                        let hb = AlertUpdate { kind: Some(alert_update::Kind::Heartbeat(Heartbeat { at: Some(std::time::SystemTime::now().into()) })) };
                        if tx.send(Ok(hb)).await.is_err() { break; }
                    }
                }
            }
            tracing::info!(person = %person, "alert stream closed");
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn list_alerts(&self, request: Request<ListAlertsRequest>) -> Result<Response<ListAlertsResponse>, Status> {
        let caller = self.0.caller(request.extensions())?;
        let (_, district) = contact_person(&caller)?;
        let bucket = self.0.bus.alert_bucket().await.map_err(ApiError::from)?;
        let prefix = format!("{district}.");
        let mut alerts = Vec::new();
        for key in keys(bucket).await?.into_iter().filter(|k| k.starts_with(&prefix)) {
            if let Some(v) = bucket.get::<AlertRecord>(&key).await.map_err(ApiError::from)?
                && !matches!(v.record.state, AlertState::Closed { .. })
            {
                alerts.push(to_pb(&v.record, v.revision, &self.0.alerts));
            }
        }
        alerts.sort_by_key(|a| a.raised_at.map(|t| t.seconds));
        Ok(Response::new(ListAlertsResponse { alerts }))
    }

    async fn claim_alert(&self, request: Request<ClaimAlertRequest>) -> Result<Response<Alert>, Status> {
        let caller = self.0.caller(request.extensions())?;
        let (person, district) = contact_person(&caller)?;
        let key = alert_key(&district, &request.into_inner().alert_id)?;
        let at = now();
        let v = transition(&self.0, &key, |a| match &a.state {
            AlertState::Claimed { by, .. } if by == &person => Ok(false),
            AlertState::Claimed { by, at } => Err(format!(
                "alert already claimed by `{by}` at {at}; ask them to hand it over"
            )),
            _ => {
                a.state = AlertState::Claimed { by: person.clone(), at };
                a.history.push((ALERT_CLAIMED.into(), person.to_string(), at));
                Ok(true)
            }
        })
        .await?;
        tracing::info!(person = %person, alert_id = %v.record.alert_id, "alert claimed");
        // a retry of a claim already made records the step it made (once)
        audit_step(&self.0, &v.record, &person, Step::Claimed).await?;
        Ok(Response::new(to_pb(&v.record, v.revision, &self.0.alerts)))
    }

    async fn hand_over_alert(&self, request: Request<HandOverAlertRequest>) -> Result<Response<Alert>, Status> {
        let caller = self.0.caller(request.extensions())?;
        let (person, district) = contact_person(&caller)?;
        let req = request.into_inner();
        let key = alert_key(&district, &req.alert_id)?;
        let to = PersonId::parse(&req.to_person_id)
            .ok()
            .filter(|p| {
                let dir = self.0.directory.current();
                dir.contact_person(p) == Some(&district) && !dir.is_disabled_person(p)
            })
            .ok_or_else(|| ApiError::field("to_person_id", "a contact person of your district"))?;
        let at = now();
        let v = transition(&self.0, &key, |a| match &a.state {
            AlertState::Claimed { by, .. } if by == &person => {
                a.state = AlertState::Claimed { by: to.clone(), at };
                a.history
                    .push((format!("{ALERT_HANDED_OVER_TO}{to}"), person.to_string(), at));
                Ok(true)
            }
            _ => Err("only the contact person who claimed the alert may hand it over".to_owned()),
        })
        .await?;
        audit_step(&self.0, &v.record, &person, Step::HandedOver).await?;
        Ok(Response::new(to_pb(&v.record, v.revision, &self.0.alerts)))
    }

    async fn close_alert(&self, request: Request<CloseAlertRequest>) -> Result<Response<Alert>, Status> {
        let caller = self.0.caller(request.extensions())?;
        let (person, district) = contact_person(&caller)?;
        let req = request.into_inner();
        let key = alert_key(&district, &req.alert_id)?;
        let outcome = outcome_name(req.outcome).ok_or_else(|| {
            ApiError::field(
                "outcome",
                "how the alert ends: CHILD_SAFE, INVESTIGATION_OPENED, REFERRED, NO_ACTION or DUPLICATE",
            )
        })?;
        let at = now();
        let v = transition(&self.0, &key, |a| match &a.state {
            AlertState::Closed { by, .. } if by == &person => Ok(false),
            AlertState::Claimed { by, .. } if by == &person => {
                a.state = AlertState::Closed {
                    by: person.clone(),
                    at,
                    outcome: outcome.to_owned(),
                };
                a.history
                    .push((format!("{ALERT_CLOSED_AS}{outcome}"), person.to_string(), at));
                Ok(true)
            }
            _ => Err("only the contact person who holds the alert (claimed it) may close it".to_owned()),
        })
        .await?;
        tracing::info!(person = %person, alert_id = %v.record.alert_id, outcome, "alert closed");
        audit_step(&self.0, &v.record, &person, Step::Closed).await?;
        Ok(Response::new(to_pb(&v.record, v.revision, &self.0.alerts)))
    }

    async fn reopen_alert(&self, request: Request<ReopenAlertRequest>) -> Result<Response<Alert>, Status> {
        let caller = self.0.caller(request.extensions())?;
        let (person, district) = contact_person(&caller)?;
        let key = alert_key(&district, &request.into_inner().alert_id)?;
        let at = now();
        let v = transition(&self.0, &key, |a| match &a.state {
            AlertState::Closed { .. } => {
                a.state = AlertState::Open;
                a.history.push((ALERT_REOPENED.into(), person.to_string(), at));
                Ok(true)
            }
            _ => Err("only a closed alert can be reopened".to_owned()),
        })
        .await?;
        tracing::info!(person = %person, alert_id = %v.record.alert_id, "alert reopened");
        audit_step(&self.0, &v.record, &person, Step::Reopened).await?;
        Ok(Response::new(to_pb(&v.record, v.revision, &self.0.alerts)))
    }

    async fn fetch_alert_details(
        &self,
        request: Request<FetchAlertDetailsRequest>,
    ) -> Result<Response<FetchAlertDetailsResponse>, Status> {
        let caller = self.0.caller(request.extensions())?;
        let (person, district) = contact_person(&caller)?;
        let key = alert_key(&district, &request.into_inner().alert_id)?;
        let bucket = self.0.bus.alert_bucket().await.map_err(ApiError::from)?;
        // an alert of another district reads exactly like one that does not exist
        let v = bucket
            .get::<AlertRecord>(&key)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::PermissionDenied("no such alert in your district".into()))?;
        let a = &v.record;
        // the event as the router redacted it for the district when it raised the alert
        let stored = self
            .0
            .bus
            .alert_details(&key)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::Unavailable("the alert's details are not stored yet".into()))?;
        let opened = self.0.bus.open(&stored).await.map_err(ApiError::from)?;
        let env = Envelope::decode(opened.plaintext.as_slice())
            .map_err(|e| ApiError::Internal(format!("stored envelope: {e}")))?;
        if env.event_id != a.alert_id.to_string() {
            return Err(ApiError::Internal("alert and stored event disagree".into()).into());
        }
        // need-to-know: exactly the classes the router granted the district (applied again)
        let granted: ClassSet = a
            .granted_classes
            .iter()
            .filter_map(|n| n.parse::<Class>().ok())
            .collect();
        let event_bytes = env.event.as_ref().map(Message::encode_to_vec).unwrap_or_default();
        let redacted = henvis_policy::redact(&self.0.schema, &event_bytes, granted).map_err(ApiError::from)?;
        let event = Event::decode(redacted.event.as_slice()).map_err(|e| ApiError::Internal(e.to_string()))?;
        let case = CaseId::parse(&a.case_id).map_err(|e| ApiError::Internal(e.to_string()))?;
        let at = now();
        let receipt = AuditRecord::AlertDetailsRead {
            alert_id: a.alert_id.to_string(),
            case_id: case.to_string(),
            district: district.to_string(),
            person: person.to_string(),
            classes: a.granted_classes.clone(),
            at,
        };
        let step = AlertStep::recorded_by(&receipt).ok_or_else(|| ApiError::Internal("a receipt is a step".into()))?;
        // the read receipt is stored before the details leave, and the read is kept in the
        // alert's history too, so `henvis audit verify --completeness` can check that every
        // read has its receipt
        self.0
            .bus
            .audit(district.as_str(), &step.record_id(), &receipt)
            .await
            .map_err(ApiError::from)?;
        transition(&self.0, &key, |a| {
            a.history.push((ALERT_DETAILS_READ.into(), person.to_string(), at));
            Ok(true)
        })
        .await?;
        tracing::info!(person = %person, alert_id = %a.alert_id, "alert details read");
        Ok(Response::new(FetchAlertDetailsResponse {
            alert: Some(to_pb(a, v.revision, &self.0.alerts)),
            envelope: Some(Envelope {
                idempotency_key: String::new(),
                event: Some(event),
                ..env
            }),
            granted_classes: granted.iter().map(|c| c as i32).collect(),
        }))
    }
}

/// Changes an alert of the caller's district with compare-and-set; `change` refuses with
/// the reason (FAILED_PRECONDITION) or says whether it changed anything.
async fn transition(
    core: &Core,
    key: &str,
    mut change: impl FnMut(&mut AlertRecord) -> Result<bool, String>,
) -> Result<henvis_bus::Versioned<AlertRecord>, ApiError> {
    let mut refusal = None;
    let v = core
        .bus
        .alert_bucket()
        .await?
        .modify::<AlertRecord>(
            key,
            || None,
            |a| match change(a) {
                Ok(changed) => changed,
                Err(r) => {
                    refusal = Some(r);
                    false
                }
            },
        )
        .await?
        .ok_or_else(|| ApiError::PermissionDenied("no such alert in your district".into()))?;
    match refusal {
        Some(r) => Err(ApiError::FailedPrecondition(r)),
        None => Ok(v),
    }
}

/// A contact person's step on an alert that changes its state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Claimed,
    HandedOver,
    Closed,
    Reopened,
}

impl Step {
    const ALL: [Self; 4] = [Self::Claimed, Self::HandedOver, Self::Closed, Self::Reopened];

    fn action(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::HandedOver => "handed_over",
            Self::Closed => "closed",
            Self::Reopened => "reopened",
        }
    }

    /// The step a history entry records, if one of these (not what henvis did itself, nor
    /// a detail read).
    fn of_entry(what: &str) -> Option<Self> {
        let action = AlertStep::of_entry(what)?;
        Self::ALL.into_iter().find(|s| s.action() == action)
    }

    /// Its audit record.
    fn record(self, step: AlertStepRecord) -> AuditRecord {
        match self {
            Self::Claimed => AuditRecord::AlertClaimed(step),
            Self::HandedOver => AuditRecord::AlertHandedOver(step),
            Self::Closed => AuditRecord::AlertClosed(step),
            Self::Reopened => AuditRecord::AlertReopened(step),
        }
    }
}

/// Records in the case's audit, as the alert's district, the latest step of this kind `by`
/// took in `a`'s history, under the step's one message id: written again by a retry, it is
/// stored once.
async fn audit_step(core: &Core, a: &AlertRecord, by: &PersonId, kind: Step) -> Result<(), ApiError> {
    let latest = a
        .history
        .iter()
        .rev()
        .find(|(what, person, _)| person == by.as_str() && Step::of_entry(what) == Some(kind));
    // none: the person took no such step here (a claim handed to them is the other's step)
    if let Some((id, record)) = latest.and_then(|entry| step_record(a, entry)) {
        core.bus.audit(a.district.as_str(), &id, &record).await?;
    }
    Ok(())
}

/// The audit record, and its one message id, of a claim, hand-over, closing or reopening in
/// `a`'s history; `None` for any other entry (what henvis did itself, and detail reads,
/// whose receipt is stored before the read is).
fn step_record(a: &AlertRecord, (what, person, at): &(String, String, i64)) -> Option<(String, AuditRecord)> {
    let kind = Step::of_entry(what)?;
    let record = kind.record(AlertStepRecord {
        alert_id: a.alert_id.to_string(),
        case_id: a.case_id.clone(),
        district: a.district.to_string(),
        person: person.clone(),
        to: what.strip_prefix(ALERT_HANDED_OVER_TO).map(str::to_owned),
        outcome: what.strip_prefix(ALERT_CLOSED_AS).map(str::to_owned),
        at: *at,
    });
    let id = AlertStep::recorded_by(&record)?.record_id();
    Some((id, record))
}

/// The audit records (with their one message id) of the steps in `a`'s history taken since
/// `since` (unix seconds). A police service stopped between an alert's change and its audit
/// record (the client not asking again) leaves the step unrecorded; the alert watch of any
/// police service, this one on its restart included, sees the change and writes these
/// again, which JetStream stores once within its de-duplication window.
fn records_since(a: &AlertRecord, since: i64) -> Vec<(String, AuditRecord)> {
    a.history
        .iter()
        .filter(|(_, _, at)| *at >= since)
        .filter_map(|entry| step_record(a, entry))
        .collect()
}

/// The outcome's name in alert records, from the wire.
fn outcome_name(n: i32) -> Option<&'static str> {
    use henvis_proto::henvis::police::v1::AlertOutcome as O;
    match O::try_from(n).ok()? {
        O::ChildSafe => Some("child_safe"),
        O::InvestigationOpened => Some("investigation_opened"),
        O::Referred => Some("referred"),
        O::NoAction => Some("no_action"),
        O::Duplicate => Some("duplicate"),
        // only henvis closes an alert as its case's closure
        O::CaseClosed | O::Unspecified => None,
    }
}

/// The outcome's wire number, from its name in alert records.
fn outcome_number(name: &str) -> i32 {
    use henvis_proto::henvis::police::v1::AlertOutcome as O;
    (match name {
        "child_safe" => O::ChildSafe,
        "investigation_opened" => O::InvestigationOpened,
        "referred" => O::Referred,
        "no_action" => O::NoAction,
        "duplicate" => O::Duplicate,
        "case_closed" => O::CaseClosed,
        _ => O::Unspecified,
    }) as i32
}

async fn keys(bucket: &henvis_bus::JsonBucket) -> Result<Vec<String>, ApiError> {
    Ok(bucket.keys().await?)
}

/// The deadlines of open alerts in order, and the escalations whose follow-ups are not
/// recorded yet, kept from one watch of the alerts bucket: a tick looks only at what is
/// due, so the work of an idle police service does not grow with the number of alerts.
#[derive(Debug, Default)]
pub(crate) struct DeadlineIndex {
    due: std::collections::BTreeSet<(i64, String)>,
    by_key: std::collections::HashMap<String, i64>,
    follow_ups: std::collections::BTreeSet<String>,
    /// Each alert's gauge labels (district and state) while it is not closed.
    counted: std::collections::HashMap<String, henvis_runtime::metrics::AlertLabels>,
}

impl DeadlineIndex {
    /// Takes the latest value of `key` (`None`: deleted).
    pub(crate) fn update(&mut self, key: &str, record: Option<&AlertRecord>, config: &AlertConfig, own: &str) {
        if let Some(at) = self.by_key.remove(key) {
            self.due.remove(&(at, key.to_owned()));
        }
        self.follow_ups.remove(key);
        self.count(key, record);
        let Some(a) = record.filter(|_| !key.starts_with(own)) else {
            return;
        };
        if a.state == AlertState::Open {
            if let Some(d) = config.deadline(a) {
                self.due.insert((d, key.to_owned()));
                self.by_key.insert(key.to_owned(), d);
            }
        } else if matches!(a.state, AlertState::Escalated { .. }) && !a.escalation_notified {
            self.follow_ups.insert(key.to_owned());
        }
    }

    /// The keys to act on at `now`: deadlines passed, and follow-ups pending.
    pub(crate) fn due(&self, now: i64) -> Vec<String> {
        self.due
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, k)| k.clone())
            .chain(self.follow_ups.iter().cloned())
            .collect()
    }

    /// How many alerts have a pending deadline.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }

    /// Keeps the `henvis_alerts` gauge: one per alert in its district and state.
    fn count(&mut self, key: &str, record: Option<&AlertRecord>) {
        let gauge = &henvis_runtime::metrics::metrics().alerts;
        if let Some(old) = self.counted.remove(key) {
            gauge.get_or_create(&old).dec();
        }
        let state = match record.map(|a| &a.state) {
            Some(AlertState::Open) => "open",
            Some(AlertState::Claimed { .. }) => "claimed",
            Some(AlertState::Escalated { .. }) => "escalated",
            _ => return,
        };
        let labels = henvis_runtime::metrics::AlertLabels {
            district: record.map(|a| a.district.to_string()).unwrap_or_default(),
            state: state.into(),
        };
        gauge.get_or_create(&labels).inc();
        self.counted.insert(key.to_owned(), labels);
    }

    fn clear(&mut self) {
        for labels in self.counted.values() {
            henvis_runtime::metrics::metrics().alerts.get_or_create(labels).dec();
        }
        *self = Self::default();
    }
}

/// Escalates unclaimed alerts past their deadline until `shutdown`. Safe with any number
/// of police service replicas: the state change is a compare-and-set, and its follow-ups
/// (the national unit's copy, the event that tells the guardian) are idempotent and
/// retried on every tick until recorded as done. Deadlines come from a watch of the alerts
/// bucket (every record once at start, then each change), never from listing it per tick.
pub(crate) async fn escalate_loop(core: Arc<Core>, shutdown: impl std::future::Future<Output = ()> + Send) {
    let Ok(to) = AgencyId::parse(&core.alerts.escalate_to) else {
        tracing::error!("escalation target is not an agency id; escalation disabled");
        return;
    };
    let own = format!("{to}.");
    let mut tick = tokio::time::interval(Duration::from_millis(core.alerts.tick_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut index = DeadlineIndex::default();
    // a step of the last moments whose audit record may be missing is written again, on a
    // task of its own so an audit that does not answer never holds up an escalation (a
    // change that finds the queue full is left to the step's own request, the alert's next
    // change or a restart)
    let (steps, mut to_record) = tokio::sync::mpsc::channel::<(AgencyId, Vec<(String, AuditRecord)>)>(1024);
    // ended with this loop: a JoinSet aborts its tasks when dropped
    let mut recorder = tokio::task::JoinSet::new();
    recorder.spawn({
        let core = core.clone();
        async move {
            while let Some((district, records)) = to_record.recv().await {
                for (id, record) in records {
                    if let Err(e) = core.bus.audit(district.as_str(), &id, &record).await {
                        tracing::warn!(record_id = %id, error = %e, "alert step not recorded in the audit; the next change or restart tries again");
                    }
                }
            }
        }
    });
    let window = i64::try_from(core.duplicate_window.as_secs() / 2).unwrap_or(i64::MAX);
    tokio::pin!(shutdown);
    'watch: loop {
        let watch = match core.bus.alert_bucket().await {
            Ok(b) => b.watch::<AlertRecord>(">").await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "alert watch for escalation failed; retrying");
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue 'watch,
                }
            }
        };
        index.clear();
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                e = watch.next() => {
                    let Some(Ok(e)) = e else {
                        tracing::warn!("alert watch for escalation ended; reopening");
                        continue 'watch;
                    };
                    index.update(&e.key, e.record.as_ref(), &core.alerts, &own);
                    // only what needs writing is queued (a restart's replay of every alert
                    // queues the few with recent steps)
                    if let Some(a) = &e.record {
                        let records = records_since(a, now().saturating_sub(window));
                        if !records.is_empty() {
                            let _ = steps.try_send((a.district.clone(), records));
                        }
                    }
                }
                _ = tick.tick() => {
                    for key in index.due(now()) {
                        if let Err(e) = escalate(&core, &to, &key).await {
                            tracing::warn!(error = %e, "escalation failed; retrying next tick");
                        }
                    }
                }
            }
        }
    }
}

/// Escalates the alert under `key` if it is still open past its deadline, and records its
/// follow-ups once done.
async fn escalate(core: &Core, to: &AgencyId, key: &str) -> Result<(), ApiError> {
    let bucket = core.bus.alert_bucket().await?;
    let at = now();
    let Some(v) = bucket.get::<AlertRecord>(key).await? else {
        return Ok(());
    };
    let due = v.record.state == AlertState::Open && core.alerts.deadline(&v.record).is_some_and(|d| at >= d);
    let pending_follow_up = matches!(v.record.state, AlertState::Escalated { .. }) && !v.record.escalation_notified;
    if !due && !pending_follow_up {
        return Ok(());
    }
    // a closed case routes nothing more: its open alerts are not escalated
    let case = CaseId::parse(&v.record.case_id).map_err(|e| ApiError::Internal(e.to_string()))?;
    if core
        .bus
        .case(&case)
        .await?
        .is_some_and(|c| c.record.closed_by_event.is_some())
    {
        tracing::debug!(alert_id = %v.record.alert_id, "alert of a closed case not escalated");
        return Ok(());
    }
    if due {
        let escalated = bucket
            .modify::<AlertRecord>(
                key,
                || None,
                |a| {
                    if a.state != AlertState::Open {
                        return false;
                    }
                    a.state = AlertState::Escalated { to: to.clone(), at };
                    a.history.push((format!("escalated to {to}"), "henvis".into(), at));
                    true
                },
            )
            .await?;
        if !escalated.is_some_and(|e| matches!(e.record.state, AlertState::Escalated { .. })) {
            return Ok(()); // claimed in the meantime
        }
        henvis_runtime::metrics::metrics().alerts_escalated.inc();
    }
    follow_up(core, to, &v.record, at).await?;
    bucket
        .modify::<AlertRecord>(
            key,
            || None,
            |a| {
                if a.escalation_notified {
                    return false;
                }
                a.escalation_notified = true;
                a.history.push(("escalation notified".into(), "henvis".into(), at));
                true
            },
        )
        .await?;
    tracing::info!(alert_id = %v.record.alert_id, district = %v.record.district, to = %to, "alert escalated");
    Ok(())
}

/// The national unit's copy of the alert, and the event that tells the case's guardian.
async fn follow_up(core: &Core, to: &AgencyId, a: &AlertRecord, at: i64) -> Result<(), ApiError> {
    let copy = AlertRecord {
        district: to.clone(),
        state: AlertState::Open,
        escalated_from: Some(a.district.clone()),
        escalation_notified: false,
        history: vec![(format!("escalated from {}", a.district), "henvis".into(), at)],
        ..a.clone()
    };
    let key = copy.key();
    // the national unit reads the same details the district was granted
    if let Some(details) = core.bus.alert_details(&a.key()).await? {
        core.bus.store_alert_details(&key, &details).await?;
    }
    core.bus.alert_bucket().await?.create_if_absent(&key, &copy).await?;
    let mt = MessageType::parse("alert_escalated").map_err(|e| ApiError::Internal(e.to_string()))?;
    let case = CaseId::parse(&a.case_id).map_err(|e| ApiError::Internal(e.to_string()))?;
    let env = Envelope {
        event_id: EventId::new_now().to_string(),
        idempotency_key: format!("escalation-{}", a.alert_id),
        message_type: mt.to_string(),
        sender: Some(Sender {
            agency_id: a.district.to_string(),
            sector: henvis_convert::wire_sector(Sector::Police),
            actor_id: "henvis-escalation".into(),
            person_id: String::new(),
        }),
        case_id: a.case_id.clone(),
        submitted_at: Some(std::time::SystemTime::now().into()),
        event: Some(Event {
            kind: Some(Kind::AlertEscalated(AlertEscalated {
                alert_id: a.alert_id.to_string(),
                district_agency_id: a.district.to_string(),
                escalated_to_agency_id: to.to_string(),
                alert_kind: a.kind.clone(),
                raised_at: ts(a.raised_at),
            })),
        }),
    };
    // same message id as any earlier try: JetStream keeps one
    let msg_id = format!("{}:escalation-{}", a.district, a.alert_id);
    // sealed with the case's key, like every submission (an erased case escalates nothing)
    let sealed = core.bus.seal(&a.case_id, &env.encode_to_vec()).await?;
    core.bus
        .publish_stored(inbound_subject(Sector::Police, &mt, &case), &msg_id, sealed)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An alert in `district` (its id, like every alert's, the id of an event).
    fn alert(district: &str, urgency: &str, raised_at: i64) -> AlertRecord {
        AlertRecord {
            alert_id: EventId::new_now(),
            case_id: "case".into(),
            kind: "child_missing".into(),
            urgency: urgency.parse().unwrap(),
            district: AgencyId::parse(district).unwrap(),
            raised_at,
            state: AlertState::Open,
            escalated_from: None,
            granted_classes: vec![],
            escalation_notified: false,
            history: vec![],
        }
    }

    #[test]
    fn a_reopened_alert_gets_a_fresh_deadline() {
        let config = AlertConfig {
            urgent_deadline_secs: 60,
            ..Default::default()
        };
        let mut a = alert("politi-fyn", "urgent", 100);
        assert_eq!(config.deadline(&a), Some(160));
        a.history.push((ALERT_CLAIMED.into(), "kp1".into(), 110));
        a.history
            .push((format!("{ALERT_CLOSED_AS}child_safe"), "kp1".into(), 120));
        a.history.push((ALERT_REOPENED.into(), "kp2".into(), 500));
        assert_eq!(config.deadline(&a), Some(560), "counted from the reopening");
    }

    #[test]
    fn the_deadline_index_yields_only_what_is_due_and_forgets_claimed_alerts() {
        let config = AlertConfig {
            urgent_deadline_secs: 60,
            normal_deadline_secs: 0,
            ..Default::default()
        };
        let own = "politi-nsk.";
        let mut index = DeadlineIndex::default();
        // 10,000 normal alerts never escalate and never enter the index
        for _ in 0..10_000 {
            let a = alert("politi-fyn", "normal", 0);
            index.update(&a.key(), Some(&a), &config, own);
        }
        assert_eq!(index.len(), 0);
        let early = alert("politi-fyn", "urgent", 100);
        let late = alert("politi-fyn", "urgent", 200);
        for a in [&early, &late] {
            index.update(&a.key(), Some(a), &config, own);
        }
        assert!(index.due(159).is_empty());
        assert_eq!(index.due(160), vec![early.key()]);
        assert_eq!(index.due(260).len(), 2);
        // claimed: gone from the index
        let mut claimed = early.clone();
        claimed.state = AlertState::Claimed {
            by: PersonId::parse("politi-fyn-kp1").unwrap(),
            at: 120,
        };
        index.update(&claimed.key(), Some(&claimed), &config, own);
        assert_eq!(index.due(260), vec![late.key()]);
        // escalated, follow-up not yet recorded: pending until it is
        let mut escalated = late.clone();
        escalated.state = AlertState::Escalated {
            to: AgencyId::parse("politi-nsk").unwrap(),
            at: 261,
        };
        index.update(&escalated.key(), Some(&escalated), &config, own);
        assert_eq!(index.due(0), vec![late.key()]);
        escalated.escalation_notified = true;
        index.update(&escalated.key(), Some(&escalated), &config, own);
        assert!(index.due(i64::MAX).is_empty());
        // the national unit's own copies are never escalated again
        let copy = alert("politi-nsk", "urgent", 0);
        index.update(&copy.key(), Some(&copy), &config, own);
        assert!(index.due(i64::MAX).is_empty());
    }
}
