//! Audit and status records of routing decisions: ids, classes, rules, legal bases, consent
//! ids and a payload hash, never the child's data.

use henvis_domain::{AuditDecision, AuditRecipient, AuditRecord, AuditWithheld, ClassSet, VoidedDecision};
use henvis_policy::Decision;
use henvis_proto::henvis::broker::v1::{DeliveryState, Envelope, GetStatusResponse, RecipientStatus};
use sha2::{Digest, Sha256};

fn names(c: ClassSet) -> Vec<String> {
    c.iter().map(|c| c.as_str().to_owned()).collect()
}

/// The audit record of a decision.
pub(crate) fn decision_record(
    env: &Envelope,
    d: &Decision,
    case_revision: u64,
    facts: &crate::route::Facts,
) -> AuditRecord {
    AuditRecord::RoutingDecision(AuditDecision {
        event_id: env.event_id.clone(),
        case_id: env.case_id.clone(),
        message_type: env.message_type.clone(),
        sender: env.sender.as_ref().map(|s| s.agency_id.clone()).unwrap_or_default(),
        actor: env.sender.as_ref().map(|s| s.actor_id.clone()).unwrap_or_default(),
        rule_set_version: d.rule_set_version.clone(),
        case_revision,
        decided_at: facts.at,
        payload_sha256: hex::encode(Sha256::digest(&facts.event_bytes)),
        flags: facts.flags.clone(),
        referral_sender: facts.referral.as_ref().map(|(s, _, _)| s.to_string()),
        named: facts.named.clone(),
        delivered: d
            .recipients
            .iter()
            .map(|r| AuditRecipient {
                agency: r.agency.to_string(),
                classes: names(r.classes),
                rule_ids: r.rule_ids.clone(),
                legal_bases: r.bases.clone(),
                agreements: r.agreements.clone(),
                consent_ids: r.consent_ids.clone(),
                restricted_by_never_disclose: names(r.restricted),
                alert: r.alert.map(|u| u.as_str().to_owned()),
            })
            .collect(),
        withheld: d
            .withheld
            .iter()
            .map(|w| AuditWithheld {
                rule_id: w.rule_id.clone(),
                agency: w.recipient.as_ref().map(ToString::to_string),
                reason: w.reason.code().to_owned(),
                explanation: w.reason.describe().to_owned(),
            })
            .collect(),
    })
}

/// The audit record that voids a decision whose case changed before it was delivered
/// (every decision at `case_revision`), or, with `rule_set_version`, the decision an
/// earlier attempt made under that rule set.
pub(crate) fn void_record(env: &Envelope, case_revision: u64, rule_set_version: Option<&str>) -> AuditRecord {
    AuditRecord::RoutingDecisionVoided(VoidedDecision {
        event_id: env.event_id.clone(),
        case_id: env.case_id.clone(),
        message_type: env.message_type.clone(),
        case_revision,
        rule_set_version: rule_set_version.map(str::to_owned),
    })
}

/// The sender's view of a decision: stored per recipient, withheld with the reason only
/// where the route lets the sender see it (a reason can itself be sensitive; the guardian
/// and administrators read it in the audit).
pub(crate) fn status_record(event_id: &str, d: &Decision) -> GetStatusResponse {
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
    recipients.extend(d.withheld.iter().map(|w| {
        let (agency, reason) = if w.sender_sees_reason {
            (
                w.recipient.as_ref().map(ToString::to_string).unwrap_or_default(),
                w.reason.describe().to_owned(),
            )
        } else {
            // who it would have gone to can be as telling as why
            (String::new(), "withheld by policy".to_owned())
        };
        RecipientStatus {
            recipient_agency_id: agency,
            state: DeliveryState::Withheld as i32,
            reason,
            at: now,
            rule_id: w.rule_id.clone(),
        }
    }));
    GetStatusResponse {
        event_id: event_id.to_owned(),
        routed: true,
        recipients,
    }
}
