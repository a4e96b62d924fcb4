//! Routing one stored event: the facts of its event, then its plan (plan.rs) executed
//! against the bus — the case change applied, the decision audited and fenced (the case
//! must not have changed under it), then the redacted deliveries, statuses and alerts.

use henvis_bus::{ROUTER_WRITER, VersionedCase};
use henvis_domain::{AgencyId, CaseChange, CaseId, CaseRecord, Directory};
use henvis_policy::DecisionInput;
use henvis_policy::Schema;
use henvis_proto::henvis::{broker::v1::Envelope, events::v1::event::Kind};
use prost::Message;

use crate::{
    Router, audit,
    plan::{self, Context, Plan},
};

/// How often a decision is redone because the case changed under it before giving up
/// (the event is then redelivered).
const MAX_REDECIDE: usize = 8;

/// What a decision about one stored event rests on, besides the case record.
pub(crate) struct Facts {
    /// The event, encoded.
    pub event_bytes: Vec<u8>,
    /// Its message type.
    pub mt: henvis_domain::MessageType,
    /// The sending agency.
    pub sender: AgencyId,
    /// The sender's sector, from the directory.
    pub sector: henvis_domain::Sector,
    /// The case.
    pub case_id: CaseId,
    /// The time of submission (seconds).
    pub at: i64,
    /// For a referral response to an event delivered to its sender: the referral's sender,
    /// the event answered and the outcome.
    pub referral: Option<(AgencyId, String, i32)>,
    /// The BASIC boolean fields set in the event.
    pub flags: Vec<String>,
    /// The agencies the event names, by field path.
    pub named: Vec<(String, String)>,
}

impl Facts {
    /// The decision input for `case`.
    pub(crate) fn input<'a>(&'a self, case: &'a CaseRecord) -> DecisionInput<'a> {
        DecisionInput {
            mt: &self.mt,
            sender: &self.sender,
            sender_sector: self.sector,
            case,
            at: self.at,
            referral_sender: self.referral.as_ref().map(|(s, _, _)| s),
            flags: &self.flags,
            named: &self.named,
        }
    }
}

/// The stored event a plan is executed for.
struct Stored<'a> {
    /// As stored in IN (sealed).
    payload: &'a [u8],
    /// Its IN sequence.
    in_sequence: u64,
    /// Whether an earlier attempt may have stored some of what it produces.
    redelivered: bool,
}

/// Why routing an event failed.
#[derive(Debug)]
pub(crate) enum RouteError {
    /// The stored message can never be routed (not written by a sector service).
    Poison(&'static str),
    /// A transient failure; the event is redelivered.
    Retry(String),
    /// A stream refused what the event produced because it is full; the event waits in IN.
    Full(String),
    /// OUT refused a delivery to this recipient: its share (or OUT) is full. Everything
    /// else the event produced is stored; the event waits in IN for this recipient only.
    Held(henvis_domain::AgencyId),
}

impl From<henvis_bus::BusError> for RouteError {
    fn from(e: henvis_bus::BusError) -> Self {
        match e {
            henvis_bus::BusError::Full(text) => RouteError::Full(text),
            e => RouteError::Retry(e.to_string()),
        }
    }
}

impl Facts {
    /// The facts of `env` that need no I/O (the referral answered is filled in by the
    /// router, which looks up what was delivered): one function for routing,
    /// reconciliation and the administrators' simulation, so they never decide differently.
    pub(crate) fn of(schema: &Schema, directory: &Directory, env: &Envelope) -> Result<Self, RouteError> {
        let event = env.event.as_ref().ok_or(RouteError::Poison("envelope without event"))?;
        let event_bytes = event.encode_to_vec();
        let mt = schema
            .message_type_of_bytes(&event_bytes)
            .map_err(|_| RouteError::Poison("unknown event kind"))?;
        let sender = env
            .sender
            .as_ref()
            .ok_or(RouteError::Poison("envelope without sender"))?;
        let sender_id = AgencyId::parse(&sender.agency_id).map_err(|_| RouteError::Poison("malformed sender"))?;
        let sector = directory
            .agency(&sender_id)
            .map(|a| a.sector)
            .ok_or(RouteError::Poison("sender not in directory"))?;
        let case_id = CaseId::parse(&env.case_id).map_err(|_| RouteError::Poison("malformed case id"))?;
        let at = env.submitted_at.map_or(0, |t| t.seconds);
        // what Submit validated, again with this router's schema and directory, as of the
        // time of submission: a value this router cannot check is never routed
        let dynamic = prost_reflect::DynamicMessage::decode(schema.event_descriptor().clone(), event_bytes.as_slice())
            .map_err(|_| RouteError::Poison("undecodable event"))?;
        let submitted = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(at).unwrap_or(0));
        if let Err(e) = schema.validate(&dynamic, submitted, directory) {
            tracing::warn!(event_id = %env.event_id, field = %e.field, "stored event fails validation; not routed");
            return Err(RouteError::Poison("event fails validation"));
        }
        let flags = schema.flags_of(&dynamic);
        let named = schema.named_agencies(&dynamic);
        Ok(Facts {
            event_bytes,
            mt,
            sender: sender_id,
            sector,
            case_id,
            at,
            referral: None,
            flags,
            named,
        })
    }
}

impl Router {
    /// The facts a decision about a stored event rests on, besides the case.
    pub(crate) async fn facts(&self, env: &Envelope) -> Result<Facts, RouteError> {
        let mut facts = Facts::of(&self.schema, &self.directory.current(), env)?;
        // a referral response names its referral's sender only if the responder received it
        if let Some(Kind::ReferralResponse(r)) = env.event.as_ref().and_then(|e| e.kind.as_ref()) {
            facts.referral = self
                .referral_sender(&r.in_response_to_event_id, &facts.sender)
                .await?
                .map(|s| (s, r.in_response_to_event_id.clone(), r.outcome));
        }
        Ok(facts)
    }

    /// Routes one stored envelope and returns once everything it produced is stored.
    /// `opened`: the payload opened with its case's key; `redelivered`: an earlier attempt
    /// may have stored some of what it produces.
    pub(crate) async fn route(
        &self,
        subject: &str,
        payload: &[u8],
        opened: Result<henvis_bus::Opened, henvis_bus::BusError>,
        in_sequence: u64,
        redelivered: bool,
    ) -> Result<(), RouteError> {
        // sealed with its case's key; an erased case's events can never be opened again
        let opened = match opened {
            Ok(o) => o,
            Err(henvis_bus::BusError::Erased(_)) => return Err(RouteError::Poison("its case was erased")),
            Err(henvis_bus::BusError::Other(_)) => return Err(RouteError::Poison("not sealed with its case's key")),
            Err(e) => return Err(e.into()),
        };
        let env =
            Envelope::decode(opened.plaintext.as_slice()).map_err(|_| RouteError::Poison("undecodable envelope"))?;
        if opened.case_id != env.case_id {
            return Err(RouteError::Poison("sealed for another case"));
        }
        let event = env.event.as_ref().ok_or(RouteError::Poison("envelope without event"))?;
        let facts = self.facts(&env).await?;
        // what Submit checked, again: a sector service may publish only under its own
        // sector, so an envelope claiming an agency of another sector, a type that sector
        // never originates, or another type or case than its subject was not written by
        // the sector service that checked it
        if !henvis_bus::inbound_subject_matches(subject, facts.sector, &facts.mt, &facts.case_id)
            || !henvis_domain::originates(facts.sector).contains(&facts.mt.as_str())
        {
            tracing::warn!(event_id = %env.event_id, subject, "envelope does not match its inbound subject or sector");
            return Err(RouteError::Poison(
                "envelope does not match its subject, sector or type",
            ));
        }
        let rules = self.rules.current();
        let directory = self.directory.current();
        let ctx = Context {
            schema: &self.schema,
            directory: &directory,
            rules: &rules,
        };
        let case_id = &facts.case_id;

        // The router is the only writer of case records: each event's change is applied
        // here, in the case's order of events, after the workflow guards held against the
        // case as it stood before it.
        let mut case = self.bus.case(case_id).await?;
        let change = plan::case_step(&ctx, event, &env, &facts, case.as_ref().map(|c| &c.record)).inspect_err(|e| {
            tracing::warn!(event_id = %env.event_id, case_id = %case_id, reason = ?e, "stored event cannot be routed on its case");
        })?;
        let opening = matches!(change, CaseChange::Opened { .. });
        let unapplied = case.as_ref().is_none_or(|c| {
            !c.record.reflects(&change, &env.event_id) || (opening && !c.record.participants.contains(&facts.sender))
        });
        // audit first: a change that alters what anyone receives is recorded before it
        // takes effect (a retry writes the same record under the same id)
        if let Some((id, record)) = plan::case_change_record(&env, &facts, &change) {
            self.bus.audit(ROUTER_WRITER, &id, &record).await?;
        }
        if change != CaseChange::None && unapplied {
            case = self
                .bus
                .modify_case_from(case_id, case.clone(), opening, |r| {
                    let changed = r.apply(&change, &env.event_id);
                    let joined = opening && r.add_participants([&facts.sender]);
                    changed || joined
                })
                .await?;
        }
        // the guardian's list of cases finds it (again on a retry: the same key)
        if let CaseChange::GuardianAppointed(guardian) = &change {
            self.bus.index_guardian(guardian, &case_id.to_string()).await?;
        }
        // a closed case's open alerts end with it (again on a retry: closed ones are left)
        if change == CaseChange::Closed {
            self.close_alerts_of(case_id, facts.at).await?;
        }

        let empty = CaseRecord::new();
        let mut planned: Option<Plan> = None;
        for _ in 0..MAX_REDECIDE {
            let (record, revision) = case.as_ref().map_or((&empty, 0), |c| (&c.record, c.revision));
            let p = plan::plan(&ctx, &env, &facts, record, revision)?;
            self.record_decision(&env, &p, revision).await?;
            // Fence: a change of the case acknowledged before this decision's audit record
            // (a consent withdrawal above all) must govern it. Read the case again from the
            // leader; if it changed in a way that changes the decision, void and redo.
            let now: Option<VersionedCase> = self.bus.case(case_id).await?;
            let now_revision = now.as_ref().map_or(0, |c| c.revision);
            if now_revision == revision {
                planned = Some(p);
                break;
            }
            let again = plan::plan(
                &ctx,
                &env,
                &facts,
                now.as_ref().map_or(&empty, |c| &c.record),
                now_revision,
            )?;
            if again.decision.recipients == p.decision.recipients {
                planned = Some(p);
                break;
            }
            self.bus
                .audit(
                    ROUTER_WRITER,
                    &format!("void:{}:{revision}", env.event_id),
                    &audit::void_record(&env, revision, None),
                )
                .await?;
            self.bus
                .set_decision_mark(
                    &env.event_id,
                    &henvis_bus::DecisionMark {
                        rule_set_version: p.decision.rule_set_version.clone(),
                        case_revision: revision,
                        voided: true,
                    },
                )
                .await?;
            tracing::info!(event_id = %env.event_id, case_id = %case_id, "case changed during the decision; deciding again");
            case = now;
        }
        let p = planned.ok_or_else(|| RouteError::Retry("case kept changing during the decision".into()))?;
        let stored = Stored {
            payload,
            in_sequence,
            redelivered,
        };
        self.execute(&env, stored, &facts, case.as_ref(), p).await
    }

    /// Audits a plan's decision, after recording it as the event's decision: a decision an
    /// earlier attempt recorded under another rule set or case revision (a router stopped
    /// after auditing it, the event decided again under a newer set) and not voided is
    /// voided first, so every event has one standing decision. The same decision again is
    /// de-duplicated by its message id.
    async fn record_decision(&self, env: &Envelope, p: &Plan, revision: u64) -> Result<(), RouteError> {
        let mark = henvis_bus::DecisionMark {
            rule_set_version: p.decision.rule_set_version.clone(),
            case_revision: revision,
            voided: false,
        };
        if let Some(earlier) = self.bus.first_decision_mark(&env.event_id, &mark).await?
            && earlier != mark
        {
            if !earlier.voided {
                self.bus
                    .audit(
                        ROUTER_WRITER,
                        &format!(
                            "void:{}:{}:{}",
                            env.event_id, earlier.case_revision, earlier.rule_set_version
                        ),
                        &audit::void_record(env, earlier.case_revision, Some(&earlier.rule_set_version)),
                    )
                    .await?;
            }
            self.bus.set_decision_mark(&env.event_id, &mark).await?;
        }
        self.bus.audit(ROUTER_WRITER, &p.audit.0, &p.audit.1).await?;
        Ok(())
    }

    /// Stores everything a plan produces; returns once all of it is stored. Every record
    /// under a deterministic id, so executing a plan again stores nothing twice.
    async fn execute(
        &self,
        env: &Envelope,
        stored: Stored<'_>,
        facts: &Facts,
        case: Option<&VersionedCase>,
        p: Plan,
    ) -> Result<(), RouteError> {
        let Stored {
            payload,
            in_sequence,
            redelivered,
        } = stored;
        // the sender and every recipient take part in the case, recorded before anything is
        // delivered so a recipient's answer is never refused as coming from an outsider
        if let Some(c) = case.filter(|c| p.participants.iter().any(|a| !c.record.participants.contains(a))) {
            self.bus
                .modify_case_from(&facts.case_id, Some(c.clone()), false, |r| {
                    r.add_participants(&p.participants)
                })
                .await?;
        }
        // what each recipient received is marked once OUT stored it (a referral response is
        // admitted only for an event delivered to the responder). A first attempt publishes
        // every delivery; a redelivered event's earlier attempt may have stored some, whose
        // marks say so: those are never published again, however long after the duplicate
        // window (one it stored but did not mark is published again under the same message
        // id, which OUT drops within the window).
        let mark = henvis_bus::Delivered {
            case_id: env.case_id.clone(),
            sender: facts.sender.to_string(),
            message_type: facts.mt.to_string(),
            published: true,
        };
        let stored_before = if redelivered {
            futures::future::try_join_all(
                p.deliveries
                    .iter()
                    .map(|d| self.bus.delivery_published(d.agency.as_str(), &env.event_id)),
            )
            .await?
        } else {
            vec![false; p.deliveries.len()]
        };
        let mut delivery_acks = Vec::with_capacity(p.deliveries.len());
        for (d, stored_before) in p.deliveries.iter().zip(stored_before) {
            if stored_before {
                continue;
            }
            // sealed with the case's key: an erasure reaches deliveries still waiting
            let sealed = self.bus.seal(&env.case_id, &d.delivery.encode_to_vec()).await?;
            delivery_acks.push((&d.agency, self.bus.publish(d.subject.clone(), &d.msg_id, sealed).await?));
        }
        let mut acks = Vec::with_capacity(p.statuses.len());
        for s in &p.statuses {
            acks.push(
                self.bus
                    .publish(s.subject.clone(), &s.msg_id, s.record.encode_to_vec().into())
                    .await?,
            );
        }
        // the sender's idempotency record, should the sector service have failed to write it
        // (the event is in IN either way), alongside the acknowledgements
        let remembered = self.bus.remember_submitted(
            facts.sender.as_str(),
            &env.idempotency_key,
            &env.event_id,
            payload,
            in_sequence,
        );
        let stored = async {
            // every delivery OUT accepted is marked published, even when another was
            // refused (a full OUT): the retry publishes only what is still missing
            let mut first_error = None;
            let mut published = Vec::new();
            for (agency, ack) in delivery_acks {
                match ack.await {
                    Ok(_) => published.push(self.bus.mark_published(agency.as_str(), &env.event_id, &mark)),
                    Err(henvis_bus::BusError::Full(_)) => {
                        first_error.get_or_insert(RouteError::Held(agency.clone()));
                    }
                    Err(e) => {
                        first_error.get_or_insert(e.into());
                    }
                }
            }
            futures::future::try_join_all(published).await?;
            for ack in acks {
                ack.await?;
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok::<(), RouteError>(()),
            }
        };
        // police case alerts the routes raise, stored alongside: the details a contact
        // person may fetch (the event as redacted for the district) stored before the alert
        // exists, each once
        let alerted = async {
            for a in &p.alerts {
                let key = a.alert.key();
                let sealed = self.bus.seal(&env.case_id, &a.details).await?;
                self.bus.store_alert_details(&key, &sealed).await?;
                self.bus.alert_bucket().await?.create_if_absent(&key, &a.alert).await?;
            }
            Ok::<(), henvis_bus::BusError>(())
        };
        // a report with identity fields: keyed tokens, and a link proposed to every case
        // that looks like the same child (alongside too: nothing delivered depends on it)
        let linked = async {
            match env.event.as_ref().and_then(|e| e.kind.as_ref()) {
                Some(Kind::SuspectedVictimReported(r)) => crate::linkage::index(self, &facts.case_id, r).await,
                _ => Ok(()),
            }
        };
        let (remembered, stored, alerted, linked) = tokio::join!(remembered, stored, alerted, linked);
        remembered?;
        stored?;
        alerted?;
        linked?;
        record_decision(&p.decision);
        tracing::info!(
            event_id = %env.event_id,
            case_id = %facts.case_id,
            message_type = %facts.mt,
            delivered = p.decision.recipients.len(),
            withheld = p.decision.withheld.len(),
            rule_set_version = %p.decision.rule_set_version,
            "event routed"
        );
        Ok(())
    }
}

impl Router {
    /// The sender of referral `event_id`, if it was delivered to `responder` (its delivery
    /// mark).
    pub(crate) async fn referral_sender(
        &self,
        event_id: &str,
        responder: &AgencyId,
    ) -> Result<Option<AgencyId>, RouteError> {
        Ok(self
            .bus
            .delivered_to(responder.as_str(), event_id)
            .await?
            .and_then(|d| AgencyId::parse(&d.sender).ok()))
    }
}

impl Router {
    /// Closes every alert of `case` that is not closed, as henvis, with the outcome
    /// `case_closed` at `at` (the closing event's time, so a retry writes the same records),
    /// each audited before it changes.
    async fn close_alerts_of(&self, case: &CaseId, at: i64) -> Result<(), henvis_bus::BusError> {
        use henvis_domain::{
            ALERT_CLOSED_AS, AlertRecord, AlertState, AlertStep, AlertStepRecord, AuditRecord, PersonId,
        };
        const BY: &str = "henvis";
        const OUTCOME: &str = "case_closed";
        let case_id = case.to_string();
        let open: Vec<AlertRecord> = self
            .bus
            .stored_alerts()
            .await?
            .into_iter()
            .filter(|a| a.case_id == case_id && !matches!(a.state, AlertState::Closed { .. }))
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let by = PersonId::parse(BY).map_err(|e| henvis_bus::BusError::Other(e.to_string()))?;
        let bucket = self.bus.alert_bucket().await?;
        for a in open {
            let record = AuditRecord::AlertClosed(AlertStepRecord {
                alert_id: a.alert_id.to_string(),
                case_id: case_id.clone(),
                district: a.district.to_string(),
                person: BY.into(),
                to: None,
                outcome: Some(OUTCOME.into()),
                at,
            });
            let id = AlertStep::recorded_by(&record)
                .map(|s| s.record_id())
                .unwrap_or_else(|| format!("step:{}:closed", a.alert_id));
            self.bus.audit(ROUTER_WRITER, &id, &record).await?;
            bucket
                .modify::<AlertRecord>(
                    &a.key(),
                    || None,
                    |x| {
                        if matches!(x.state, AlertState::Closed { .. }) {
                            return false;
                        }
                        x.state = AlertState::Closed {
                            by: by.clone(),
                            at,
                            outcome: OUTCOME.into(),
                        };
                        x.history.push((format!("{ALERT_CLOSED_AS}{OUTCOME}"), BY.into(), at));
                        true
                    },
                )
                .await?;
            tracing::info!(alert_id = %a.alert_id, case_id = %case_id, "alert closed with its case");
        }
        Ok(())
    }
}

/// Counts one event's decision per recipient (delivered, or withheld by reason).
fn record_decision(decision: &henvis_policy::Decision) {
    use henvis_runtime::metrics::{DecisionLabels, metrics};
    let m = metrics();
    m.events_routed.inc();
    m.decisions
        .get_or_create(&DecisionLabels {
            outcome: "delivered".into(),
            reason: String::new(),
        })
        .inc_by(decision.recipients.len() as u64);
    for w in &decision.withheld {
        m.decisions
            .get_or_create(&DecisionLabels {
                outcome: "withheld".into(),
                reason: w.reason.code().into(),
            })
            .inc();
    }
}
