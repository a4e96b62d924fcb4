//! The guardian's view of a case: every routing decision with its recipients, rules, legal
//! bases and consents, and every withheld delivery with its reason. Read from the audit.

use std::collections::HashSet;

use henvis_bus::{STREAM_AUDIT, audit_decision_subject};
use henvis_domain::{AuditDecision, CaseId, Class};
use henvis_proto::henvis::broker::v1::{CaseDecision, DecidedRecipient, GetCaseDecisionsResponse, WithheldRecipient};

use crate::{ApiError, Caller, Core};

fn numbers(names: &[String]) -> Vec<i32> {
    names
        .iter()
        .filter_map(|n| Class::ALL.into_iter().find(|c| c.as_str() == n))
        .map(|c| c as i32)
        .collect()
}

/// Every surviving decision about `case_id`, for its guardian only.
pub(crate) async fn get(core: &Core, caller: &Caller, case_id: &str) -> Result<GetCaseDecisionsResponse, ApiError> {
    let id = CaseId::parse(case_id).map_err(|e| ApiError::field("case_id", e.expected))?;
    let case = core
        .bus
        .case(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("case_id: no case `{id}`")))?;
    if case.record.guardian.as_ref() != Some(&caller.agency) {
        return Err(ApiError::PermissionDenied(
            "only the case's guardian may read its routing decisions".into(),
        ));
    }
    let records = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        core.bus.read_subject(STREAM_AUDIT, &audit_decision_subject(&id)),
    )
    .await
    .map_err(|_| ApiError::Unavailable("audit read timed out".into()))??;
    let records: Vec<AuditDecision> = records
        .iter()
        .map(|r| serde_json::from_slice(r).map_err(|e| ApiError::Internal(format!("audit record: {e}"))))
        .collect::<Result<_, _>>()?;
    let voided: HashSet<(&str, u64)> = records
        .iter()
        .filter(|r| r.kind == "routing_decision_voided")
        .map(|r| (r.event_id.as_str(), r.case_revision))
        .collect();
    let decisions = records
        .iter()
        .filter(|r| r.kind == "routing_decision" && !voided.contains(&(r.event_id.as_str(), r.case_revision)))
        .map(|r| CaseDecision {
            event_id: r.event_id.clone(),
            message_type: r.message_type.clone(),
            sender_agency_id: r.sender.clone(),
            rule_set_version: r.rule_set_version.clone(),
            decided_at: Some(prost_types::Timestamp {
                seconds: r.decided_at,
                nanos: 0,
            }),
            delivered: r
                .delivered
                .iter()
                .map(|d| DecidedRecipient {
                    agency_id: d.agency.clone(),
                    classes: numbers(&d.classes),
                    rule_ids: d.rule_ids.clone(),
                    legal_bases: d.legal_bases.clone(),
                    consent_ids: d.consent_ids.clone(),
                    restricted_classes: numbers(&d.restricted_by_never_disclose),
                })
                .collect(),
            withheld: r
                .withheld
                .iter()
                .map(|w| WithheldRecipient {
                    rule_id: w.rule_id.clone(),
                    agency_id: w.agency.clone().unwrap_or_default(),
                    reason: w.reason.clone(),
                    explanation: w.explanation.clone(),
                })
                .collect(),
        })
        .collect();
    Ok(GetCaseDecisionsResponse {
        case_id: id.to_string(),
        decisions,
    })
}
