//! The guardian's view of a case's routing decisions, answered for the sector services
//! (which have no read rights on the audit): the router reads the case's decisions from the
//! audit and gives them to the agency the request is made for only if it is the case's
//! guardian. Every router answers (a queue group), so any one of them suffices.

use std::sync::Arc;

use henvis_bus::{DECISIONS_PAGE, DecisionsAnswer, DecisionsQuery, audit_decision_subject};
use henvis_domain::{AgencyId, AuditDecision, AuditRecord, CaseId};

use crate::Router;

/// Answers decisions requests until `shutdown`.
pub(crate) async fn serve(router: Arc<Router>, shutdown: impl std::future::Future<Output = ()> + Send) {
    router
        .bus
        .answer_decisions(shutdown, |asker, query| answer(&router, asker, query))
        .await;
}

async fn answer(router: &Router, asker: AgencyId, query: DecisionsQuery) -> DecisionsAnswer {
    let Ok(case) = CaseId::parse(&query.case_id) else {
        return DecisionsAnswer::NoCase;
    };
    let record = match router.bus.case(&case).await {
        Ok(Some(c)) => c.record,
        Ok(None) => return DecisionsAnswer::NoCase,
        Err(e) => {
            tracing::warn!(error = %e, case_id = %case, "case record unreadable for a decisions request");
            return DecisionsAnswer::Unavailable;
        }
    };
    if record.guardian.as_ref() != Some(&asker) {
        henvis_runtime::refusals::record(
            henvis_runtime::refusals::Refusal::Guard,
            asker.as_str(),
            "decisions of a case it is not the guardian of",
        );
        return DecisionsAnswer::NotGuardian;
    }
    let records = match router.bus.audit_records(&audit_decision_subject(&case)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, case_id = %case, "audit unreadable for a decisions request");
            return DecisionsAnswer::Unavailable;
        }
    };
    page(records, query.offset)
}

/// The surviving decisions (voided ones left out) from `offset`, one page.
fn page(records: Vec<AuditRecord>, offset: usize) -> DecisionsAnswer {
    let surviving: Vec<AuditDecision> = henvis_domain::standing_decisions(&records)
        .into_iter()
        .cloned()
        .collect();
    let end = (offset + DECISIONS_PAGE).min(surviving.len());
    let decisions = surviving.get(offset..end).map(<[_]>::to_vec).unwrap_or_default();
    DecisionsAnswer::Decisions {
        decisions,
        next: (end < surviving.len()).then_some(end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, event: &str, revision: u64) -> AuditRecord {
        if kind == "routing_decision_voided" {
            return AuditRecord::RoutingDecisionVoided(henvis_domain::VoidedDecision {
                event_id: event.into(),
                case_id: "c".into(),
                message_type: String::new(),
                case_revision: revision,
                rule_set_version: None,
            });
        }
        AuditRecord::RoutingDecision(AuditDecision {
            event_id: event.into(),
            case_id: "c".into(),
            message_type: String::new(),
            sender: String::new(),
            actor: String::new(),
            rule_set_version: String::new(),
            case_revision: revision,
            decided_at: 0,
            payload_sha256: String::new(),
            flags: Vec::new(),
            referral_sender: None,
            delivered: Vec::new(),
            withheld: Vec::new(),
        })
    }

    #[test]
    fn voided_decisions_are_left_out_and_pages_follow_each_other() {
        let mut records = vec![
            record("routing_decision", "e0", 1),
            record("routing_decision_voided", "e0", 1),
            record("routing_decision", "e0", 2),
        ];
        records.extend((1..=DECISIONS_PAGE + 5).map(|i| record("routing_decision", &format!("e{i}"), 2)));
        let DecisionsAnswer::Decisions { decisions, next } = page(records.clone(), 0) else {
            panic!("decisions")
        };
        assert_eq!(decisions.len(), DECISIONS_PAGE);
        assert_eq!((decisions[0].event_id.as_str(), decisions[0].case_revision), ("e0", 2));
        assert_eq!(next, Some(DECISIONS_PAGE));
        let DecisionsAnswer::Decisions { decisions, next } = page(records, DECISIONS_PAGE) else {
            panic!("decisions")
        };
        assert_eq!(decisions.len(), 6);
        assert_eq!(next, None);
    }
}
