//! The guardian's view of a case: every routing decision with its recipients, rules, legal
//! bases and consents, and every withheld delivery with its reason; and the subject access
//! report. Read from the audit by the router, which answers the case's guardian only.

use henvis_bus::{CaseStanding, DecisionsAnswer, ReportAnswer};
use henvis_convert::class_numbers;
use henvis_domain::{CaseId, Shielded};
use henvis_proto::henvis::{
    broker::v1::{
        CaseConsent, CaseDecision, DecidedRecipient, GetCaseDecisionsResponse, SubjectAccessReport, WithheldRecipient,
    },
    events::v1::{AgencyList, NeverDiscloseEntry, never_disclose_entry},
};

use crate::{ApiError, Caller, Core};

/// Every surviving decision about `case_id`, for its guardian only. The router reads the
/// audit and decides who may see it; this service holds no read rights on the audit.
pub(crate) async fn get(core: &Core, caller: &Caller, case_id: &str) -> Result<GetCaseDecisionsResponse, ApiError> {
    let id = CaseId::parse(case_id).map_err(|e| ApiError::field("case_id", e.expected))?;
    let (records, standing) = match core.bus.ask_decisions(&caller.agency, &id).await? {
        DecisionsAnswer::Decisions {
            decisions, standing, ..
        } => (decisions, standing.unwrap_or_default()),
        DecisionsAnswer::NoCase => return Err(ApiError::NotFound(format!("case_id: no case `{id}`"))),
        DecisionsAnswer::NotGuardian => return Err(not_guardian("routing decisions")),
        DecisionsAnswer::Unavailable => return Err(ApiError::Unavailable("audit read failed; retry".into())),
    };
    let decisions = records
        .iter()
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
                    classes: class_numbers(&d.classes),
                    rule_ids: d.rule_ids.clone(),
                    legal_bases: d.legal_bases.clone(),
                    consent_ids: d.consent_ids.clone(),
                    restricted_classes: class_numbers(&d.restricted_by_never_disclose),
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
    let (consents, never_disclose) = standing_to_wire(&standing, henvis_runtime::unix_now());
    Ok(GetCaseDecisionsResponse {
        case_id: id.to_string(),
        decisions,
        consents,
        never_disclose,
    })
}

/// The cases the calling agency is guardian of, from the router (which reads the case
/// records; this service has no read rights on them).
pub(crate) async fn guardian_cases(
    core: &Core,
    caller: &Caller,
) -> Result<henvis_proto::henvis::broker::v1::ListGuardianCasesResponse, ApiError> {
    use henvis_proto::henvis::broker::v1::{GuardianCase, ListGuardianCasesResponse};
    match core.bus.ask_cases(&caller.agency).await? {
        henvis_bus::CasesAnswer::Cases { cases } => Ok(ListGuardianCasesResponse {
            cases: cases
                .into_iter()
                .map(|c| GuardianCase {
                    case_id: c.case_id,
                    municipality_code: c.municipality_code.unwrap_or_default(),
                    closed: c.closed,
                    consents_in_force: u32::try_from(c.consents_in_force).unwrap_or(u32::MAX),
                })
                .collect(),
        }),
        henvis_bus::CasesAnswer::Unavailable => Err(ApiError::Unavailable("case records unreadable; retry".into())),
    }
}

fn time(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// The guardian's consents (with their state at `now`) and never-disclose list, as the
/// wire shows them.
fn standing_to_wire(s: &CaseStanding, now: i64) -> (Vec<CaseConsent>, Vec<NeverDiscloseEntry>) {
    let consents = s
        .consents
        .iter()
        .map(|c| CaseConsent {
            consent_id: c.id.to_string(),
            recipient_agency_ids: c.agencies.iter().map(ToString::to_string).collect(),
            recipient_sectors: c.sectors.iter().map(|s| s.as_str().to_owned()).collect(),
            message_types: c.message_types.iter().map(ToString::to_string).collect(),
            valid_from: time(c.valid_from),
            valid_until: time(c.valid_until),
            state: if c.withdrawn {
                "withdrawn"
            } else if now >= c.valid_until {
                "expired"
            } else if now < c.valid_from {
                "not_yet_valid"
            } else {
                "in_force"
            }
            .to_owned(),
            recorded_by_event_id: c.recorded_by_event.clone(),
        })
        .collect();
    let never_disclose = s
        .never_disclose
        .iter()
        .map(|n| NeverDiscloseEntry {
            from: Some(match &n.from {
                Shielded::Agency(a) => never_disclose_entry::From::AgencyId(a.to_string()),
                Shielded::AllExcept(except) => never_disclose_entry::From::AllExcept(AgencyList {
                    agency_ids: except.iter().map(ToString::to_string).collect(),
                }),
            }),
            classes: n.classes.iter().map(|c| c as i32).collect(),
        })
        .collect();
    (consents, never_disclose)
}

fn not_guardian(what: &str) -> ApiError {
    ApiError::PermissionDenied(format!("only the case's guardian may read its {what}"))
}

/// The subject access report on `case_id`, for its guardian only (the router builds it,
/// applies a police deferral and audits its giving).
pub(crate) async fn report(core: &Core, caller: &Caller, case_id: &str) -> Result<SubjectAccessReport, ApiError> {
    let id = CaseId::parse(case_id).map_err(|e| ApiError::field("case_id", e.expected))?;
    match core.bus.ask_report(&caller.agency, &id).await? {
        ReportAnswer::Report { report, .. } => Ok(henvis_convert::report_to_wire(&report)),
        ReportAnswer::NoCase => Err(ApiError::NotFound(format!("case_id: no case `{id}`"))),
        ReportAnswer::NotGuardian => Err(not_guardian("subject access report")),
        ReportAnswer::Unavailable => Err(ApiError::Unavailable(
            "the audit could not be read or the report's giving recorded; retry".into(),
        )),
    }
}

fn link_to_wire(v: &henvis_bus::LinkView) -> henvis_proto::henvis::broker::v1::CaseLink {
    use henvis_domain::linkage::LinkState;
    use henvis_proto::henvis::broker::v1::{CaseLink, CaseLinkState};
    let state = match v.state {
        LinkState::Proposed => CaseLinkState::Proposed,
        LinkState::Confirmed => CaseLinkState::Confirmed,
        LinkState::Rejected => CaseLinkState::Rejected,
    };
    CaseLink {
        link_id: v.link_id.clone(),
        case_id: v.case_id.clone(),
        other_case_id: v.other_case_id.clone(),
        other_municipality_code: v.other_municipality_code.clone(),
        matched_on: v.matched_on.iter().map(|k| k.as_str().to_owned()).collect(),
        state: state as i32,
        proposed_at: Some(prost_types::Timestamp {
            seconds: v.proposed_at,
            nanos: 0,
        }),
        answered: v.answered.is_some(),
        confirmed_by_this_side: v.answered == Some(true),
    }
}

/// The proposed links of the caller's cases (as guardian or municipality), from the router.
pub(crate) async fn links(
    core: &Core,
    caller: &Caller,
) -> Result<henvis_proto::henvis::broker::v1::ListCaseLinksResponse, ApiError> {
    match core.bus.ask_links(&caller.agency).await? {
        henvis_bus::LinksAnswer::Links { links } => Ok(henvis_proto::henvis::broker::v1::ListCaseLinksResponse {
            links: links.iter().map(link_to_wire).collect(),
        }),
        henvis_bus::LinksAnswer::Unavailable => Err(ApiError::Unavailable("the links could not be read; retry".into())),
    }
}

/// The caller's answer to a proposed link.
pub(crate) async fn answer_link(
    core: &Core,
    caller: &Caller,
    req: henvis_proto::henvis::broker::v1::AnswerCaseLinkRequest,
) -> Result<henvis_proto::henvis::broker::v1::CaseLink, ApiError> {
    if req.link_id.is_empty() || req.link_id.len() > 64 || !req.link_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::field("link_id", "a link id as ListCaseLinks returns it"));
    }
    let case = CaseId::parse(&req.case_id).map_err(|e| ApiError::field("case_id", e.expected))?;
    let query = henvis_bus::LinkAnswerQuery {
        link_id: req.link_id.clone(),
        case_id: case.to_string(),
        confirm: req.confirm,
    };
    match core.bus.answer_link(&caller.agency, &query).await? {
        henvis_bus::LinkAnswerAnswer::Link { link } => Ok(link_to_wire(&link)),
        henvis_bus::LinkAnswerAnswer::NoLink => Err(ApiError::NotFound(format!(
            "link_id: no link `{}` with case `{case}` as a side",
            req.link_id
        ))),
        henvis_bus::LinkAnswerAnswer::NotEntitled => Err(ApiError::PermissionDenied(
            "only the case's guardian or its municipality may answer for its side of a link".into(),
        )),
        henvis_bus::LinkAnswerAnswer::AlreadyAnswered => Err(ApiError::FailedPrecondition(format!(
            "link_id: case `{case}`'s side of link `{}` was answered already",
            req.link_id
        ))),
        henvis_bus::LinkAnswerAnswer::Unavailable => {
            Err(ApiError::Unavailable("the answer could not be recorded; retry".into()))
        }
    }
}
