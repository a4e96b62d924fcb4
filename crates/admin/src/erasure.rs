//! Erasing a case under four eyes (crypto-shredding): an administrator proposes, with a
//! reason; while the police hold the case under investigation the proposal needs an
//! override with its own reason; a different administrator approves. The approval is
//! audited first (with the agencies that had received the case's events, which the
//! erasure cannot reach), then the case's key is destroyed: nothing the broker holds of the
//! case can be opened again by any service, and its id is never used again. The routers
//! then purge the case's id-only records (case record, alerts) and audit that.

use std::collections::BTreeSet;

use henvis_bus::Versioned;
use henvis_domain::{AuditRecord, CaseErasure, CaseId, PersonId, ProposalDecision};
use tonic::Status;

use crate::{
    Admin,
    governance::{unavailable, undecided_record},
    now,
    verify::audit_read_error,
};

/// The key of erasure proposal `n` in the governance bucket.
fn erasure_key(n: u64) -> String {
    format!("erasure.{n:08}")
}

/// What an erasure does, and what it cannot reach, in words.
pub(crate) fn statement(e: &CaseErasure) -> String {
    match &e.decision {
        None => "proposed: nothing is erased until a different administrator approves".to_owned(),
        Some(ProposalDecision::Rejected { .. }) => "rejected: nothing was erased".to_owned(),
        Some(ProposalDecision::Approved { .. }) if e.delivered_to.is_empty() => {
            "erased: the case's key is destroyed; no agency had received its events".to_owned()
        }
        Some(ProposalDecision::Approved { .. }) => format!(
            "erased: the case's key is destroyed and nothing the broker held of it can be read; {} agenc{} had received its events ({}): what they acknowledged is in their own systems, outside the broker's reach",
            e.delivered_to.len(),
            if e.delivered_to.len() == 1 { "y" } else { "ies" },
            e.delivered_to.join(", ")
        ),
    }
}

impl Admin {
    /// Every erasure proposal, oldest first.
    pub(crate) async fn erasures(&self) -> Result<Vec<Versioned<CaseErasure>>, Status> {
        self.numbered("erasure.").await
    }

    async fn erasure(&self, id: u64) -> Result<Versioned<CaseErasure>, Status> {
        self.numbered_one(erasure_key, id, "erasure_id", "erasure", "henvis admin erasure list")
            .await
    }

    /// Proposes erasing `case`.
    pub(crate) async fn propose_erasure(
        &self,
        by: &PersonId,
        case: &CaseId,
        reason: String,
        police_hold_override: Option<String>,
    ) -> Result<CaseErasure, Status> {
        let id = case.to_string();
        if self.bus.case_erased(&id).await.map_err(unavailable)? {
            return Err(Status::failed_precondition(format!(
                "case_id: case `{id}` is erased already"
            )));
        }
        let record = self
            .bus
            .case(case)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Status::not_found(format!("case_id: no case `{id}`")))?
            .record;
        if record.deferred_by_event.is_some() && police_hold_override.is_none() {
            return Err(Status::failed_precondition(format!(
                "police_hold_override: the police hold case `{id}` under investigation; it is not erased unless the hold is overridden with a reason"
            )));
        }
        let pending = self.erasures().await?;
        if let Some(p) = pending
            .iter()
            .find(|p| p.record.case_id == id && p.record.decision.is_none())
        {
            return Err(Status::already_exists(format!(
                "case_id: erasure #{} of case `{id}` awaits approval",
                p.record.id
            )));
        }
        let first = pending.iter().map(|v| v.record.id).max().unwrap_or(0) + 1;
        let override_reason = police_hold_override.filter(|_| record.deferred_by_event.is_some());
        let erasure = self
            .create_numbered(erasure_key, first, |n| CaseErasure {
                id: n,
                case_id: id.clone(),
                reason: reason.clone(),
                police_hold_override: override_reason.clone(),
                proposed_by: by.clone(),
                proposed_at: now(),
                decision: None,
                delivered_to: Vec::new(),
            })
            .await?;
        let (_, record_id, record) = crate::recorded::erasure_proposed(&erasure);
        self.audit(&record_id, &record).await?;
        Ok(erasure)
    }

    /// Approves erasure `n` (never by its proposer): audited, then the key destroyed.
    pub(crate) async fn approve_erasure(&self, by: &PersonId, n: u64) -> Result<CaseErasure, Status> {
        let current = self.erasure(n).await?;
        undecided(&current.record)?;
        if &current.record.proposed_by == by {
            return Err(Status::permission_denied(format!(
                "four-eyes rule: `{by}` proposed erasure #{n} and may not approve it; another administrator must"
            )));
        }
        let case = CaseId::parse(&current.record.case_id)
            .map_err(|_| Status::internal(format!("erasure #{n} names a malformed case id")))?;
        // a hold the police set after the proposal stops it, unless it was overridden
        if current.record.police_hold_override.is_none()
            && let Some(c) = self.bus.case(&case).await.map_err(unavailable)?
            && c.record.deferred_by_event.is_some()
        {
            return Err(Status::failed_precondition(format!(
                "the police have put case `{case}` under investigation since erasure #{n} was proposed; reject it and propose again with an override if it must go"
            )));
        }
        let delivered_to: BTreeSet<String> = self
            .bus
            .audit_records(&henvis_bus::audit_case_filter(&case))
            .await
            .map_err(audit_read_error)?
            .into_iter()
            .filter_map(|r| match r {
                AuditRecord::RoutingDecision(d) => Some(d.delivered.into_iter().map(|r| r.agency)),
                _ => None,
            })
            .flatten()
            .collect();
        let mut record = current.record;
        record.decision = Some(ProposalDecision::Approved {
            by: by.clone(),
            at: now(),
            break_glass: None,
        });
        record.delivered_to = delivered_to.into_iter().collect();
        // the approval is recorded, then audited, then carried out: a crash in between leaves
        // an approved erasure that `settle_erasures` (at start and at every approval) finishes
        self.write_erasure(&record, current.revision).await?;
        self.settle_erasures().await?;
        Ok(record)
    }

    /// Carries out every approved erasure whose key still stands: its `case_erased`
    /// record first, then the key destroyed. Erasing twice changes nothing.
    pub(crate) async fn settle_erasures(&self) -> Result<(), Status> {
        for v in self.erasures().await? {
            let e = v.record;
            let Some(ProposalDecision::Approved { by, .. }) = &e.decision else {
                continue;
            };
            if self.bus.case_erased(&e.case_id).await.map_err(unavailable)? {
                continue;
            }
            self.audit(
                &format!("erasure-approved:{}", e.id),
                &AuditRecord::CaseErased {
                    erasure: e.id,
                    case_id: e.case_id.clone(),
                    proposed_by: e.proposed_by.to_string(),
                    by: by.to_string(),
                    reason: e.reason.clone(),
                    police_hold_override: e.police_hold_override.clone(),
                    delivered_to: e.delivered_to.clone(),
                },
            )
            .await?;
            self.bus.destroy_case_key(&e.case_id).await.map_err(|err| {
                Status::unavailable(format!(
                    "erasure #{} is approved and audited but the key is not destroyed yet (it will be at the next approval or restart); try again: {err}",
                    e.id
                ))
            })?;
            tracing::info!(erasure = e.id, case_id = %e.case_id, "case erased: its key is destroyed");
        }
        Ok(())
    }

    /// Rejects erasure `n`.
    pub(crate) async fn reject_erasure(&self, by: &PersonId, n: u64, reason: String) -> Result<CaseErasure, Status> {
        let current = self.erasure(n).await?;
        undecided(&current.record)?;
        let mut record = current.record;
        record.decision = Some(ProposalDecision::Rejected {
            by: by.clone(),
            at: now(),
            reason: reason.clone(),
        });
        self.write_erasure(&record, current.revision).await?;
        if let Some((_, record_id, audited)) = crate::recorded::erasure_rejected(&record) {
            self.audit(&record_id, &audited).await?;
        }
        Ok(record)
    }

    async fn write_erasure(&self, record: &CaseErasure, revision: u64) -> Result<(), Status> {
        self.update_numbered(
            &erasure_key(record.id),
            record,
            revision,
            &format!("erasure #{}", record.id),
            "henvis admin erasure list",
        )
        .await
    }
}

fn undecided(e: &CaseErasure) -> Result<(), Status> {
    undecided_record(&format!("erasure #{}", e.id), &e.decision)
}
