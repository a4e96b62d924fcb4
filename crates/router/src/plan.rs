//! Routing as a pure plan: from a stored envelope, the facts of its event and the case as it
//! stands, every record the event produces — the case change it makes, its decision and the
//! decision's audit record, each recipient's redacted delivery under its one message id,
//! the statuses, the police alerts with their details, the participants — computed without
//! any I/O. `route.rs` executes a plan against the bus (with the fence around the decision);
//! reconciliation decides through the same function. Unit tests below run without NATS.

use henvis_bus::{ROUTER_WRITER, outbound_subject, status_subject};
use henvis_domain::{
    AgencyId, AlertRecord, AlertState, AuditRecord, CaseChange, CaseRecord, Directory, Sector, Urgency,
};
use henvis_policy::{Decision, RuleSet, Schema, decide, redact};
use henvis_proto::henvis::{
    broker::v1::{Delivery, DeliveryState, Envelope, GetStatusResponse, RecipientStatus},
    events::v1::{Event, ReferralOutcome},
};
use prost::Message;

use crate::{
    audit,
    route::{Facts, RouteError},
};

/// What the router knows besides the event: the schema, the directory, the rules in force.
pub(crate) struct Context<'a> {
    /// The event schema (classes, redaction).
    pub schema: &'a Schema,
    /// The agency directory.
    pub directory: &'a Directory,
    /// The rule set deciding.
    pub rules: &'a RuleSet,
}

/// The case step of an event: checked against the case as it stood before it, and the
/// change it makes. A failed guard, or an event of a case that does not exist, can never be
/// routed.
pub(crate) fn case_step(
    ctx: &Context<'_>,
    event: &Event,
    env: &Envelope,
    facts: &Facts,
    before: Option<&CaseRecord>,
) -> Result<CaseChange, RouteError> {
    let change =
        henvis_convert::case_change(event, &env.event_id).map_err(|_| RouteError::Poison("invalid case change"))?;
    let opening = matches!(change, CaseChange::Opened { .. });
    let mut view = match before {
        Some(c) => std::borrow::Cow::Borrowed(c),
        None if opening => std::borrow::Cow::Owned(CaseRecord::new()),
        None => return Err(RouteError::Poison("event of a case that does not exist")),
    };
    // the opening report makes its sender a participant
    if opening {
        view.to_mut().add_participants([&facts.sender]);
    }
    henvis_policy::admit(&facts.mt, &facts.sender, &view, ctx.directory)
        .map_err(|_| RouteError::Poison("event fails a workflow guard"))?;
    Ok(change)
}

/// The audit record of an applied case change (none for an opening or no change: the
/// decision records those).
pub(crate) fn case_change_record(env: &Envelope, facts: &Facts, change: &CaseChange) -> Option<(String, AuditRecord)> {
    (!matches!(change, CaseChange::None | CaseChange::Opened { .. })).then(|| {
        (
            format!("case-change:{}", env.event_id),
            AuditRecord::CaseChange {
                event_id: env.event_id.clone(),
                case_id: env.case_id.clone(),
                message_type: env.message_type.clone(),
                by: facts.sender.to_string(),
                change: change.name().to_owned(),
            },
        )
    })
}

/// One recipient's delivery.
#[derive(Debug, Clone)]
pub(crate) struct PlannedDelivery {
    /// The recipient.
    pub agency: AgencyId,
    /// Its OUT subject.
    pub subject: String,
    /// The delivery's one identity, `<event>:<recipient>`, whatever rule set decided it.
    pub msg_id: String,
    /// The delivery, with the granted fields only.
    pub delivery: Delivery,
}

/// A status record for a sender.
#[derive(Debug, Clone)]
pub(crate) struct PlannedStatus {
    /// Its subject.
    pub subject: String,
    /// Its message id.
    pub msg_id: String,
    /// The record.
    pub record: GetStatusResponse,
}

/// A police case alert and the event as redacted for its district.
#[derive(Debug, Clone)]
pub(crate) struct PlannedAlert {
    /// The alert.
    pub alert: AlertRecord,
    /// The alerted event as delivered to the district (its details).
    pub details: Vec<u8>,
}

/// Everything one decision about a stored event produces.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The decision.
    pub decision: Decision,
    /// Its audit record and the record's message id (one per event, rule set and case
    /// revision).
    pub audit: (String, AuditRecord),
    /// The sender and every recipient: they take part in the case.
    pub participants: Vec<AgencyId>,
    /// One delivery per recipient.
    pub deliveries: Vec<PlannedDelivery>,
    /// The sender's status, and for a referral response the referral sender's.
    pub statuses: Vec<PlannedStatus>,
    /// The police alerts the routes raise.
    pub alerts: Vec<PlannedAlert>,
}

/// The plan for `env` with the case as `case` at `revision`.
pub(crate) fn plan(
    ctx: &Context<'_>,
    env: &Envelope,
    facts: &Facts,
    case: &CaseRecord,
    revision: u64,
) -> Result<Plan, RouteError> {
    let decision = decide(ctx.rules, ctx.directory, &facts.input(case));
    let audit_id = format!("decision:{}:{}:{revision}", env.event_id, decision.rule_set_version);
    let audit_record = audit::decision_record(env, &decision, revision, facts);
    let participants: Vec<AgencyId> = std::iter::once(facts.sender.clone())
        .chain(decision.recipients.iter().map(|r| r.agency.clone()))
        .collect();
    let mut deliveries = Vec::with_capacity(decision.recipients.len());
    let mut alerts = Vec::new();
    for r in &decision.recipients {
        let delivery = delivery_for(ctx.schema, env, &facts.event_bytes, r, &decision.rule_set_version)?;
        if r.alert.is_some() && ctx.directory.agency(&r.agency).map(|a| a.sector) == Some(Sector::Police) {
            let details = delivery
                .envelope
                .as_ref()
                .map(Message::encode_to_vec)
                .unwrap_or_default();
            alerts.push(PlannedAlert {
                alert: AlertRecord {
                    alert_id: henvis_domain::EventId::parse(&env.event_id)
                        .map_err(|_| RouteError::Poison("malformed event id"))?,
                    case_id: env.case_id.clone(),
                    kind: env.message_type.clone(),
                    urgency: r.alert.unwrap_or(Urgency::Normal),
                    district: r.agency.clone(),
                    raised_at: facts.at,
                    state: AlertState::Open,
                    escalated_from: None,
                    granted_classes: r.classes.iter().map(|c| c.as_str().to_owned()).collect(),
                    escalation_notified: false,
                    history: vec![("raised".to_owned(), ROUTER_WRITER.to_owned(), facts.at)],
                },
                details,
            });
        }
        deliveries.push(PlannedDelivery {
            agency: r.agency.clone(),
            subject: outbound_subject(&r.agency, &facts.mt),
            msg_id: format!("{}:{}", env.event_id, r.agency),
            delivery,
        });
    }
    let mut statuses = Vec::with_capacity(2);
    // closed loop: the referral's sender sees the responder's outcome
    if let Some((referrer, answered, outcome)) = &facts.referral {
        let state = match ReferralOutcome::try_from(*outcome) {
            Ok(ReferralOutcome::Accepted) => Some(DeliveryState::Accepted),
            Ok(ReferralOutcome::Declined) => Some(DeliveryState::Declined),
            Ok(ReferralOutcome::Completed) => Some(DeliveryState::Completed),
            _ => None,
        };
        if let Some(state) = state {
            statuses.push(PlannedStatus {
                subject: status_subject(referrer, answered, ROUTER_WRITER),
                msg_id: format!("response:{answered}:{}:{}", facts.sender, env.event_id),
                record: GetStatusResponse {
                    event_id: answered.clone(),
                    routed: true,
                    recipients: vec![RecipientStatus {
                        recipient_agency_id: facts.sender.to_string(),
                        state: state as i32,
                        reason: String::new(),
                        at: env.submitted_at,
                        rule_id: String::new(),
                    }],
                },
            });
        }
    }
    statuses.push(PlannedStatus {
        subject: status_subject(&facts.sender, &env.event_id, ROUTER_WRITER),
        msg_id: format!("routed:{}:{}", env.event_id, decision.rule_set_version),
        record: audit::status_record(&env.event_id, &decision),
    });
    Ok(Plan {
        audit: (audit_id, audit_record),
        decision,
        participants,
        deliveries,
        statuses,
        alerts,
    })
}

/// The delivery of `env` to one recipient: a fresh copy with only its granted fields.
pub(crate) fn delivery_for(
    schema: &Schema,
    env: &Envelope,
    event_bytes: &[u8],
    r: &henvis_policy::Recipient,
    rule_set_version: &str,
) -> Result<Delivery, RouteError> {
    let redacted = redact(schema, event_bytes, r.classes).map_err(|_| RouteError::Poison("undecodable event"))?;
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
        granted_classes: redacted_classes(r.classes),
        withheld_classes: redacted_classes(redacted.withheld),
        rule_ids: r.rule_ids.clone(),
        rule_set_version: rule_set_version.to_owned(),
        attempt: 0,
    })
}

fn redacted_classes(s: henvis_domain::ClassSet) -> Vec<i32> {
    s.iter().map(|c| c as i32).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::BTreeSet;

    use henvis_domain::{CaseId, Consent, MessageType};
    use henvis_proto::henvis::broker::v1::Sender;
    use prost_reflect::{DynamicMessage, Value};

    use super::*;

    struct World {
        schema: Schema,
        directory: Directory,
        rules: RuleSet,
    }

    impl World {
        fn ctx(&self) -> Context<'_> {
            Context {
                schema: &self.schema,
                directory: &self.directory,
                rules: &self.rules,
            }
        }
    }

    fn world() -> World {
        let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
        let directory = Directory::denmark().unwrap();
        let rules = RuleSet::from_toml("default", crate::DEFAULT_RULES, &schema, &directory).unwrap();
        World {
            schema,
            directory,
            rules,
        }
    }

    const CASE: &str = "0196f3a0-7b5c-7cc0-8000-000000000001";
    const EVENT: &str = "0196f3a0-7b5c-7cc0-8000-0000000000e1";

    /// An event of type `mt` with its kind present and every field at its default.
    fn event_of(w: &World, mt: &MessageType) -> Vec<u8> {
        let desc = w.schema.event_descriptor().clone();
        let field = desc.get_field_by_name(mt.as_str()).unwrap();
        let kind = field.kind();
        let inner = DynamicMessage::new(kind.as_message().unwrap().clone());
        let mut event = DynamicMessage::new(desc);
        event.set_field(&field, Value::Message(inner));
        event.encode_to_vec()
    }

    fn envelope(w: &World, mt: &MessageType, sender: &AgencyId) -> (Envelope, Facts) {
        let bytes = event_of(w, mt);
        let env = Envelope {
            event_id: EVENT.into(),
            idempotency_key: "k".into(),
            message_type: mt.to_string(),
            sender: Some(Sender {
                agency_id: sender.to_string(),
                sector: 0,
                actor_id: "a".into(),
                person_id: String::new(),
            }),
            case_id: CASE.into(),
            submitted_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            event: Some(Event::decode(bytes.as_slice()).unwrap()),
        };
        let facts = Facts {
            event_bytes: bytes,
            mt: mt.clone(),
            sender: sender.clone(),
            sector: w.directory.agency(sender).unwrap().sector,
            case_id: CaseId::parse(CASE).unwrap(),
            at: 1_800_000_000,
            referral: None,
            flags: Vec::new(),
            named: Vec::new(),
        };
        (env, facts)
    }

    fn id(s: &str) -> AgencyId {
        AgencyId::parse(s).unwrap()
    }

    /// A case in København with a guardian, in which the sender takes part.
    fn case_with(sender: &AgencyId) -> CaseRecord {
        let mut c = CaseRecord::new();
        c.apply(
            &CaseChange::Opened {
                municipality_code: "101".into(),
            },
            "01",
        );
        c.apply(&CaseChange::GuardianAppointed(id("ngo-redbarnet")), "02");
        c.add_participants([sender]);
        c
    }

    /// The first agency of a sector that originates `mt`.
    fn originator(w: &World, mt: &MessageType) -> Option<AgencyId> {
        Sector::ALL
            .into_iter()
            .find(|s| henvis_domain::originates(*s).contains(&mt.as_str()))
            .and_then(|s| w.directory.agencies_in(s).next().map(|a| a.id.clone()))
    }

    #[test]
    fn every_message_type_plans_one_redacted_delivery_per_recipient_and_an_audit_that_matches() {
        let w = world();
        let ctx = w.ctx();
        let mut planned = 0;
        let mut deliveries = 0;
        for mt in w.schema.message_types() {
            let Some(sender) = originator(&w, mt) else { continue };
            let (env, facts) = envelope(&w, mt, &sender);
            let case = case_with(&sender);
            let p = plan(&ctx, &env, &facts, &case, 7).unwrap();
            planned += 1;
            // the audit record is the decision, under an id naming the event, rules, revision
            assert_eq!(p.audit.0, format!("decision:{EVENT}:{}:7", p.decision.rule_set_version));
            let AuditRecord::RoutingDecision(d) = &p.audit.1 else {
                panic!("{mt}: a routing decision")
            };
            assert_eq!(d.case_revision, 7);
            let audited: Vec<&str> = d.delivered.iter().map(|r| r.agency.as_str()).collect();
            let decided: Vec<&str> = p.decision.recipients.iter().map(|r| r.agency.as_str()).collect();
            assert_eq!(audited, decided, "{mt}");
            // one delivery per recipient, with exactly its granted classes
            assert_eq!(p.deliveries.len(), p.decision.recipients.len(), "{mt}");
            for (pd, r) in p.deliveries.iter().zip(&p.decision.recipients) {
                deliveries += 1;
                assert_eq!(pd.agency, r.agency);
                assert_eq!(pd.msg_id, format!("{EVENT}:{}", r.agency));
                assert_eq!(pd.subject, outbound_subject(&r.agency, mt));
                let granted: BTreeSet<i32> = r.classes.iter().map(|c| c as i32).collect();
                let delivered: BTreeSet<i32> = pd.delivery.granted_classes.iter().copied().collect();
                assert_eq!(delivered, granted, "{mt} to {}", r.agency);
                assert!(
                    pd.delivery.withheld_classes.iter().all(|c| !granted.contains(c)),
                    "{mt}: a class both granted and withheld"
                );
                let e = pd.delivery.envelope.as_ref().unwrap();
                assert_eq!((e.event_id.as_str(), e.case_id.as_str()), (EVENT, CASE));
                assert!(e.idempotency_key.is_empty(), "the sender's key never leaves");
            }
            // the sender's status, last
            let last = p.statuses.last().unwrap();
            assert_eq!(last.subject, status_subject(&sender, EVENT, ROUTER_WRITER));
            assert!(last.record.routed);
            // alerts only for police districts whose routes raise one
            for a in &p.alerts {
                assert_eq!(w.directory.agency(&a.alert.district).unwrap().sector, Sector::Police);
            }
            assert!(p.participants.contains(&sender));
        }
        assert!(planned >= 15, "every message type a sector originates: {planned}");
        assert!(deliveries > planned, "most types go somewhere: {deliveries}");
    }

    #[test]
    fn immediate_danger_makes_the_police_alert_urgent_and_a_referral_response_closes_the_loop() {
        let w = world();
        let ctx = w.ctx();
        let report = MessageType::parse("suspected_victim_reported").unwrap();
        let ngo = id("ngo-redbarnet");
        let (env, mut facts) = envelope(&w, &report, &ngo);
        let case = case_with(&ngo);
        let normal = plan(&ctx, &env, &facts, &case, 1).unwrap();
        facts.flags = vec!["immediate_danger".into()];
        let urgent = plan(&ctx, &env, &facts, &case, 1).unwrap();
        let urgency = |p: &Plan| p.alerts.iter().map(|a| a.alert.urgency).collect::<Vec<_>>();
        assert_eq!(urgency(&normal), vec![Urgency::Normal]);
        assert_eq!(urgency(&urgent), vec![Urgency::Urgent]);
        assert_eq!(urgent.alerts[0].alert.district, id("politi-koebenhavn"));

        let response = MessageType::parse("referral_response").unwrap();
        let municipality = id("kommune-101");
        let (env, mut facts) = envelope(&w, &response, &municipality);
        facts.referral = Some((ngo.clone(), "answered-event".into(), ReferralOutcome::Accepted as i32));
        let p = plan(&ctx, &env, &facts, &case_with(&municipality), 1).unwrap();
        let loop_back = &p.statuses[0];
        assert_eq!(loop_back.subject, status_subject(&ngo, "answered-event", ROUTER_WRITER));
        assert_eq!(loop_back.record.recipients[0].recipient_agency_id, "kommune-101");
        assert_eq!(loop_back.record.recipients[0].state, DeliveryState::Accepted as i32);
    }

    #[test]
    fn a_consent_withdrawn_between_two_plans_removes_the_recipient_it_entitled() {
        let w = world();
        let ctx = w.ctx();
        let findings = MessageType::parse("health_assessment_completed").unwrap();
        let hospital = w.directory.agencies_in(Sector::Health).next().unwrap().id.clone();
        let (env, facts) = envelope(&w, &findings, &hospital);
        let mut case = case_with(&hospital);
        case.apply(
            &CaseChange::ConsentRecorded(Consent {
                id: henvis_domain::ConsentId::parse("c1").unwrap(),
                agencies: BTreeSet::new(),
                sectors: [Sector::Social].into_iter().collect(),
                message_types: BTreeSet::new(),
                valid_from: 0,
                valid_until: i64::MAX,
                withdrawn: false,
                recorded_by_event: "03".into(),
            }),
            "03",
        );
        let with = plan(&ctx, &env, &facts, &case, 3).unwrap();
        case.apply(
            &CaseChange::ConsentWithdrawn(henvis_domain::ConsentId::parse("c1").unwrap()),
            "04",
        );
        let without = plan(&ctx, &env, &facts, &case, 4).unwrap();
        let to = |p: &Plan| p.deliveries.iter().map(|d| d.agency.to_string()).collect::<Vec<_>>();
        assert!(to(&with).contains(&"kommune-101".to_owned()), "{:?}", to(&with));
        assert!(!to(&without).contains(&"kommune-101".to_owned()), "{:?}", to(&without));
        assert_ne!(
            with.audit.0, without.audit.0,
            "each decision audited under its own revision"
        );
    }

    #[test]
    fn the_case_step_refuses_an_unknown_case_and_a_failed_guard_and_opens_a_new_one() {
        let w = world();
        let ctx = w.ctx();
        let plan_type = MessageType::parse("action_plan_updated").unwrap();
        let ngo = id("ngo-hopenow");
        let (env, facts) = envelope(&w, &plan_type, &ngo);
        let event = env.event.clone().unwrap();
        let refused = |r: Result<CaseChange, RouteError>| matches!(r, Err(RouteError::Poison(_)));
        assert!(refused(case_step(&ctx, &event, &env, &facts, None)), "no such case");
        let case = case_with(&ngo);
        assert!(
            refused(case_step(&ctx, &event, &env, &facts, Some(&case))),
            "a plan from an NGO that is not the guardian"
        );
        // an opening report opens a new case in its municipality, its sender taking part
        let report = MessageType::parse("suspected_victim_reported").unwrap();
        let (mut env, facts) = envelope(&w, &report, &ngo);
        let mut event = env.event.clone().unwrap();
        if let Some(henvis_proto::henvis::events::v1::event::Kind::SuspectedVictimReported(r)) = &mut event.kind {
            r.municipality_code = "101".into();
        }
        env.event = Some(event.clone());
        assert_eq!(
            case_step(&ctx, &event, &env, &facts, None).unwrap(),
            CaseChange::Opened {
                municipality_code: "101".into()
            }
        );
        // and the audit records no separate case change for it (its decision does)
        assert!(
            case_change_record(
                &env,
                &facts,
                &CaseChange::Opened {
                    municipality_code: "101".into()
                }
            )
            .is_none()
        );
        let appointed = CaseChange::GuardianAppointed(id("ngo-redbarnet"));
        let (rid, record) = case_change_record(&env, &facts, &appointed).unwrap();
        assert_eq!(rid, format!("case-change:{EVENT}"));
        assert!(matches!(record, AuditRecord::CaseChange { change, .. } if change == "guardian_appointed"));
    }
}
