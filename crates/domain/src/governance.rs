//! Rule-set governance: every rule set that may go live is a numbered proposal with its
//! text, SHA-256, author, tests and the decision taken on it. A proposal goes live only
//! when a second administrator approves it, or by break-glass (one administrator, a
//! reason, an administrator alert, and a review by someone else afterwards). The live set
//! is the most recently approved proposal ([`live_of`]): nothing else records it, so it can
//! never disagree with the proposals.

use crate::PersonId;

/// One proposed rule set and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    /// Its number (1, 2, …), unique in the deployment.
    pub id: u64,
    /// The `version` its text declares; names exactly one content (one SHA-256).
    pub rule_set_version: String,
    /// SHA-256 of the text, hex.
    pub sha256: String,
    /// The rule file as proposed.
    pub text: String,
    /// The file name it was proposed from (for file:line messages).
    pub file: String,
    /// Why, in the proposer's words (no personal data).
    #[serde(default)]
    pub note: String,
    /// The administrator who proposed it.
    pub proposed_by: PersonId,
    /// When, unix seconds.
    pub proposed_at: i64,
    /// For a rollback: the earlier approved proposal whose text it restores.
    #[serde(default)]
    pub rollback_of: Option<u64>,
    /// The set's own tests at its last check (proposal or approval).
    pub tests: TestRun,
    /// What was decided on it; `None` while proposed.
    #[serde(default)]
    pub decision: Option<ProposalDecision>,
}

/// A run of a rule set's own tests against the directory of that moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TestRun {
    /// How many tests ran (all passed: a failing set is refused, never stored).
    pub passed: usize,
    /// When, unix seconds.
    pub at: i64,
}

/// The decision taken on a proposal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ProposalDecision {
    /// Approved: it went live (and stays approved when a later one supersedes it).
    Approved {
        /// Who approved it.
        by: PersonId,
        /// When, unix seconds.
        at: i64,
        /// Set when one administrator put it live alone.
        #[serde(default)]
        break_glass: Option<BreakGlass>,
    },
    /// Rejected; it never went live.
    Rejected {
        /// Who rejected it.
        by: PersonId,
        /// When, unix seconds.
        at: i64,
        /// Why.
        reason: String,
    },
}

/// An emergency approval by one administrator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BreakGlass {
    /// The mandatory reason.
    pub reason: String,
    /// The after-the-fact review by another administrator; `None` until then.
    #[serde(default)]
    pub review: Option<Review>,
}

/// A review of a break-glass approval.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Review {
    /// The reviewer (never the one who broke the glass).
    pub by: PersonId,
    /// When, unix seconds.
    pub at: i64,
    /// What the reviewer found.
    pub note: String,
}

/// The state of a proposal as administrators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Waiting for a second administrator.
    Proposed,
    /// Approved and the one routing now.
    Live,
    /// Approved earlier; a later approval replaced it.
    Superseded,
    /// Rejected.
    Rejected,
}

impl ProposalState {
    /// Its name, as shown to administrators.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Live => "live",
            Self::Superseded => "superseded",
            Self::Rejected => "rejected",
        }
    }
}

impl Proposal {
    /// Its state, given which proposal is live.
    pub fn state(&self, live: Option<u64>) -> ProposalState {
        match &self.decision {
            None => ProposalState::Proposed,
            Some(ProposalDecision::Rejected { .. }) => ProposalState::Rejected,
            Some(ProposalDecision::Approved { .. }) if live == Some(self.id) => ProposalState::Live,
            Some(ProposalDecision::Approved { .. }) => ProposalState::Superseded,
        }
    }

    /// Whether it was put live by break-glass and nobody has reviewed that yet.
    pub fn awaits_review(&self) -> bool {
        matches!(
            &self.decision,
            Some(ProposalDecision::Approved {
                break_glass: Some(BreakGlass { review: None, .. }),
                ..
            })
        )
    }

    /// The approval time, if approved.
    pub fn approved_at(&self) -> Option<i64> {
        match &self.decision {
            Some(ProposalDecision::Approved { at, .. }) => Some(*at),
            _ => None,
        }
    }
}

/// The live proposal: the approved one approved last (by time, then number); `None` when
/// nothing was ever approved (the shipped rule set routes).
pub fn live_of<'a>(proposals: impl IntoIterator<Item = &'a Proposal>) -> Option<&'a Proposal> {
    proposals
        .into_iter()
        .filter_map(|p| p.approved_at().map(|at| (at, p.id, p)))
        .max_by_key(|(at, id, _)| (*at, *id))
        .map(|(_, _, p)| p)
}

/// A proposed set of directory changes and what became of it (four eyes, like rule sets;
/// no break-glass: revoking a certificate is the emergency path for a person).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectoryProposal {
    /// Its number (1, 2, …), counted apart from rule-set proposals.
    pub id: u64,
    /// The changes, applied in this order.
    pub changes: Vec<crate::DirectoryChange>,
    /// Why, in the proposer's words.
    #[serde(default)]
    pub note: String,
    /// The administrator who proposed it.
    pub proposed_by: PersonId,
    /// When, unix seconds.
    pub proposed_at: i64,
    /// What was decided on it; `None` while proposed.
    #[serde(default)]
    pub decision: Option<ProposalDecision>,
}

/// A proposed erasure of one case and what became of it: four eyes, no break-glass.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaseErasure {
    /// Its number (1, 2, …), counted apart from other proposals.
    pub id: u64,
    /// The case (a case id).
    pub case_id: String,
    /// Why, in the proposer's words (a legal ground, a request): never the child's data.
    pub reason: String,
    /// Set when the police held the case under investigation when it was proposed and the
    /// proposer overrode the hold: why.
    #[serde(default)]
    pub police_hold_override: Option<String>,
    /// The administrator who proposed it.
    pub proposed_by: PersonId,
    /// When, unix seconds.
    pub proposed_at: i64,
    /// What was decided on it; `None` while proposed.
    #[serde(default)]
    pub decision: Option<ProposalDecision>,
    /// Once approved: the agencies that had received events of the case (what they
    /// acknowledged is in their systems, outside the broker's reach).
    #[serde(default)]
    pub delivered_to: Vec<String>,
}

/// The approved directory changes, in approval order: what every service applies over its
/// directory file, and watches for.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectoryAmendments {
    /// Each approved proposal's changes.
    pub applied: Vec<AppliedChanges>,
}

/// One approved directory proposal's changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppliedChanges {
    /// The proposal.
    pub proposal: u64,
    /// Its changes.
    pub changes: Vec<crate::DirectoryChange>,
}

impl DirectoryAmendments {
    /// `base` with every approved change applied in order.
    pub fn apply(&self, base: &crate::Directory) -> Result<crate::Directory, crate::ChangeError> {
        let mut d = base.clone();
        for a in &self.applied {
            for c in &a.changes {
                d = d
                    .amended(c)
                    .map_err(|e| crate::ChangeError(format!("proposal #{}: {}", a.proposal, e.0)))?;
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn proposal(decision: Option<ProposalDecision>) -> Proposal {
        Proposal {
            id: 3,
            rule_set_version: "v3".into(),
            sha256: "ab".into(),
            text: String::new(),
            file: "f.toml".into(),
            note: String::new(),
            proposed_by: PersonId::parse("admin-1").unwrap(),
            proposed_at: 1,
            rollback_of: None,
            tests: TestRun { passed: 2, at: 1 },
            decision,
        }
    }

    #[test]
    fn the_state_follows_the_decision_and_the_live_record() {
        let admin = PersonId::parse("admin-2").unwrap();
        assert_eq!(proposal(None).state(Some(3)), ProposalState::Proposed);
        let approved = proposal(Some(ProposalDecision::Approved {
            by: admin.clone(),
            at: 2,
            break_glass: None,
        }));
        assert_eq!(approved.state(Some(3)), ProposalState::Live);
        assert_eq!(approved.state(Some(4)), ProposalState::Superseded);
        assert!(!approved.awaits_review());
        let rejected = proposal(Some(ProposalDecision::Rejected {
            by: admin.clone(),
            at: 2,
            reason: "no".into(),
        }));
        assert_eq!(rejected.state(Some(3)), ProposalState::Rejected);
        let glass = proposal(Some(ProposalDecision::Approved {
            by: admin,
            at: 2,
            break_glass: Some(BreakGlass {
                reason: "outage".into(),
                review: None,
            }),
        }));
        assert!(glass.awaits_review());
        let mut later = approved.clone();
        later.id = 2;
        later.decision = Some(ProposalDecision::Approved {
            by: PersonId::parse("admin-3").unwrap(),
            at: 5,
            break_glass: None,
        });
        assert_eq!(live_of([&approved, &rejected, &later]).map(|p| p.id), Some(2));
        assert_eq!(live_of([&rejected]), None);
        let json = serde_json::to_value(&glass).unwrap();
        assert_eq!(json["decision"]["outcome"], "approved");
        assert_eq!(serde_json::from_value::<Proposal>(json).unwrap(), glass);
    }
}

/// What an administrators' step was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GovernanceAction {
    /// A rule set proposed.
    RuleSetProposed,
    /// A rule set approved (four eyes or break-glass).
    RuleSetApproved,
    /// A rule set rejected.
    RuleSetRejected,
    /// A break-glass approval reviewed.
    BreakGlassReviewed,
    /// A directory change proposed.
    DirectoryChangeProposed,
    /// A directory change approved.
    DirectoryChangeApproved,
    /// A directory change rejected.
    DirectoryChangeRejected,
    /// A case erasure proposed.
    CaseErasureProposed,
    /// A case erasure approved (the case erased).
    CaseErased,
    /// A case erasure rejected.
    CaseErasureRejected,
}

/// A step administrators took that the audit must record: a proposal (rule set, directory
/// change, case erasure), its approval or rejection, a break-glass review. Counted by
/// [`crate::completeness`] against the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GovernanceStep {
    /// What it was.
    pub action: GovernanceAction,
    /// The proposal's (or erasure's) number.
    pub number: u64,
    /// When it was taken, unix seconds.
    pub at: i64,
}

impl GovernanceStep {
    /// The steps the stored proposals record: each proposal, its decision, a break-glass
    /// review.
    pub fn of(proposals: &[Proposal], directory: &[DirectoryProposal], erasures: &[CaseErasure]) -> Vec<Self> {
        use GovernanceAction as A;
        let step = |action, number, at| GovernanceStep { action, number, at };
        let decided = |d: &Option<ProposalDecision>, (approved, rejected): (A, A), n: u64| match d {
            Some(ProposalDecision::Approved { at, .. }) => Some(step(approved, n, *at)),
            Some(ProposalDecision::Rejected { at, .. }) => Some(step(rejected, n, *at)),
            None => None,
        };
        let mut out = Vec::new();
        for p in proposals {
            out.push(step(A::RuleSetProposed, p.id, p.proposed_at));
            out.extend(decided(&p.decision, (A::RuleSetApproved, A::RuleSetRejected), p.id));
            if let Some(ProposalDecision::Approved {
                break_glass: Some(BreakGlass { review: Some(r), .. }),
                ..
            }) = &p.decision
            {
                out.push(step(A::BreakGlassReviewed, p.id, r.at));
            }
        }
        for p in directory {
            out.push(step(A::DirectoryChangeProposed, p.id, p.proposed_at));
            out.extend(decided(
                &p.decision,
                (A::DirectoryChangeApproved, A::DirectoryChangeRejected),
                p.id,
            ));
        }
        for e in erasures {
            out.push(step(A::CaseErasureProposed, e.id, e.proposed_at));
            out.extend(decided(&e.decision, (A::CaseErased, A::CaseErasureRejected), e.id));
        }
        out
    }

    /// The step an audit record records, if it records one (action and number; its time
    /// is not compared).
    pub fn recorded_by(record: &crate::AuditRecord) -> Option<(GovernanceAction, u64)> {
        use crate::AuditRecord as R;
        use GovernanceAction as A;
        Some(match record {
            R::RuleSetProposed { proposal, .. } => (A::RuleSetProposed, *proposal),
            R::RuleSetApproved { proposal, .. } => (A::RuleSetApproved, *proposal),
            R::RuleSetRejected { proposal, .. } => (A::RuleSetRejected, *proposal),
            R::BreakGlassReviewed { proposal, .. } => (A::BreakGlassReviewed, *proposal),
            R::DirectoryChangeProposed { proposal, .. } => (A::DirectoryChangeProposed, *proposal),
            R::DirectoryChangeApproved { proposal, .. } => (A::DirectoryChangeApproved, *proposal),
            R::DirectoryChangeRejected { proposal, .. } => (A::DirectoryChangeRejected, *proposal),
            R::CaseErasureProposed { erasure, .. } => (A::CaseErasureProposed, *erasure),
            R::CaseErased { erasure, .. } => (A::CaseErased, *erasure),
            R::CaseErasureRejected { erasure, .. } => (A::CaseErasureRejected, *erasure),
            _ => return None,
        })
    }
}
