//! Privacy-preserving linkage, the router's part: when it routes a report with identity
//! fields, it makes keyed tokens of them (henvis_domain::linkage, HMAC under a key derived
//! from the master key), records them under the case, and proposes a link to every other
//! case that gave one of the same tokens. Tokens stay in the router's bucket and go with
//! their case; a link names case ids only. Each side (the case's guardian or its
//! municipality) confirms or rejects it through its sector service, which asks the router.

use std::sync::Arc;

use henvis_bus::{LinkAnswerAnswer, LinkAnswerQuery, LinkView, LinksAnswer, LinksQuery, ROUTER_WRITER};
use henvis_domain::{
    AgencyId, AuditRecord, CaseId, CaseRecord,
    linkage::{CaseLink, Identity, LinkAnswer, token_inputs},
};
use henvis_proto::henvis::events::v1::SuspectedVictimReported;

use crate::{Router, route::RouteError};

/// Indexes `case`'s report and proposes a link to every case it matches (idempotent: a
/// redelivered event finds its tokens and links in place).
pub(crate) async fn index(router: &Router, case: &CaseId, r: &SuspectedVictimReported) -> Result<(), RouteError> {
    let inputs = token_inputs(&Identity {
        given_name: &r.given_name,
        family_name: &r.family_name,
        aliases: &r.aliases,
        birth_date: &r.claimed_date_of_birth,
        nationalities: &r.nationalities,
    });
    if inputs.is_empty() {
        return Ok(());
    }
    let id = case.to_string();
    let others = router.bus.index_linkage(&id, &inputs).await?;
    for (other, kinds) in others {
        if router.bus.case_erased(&other).await? {
            continue;
        }
        let link = CaseLink::new(&id, &other, kinds.into_iter().collect(), henvis_runtime::unix_now());
        // audited in both cases' audits first, then stored
        for (side, opposite) in [(&id, &other), (&other, &id)] {
            router
                .bus
                .audit(
                    ROUTER_WRITER,
                    &format!("link-proposed:{}:{side}", link.id),
                    &AuditRecord::CaseLinkProposed {
                        link_id: link.id.clone(),
                        case_id: side.clone(),
                        other_case_id: opposite.clone(),
                        matched_on: link.matched_on.clone(),
                    },
                )
                .await?;
        }
        if router.bus.propose_link(&link).await? {
            tracing::info!(link_id = %link.id, case_id = %id, other_case_id = %other, "cases that look alike: link proposed");
        }
    }
    Ok(())
}

/// Whether `asker` speaks for `record`'s side: its guardian or its municipality.
fn entitled(router: &Router, asker: &AgencyId, record: &CaseRecord) -> bool {
    record.guardian.as_ref() == Some(asker)
        || record
            .municipality_code
            .as_deref()
            .and_then(|m| router.directory.current().municipality(m).map(|m| m.agency.clone()))
            .as_ref()
            == Some(asker)
}

fn view(link: &CaseLink, case: &str, other_municipality: String) -> LinkView {
    LinkView {
        link_id: link.id.clone(),
        case_id: case.to_owned(),
        other_case_id: link.other(case).unwrap_or_default().to_owned(),
        other_municipality_code: other_municipality,
        matched_on: link.matched_on.clone(),
        state: link.state(),
        proposed_at: link.proposed_at,
        answered: link.answers.iter().find(|a| a.case_id == case).map(|a| a.confirmed),
    }
}

async fn record_of(router: &Router, case: &str) -> Result<Option<CaseRecord>, henvis_bus::BusError> {
    let Ok(id) = CaseId::parse(case) else { return Ok(None) };
    Ok(router.bus.case(&id).await?.map(|c| c.record))
}

/// The links of `asker`'s cases (each case record read once).
pub(crate) async fn answer_links(router: &Arc<Router>, asker: AgencyId, _query: LinksQuery) -> LinksAnswer {
    let result = async {
        let links = router.bus.links().await?;
        let mut records = std::collections::BTreeMap::new();
        for case in links.iter().flat_map(|l| l.cases.iter()) {
            if !records.contains_key(case) {
                records.insert(case.clone(), record_of(router, case).await?);
            }
        }
        let mut out = Vec::new();
        for link in &links {
            for case in &link.cases {
                let Some(Some(record)) = records.get(case) else {
                    continue;
                };
                if !entitled(router, &asker, record) {
                    continue;
                }
                let other_municipality = link
                    .other(case)
                    .and_then(|o| records.get(o))
                    .and_then(|r| r.as_ref()?.municipality_code.clone())
                    .unwrap_or_default();
                out.push(view(link, case, other_municipality));
            }
        }
        out.sort_by(|a, b| b.proposed_at.cmp(&a.proposed_at).then(a.link_id.cmp(&b.link_id)));
        Ok::<_, henvis_bus::BusError>(out)
    }
    .await;
    match result {
        Ok(links) => LinksAnswer::Links { links },
        Err(e) => {
            tracing::warn!(error = %e, "links unreadable");
            LinksAnswer::Unavailable
        }
    }
}

/// Records one side's answer to a link: audited first, then stored.
pub(crate) async fn answer_link(router: &Arc<Router>, asker: AgencyId, q: LinkAnswerQuery) -> LinkAnswerAnswer {
    let result = async {
        let Some(v) = router.bus.link(&q.link_id).await? else {
            return Ok(LinkAnswerAnswer::NoLink);
        };
        let mut link = v.record;
        let Some(other) = link.other(&q.case_id).map(str::to_owned) else {
            return Ok(LinkAnswerAnswer::NoLink);
        };
        let Some(record) = record_of(router, &q.case_id).await? else {
            return Ok(LinkAnswerAnswer::NoLink);
        };
        if !entitled(router, &asker, &record) {
            henvis_runtime::refusals::record(henvis_runtime::refusals::Refusal::Guard, asker.as_str(), "link_answer");
            return Ok(LinkAnswerAnswer::NotEntitled);
        }
        if link.answers.iter().any(|a| a.case_id == q.case_id) {
            return Ok(LinkAnswerAnswer::AlreadyAnswered);
        }
        router
            .bus
            .audit(
                ROUTER_WRITER,
                &format!("link-answered:{}:{}", link.id, q.case_id),
                &AuditRecord::CaseLinkAnswered {
                    link_id: link.id.clone(),
                    case_id: q.case_id.clone(),
                    other_case_id: other.clone(),
                    by: asker.to_string(),
                    confirmed: q.confirm,
                },
            )
            .await?;
        link.answers.push(LinkAnswer {
            case_id: q.case_id.clone(),
            by: asker.to_string(),
            confirmed: q.confirm,
            at: henvis_runtime::unix_now(),
        });
        if !router.bus.update_link(&link, v.revision).await? {
            // the other side answered at the same moment: its answer stands, ask again
            return Ok(LinkAnswerAnswer::Unavailable);
        }
        let other_municipality = record_of(router, &other)
            .await?
            .and_then(|r| r.municipality_code)
            .unwrap_or_default();
        Ok::<_, henvis_bus::BusError>(LinkAnswerAnswer::Link {
            link: Box::new(view(&link, &q.case_id, other_municipality)),
        })
    }
    .await;
    result.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "link answer not recorded");
        LinkAnswerAnswer::Unavailable
    })
}
