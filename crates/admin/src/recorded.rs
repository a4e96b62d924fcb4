//! The audit records of administrators' steps that are stored before their record: a
//! proposal (rule set, directory change, case erasure), its rejection and a break-glass
//! review. Each record is built from the stored step under the step's one message id, so
//! the request that took the step and the repair after a crash write the same record, and
//! JetStream stores it once. (Approvals are audited before they take effect, by `settle`.)

use henvis_domain::{AuditRecord, CaseErasure, DirectoryProposal, Proposal, ProposalDecision};
use tonic::Status;

use crate::{Admin, now};

/// A step's time (unix seconds), its record's one message id, and the record.
pub(crate) type Recorded = (i64, String, AuditRecord);

/// A rule-set proposal's record.
pub(crate) fn rule_set_proposed(p: &Proposal) -> Recorded {
    (
        p.proposed_at,
        format!("proposed:{}", p.id),
        AuditRecord::RuleSetProposed {
            proposal: p.id,
            rule_set_version: p.rule_set_version.clone(),
            sha256: p.sha256.clone(),
            tests: p.tests.passed,
            by: p.proposed_by.to_string(),
            rollback_of: p.rollback_of,
        },
    )
}

/// A rule-set proposal's rejection record, once rejected.
pub(crate) fn rule_set_rejected(p: &Proposal) -> Option<Recorded> {
    let (by, at, reason) = rejected(p.decision.as_ref())?;
    Some((
        at,
        format!("rejected:{}", p.id),
        AuditRecord::RuleSetRejected {
            proposal: p.id,
            rule_set_version: p.rule_set_version.clone(),
            by,
            reason,
        },
    ))
}

/// A break-glass approval's review record, once reviewed.
pub(crate) fn break_glass_reviewed(p: &Proposal) -> Option<Recorded> {
    let Some(ProposalDecision::Approved {
        break_glass: Some(g), ..
    }) = &p.decision
    else {
        return None;
    };
    let r = g.review.as_ref()?;
    Some((
        r.at,
        format!("reviewed:{}", p.id),
        AuditRecord::BreakGlassReviewed {
            proposal: p.id,
            by: r.by.to_string(),
            note: r.note.clone(),
        },
    ))
}

/// A directory change proposal's record.
pub(crate) fn directory_proposed(p: &DirectoryProposal) -> Recorded {
    (
        p.proposed_at,
        format!("directory-proposed:{}", p.id),
        AuditRecord::DirectoryChangeProposed {
            proposal: p.id,
            changes: p.changes.clone(),
            by: p.proposed_by.to_string(),
        },
    )
}

/// A directory change proposal's rejection record, once rejected.
pub(crate) fn directory_rejected(p: &DirectoryProposal) -> Option<Recorded> {
    let (by, at, reason) = rejected(p.decision.as_ref())?;
    Some((
        at,
        format!("directory-rejected:{}", p.id),
        AuditRecord::DirectoryChangeRejected {
            proposal: p.id,
            by,
            reason,
        },
    ))
}

/// A case erasure proposal's record.
pub(crate) fn erasure_proposed(e: &CaseErasure) -> Recorded {
    (
        e.proposed_at,
        format!("erasure-proposed:{}", e.id),
        AuditRecord::CaseErasureProposed {
            erasure: e.id,
            case_id: e.case_id.clone(),
            by: e.proposed_by.to_string(),
            reason: e.reason.clone(),
            police_hold_override: e.police_hold_override.clone(),
        },
    )
}

/// A case erasure proposal's rejection record, once rejected.
pub(crate) fn erasure_rejected(e: &CaseErasure) -> Option<Recorded> {
    let (by, at, reason) = rejected(e.decision.as_ref())?;
    Some((
        at,
        format!("erasure-rejected:{}", e.id),
        AuditRecord::CaseErasureRejected {
            erasure: e.id,
            case_id: e.case_id.clone(),
            by,
            reason,
        },
    ))
}

fn rejected(d: Option<&ProposalDecision>) -> Option<(String, i64, String)> {
    match d? {
        ProposalDecision::Rejected { by, at, reason } => Some((by.to_string(), *at, reason.clone())),
        ProposalDecision::Approved { .. } => None,
    }
}

impl Admin {
    /// Writes again the record of every step above taken in the last half de-duplication
    /// window: stored once, since every earlier writing of it lies within the window
    /// JetStream remembers. An admin service stopped (or an audit that refused) between a
    /// step and its record leaves the step unrecorded; the next pass records it. Returns
    /// how many records it wrote (stored or recognised as stored).
    pub(crate) async fn complete_audit(&self) -> Result<usize, Status> {
        let since = now() - i64::try_from(self.duplicate_window.as_secs() / 2).unwrap_or(i64::MAX);
        let mut steps: Vec<Recorded> = Vec::new();
        for p in self.proposals().await? {
            steps.push(rule_set_proposed(&p.record));
            steps.extend(rule_set_rejected(&p.record));
            steps.extend(break_glass_reviewed(&p.record));
        }
        for p in self.directory_proposals().await? {
            steps.push(directory_proposed(&p.record));
            steps.extend(directory_rejected(&p.record));
        }
        for e in self.erasures().await? {
            steps.push(erasure_proposed(&e.record));
            steps.extend(erasure_rejected(&e.record));
        }
        let mut written = 0;
        for (_, id, record) in steps.iter().filter(|(at, ..)| *at >= since) {
            self.audit(id, record).await?;
            written += 1;
        }
        Ok(written)
    }
}
