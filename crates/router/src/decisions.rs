//! The guardian's view of a case, answered for the sector services (which have no read
//! rights on the audit): its routing decisions and its subject access report. The router
//! reads the case's audit and gives it to the agency the request is made for only if it is
//! the case's guardian. Every router answers (a queue group), so any one of them suffices.

use std::sync::Arc;

use henvis_bus::{
    CasesAnswer, DECISIONS_PAGE, DecisionsAnswer, DecisionsQuery, QueryKind, REPORT_PAGE, ROUTER_WRITER, ReportAnswer,
    ReportQuery, audit_case_filter, audit_decision_subject,
};
use henvis_domain::{
    AgencyId, AuditDecision, AuditRecord, CaseId, CaseRecord,
    report::{self, ReportRequest, SubjectAccessReport, Viewer},
};

use crate::Router;

/// Answers decisions and report requests until `shutdown`.
pub(crate) async fn serve(router: Arc<Router>, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    let wait = henvis_runtime::fan_out(shutdown);
    tokio::join!(
        router
            .bus
            .serve_queries(QueryKind::Decisions, wait(), DecisionsAnswer::NoCase, |asker, query| {
                answer(&router, asker, query)
            }),
        router
            .bus
            .serve_queries(QueryKind::Report, wait(), ReportAnswer::NoCase, |asker, query| {
                answer_report(&router, asker, query)
            }),
        router.bus.serve_queries(
            QueryKind::Links,
            wait(),
            henvis_bus::LinksAnswer::Unavailable,
            |asker, query| { crate::linkage::answer_links(&router, asker, query) }
        ),
        router.bus.serve_queries(
            QueryKind::LinkAnswer,
            wait(),
            henvis_bus::LinkAnswerAnswer::NoLink,
            |asker, query| crate::linkage::answer_link(&router, asker, query)
        ),
        router.bus.serve_queries(
            QueryKind::Cases,
            wait(),
            CasesAnswer::Unavailable,
            |asker, _: henvis_bus::CasesQuery| answer_cases(&router, asker)
        ),
    );
}

/// The cases `asker` is guardian of now: every case the index notes for it whose record
/// still names it (an ended guardianship or an erased case is left out), the most
/// recently changed first.
async fn answer_cases(router: &Router, asker: AgencyId) -> CasesAnswer {
    let listed = match router.bus.guardian_index(&asker).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, agency = %asker, "guardian index unreadable");
            return CasesAnswer::Unavailable;
        }
    };
    let now = henvis_runtime::unix_now();
    let mut cases = Vec::with_capacity(listed.len());
    for id in listed {
        let Ok(case) = CaseId::parse(&id) else { continue };
        let found = match router.bus.case(&case).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, case_id = %case, "case record unreadable for a guardian's list");
                return CasesAnswer::Unavailable;
            }
        };
        let Some(c) = found.filter(|c| c.record.guardian.as_ref() == Some(&asker)) else {
            continue;
        };
        cases.push(henvis_bus::GuardianCase {
            case_id: case.to_string(),
            municipality_code: c.record.municipality_code.clone(),
            closed: c.record.closed_by_event.is_some(),
            consents_in_force: c
                .record
                .consents
                .iter()
                .filter(|k| !k.withdrawn && k.valid_from <= now && now < k.valid_until)
                .count(),
            revision: c.revision,
        });
    }
    cases.sort_by_key(|c| std::cmp::Reverse(c.revision));
    CasesAnswer::Cases { cases }
}

/// The case record of `case_id` if `asker` is its guardian.
async fn guarded(
    router: &Router,
    asker: &AgencyId,
    case_id: &str,
    what: &str,
) -> Result<(CaseId, CaseRecord), Refused> {
    let case = CaseId::parse(case_id).map_err(|_| Refused::NoCase)?;
    let record = match router.bus.case(&case).await {
        Ok(Some(c)) => c.record,
        Ok(None) => return Err(Refused::NoCase),
        Err(e) => {
            tracing::warn!(error = %e, case_id = %case, "case record unreadable for a guardian's request");
            return Err(Refused::Unavailable);
        }
    };
    if record.guardian.as_ref() != Some(asker) {
        henvis_runtime::refusals::record(henvis_runtime::refusals::Refusal::Guard, asker.as_str(), what);
        return Err(Refused::NotGuardian);
    }
    Ok((case, record))
}

enum Refused {
    NoCase,
    NotGuardian,
    Unavailable,
}

async fn answer_report(router: &Router, asker: AgencyId, query: ReportQuery) -> ReportAnswer {
    let (case, record) = match guarded(
        router,
        &asker,
        &query.case_id,
        "subject access report of a case it is not the guardian of",
    )
    .await
    {
        Ok(c) => c,
        Err(Refused::NoCase) => return ReportAnswer::NoCase,
        Err(Refused::NotGuardian) => return ReportAnswer::NotGuardian,
        Err(Refused::Unavailable) => return ReportAnswer::Unavailable,
    };
    let records = match router.bus.audit_records(&audit_case_filter(&case)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, case_id = %case, "audit unreadable for a subject access report");
            return ReportAnswer::Unavailable;
        }
    };
    let first_page = query.report_id.is_none();
    let report_id = query
        .report_id
        .unwrap_or_else(|| henvis_domain::EventId::new_now().to_string());
    // a later page leaves out the record of this report's own giving
    let records: Vec<AuditRecord> = records
        .into_iter()
        .filter(|r| !matches!(r, AuditRecord::SubjectAccessReported { report_id: id, .. } if *id == report_id))
        .collect();
    let directory = router.directory.current();
    let case_text = case.to_string();
    let (report, deferred) = report::build(
        &ReportRequest {
            report_id: &report_id,
            case_id: &case_text,
            case: &record,
            viewer: Viewer::Guardian,
            requested_by: asker.as_str(),
            now: henvis_runtime::unix_now(),
            deferral_max_secs: router.deferral_max_secs,
            directory: &directory,
        },
        &records,
    );
    if first_page {
        // the giving of the account, and any deferral applied to it, is audited before
        // anything leaves
        let given = report::given(&report, deferred);
        if let Err(e) = router
            .bus
            .audit(ROUTER_WRITER, &format!("report:{report_id}"), &given)
            .await
        {
            tracing::warn!(error = %e, case_id = %case, "subject access report not audited; not given");
            return ReportAnswer::Unavailable;
        }
    }
    page_report(report, query.offset)
}

/// One page of `report`'s entries from `offset`.
fn page_report(mut report: SubjectAccessReport, offset: usize) -> ReportAnswer {
    let all = std::mem::take(&mut report.entries);
    let end = (offset + REPORT_PAGE).min(all.len());
    report.entries = all.get(offset..end).map(<[_]>::to_vec).unwrap_or_default();
    ReportAnswer::Report {
        report: Box::new(report),
        next: (end < all.len()).then_some(end),
    }
}

async fn answer(router: &Router, asker: AgencyId, query: DecisionsQuery) -> DecisionsAnswer {
    let case = match guarded(
        router,
        &asker,
        &query.case_id,
        "decisions of a case it is not the guardian of",
    )
    .await
    {
        Ok(found) => found,
        Err(Refused::NoCase) => return DecisionsAnswer::NoCase,
        Err(Refused::NotGuardian) => return DecisionsAnswer::NotGuardian,
        Err(Refused::Unavailable) => return DecisionsAnswer::Unavailable,
    };
    let (case, record) = case;
    let records = match router.bus.audit_records(&audit_decision_subject(&case)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, case_id = %case, "audit unreadable for a decisions request");
            return DecisionsAnswer::Unavailable;
        }
    };
    let mut answer = page(records, query.offset);
    if let DecisionsAnswer::Decisions { standing, .. } = &mut answer {
        *standing = Some(henvis_bus::CaseStanding {
            consents: record.consents,
            never_disclose: record.never_disclose,
        });
    }
    answer
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
        standing: None,
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
            named: vec![],
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
        let DecisionsAnswer::Decisions { decisions, next, .. } = page(records.clone(), 0) else {
            panic!("decisions")
        };
        assert_eq!(decisions.len(), DECISIONS_PAGE);
        assert_eq!((decisions[0].event_id.as_str(), decisions[0].case_revision), ("e0", 2));
        assert_eq!(next, Some(DECISIONS_PAGE));
        let DecisionsAnswer::Decisions { decisions, next, .. } = page(records, DECISIONS_PAGE) else {
            panic!("decisions")
        };
        assert_eq!(decisions.len(), 6);
        assert_eq!(next, None);
    }

    #[test]
    fn a_report_is_given_in_pages_that_follow_each_other() {
        let entry = |at: i64| henvis_domain::report::ReportEntry {
            at,
            deferred: false,
            entry: henvis_domain::report::Entry::Reported {
                report_id: String::new(),
                requested_by: String::new(),
                viewer: String::new(),
            },
        };
        let report = SubjectAccessReport {
            report_id: "r".into(),
            case_id: "c".into(),
            generated_at: 0,
            viewer: Viewer::Guardian,
            requested_by: "g".into(),
            deferral: None,
            entries: (0..(2 * REPORT_PAGE + 5) as i64).map(entry).collect(),
        };
        let mut offset = 0;
        let mut seen = Vec::new();
        loop {
            let ReportAnswer::Report { report: page, next } = page_report(report.clone(), offset) else {
                panic!("a page")
            };
            seen.extend(page.entries.iter().map(|e| e.at));
            match next {
                Some(n) => offset = n,
                None => break,
            }
        }
        assert_eq!(seen, (0..(2 * REPORT_PAGE + 5) as i64).collect::<Vec<_>>());
    }
}
