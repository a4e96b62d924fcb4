//! Directory changes under four eyes: an administrator proposes changes (agencies, contact
//! persons, administrators), checked against the directory as it is; a different
//! administrator approves; the audit record comes first, then the change joins the approved
//! list every service follows (`henvis_runtime::LiveDirectory`), and applies at once.

use henvis_bus::{DIRECTORY_KEY, Versioned, directory_proposal_key};
use henvis_domain::{
    AppliedChanges, AuditRecord, Directory, DirectoryAmendments, DirectoryChange, DirectoryProposal, PersonId,
    ProposalDecision,
};
use tonic::Status;

use crate::{
    Admin,
    governance::{unavailable, undecided_record},
    now,
};

/// Most changes in one proposal.
pub(crate) const MAX_CHANGES: usize = 100;

/// `dir` with `changes` applied in order, or the first that cannot apply, by index.
fn apply_all(dir: &Directory, changes: &[DirectoryChange]) -> Result<Directory, (usize, String)> {
    let mut d = dir.clone();
    for (i, c) in changes.iter().enumerate() {
        d = d.amended(c).map_err(|e| (i, e.0))?;
    }
    Ok(d)
}

impl Admin {
    /// Every directory proposal, oldest first.
    pub(crate) async fn directory_proposals(&self) -> Result<Vec<Versioned<DirectoryProposal>>, Status> {
        self.numbered("directory.").await
    }

    async fn directory_proposal(&self, id: u64) -> Result<Versioned<DirectoryProposal>, Status> {
        self.numbered_one(
            directory_proposal_key,
            id,
            "proposal_id",
            "directory proposal",
            "henvis admin directory list",
        )
        .await
    }

    /// Proposes `changes`, checked against the directory as it is now.
    pub(crate) async fn propose_directory(
        &self,
        by: &PersonId,
        changes: Vec<DirectoryChange>,
        note: &str,
    ) -> Result<DirectoryProposal, Status> {
        if changes.is_empty() || changes.len() > MAX_CHANGES {
            return Err(Status::invalid_argument(format!(
                "`changes`: 1 to {MAX_CHANGES} directory changes expected"
            )));
        }
        apply_all(&self.directory.current(), &changes)
            .map_err(|(i, e)| Status::invalid_argument(format!("`changes[{i}]`: {e}")))?;
        let all = self.directory_proposals().await?;
        let first = all.iter().map(|v| v.record.id).max().unwrap_or(0) + 1;
        let proposal = self
            .create_numbered(directory_proposal_key, first, |id| DirectoryProposal {
                id,
                changes: changes.clone(),
                note: note.to_owned(),
                proposed_by: by.clone(),
                proposed_at: now(),
                decision: None,
            })
            .await?;
        let (_, record_id, record) = crate::recorded::directory_proposed(&proposal);
        self.audit(&record_id, &record).await?;
        Ok(proposal)
    }

    /// Approves directory proposal `id` (never by its proposer) and applies it.
    pub(crate) async fn approve_directory(&self, by: &PersonId, id: u64) -> Result<DirectoryProposal, Status> {
        let current = self.directory_proposal(id).await?;
        let p = &current.record;
        directory_undecided(p)?;
        if &p.proposed_by == by {
            return Err(Status::permission_denied(format!(
                "four-eyes rule: `{by}` proposed directory change #{id} and may not approve it; another administrator must"
            )));
        }
        apply_all(&self.directory.current(), &p.changes).map_err(|(i, e)| {
            Status::failed_precondition(format!(
                "directory change #{id} no longer applies to the directory as it is now (change {i}: {e}); reject it and propose again"
            ))
        })?;
        let mut record = current.record;
        record.decision = Some(ProposalDecision::Approved {
            by: by.clone(),
            at: now(),
            break_glass: None,
        });
        self.write_directory_proposal(&record, current.revision).await?;
        self.settle_directory().await?;
        Ok(record)
    }

    /// Rejects directory proposal `id`.
    pub(crate) async fn reject_directory(
        &self,
        by: &PersonId,
        id: u64,
        reason: String,
    ) -> Result<DirectoryProposal, Status> {
        let current = self.directory_proposal(id).await?;
        directory_undecided(&current.record)?;
        let mut record = current.record;
        record.decision = Some(ProposalDecision::Rejected {
            by: by.clone(),
            at: now(),
            reason: reason.clone(),
        });
        self.write_directory_proposal(&record, current.revision).await?;
        if let Some((_, record_id, audited)) = crate::recorded::directory_rejected(&record) {
            self.audit(&record_id, &audited).await?;
        }
        Ok(record)
    }

    async fn write_directory_proposal(&self, record: &DirectoryProposal, revision: u64) -> Result<(), Status> {
        self.update_numbered(
            &directory_proposal_key(record.id),
            record,
            revision,
            &format!("directory change #{}", record.id),
            "henvis admin directory list",
        )
        .await
    }

    /// Applies every approved directory proposal not applied yet, in approval order: its
    /// audit record first, then the approved list every service follows.
    pub(crate) async fn settle_directory(&self) -> Result<(), Status> {
        let mut approved: Vec<DirectoryProposal> = self
            .directory_proposals()
            .await?
            .into_iter()
            .map(|v| v.record)
            .filter(|p| matches!(p.decision, Some(ProposalDecision::Approved { .. })))
            .collect();
        approved.sort_by_key(|p| match &p.decision {
            Some(ProposalDecision::Approved { at, .. }) => (*at, p.id),
            _ => (0, p.id),
        });
        let bucket = self.bus.directory_bucket().await.map_err(unavailable)?;
        let applied = bucket
            .get::<DirectoryAmendments>(DIRECTORY_KEY)
            .await
            .map_err(unavailable)?
            .map(|v| v.record)
            .unwrap_or_default();
        for p in approved
            .iter()
            .filter(|p| !applied.applied.iter().any(|a| a.proposal == p.id))
        {
            let Some(ProposalDecision::Approved { by, .. }) = &p.decision else {
                continue;
            };
            self.audit(
                &format!("directory-approved:{}", p.id),
                &AuditRecord::DirectoryChangeApproved {
                    proposal: p.id,
                    changes: p.changes.clone(),
                    proposed_by: p.proposed_by.to_string(),
                    by: by.to_string(),
                },
            )
            .await?;
            bucket
                .modify(
                    DIRECTORY_KEY,
                    || Some(DirectoryAmendments::default()),
                    |a: &mut DirectoryAmendments| {
                        if a.applied.iter().any(|x| x.proposal == p.id) {
                            return false;
                        }
                        a.applied.push(AppliedChanges {
                            proposal: p.id,
                            changes: p.changes.clone(),
                        });
                        true
                    },
                )
                .await
                .map_err(unavailable)?;
            tracing::info!(proposal = p.id, by = %by, "directory changes approved and applied");
        }
        Ok(())
    }
}

fn directory_undecided(p: &DirectoryProposal) -> Result<(), Status> {
    undecided_record(&format!("directory change #{}", p.id), &p.decision)
}
