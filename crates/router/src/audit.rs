//! Audit and status records of routing decisions: ids, classes, rules, legal bases, consent
//! ids and a payload hash, never the child's data.

use henvis_domain::{Class, ClassSet};
use henvis_policy::{Decision, Urgency};
use henvis_proto::henvis::broker::v1::{DeliveryState, Envelope, GetStatusResponse, RecipientStatus};
use sha2::{Digest, Sha256};

#[derive(serde::Serialize)]
struct AuditDecision<'a> {
    kind: &'static str,
    event_id: &'a str,
    case_id: &'a str,
    message_type: &'a str,
    sender: &'a str,
    actor: &'a str,
    rule_set_version: &'a str,
    case_revision: u64,
    decided_at: i64,
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
    consent_ids: Vec<String>,
    restricted_by_never_disclose: Vec<&'static str>,
    alert: Option<&'static str>,
}

#[derive(serde::Serialize)]
struct AuditWithheld {
    rule_id: String,
    agency: Option<String>,
    reason: &'static str,
    explanation: &'static str,
}

fn names(c: ClassSet) -> Vec<&'static str> {
    c.iter().map(Class::as_str).collect()
}

/// The audit record of a decision.
pub(crate) fn decision_record(
    env: &Envelope,
    d: &Decision,
    case_revision: u64,
    at: i64,
    event_bytes: &[u8],
) -> Vec<u8> {
    let record = AuditDecision {
        kind: "routing_decision",
        event_id: &env.event_id,
        case_id: &env.case_id,
        message_type: &env.message_type,
        sender: env.sender.as_ref().map_or("", |s| s.agency_id.as_str()),
        actor: env.sender.as_ref().map_or("", |s| s.actor_id.as_str()),
        rule_set_version: &d.rule_set_version,
        case_revision,
        decided_at: at,
        payload_sha256: hex::encode(Sha256::digest(event_bytes)),
        delivered: d
            .recipients
            .iter()
            .map(|r| AuditRecipient {
                agency: r.agency.to_string(),
                classes: names(r.classes),
                rule_ids: r.rule_ids.clone(),
                legal_bases: r.bases.clone(),
                consent_ids: r.consent_ids.clone(),
                restricted_by_never_disclose: names(r.restricted),
                alert: r.alert.map(Urgency::as_str),
            })
            .collect(),
        withheld: d
            .withheld
            .iter()
            .map(|w| AuditWithheld {
                rule_id: w.rule_id.clone(),
                agency: w.recipient.as_ref().map(ToString::to_string),
                reason: w.reason.code(),
                explanation: w.reason.describe(),
            })
            .collect(),
    };
    serde_json::to_vec(&record).unwrap_or_default()
}

/// The audit record that voids a decision whose case changed before it was delivered.
pub(crate) fn void_record(env: &Envelope, case_revision: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "routing_decision_voided",
        "event_id": env.event_id,
        "case_id": env.case_id,
        "case_revision": case_revision,
        "reason": "the case changed before delivery; decided again",
    }))
    .unwrap_or_default()
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
