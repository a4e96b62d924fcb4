//! Routing one stored event: apply its case change, decide, audit, check the case did not
//! change meanwhile, then deliver the redacted copies and the sender's status.

use henvis_bus::{ROUTER_WRITER, VersionedCase, outbound_subject, status_subject};
use henvis_domain::{AgencyId, AlertRecord, AlertState, AuditRecord, CaseChange, CaseId, CaseRecord};
use henvis_policy::{Decision, DecisionInput, decide, redact};
use henvis_proto::henvis::{
    broker::v1::{Delivery, DeliveryState, Envelope, GetStatusResponse, RecipientStatus},
    events::v1::{Event, ReferralOutcome, event::Kind},
};
use prost::Message;

use crate::{Router, audit};

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
        }
    }
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

fn class_numbers(s: henvis_domain::ClassSet) -> Vec<i32> {
    s.iter().map(|c| c as i32).collect()
}

impl Router {
    /// The facts a decision about a stored event rests on, besides the case: one function
    /// for routing and for reconciliation, so the two can never decide differently.
    pub(crate) async fn facts(&self, env: &Envelope) -> Result<Facts, RouteError> {
        let event = env.event.as_ref().ok_or(RouteError::Poison("envelope without event"))?;
        let event_bytes = event.encode_to_vec();
        let mt = self
            .schema
            .message_type_of_bytes(&event_bytes)
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
        let at = env.submitted_at.map_or(0, |t| t.seconds);
        // what Submit validated, again with this router's schema and directory, as of the
        // time of submission: a value this router cannot check is never routed
        let dynamic =
            prost_reflect::DynamicMessage::decode(self.schema.event_descriptor().clone(), event_bytes.as_slice())
                .map_err(|_| RouteError::Poison("undecodable event"))?;
        let submitted = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(at).unwrap_or(0));
        if let Err(e) = self.schema.validate(&dynamic, submitted, &self.directory) {
            tracing::warn!(event_id = %env.event_id, field = %e.field, "stored event fails validation; not routed");
            return Err(RouteError::Poison("event fails validation"));
        }
        let flags = self.schema.flags_of(&dynamic);
        // a referral response names its referral's sender only if the responder received it
        let referral = match event.kind.as_ref() {
            Some(Kind::ReferralResponse(r)) => self
                .referral_sender(&r.in_response_to_event_id, &sender_id)
                .await?
                .map(|s| (s, r.in_response_to_event_id.clone(), r.outcome)),
            _ => None,
        };
        Ok(Facts {
            event_bytes,
            mt,
            sender: sender_id,
            sector,
            case_id,
            at,
            referral,
            flags,
        })
    }

    /// Routes one stored envelope and returns once everything it produced is stored.
    pub(crate) async fn route(&self, subject: &str, payload: &[u8], in_sequence: u64) -> Result<(), RouteError> {
        let env = Envelope::decode(payload).map_err(|_| RouteError::Poison("undecodable envelope"))?;
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
        let Facts {
            event_bytes,
            mt,
            sender: sender_id,
            case_id,
            at,
            ..
        } = &facts;
        let (event_bytes, mt, sender_id, case_id, at) = (event_bytes.as_slice(), mt, sender_id, case_id, *at);

        // The router is the only writer of case records: each event's change is applied
        // here, in the case's order of events, after the workflow guards held against the
        // case as it stood before it (the opening report makes its sender a participant).
        let change =
            henvis_convert::case_change(event, &env.event_id).map_err(|_| RouteError::Poison("invalid case change"))?;
        let opening = matches!(change, CaseChange::Opened { .. });
        let mut case = self.bus.case(case_id).await?;
        {
            let mut before = match &case {
                Some(c) => std::borrow::Cow::Borrowed(&c.record),
                None if opening => std::borrow::Cow::Owned(CaseRecord::new()),
                None => {
                    tracing::warn!(event_id = %env.event_id, case_id = %case_id, "stored event of a case that does not exist");
                    return Err(RouteError::Poison("event of a case that does not exist"));
                }
            };
            if opening {
                before.to_mut().add_participants([sender_id]);
            }
            if let Err(e) = henvis_policy::admit(mt, sender_id, &before, &self.directory) {
                tracing::warn!(event_id = %env.event_id, case_id = %case_id, guard = ?e, "stored event fails a workflow guard");
                return Err(RouteError::Poison("event fails a workflow guard"));
            }
        }
        let unapplied = case.as_ref().is_none_or(|c| {
            !c.record.reflects(&change, &env.event_id) || (opening && !c.record.participants.contains(sender_id))
        });
        if change != CaseChange::None && unapplied {
            case = self
                .bus
                .modify_case(case_id, opening, |r| {
                    let changed = r.apply(&change, &env.event_id);
                    let joined = opening && r.add_participants([sender_id]);
                    changed || joined
                })
                .await?;
        }
        if change != CaseChange::None && !opening {
            let record = AuditRecord::CaseChange {
                event_id: env.event_id.clone(),
                case_id: env.case_id.clone(),
                message_type: env.message_type.clone(),
                by: sender_id.to_string(),
                change: change.name().to_owned(),
            };
            self.bus
                .audit(ROUTER_WRITER, &format!("case-change:{}", env.event_id), &record)
                .await?;
        }
        let referral = &facts.referral;
        let rules = self.rules.current();
        let empty = CaseRecord::new();

        let mut decided: Option<Decision> = None;
        for _ in 0..MAX_REDECIDE {
            let (record, revision) = case.as_ref().map_or((&empty, 0), |c| (&c.record, c.revision));
            let input = facts.input(record);
            let decision = decide(&rules, &self.directory, &input);
            let audit_id = format!("decision:{}:{}:{revision}", env.event_id, decision.rule_set_version);
            let record = audit::decision_record(&env, &decision, revision, at, event_bytes);
            self.bus.audit(ROUTER_WRITER, &audit_id, &record).await?;
            // Fence: a change of the case acknowledged before this decision's audit record
            // (a consent withdrawal above all) must govern it. Read the case again from the
            // leader; if it changed in a way that changes the decision, void and redo.
            let now: Option<VersionedCase> = self.bus.case(case_id).await?;
            let now_revision = now.as_ref().map_or(0, |c| c.revision);
            if now_revision == revision {
                decided = Some(decision);
                break;
            }
            let again = decide(
                &rules,
                &self.directory,
                &DecisionInput {
                    case: now.as_ref().map_or(&empty, |c| &c.record),
                    ..input
                },
            );
            if again.recipients == decision.recipients {
                decided = Some(decision);
                break;
            }
            let void_id = format!("void:{}:{revision}", env.event_id);
            self.bus
                .audit(ROUTER_WRITER, &void_id, &audit::void_record(&env, revision))
                .await?;
            tracing::info!(event_id = %env.event_id, case_id = %case_id, "case changed during the decision; deciding again");
            case = now;
        }
        let decision = decided.ok_or_else(|| RouteError::Retry("case kept changing during the decision".into()))?;

        // the sender and every recipient take part in the case, recorded before anything is
        // delivered so a recipient's answer is never refused as coming from an outsider
        let participants: Vec<AgencyId> = std::iter::once(sender_id.clone())
            .chain(decision.recipients.iter().map(|r| r.agency.clone()))
            .collect();
        if case
            .as_ref()
            .is_some_and(|c| participants.iter().any(|p| !c.record.participants.contains(p)))
        {
            self.bus
                .modify_case(case_id, false, |r| r.add_participants(&participants))
                .await?;
        }
        // what each recipient received, before it can receive it: a referral response is
        // admitted only for an event delivered to the responder
        // (an earlier mark says whether an earlier attempt already stored the delivery: then
        // it is never published again, however long after the duplicate window)
        let mark = henvis_bus::Delivered {
            case_id: env.case_id.clone(),
            sender: sender_id.to_string(),
            message_type: mt.to_string(),
            published: false,
        };
        let marks = futures::future::try_join_all(
            decision
                .recipients
                .iter()
                .map(|r| self.bus.mark_delivered(r.agency.as_str(), &env.event_id, &mark)),
        )
        .await?;

        let mut acks = Vec::with_capacity(decision.recipients.len() + 1);
        let mut delivery_acks = Vec::with_capacity(decision.recipients.len());
        // the event as redacted for each district the routes alert: an alert's details
        let mut alert_details: Vec<(&henvis_policy::Recipient, Vec<u8>)> = Vec::new();
        for (r, mark) in decision.recipients.iter().zip(marks) {
            let delivery = self.delivery_for(&env, event_bytes, r, &decision.rule_set_version)?;
            if r.alert.is_some()
                && self.directory.agency(&r.agency).map(|a| a.sector) == Some(henvis_domain::Sector::Police)
            {
                let details = delivery
                    .envelope
                    .as_ref()
                    .map(|e| e.encode_to_vec())
                    .unwrap_or_default();
                alert_details.push((r, details));
            }
            if mark.record.published {
                continue;
            }
            // one identity per (event, recipient), whatever the rule set deciding it
            let msg_id = format!("{}:{}", env.event_id, r.agency);
            delivery_acks.push((
                &r.agency,
                mark,
                self.bus
                    .publish(
                        outbound_subject(&r.agency, mt),
                        &msg_id,
                        delivery.encode_to_vec().into(),
                    )
                    .await?,
            ));
        }
        // closed loop: the referral's sender sees the responder's outcome
        if let Some((referrer, answered, outcome)) = &referral {
            let state = match ReferralOutcome::try_from(*outcome) {
                Ok(ReferralOutcome::Accepted) => Some(DeliveryState::Accepted),
                Ok(ReferralOutcome::Declined) => Some(DeliveryState::Declined),
                Ok(ReferralOutcome::Completed) => Some(DeliveryState::Completed),
                _ => None,
            };
            if let Some(state) = state {
                let record = GetStatusResponse {
                    event_id: answered.clone(),
                    routed: true,
                    recipients: vec![RecipientStatus {
                        recipient_agency_id: sender_id.to_string(),
                        state: state as i32,
                        reason: String::new(),
                        at: env.submitted_at,
                        rule_id: String::new(),
                    }],
                };
                let id = format!("response:{answered}:{sender_id}:{}", env.event_id);
                acks.push(
                    self.bus
                        .publish(
                            status_subject(referrer, answered, ROUTER_WRITER),
                            &id,
                            record.encode_to_vec().into(),
                        )
                        .await?,
                );
            }
        }
        let status = audit::status_record(&env.event_id, &decision);
        let status_id = format!("routed:{}:{}", env.event_id, decision.rule_set_version);
        acks.push(
            self.bus
                .publish(
                    status_subject(sender_id, &env.event_id, ROUTER_WRITER),
                    &status_id,
                    status.encode_to_vec().into(),
                )
                .await?,
        );
        // the sender's idempotency record, should the sector service have failed to write it
        // (the event is in IN either way), alongside the acknowledgements
        let remembered = self.bus.remember_submitted(
            sender_id.as_str(),
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
            for (agency, mark, ack) in delivery_acks {
                match ack.await {
                    Ok(_) => published.push(self.bus.mark_published(agency.as_str(), &env.event_id, mark)),
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
        let (remembered, stored) = tokio::join!(remembered, stored);
        remembered?;
        stored?;
        // police case alerts the routes raise: state in the alerts bucket, created once
        for (r, details) in alert_details {
            let alert = AlertRecord {
                alert_id: env.event_id.clone(),
                case_id: env.case_id.clone(),
                kind: env.message_type.clone(),
                urgency: r.alert.map(|u| u.as_str()).unwrap_or("normal").to_owned(),
                district: r.agency.clone(),
                raised_at: at,
                state: AlertState::Open,
                escalated_from: None,
                granted_classes: r.classes.iter().map(|c| c.as_str().to_owned()).collect(),
                history: vec![("raised".to_owned(), "router".to_owned(), at)],
            };
            let key = alert.key();
            // the details a contact person may fetch: the event as redacted for the district,
            // stored before the alert exists (the police service never reads IN)
            self.bus.store_alert_details(&key, &details).await?;
            self.bus.alert_bucket().await?.create_if_absent(&key, &alert).await?;
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
}

impl Router {
    /// The delivery of `env` to one recipient: a fresh copy with only its granted fields.
    pub(crate) fn delivery_for(
        &self,
        env: &Envelope,
        event_bytes: &[u8],
        r: &henvis_policy::Recipient,
        rule_set_version: &str,
    ) -> Result<Delivery, RouteError> {
        let redacted =
            redact(&self.schema, event_bytes, r.classes).map_err(|_| RouteError::Poison("undecodable event"))?;
        let event =
            Event::decode(redacted.event.as_slice()).map_err(|_| RouteError::Poison("undecodable redacted event"))?;
        Ok(Delivery {
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
            rule_set_version: rule_set_version.to_owned(),
            attempt: 0,
        })
    }

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
