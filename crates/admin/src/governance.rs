//! Proposals and their life: propose, approve (four eyes), break-glass, review, reject,
//! roll back. Each proposal is one record in the governance bucket, changed only by
//! compare-and-set, so two administrators acting at once never both succeed on a stale
//! view. The live set is the proposal approved last; putting it into the rules bucket
//! (which every router follows) comes after its audit record, and [`Admin::settle`]
//! finishes a publication a crash interrupted.

use henvis_bus::{ADMIN_WRITER, Versioned, proposal_key};
use henvis_domain::{
    AuditRecord, BreakGlass, PersonId, Proposal, ProposalDecision, ProposalState, Review, TestRun, live_of,
};
use henvis_policy::RuleSet;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::{Admin, now};

/// Longest reason, note or review accepted (in characters).
pub(crate) const MAX_NOTE: usize = 2000;

pub(crate) fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("governance store unavailable, nothing changed; try again: {e}"))
}

/// Refuses to act on a four-eyes record (`what`: "directory change #3", "erasure #1")
/// that was decided already.
pub(crate) fn undecided_record(what: &str, decision: &Option<ProposalDecision>) -> Result<(), Status> {
    match decision {
        None => Ok(()),
        Some(ProposalDecision::Approved { by, .. }) => Err(Status::failed_precondition(format!(
            "{what} was approved already, by `{by}`"
        ))),
        Some(ProposalDecision::Rejected { by, .. }) => Err(Status::failed_precondition(format!(
            "{what} was rejected, by `{by}`; propose it again to reconsider it"
        ))),
    }
}

/// A mandatory free-text field: present, and not too long.
pub(crate) fn required_text(field: &str, value: &str, what: &str) -> Result<String, Status> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Status::invalid_argument(format!("`{field}`: {what} is required")));
    }
    optional_text(field, v)
}

/// An optional free-text field, not too long.
pub(crate) fn optional_text(field: &str, value: &str) -> Result<String, Status> {
    if value.chars().count() > MAX_NOTE {
        return Err(Status::invalid_argument(format!(
            "`{field}`: at most {MAX_NOTE} characters expected"
        )));
    }
    Ok(value.trim().to_owned())
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Admin {
    /// Validates a rule file against the schema and the directory as they are now and runs
    /// its tests; a failure names file, line and rule.
    pub(crate) fn check(&self, file: &str, text: &str) -> Result<RuleSet, Status> {
        RuleSet::from_toml(file, text, &self.schema, &self.directory.current())
            .map_err(|e| Status::invalid_argument(format!("the rule set fails validation or its tests: {e}")))
    }

    /// Every record of the governance bucket under `prefix` (`proposal.`, `directory.`),
    /// oldest first.
    pub(crate) async fn numbered<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<Versioned<T>>, Status> {
        let bucket = self.bus.governance_bucket().await.map_err(unavailable)?;
        let mut keys: Vec<String> = bucket
            .keys()
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(p) = bucket.get::<T>(&k).await.map_err(unavailable)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Stores `make(n)` under `key(n)` for the first free number `n` from `first` on (two
    /// administrators proposing at once get different numbers).
    pub(crate) async fn create_numbered<T: serde::Serialize>(
        &self,
        key: fn(u64) -> String,
        first: u64,
        make: impl Fn(u64) -> T,
    ) -> Result<T, Status> {
        let bucket = self.bus.governance_bucket().await.map_err(unavailable)?;
        let mut n = first;
        loop {
            let record = make(n);
            match bucket.create_new(&key(n), &record).await.map_err(unavailable)? {
                Some(_) => return Ok(record),
                None => n += 1,
            }
        }
    }

    /// Numbered record `id` of the governance bucket under `key(id)`: INVALID_ARGUMENT
    /// naming `field` for 0, NOT_FOUND naming `what` and the command `list` that shows them.
    pub(crate) async fn numbered_one<T: serde::de::DeserializeOwned>(
        &self,
        key: fn(u64) -> String,
        id: u64,
        field: &str,
        what: &str,
        list: &str,
    ) -> Result<Versioned<T>, Status> {
        if id == 0 {
            return Err(Status::invalid_argument(format!(
                "`{field}`: the number of a {what} (1 or more) expected"
            )));
        }
        self.bus
            .governance_bucket()
            .await
            .map_err(unavailable)?
            .get::<T>(&key(id))
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Status::not_found(format!("no {what} #{id}; `{list}` shows them")))
    }

    /// Writes numbered record `record` under `key` if still at `revision`; ABORTED naming
    /// `what` when another administrator changed it meanwhile.
    pub(crate) async fn update_numbered<T: serde::Serialize>(
        &self,
        key: &str,
        record: &T,
        revision: u64,
        what: &str,
        list: &str,
    ) -> Result<(), Status> {
        let bucket = self.bus.governance_bucket().await.map_err(unavailable)?;
        match bucket.update(key, record, revision).await.map_err(unavailable)? {
            Some(_) => Ok(()),
            None => Err(Status::aborted(format!(
                "{what} changed while you acted; look at it again (`{list}`)"
            ))),
        }
    }

    /// Every proposal, oldest first.
    pub(crate) async fn proposals(&self) -> Result<Vec<Versioned<Proposal>>, Status> {
        self.numbered("proposal.").await
    }

    /// One proposal, or NOT_FOUND naming it.
    pub(crate) async fn proposal(&self, id: u64) -> Result<Versioned<Proposal>, Status> {
        if id == 0 {
            return Err(Status::invalid_argument(
                "`proposal_id`: a proposal number (1 or more) expected",
            ));
        }
        self.bus
            .governance_bucket()
            .await
            .map_err(unavailable)?
            .get::<Proposal>(&proposal_key(id))
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Status::not_found(format!("no proposal #{id}; `henvis admin list` shows them")))
    }

    /// The live proposal, if any was ever approved.
    pub(crate) async fn live(&self) -> Result<Option<Proposal>, Status> {
        let all = self.proposals().await?;
        Ok(live_of(all.iter().map(|v| &v.record)).cloned())
    }

    /// The text routing now: the live proposal's, else a set published before governance,
    /// else the shipped file. (file name, text)
    pub(crate) async fn live_text(&self) -> Result<(String, String), Status> {
        if let Some(p) = self.live().await? {
            return Ok((p.file, p.text));
        }
        match self.bus.published_rules().await.map_err(unavailable)? {
            Some(t) => Ok(("published rule set".into(), t)),
            None => Ok(self.shipped.clone()),
        }
    }

    /// Proposes a rule set (or, with `rollback_of`, an earlier approved one again).
    pub(crate) async fn propose(
        &self,
        by: &PersonId,
        file: &str,
        text: &str,
        note: &str,
        rollback_of: Option<u64>,
    ) -> Result<(Proposal, Option<u64>), Status> {
        let rules = self.check(file, text)?;
        let sha = sha256(text);
        let all = self.proposals().await?;
        let live = live_of(all.iter().map(|v| &v.record)).map(|p| p.id);
        for v in &all {
            let p = &v.record;
            if p.rule_set_version == rules.version() && p.sha256 != sha {
                return Err(Status::already_exists(format!(
                    "version `{}` already names other content (proposal #{}); give the new rule set its own `version`",
                    p.rule_set_version, p.id
                )));
            }
            if p.sha256 == sha && p.state(live) == ProposalState::Proposed {
                return Err(Status::already_exists(format!(
                    "this rule set is already proposed as #{}; approve or reject that one",
                    p.id
                )));
            }
        }
        if rollback_of.is_none() && live.is_some_and(|l| all.iter().any(|v| v.record.id == l && v.record.sha256 == sha))
        {
            return Err(Status::failed_precondition(
                "this rule set is the live one; nothing to propose",
            ));
        }
        let first = all.iter().map(|v| v.record.id).max().unwrap_or(0) + 1;
        let proposal = self
            .create_numbered(proposal_key, first, |id| Proposal {
                id,
                rule_set_version: rules.version().to_owned(),
                sha256: sha.clone(),
                text: text.to_owned(),
                file: file.to_owned(),
                note: note.to_owned(),
                proposed_by: by.clone(),
                proposed_at: now(),
                rollback_of,
                tests: TestRun {
                    passed: rules.test_count(),
                    at: now(),
                },
                decision: None,
            })
            .await?;
        let (_, record_id, record) = crate::recorded::rule_set_proposed(&proposal);
        self.audit(&record_id, &record).await?;
        tracing::info!(proposal = proposal.id, rule_set_version = %proposal.rule_set_version, by = %by, "rule set proposed");
        Ok((proposal, live))
    }

    /// Approves proposal `id`: by a second administrator, or by its proposer or anyone
    /// alone with a break-glass reason. Validation and tests run again first. Returns it
    /// and the live proposal's number.
    pub(crate) async fn approve(
        &self,
        by: &PersonId,
        id: u64,
        break_glass: Option<String>,
    ) -> Result<(Proposal, Option<u64>), Status> {
        let current = self.proposal(id).await?;
        let p = &current.record;
        self.undecided(p)?;
        if break_glass.is_none() && &p.proposed_by == by {
            return Err(Status::permission_denied(format!(
                "four-eyes rule: `{by}` proposed #{id} and may not approve it; another administrator must \
                 (or, in an emergency, use break-glass with a reason)"
            )));
        }
        let rules = RuleSet::from_toml(&p.file, &p.text, &self.schema, &self.directory.current()).map_err(|e| {
            Status::failed_precondition(format!(
                "#{id} no longer passes validation or its tests against the directory as it is now: {e}; \
                 reject it and propose a corrected set"
            ))
        })?;
        let at = now();
        let tests = TestRun {
            passed: rules.test_count(),
            at,
        };
        let decision = ProposalDecision::Approved {
            by: by.clone(),
            at,
            break_glass: break_glass.map(|reason| BreakGlass { reason, review: None }),
        };
        let approved = self
            .decide(current, |p| {
                p.tests = tests;
                p.decision = Some(decision);
            })
            .await?;
        let live = self.settle().await?;
        tracing::info!(proposal = id, rule_set_version = %approved.rule_set_version, by = %by, "rule set approved");
        Ok((approved, live))
    }

    /// Rejects proposal `id`.
    pub(crate) async fn reject(&self, by: &PersonId, id: u64, reason: String) -> Result<Proposal, Status> {
        let current = self.proposal(id).await?;
        self.undecided(&current.record)?;
        let decision = ProposalDecision::Rejected {
            by: by.clone(),
            at: now(),
            reason: reason.clone(),
        };
        let rejected = self.decide(current, |p| p.decision = Some(decision)).await?;
        if let Some((_, record_id, record)) = crate::recorded::rule_set_rejected(&rejected) {
            self.audit(&record_id, &record).await?;
        }
        Ok(rejected)
    }

    /// Records another administrator's review of a break-glass approval.
    pub(crate) async fn review(&self, by: &PersonId, id: u64, note: String) -> Result<Proposal, Status> {
        let current = self.proposal(id).await?;
        match &current.record.decision {
            Some(ProposalDecision::Approved {
                by: glass_by,
                break_glass: Some(BreakGlass { review: None, .. }),
                ..
            }) => {
                if glass_by == by {
                    return Err(Status::permission_denied(format!(
                        "four-eyes rule: `{by}` broke the glass on #{id} and may not review it; another administrator must"
                    )));
                }
            }
            Some(ProposalDecision::Approved {
                break_glass: Some(BreakGlass { review: Some(r), .. }),
                ..
            }) => {
                return Err(Status::failed_precondition(format!(
                    "#{id} was reviewed already, by `{}`",
                    r.by
                )));
            }
            _ => {
                return Err(Status::failed_precondition(format!(
                    "#{id} was not approved by break-glass; there is nothing to review"
                )));
            }
        }
        let review = Review {
            by: by.clone(),
            at: now(),
            note: note.clone(),
        };
        let reviewed = self
            .decide(current, |p| {
                if let Some(ProposalDecision::Approved {
                    break_glass: Some(g), ..
                }) = &mut p.decision
                {
                    g.review = Some(review);
                }
            })
            .await?;
        if let Some((_, record_id, record)) = crate::recorded::break_glass_reviewed(&reviewed) {
            self.audit(&record_id, &record).await?;
        }
        Ok(reviewed)
    }

    /// Proposes restoring earlier approved proposal `target`.
    pub(crate) async fn rollback(
        &self,
        by: &PersonId,
        target: u64,
        note: &str,
    ) -> Result<(Proposal, Option<u64>), Status> {
        let t = self.proposal(target).await?.record;
        let live = self.live().await?.map(|p| p.id);
        match t.state(live) {
            ProposalState::Superseded => {}
            ProposalState::Live => {
                return Err(Status::failed_precondition(format!(
                    "#{target} is the live rule set already"
                )));
            }
            s => {
                return Err(Status::failed_precondition(format!(
                    "#{target} was never approved (it is {}); only an earlier approved rule set can be restored",
                    s.as_str()
                )));
            }
        }
        self.propose(by, &t.file, &t.text, note, Some(target)).await
    }

    fn undecided(&self, p: &Proposal) -> Result<(), Status> {
        match &p.decision {
            None => Ok(()),
            Some(ProposalDecision::Approved { by, .. }) => Err(Status::failed_precondition(format!(
                "#{} was approved already, by `{by}`",
                p.id
            ))),
            Some(ProposalDecision::Rejected { by, .. }) => Err(Status::failed_precondition(format!(
                "#{} was rejected, by `{by}`; propose it again to reconsider it",
                p.id
            ))),
        }
    }

    /// Writes `change` to the proposal as read (compare-and-set): ABORTED when another
    /// administrator changed it in between.
    async fn decide(&self, read: Versioned<Proposal>, change: impl FnOnce(&mut Proposal)) -> Result<Proposal, Status> {
        let id = read.record.id;
        let mut record = read.record;
        change(&mut record);
        let bucket = self.bus.governance_bucket().await.map_err(unavailable)?;
        match bucket
            .update(&proposal_key(id), &record, read.revision)
            .await
            .map_err(unavailable)?
        {
            Some(_) => Ok(record),
            None => Err(Status::aborted(format!(
                "#{id} changed while you acted; look at it again (`henvis admin show {id}`)"
            ))),
        }
    }

    /// Finishes what approval started: the live proposal's approval in the audit (again,
    /// under the same message id, if a crash came between), its break-glass alert, then
    /// its text in the rules bucket, which every router follows. Nothing is put live
    /// before its audit record is stored. Returns the live proposal's number.
    pub(crate) async fn settle(&self) -> Result<Option<u64>, Status> {
        let Some(live) = self.live().await? else {
            return Ok(None);
        };
        let published = self.bus.published_rules().await.map_err(unavailable)?;
        if published.as_deref().map(sha256).as_deref() == Some(live.sha256.as_str()) {
            return Ok(Some(live.id));
        }
        let Some(ProposalDecision::Approved { by, break_glass, .. }) = &live.decision else {
            return Ok(Some(live.id));
        };
        if let Some(g) = break_glass {
            self.audit(
                &format!("break-glass:{}", live.id),
                &AuditRecord::BreakGlassUsed {
                    proposal: live.id,
                    rule_set_version: live.rule_set_version.clone(),
                    by: by.to_string(),
                    reason: g.reason.clone(),
                },
            )
            .await?;
        }
        self.audit(
            &format!("approved:{}", live.id),
            &AuditRecord::RuleSetApproved {
                proposal: live.id,
                rule_set_version: live.rule_set_version.clone(),
                sha256: live.sha256.clone(),
                tests: live.tests.passed,
                proposed_by: live.proposed_by.to_string(),
                by: by.to_string(),
                break_glass: break_glass.as_ref().map(|g| g.reason.clone()),
                rollback_of: live.rollback_of,
            },
        )
        .await?;
        self.bus.put_rules(&live.text).await.map_err(unavailable)?;
        tracing::info!(proposal = live.id, rule_set_version = %live.rule_set_version, "rule set live");
        Ok(Some(live.id))
    }

    pub(crate) async fn audit(&self, id: &str, record: &AuditRecord) -> Result<(), Status> {
        self.bus.audit(ADMIN_WRITER, id, record).await.map_err(|e| {
            // what was stored before this record gets it on a later pass (`record_steps`)
            self.audit_refused_at.store(now(), std::sync::atomic::Ordering::SeqCst);
            Status::unavailable(format!("the audit is unavailable; try again: {e}"))
        })
    }
}
