//! Every record henvis appends to its audit, one typed enum ([`AuditRecord`], tagged by
//! `kind` in JSON), written through one function of the bus. Ids, codes, classes, rules,
//! legal bases, consent ids and hashes: never the child's data.

/// One record of the audit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditRecord {
    /// The router decided who receives an event, with what.
    RoutingDecision(AuditDecision),
    /// A decision the case changed under before anything was delivered; decided again.
    RoutingDecisionVoided(VoidedDecision),
    /// The router applied a case change from a stored event.
    CaseChange {
        /// The event.
        event_id: String,
        /// Its case.
        case_id: String,
        /// Its type.
        message_type: String,
        /// The sending agency.
        by: String,
        /// The change, by name (`CaseChange::name`).
        change: String,
    },
    /// A police contact person read an alert's details.
    AlertDetailsRead {
        /// The alert.
        alert_id: String,
        /// Its case.
        case_id: String,
        /// The district.
        district: String,
        /// The person.
        person: String,
        /// The classes the details carried.
        classes: Vec<String>,
        /// When, unix seconds.
        at: i64,
    },
    /// A contact person claimed an alert.
    AlertClaimed(AlertStepRecord),
    /// A contact person handed an alert over to another.
    AlertHandedOver(AlertStepRecord),
    /// A contact person closed an alert, with its outcome.
    AlertClosed(AlertStepRecord),
    /// A contact person reopened a closed alert.
    AlertReopened(AlertStepRecord),
    /// A stream (or an agency's share of it) refused a message: administrators must act.
    StreamFull {
        /// The stream (`QUOTA` for an agency's share of IN).
        stream: String,
        /// The agency or service refused.
        by: String,
        /// When, unix seconds.
        at_unix: u64,
    },
    /// A stored message the router can never route, kept in DEAD.
    UnroutableEvent {
        /// Its sequence in IN.
        in_sequence: u64,
        /// Why, as a fixed phrase.
        reason: String,
    },
    /// A delivery offered too often without acknowledgement, moved to DEAD.
    DeliveryDeadLettered {
        /// The recipient.
        agency: String,
        /// The event.
        event_id: String,
        /// Its type.
        message_type: String,
        /// Its sequence in OUT.
        out_sequence: u64,
        /// How often it was offered.
        attempts: u64,
    },
    /// A delivery about to expire unacknowledged.
    DeliveryExpiring {
        /// The recipient.
        agency: String,
        /// The event.
        event_id: String,
        /// Its sequence in OUT.
        out_sequence: u64,
        /// Its age.
        age_secs: u64,
        /// Time left.
        expires_in_secs: u64,
    },
    /// Reconciliation delivered again what was missing.
    DeliveryRedriven {
        /// The event.
        event_id: String,
        /// The recipient.
        agency: String,
        /// The rule set that decided.
        rule_set_version: String,
    },
    /// An administrator proposed a rule set (validated, its tests passed).
    RuleSetProposed {
        /// The proposal.
        proposal: u64,
        /// Its version.
        rule_set_version: String,
        /// SHA-256 of its text.
        sha256: String,
        /// Its tests, all passed.
        tests: usize,
        /// The proven administrator.
        by: String,
        /// For a rollback, the proposal it restores.
        #[serde(default)]
        rollback_of: Option<u64>,
    },
    /// A rule set went live: approved by a second administrator, or by break-glass.
    RuleSetApproved {
        /// The proposal.
        proposal: u64,
        /// Its version.
        rule_set_version: String,
        /// SHA-256 of its text.
        sha256: String,
        /// Its tests, run again at approval against the directory of that moment.
        tests: usize,
        /// Who proposed it.
        proposed_by: String,
        /// Who approved it.
        by: String,
        /// The reason, when one administrator approved alone.
        #[serde(default)]
        break_glass: Option<String>,
        /// For a rollback, the proposal it restores.
        #[serde(default)]
        rollback_of: Option<u64>,
    },
    /// An administrator rejected a proposal.
    RuleSetRejected {
        /// The proposal.
        proposal: u64,
        /// Its version.
        rule_set_version: String,
        /// Who rejected it.
        by: String,
        /// Why.
        reason: String,
    },
    /// One administrator put a rule set live alone: administrators must review it.
    BreakGlassUsed {
        /// The proposal.
        proposal: u64,
        /// Its version.
        rule_set_version: String,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// An administrator proposed directory changes.
    DirectoryChangeProposed {
        /// The directory proposal.
        proposal: u64,
        /// The changes.
        changes: Vec<crate::DirectoryChange>,
        /// The proven administrator.
        by: String,
    },
    /// A second administrator approved directory changes; every service applies them.
    DirectoryChangeApproved {
        /// The directory proposal.
        proposal: u64,
        /// The changes.
        changes: Vec<crate::DirectoryChange>,
        /// Who proposed them.
        proposed_by: String,
        /// Who approved them.
        by: String,
    },
    /// An administrator rejected directory changes.
    DirectoryChangeRejected {
        /// The directory proposal.
        proposal: u64,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// What the broker held about a case beyond the audit (its key, record, alerts) was
    /// erased: at the end of a closed case's retention, or after an approved erasure.
    CaseDataErased {
        /// The case.
        case_id: String,
        /// The event that closed it; empty when erased by an administrators' approved
        /// erasure (its `case_erased` record comes first).
        closed_by_event: String,
        /// Alert records (and their details) erased with it.
        alerts: u64,
        /// When, unix seconds.
        at: i64,
    },
    /// An administrator proposed erasing a case (its key destroyed); another must approve.
    CaseErasureProposed {
        /// The erasure proposal.
        erasure: u64,
        /// The case.
        case_id: String,
        /// Who proposed it.
        by: String,
        /// Why.
        reason: String,
        /// Set when the police hold the case under investigation and the proposer
        /// overrides the hold: why.
        #[serde(default)]
        police_hold_override: Option<String>,
    },
    /// A second administrator approved a case's erasure: its key is destroyed after this
    /// record, and nothing the broker holds of its data can be read again.
    CaseErased {
        /// The erasure proposal.
        erasure: u64,
        /// The case.
        case_id: String,
        /// Who proposed it.
        proposed_by: String,
        /// Who approved it.
        by: String,
        /// Why, in the proposer's words.
        reason: String,
        /// The override of a police hold, if any.
        #[serde(default)]
        police_hold_override: Option<String>,
        /// Agencies that had received events of the case: what they acknowledged is in
        /// their own systems, outside the broker's reach.
        delivered_to: Vec<String>,
    },
    /// An administrator rejected a case's erasure.
    CaseErasureRejected {
        /// The erasure proposal.
        erasure: u64,
        /// The case.
        case_id: String,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// The broker found that a case's report looks like another case's (keyed tokens of
    /// identity fields matched; the tokens themselves are never recorded) and proposed a
    /// link to each side. One record in each case's audit.
    CaseLinkProposed {
        /// The link.
        link_id: String,
        /// This side's case.
        case_id: String,
        /// The other case.
        other_case_id: String,
        /// What matched (`names_and_birth_date`, …).
        matched_on: Vec<crate::linkage::MatchKind>,
    },
    /// A side (the case's guardian or municipality) answered a proposed link.
    CaseLinkAnswered {
        /// The link.
        link_id: String,
        /// The answering side's case.
        case_id: String,
        /// The other case.
        other_case_id: String,
        /// The agency that answered.
        by: String,
        /// Confirmed (the same child) or rejected.
        confirmed: bool,
    },
    /// A subject access report on a case was given to its guardian or an administrator.
    SubjectAccessReported {
        /// The report.
        report_id: String,
        /// Its case.
        case_id: String,
        /// Who asked: the guardian's agency or the administrator.
        requested_by: String,
        /// `guardian` or `administrator`.
        viewer: String,
        /// Entries in the report given.
        entries: u64,
        /// Entries left out of it under a police deferral (§ 262 a), for a guardian.
        deferred_entries: u64,
        /// When, unix seconds.
        at: i64,
    },
    /// Another administrator reviewed a break-glass approval.
    BreakGlassReviewed {
        /// The proposal.
        proposal: u64,
        /// The reviewer.
        by: String,
        /// What they found.
        note: String,
    },
}

/// What an audit record is about, which decides where it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditScope<'a> {
    /// A case's routing decisions (written by the router only).
    Decisions(&'a str),
    /// What happened to a case otherwise (changes, alert steps).
    Case(&'a str),
    /// Administrators' attention.
    Admin,
    /// Rule sets.
    Rules,
}

impl AuditRecord {
    /// Where the record is kept.
    pub fn scope(&self) -> AuditScope<'_> {
        match self {
            Self::RoutingDecision(d) => AuditScope::Decisions(&d.case_id),
            Self::RoutingDecisionVoided(v) => AuditScope::Decisions(&v.case_id),
            Self::CaseChange { case_id, .. }
            | Self::AlertDetailsRead { case_id, .. }
            | Self::SubjectAccessReported { case_id, .. }
            | Self::CaseDataErased { case_id, .. }
            | Self::CaseErasureProposed { case_id, .. }
            | Self::CaseErased { case_id, .. }
            | Self::CaseErasureRejected { case_id, .. }
            | Self::CaseLinkProposed { case_id, .. }
            | Self::CaseLinkAnswered { case_id, .. } => AuditScope::Case(case_id),
            Self::AlertClaimed(s) | Self::AlertHandedOver(s) | Self::AlertClosed(s) | Self::AlertReopened(s) => {
                AuditScope::Case(&s.case_id)
            }
            Self::StreamFull { .. }
            | Self::UnroutableEvent { .. }
            | Self::DeliveryDeadLettered { .. }
            | Self::DeliveryExpiring { .. }
            | Self::DeliveryRedriven { .. } => AuditScope::Admin,
            Self::BreakGlassUsed { .. } => AuditScope::Admin,
            Self::RuleSetProposed { .. }
            | Self::RuleSetApproved { .. }
            | Self::RuleSetRejected { .. }
            | Self::BreakGlassReviewed { .. }
            | Self::DirectoryChangeProposed { .. }
            | Self::DirectoryChangeApproved { .. }
            | Self::DirectoryChangeRejected { .. } => AuditScope::Rules,
        }
    }
}

/// A step a contact person took on an alert.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlertStepRecord {
    /// The alert.
    pub alert_id: String,
    /// Its case.
    pub case_id: String,
    /// The district.
    pub district: String,
    /// Who took the step.
    pub person: String,
    /// Whom it was handed to, for a hand-over.
    #[serde(default)]
    pub to: Option<String>,
    /// How it was closed, for a closing.
    #[serde(default)]
    pub outcome: Option<String>,
    /// When, unix seconds.
    pub at: i64,
}

/// The voiding of a decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VoidedDecision {
    /// The event.
    pub event_id: String,
    /// Its case.
    pub case_id: String,
    /// Its type.
    #[serde(default)]
    pub message_type: String,
    /// The case revision the voided decision rested on.
    pub case_revision: u64,
    /// When set, only the decision of this rule-set version is voided (an earlier
    /// attempt's, decided again under a newer set after a router stopped); otherwise every
    /// decision at that case revision (the case changed under it).
    #[serde(default)]
    pub rule_set_version: Option<String>,
}

impl VoidedDecision {
    /// Whether this voids decision `d`.
    pub fn voids(&self, d: &AuditDecision) -> bool {
        self.event_id == d.event_id
            && self.case_revision == d.case_revision
            && self.rule_set_version.as_ref().is_none_or(|v| *v == d.rule_set_version)
    }
}

/// The decisions in `records` no later void record voids, in order.
pub fn standing_decisions<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> Vec<&'a AuditDecision> {
    let records: Vec<&AuditRecord> = records.into_iter().collect();
    let voids: Vec<&VoidedDecision> = records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::RoutingDecisionVoided(v) => Some(v),
            _ => None,
        })
        .collect();
    records
        .iter()
        .filter_map(|r| match r {
            AuditRecord::RoutingDecision(d) if !voids.iter().any(|v| v.voids(d)) => Some(d),
            _ => None,
        })
        .collect()
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditDecision {
    /// The event.
    pub event_id: String,
    /// Its case.
    pub case_id: String,
    /// Its message type.
    #[serde(default)]
    pub message_type: String,
    /// The sending agency.
    #[serde(default)]
    pub sender: String,
    /// The acting person's opaque id.
    #[serde(default)]
    pub actor: String,
    /// The rule set version that decided.
    #[serde(default)]
    pub rule_set_version: String,
    /// The case record revision the decision rests on.
    pub case_revision: u64,
    /// The decision time (the event's submission), unix seconds.
    #[serde(default)]
    pub decided_at: i64,
    /// SHA-256 of the encoded event.
    #[serde(default)]
    pub payload_sha256: String,
    /// The BASIC boolean fields set in the event, by name (what `urgent_when` reads), so
    /// a what-if replay decides on the same input without reading the event.
    #[serde(default)]
    pub flags: Vec<String>,
    /// For a referral response: the referral's sender it answered.
    #[serde(default)]
    pub referral_sender: Option<String>,
    /// The agencies the event names in its agency-id fields, as (field path, agency id)
    /// (what `named:` routes read), so a what-if replay decides on the same input.
    #[serde(default)]
    pub named: Vec<(String, String)>,
    /// Who received it.
    #[serde(default)]
    pub delivered: Vec<AuditRecipient>,
    /// What was withheld.
    #[serde(default)]
    pub withheld: Vec<AuditWithheld>,
}

/// One recipient of a decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecipient {
    /// The agency.
    pub agency: String,
    /// The classes it may see (upper-case names).
    pub classes: Vec<String>,
    /// The routes that entitle it.
    pub rule_ids: Vec<String>,
    /// Their legal bases.
    pub legal_bases: Vec<String>,
    /// The cooperation agreements those routes rest on, in the same order.
    #[serde(default)]
    pub agreements: Vec<String>,
    /// The consents a consent route rested on.
    #[serde(default)]
    pub consent_ids: Vec<String>,
    /// Classes the never-disclose list removed.
    #[serde(default)]
    pub restricted_by_never_disclose: Vec<String>,
    /// The alert urgency its routes raise, if any.
    #[serde(default)]
    pub alert: Option<String>,
}

/// One withheld intended delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditWithheld {
    /// The route.
    pub rule_id: String,
    /// The agency, where known.
    pub agency: Option<String>,
    /// The reason code.
    pub reason: String,
    /// A data-free explanation.
    pub explanation: String,
}

/// Whether the audit accounts for every delivery: counted by [`completeness`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completeness {
    /// Events with a routing decision.
    pub events_decided: u64,
    /// Deliveries stored (delivery marks set published).
    pub deliveries: u64,
    /// Recipients a standing decision names whose delivery is not stored.
    pub without_outcome: u64,
    /// Stored deliveries no standing decision names.
    pub without_decision: u64,
    /// Events with more than one standing (not voided) decision.
    pub decided_more_than_once: u64,
    /// Steps contact persons took on alerts (claims, hand-overs, detail reads), from the
    /// alerts' own histories.
    pub alert_steps: u64,
    /// Of those, steps the audit holds no record (for a detail read: no receipt) of.
    pub alert_steps_without_record: u64,
    /// Steps administrators took (proposals, approvals, rejections, break-glass reviews),
    /// from the governance store.
    pub governance_steps: u64,
    /// Of those, steps the audit holds no record of.
    pub governance_steps_without_record: u64,
}

/// A step a contact person took on an alert, as the alert's history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlertStep {
    /// The alert.
    pub alert_id: String,
    /// `claimed`, `handed_over` or `details_read`.
    pub action: &'static str,
    /// The person.
    pub person: String,
    /// When, unix seconds.
    pub at: i64,
}

impl AlertStep {
    /// The steps a contact person took in `alert`'s history (what the system did itself,
    /// raising and escalating, is left out).
    pub fn of(alert: &crate::AlertRecord) -> Vec<AlertStep> {
        alert
            .history
            .iter()
            .filter_map(|(what, person, at)| {
                let action = Self::of_entry(what)?;
                Some(AlertStep {
                    alert_id: alert.alert_id.to_string(),
                    action,
                    person: person.clone(),
                    at: *at,
                })
            })
            .collect()
    }

    /// The action of one history entry, if a contact person's step.
    pub fn of_entry(what: &str) -> Option<&'static str> {
        match what {
            ALERT_CLAIMED => Some("claimed"),
            ALERT_DETAILS_READ => Some("details_read"),
            ALERT_REOPENED => Some("reopened"),
            w if w.starts_with(ALERT_HANDED_OVER_TO) => Some("handed_over"),
            w if w.starts_with(ALERT_CLOSED_AS) => Some("closed"),
            _ => None,
        }
    }

    /// The step an audit record records, if it is one.
    pub fn recorded_by(record: &AuditRecord) -> Option<AlertStep> {
        let (alert_id, action, person, at) = match record {
            AuditRecord::AlertClaimed(s) => (&s.alert_id, "claimed", &s.person, s.at),
            AuditRecord::AlertHandedOver(s) => (&s.alert_id, "handed_over", &s.person, s.at),
            AuditRecord::AlertClosed(s) => (&s.alert_id, "closed", &s.person, s.at),
            AuditRecord::AlertReopened(s) => (&s.alert_id, "reopened", &s.person, s.at),
            AuditRecord::AlertDetailsRead {
                alert_id, person, at, ..
            } => (alert_id, "details_read", person, *at),
            _ => return None,
        };
        Some(AlertStep {
            alert_id: alert_id.clone(),
            action,
            person: person.clone(),
            at,
        })
    }

    /// The message id of the step's audit record: one record per step, however often it
    /// is written (a retry after a crash between the alert's change and its record).
    pub fn record_id(&self) -> String {
        format!("step:{}:{}:{}:{}", self.alert_id, self.action, self.person, self.at)
    }
}

/// What an alert's history says when a contact person claimed it.
pub const ALERT_CLAIMED: &str = "claimed";
/// What an alert's history says when a contact person read its details.
pub const ALERT_DETAILS_READ: &str = "details read";
/// How an alert's history begins a hand-over (`handed over to <person>`).
pub const ALERT_HANDED_OVER_TO: &str = "handed over to ";
/// How an alert's history begins a closing (`closed as <outcome>`).
pub const ALERT_CLOSED_AS: &str = "closed as ";
/// What an alert's history says when a contact person reopened it.
pub const ALERT_REOPENED: &str = "reopened";

/// Checks `records` (the audit) against the stored deliveries (recipient, event id): every
/// delivery has a standing decision naming its recipient, every recipient of an event's
/// standing decision has its delivery, and how many events have more than one standing
/// decision (a decision voided by the router because the case changed under it does not
/// stand).
pub fn completeness<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    deliveries: &[(String, String)],
    alert_steps: &[AlertStep],
    governance_steps: &[crate::GovernanceStep],
) -> Completeness {
    use std::collections::{BTreeMap, BTreeSet};
    let records: Vec<&AuditRecord> = records.into_iter().collect();
    let mut c = Completeness {
        deliveries: deliveries.len() as u64,
        ..Default::default()
    };
    let mut standing: BTreeMap<&str, Vec<&AuditDecision>> = BTreeMap::new();
    for r in &records {
        if let AuditRecord::RoutingDecision(d) = r {
            standing.entry(d.event_id.as_str()).or_default();
        }
    }
    for d in standing_decisions(records.iter().copied()) {
        standing.entry(d.event_id.as_str()).or_default().push(d);
    }
    c.events_decided = standing.len() as u64;
    c.decided_more_than_once = standing.values().filter(|s| s.len() > 1).count() as u64;
    let stored: BTreeSet<(&str, &str)> = deliveries.iter().map(|(r, e)| (r.as_str(), e.as_str())).collect();
    for (event, ds) in &standing {
        if let Some(last) = ds.last() {
            c.without_outcome += last
                .delivered
                .iter()
                .filter(|r| !stored.contains(&(r.agency.as_str(), *event)))
                .count() as u64;
        }
    }
    for (recipient, event) in &stored {
        let named = standing
            .get(event)
            .is_some_and(|ds| ds.iter().any(|d| d.delivered.iter().any(|r| r.agency == *recipient)));
        c.without_decision += u64::from(!named);
    }
    let recorded: BTreeSet<AlertStep> = records.iter().filter_map(|r| AlertStep::recorded_by(r)).collect();
    c.alert_steps = alert_steps.len() as u64;
    c.alert_steps_without_record = alert_steps.iter().filter(|s| !recorded.contains(s)).count() as u64;
    let recorded: BTreeSet<(crate::GovernanceAction, u64)> = records
        .iter()
        .filter_map(|r| crate::GovernanceStep::recorded_by(r))
        .collect();
    c.governance_steps = governance_steps.len() as u64;
    c.governance_steps_without_record = governance_steps
        .iter()
        .filter(|s| !recorded.contains(&(s.action, s.number)))
        .count() as u64;
    c
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn decision(event: &str, revision: u64, to: &[&str]) -> AuditRecord {
        AuditRecord::RoutingDecision(AuditDecision {
            event_id: event.into(),
            case_id: "c".into(),
            message_type: "t".into(),
            sender: "s".into(),
            actor: String::new(),
            rule_set_version: "v".into(),
            case_revision: revision,
            decided_at: 0,
            payload_sha256: String::new(),
            flags: vec![],
            referral_sender: None,
            named: vec![],
            delivered: to
                .iter()
                .map(|a| AuditRecipient {
                    agency: (*a).into(),
                    classes: vec![],
                    rule_ids: vec![],
                    legal_bases: vec![],
                    agreements: vec![],
                    consent_ids: vec![],
                    restricted_by_never_disclose: vec![],
                    alert: None,
                })
                .collect(),
            withheld: vec![],
        })
    }

    #[test]
    fn completeness_counts_deliveries_without_decision_and_decisions_without_outcome() {
        let d = |r: &str, e: &str| (r.to_owned(), e.to_owned());
        let records = [
            decision("e1", 1, &["a", "b"]),
            decision("e2", 1, &["a"]),
            AuditRecord::RoutingDecisionVoided(VoidedDecision {
                event_id: "e2".into(),
                case_id: "c".into(),
                message_type: "t".into(),
                case_revision: 1,
                rule_set_version: None,
            }),
            decision("e2", 2, &["b"]),
            decision("e3", 1, &["a"]),
            decision("e3", 1, &["a"]),
        ];
        let all = completeness(
            &records,
            &[d("a", "e1"), d("b", "e1"), d("b", "e2"), d("a", "e3")],
            &[],
            &[],
        );
        assert_eq!(
            all,
            Completeness {
                events_decided: 3,
                deliveries: 4,
                without_outcome: 0,
                without_decision: 0,
                decided_more_than_once: 1,
                alert_steps: 0,
                alert_steps_without_record: 0,
                governance_steps: 0,
                governance_steps_without_record: 0,
            }
        );
        // a delivery the voided decision named, and one missing
        let c = completeness(&records, &[d("a", "e1"), d("a", "e2"), d("a", "e3")], &[], &[]);
        assert_eq!((c.without_outcome, c.without_decision), (2, 1));
    }

    #[test]
    fn every_step_in_an_alert_history_needs_its_audit_record() {
        let alert_id = crate::EventId::new_now();
        let alert = crate::AlertRecord {
            alert_id,
            case_id: "c".into(),
            kind: "t".into(),
            urgency: crate::Urgency::Normal,
            district: crate::AgencyId::parse("politi-fyn").unwrap(),
            raised_at: 1,
            state: crate::AlertState::Open,
            escalated_from: None,
            granted_classes: vec![],
            escalation_notified: false,
            history: vec![
                ("raised".into(), "router".into(), 1),
                (ALERT_CLAIMED.into(), "p1".into(), 2),
                (format!("{ALERT_HANDED_OVER_TO}p2"), "p1".into(), 3),
                (ALERT_DETAILS_READ.into(), "p2".into(), 4),
                ("escalated to politi-nationalt".into(), "henvis".into(), 5),
            ],
        };
        let steps = AlertStep::of(&alert);
        assert_eq!(
            steps.iter().map(|s| (s.action, s.at)).collect::<Vec<_>>(),
            [("claimed", 2), ("handed_over", 3), ("details_read", 4)]
        );
        let step = |at: i64, person: &str| AlertStepRecord {
            alert_id: alert_id.to_string(),
            case_id: "c".into(),
            district: "politi-fyn".into(),
            person: person.into(),
            to: None,
            outcome: None,
            at,
        };
        let mut records = vec![
            AuditRecord::AlertClaimed(step(2, "p1")),
            AuditRecord::AlertHandedOver(step(3, "p1")),
            AuditRecord::AlertDetailsRead {
                alert_id: alert_id.to_string(),
                case_id: "c".into(),
                district: "politi-fyn".into(),
                person: "p2".into(),
                classes: vec![],
                at: 4,
            },
        ];
        let c = completeness(&records, &[], &steps, &[]);
        assert_eq!((c.alert_steps, c.alert_steps_without_record), (3, 0));
        records.remove(2);
        let c = completeness(&records, &[], &steps, &[]);
        assert_eq!(c.alert_steps_without_record, 1, "a detail read without its receipt");
    }

    #[test]
    fn every_administrators_step_in_the_governance_store_needs_its_audit_record() {
        use crate::{BreakGlass, DirectoryProposal, PersonId, Proposal, ProposalDecision, Review, TestRun};
        let admin = |n: &str| PersonId::parse(n).unwrap();
        let proposal = |id: u64, decision| Proposal {
            id,
            rule_set_version: format!("v{id}"),
            sha256: String::new(),
            text: String::new(),
            file: String::new(),
            note: String::new(),
            proposed_by: admin("admin-1"),
            proposed_at: 10,
            rollback_of: None,
            tests: TestRun { passed: 1, at: 10 },
            decision,
        };
        let proposals = [
            proposal(1, None),
            proposal(
                2,
                Some(ProposalDecision::Approved {
                    by: admin("admin-2"),
                    at: 20,
                    break_glass: Some(BreakGlass {
                        reason: "r".into(),
                        review: Some(Review {
                            by: admin("admin-3"),
                            at: 30,
                            note: String::new(),
                        }),
                    }),
                }),
            ),
        ];
        let directory = [DirectoryProposal {
            id: 1,
            changes: Vec::new(),
            note: String::new(),
            proposed_by: admin("admin-1"),
            proposed_at: 10,
            decision: Some(ProposalDecision::Rejected {
                by: admin("admin-2"),
                at: 20,
                reason: "no".into(),
            }),
        }];
        let steps = crate::GovernanceStep::of(&proposals, &directory, &[]);
        assert_eq!(steps.len(), 6, "{steps:?}");
        let proposed = |proposal| AuditRecord::RuleSetProposed {
            proposal,
            rule_set_version: String::new(),
            sha256: String::new(),
            tests: 1,
            by: "admin-1".into(),
            rollback_of: None,
        };
        let mut records = vec![
            proposed(1),
            proposed(2),
            AuditRecord::BreakGlassReviewed {
                proposal: 2,
                by: "admin-3".into(),
                note: String::new(),
            },
            AuditRecord::DirectoryChangeProposed {
                proposal: 1,
                changes: Vec::new(),
                by: "admin-1".into(),
            },
            AuditRecord::DirectoryChangeRejected {
                proposal: 1,
                by: "admin-2".into(),
                reason: "no".into(),
            },
        ];
        // the approval of #2 has no record
        let c = completeness(&records, &[], &[], &steps);
        assert_eq!((c.governance_steps, c.governance_steps_without_record), (6, 1));
        records.push(AuditRecord::RuleSetApproved {
            proposal: 2,
            rule_set_version: String::new(),
            sha256: String::new(),
            tests: 1,
            proposed_by: "admin-1".into(),
            by: "admin-2".into(),
            break_glass: Some("r".into()),
            rollback_of: None,
        });
        let c = completeness(&records, &[], &[], &steps);
        assert_eq!(c.governance_steps_without_record, 0);
    }

    #[test]
    fn records_are_tagged_by_kind_and_read_back_as_written() {
        let records = [
            AuditRecord::RoutingDecisionVoided(VoidedDecision {
                event_id: "e".into(),
                case_id: "c".into(),
                message_type: "t".into(),
                case_revision: 3,
                rule_set_version: None,
            }),
            AuditRecord::StreamFull {
                stream: "OUT".into(),
                by: "kommune-101".into(),
                at_unix: 1,
            },
            AuditRecord::AlertClaimed(AlertStepRecord {
                alert_id: "a".into(),
                case_id: "c".into(),
                district: "politi-fyn".into(),
                person: "p".into(),
                to: None,
                outcome: None,
                at: 2,
            }),
        ];
        let kinds = ["routing_decision_voided", "stream_full", "alert_claimed"];
        for (r, kind) in records.iter().zip(kinds) {
            let json: serde_json::Value = serde_json::to_value(r).unwrap();
            assert_eq!(json["kind"], kind);
            assert_eq!(&serde_json::from_value::<AuditRecord>(json).unwrap(), r);
        }
        assert_eq!(records[0].scope(), AuditScope::Decisions("c"));
        assert_eq!(records[1].scope(), AuditScope::Admin);
        assert_eq!(records[2].scope(), AuditScope::Case("c"));
    }
}
