//! Requests the router answers for sector services over core NATS request/reply, so that
//! no sector service needs read rights on the audit: a case's routing decisions and its
//! subject access report, which the router reads and gives to the case's guardian only.
//! The subject names the kind and the asking agency (`henvis.query.<kind>.<agency>`), and
//! NATS permissions let a sector service ask only as its own agencies.

use std::time::Duration;

use henvis_domain::{AgencyId, AuditDecision, CaseId, report::SubjectAccessReport};
use serde::{Serialize, de::DeserializeOwned};

use crate::{Bus, BusError, QueryKind, query_asker, query_filter, query_subject};

/// A request for one page of a case's surviving routing decisions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecisionsQuery {
    /// The case.
    pub case_id: String,
    /// How many surviving decisions to skip (the previous page's `next`).
    #[serde(default)]
    pub offset: usize,
}

/// What the guardian has set on a case: its consents (withdrawn and expired ones too) and
/// its never-disclose list.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaseStanding {
    /// The consents, in the order recorded.
    pub consents: Vec<henvis_domain::Consent>,
    /// The never-disclose list.
    pub never_disclose: Vec<henvis_domain::NeverDisclose>,
}

/// The router's answer to a [`DecisionsQuery`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum DecisionsAnswer {
    /// One page of the case's decisions (voided ones left out), oldest first.
    Decisions {
        /// The decisions.
        decisions: Vec<AuditDecision>,
        /// The offset of the next page, when there is one.
        next: Option<usize>,
        /// The case's consents and never-disclose list as they stand (an older router
        /// leaves it out).
        #[serde(default)]
        standing: Option<CaseStanding>,
    },
    /// No such case.
    NoCase,
    /// The asker is not the case's guardian.
    NotGuardian,
    /// The router could not read the audit; retry.
    Unavailable,
}

/// Decisions in one answer, well inside NATS's default 1 MiB message limit.
pub const DECISIONS_PAGE: usize = 200;

/// A request for one page of a case's subject access report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReportQuery {
    /// The case.
    pub case_id: String,
    /// How many entries to skip (the previous page's `next`).
    #[serde(default)]
    pub offset: usize,
    /// The report the first page opened (its giving is audited once).
    #[serde(default)]
    pub report_id: Option<String>,
}

/// The router's answer to a [`ReportQuery`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum ReportAnswer {
    /// The report with one page of its entries.
    Report {
        /// The report.
        report: Box<SubjectAccessReport>,
        /// The offset of the next page, when there is one.
        next: Option<usize>,
    },
    /// No such case.
    NoCase,
    /// The asker is not the case's guardian.
    NotGuardian,
    /// The router could not read the audit or record the report's giving; retry.
    Unavailable,
}

/// Report entries in one answer (a few hundred bytes each), well inside 1 MiB.
pub const REPORT_PAGE: usize = 1000;

/// A proposed link as one side sees it: ids, the other case's municipality, what matched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkView {
    /// The link.
    pub link_id: String,
    /// The asker's case.
    pub case_id: String,
    /// The other case.
    pub other_case_id: String,
    /// The municipality responsible for the other case.
    pub other_municipality_code: String,
    /// What matched.
    pub matched_on: Vec<henvis_domain::linkage::MatchKind>,
    /// Where it stands.
    pub state: henvis_domain::linkage::LinkState,
    /// When proposed, unix seconds.
    pub proposed_at: i64,
    /// This side's answer, once given.
    pub answered: Option<bool>,
}

/// A request for the proposed links of the asker's cases (as guardian or municipality).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinksQuery {}

/// The router's answer to a [`LinksQuery`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum LinksAnswer {
    /// The links, newest first.
    Links {
        /// Them.
        links: Vec<LinkView>,
    },
    /// The router could not read the links; retry.
    Unavailable,
}

/// A request for the cases the asker is guardian of.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CasesQuery {}

/// One case as its guardian's list shows it: ids and states only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuardianCase {
    /// The case.
    pub case_id: String,
    /// The municipality responsible for it, when known.
    pub municipality_code: Option<String>,
    /// Whether it is closed.
    pub closed: bool,
    /// Consents in force now.
    pub consents_in_force: usize,
    /// The bucket revision of its record (newer changes have higher ones).
    pub revision: u64,
}

/// The router's answer to a [`CasesQuery`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum CasesAnswer {
    /// The cases, the most recently changed first.
    Cases {
        /// Them.
        cases: Vec<GuardianCase>,
    },
    /// The router could not read the cases; retry.
    Unavailable,
}

/// An answer to a proposed link, for one side.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkAnswerQuery {
    /// The link.
    pub link_id: String,
    /// The asker's side.
    pub case_id: String,
    /// The same child (true) or not.
    pub confirm: bool,
}

/// The router's answer to a [`LinkAnswerQuery`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum LinkAnswerAnswer {
    /// Recorded; the link as it stands.
    Link {
        /// It.
        link: Box<LinkView>,
    },
    /// No such link, or the case is not one of its sides.
    NoLink,
    /// The asker is neither the case's guardian nor its municipality.
    NotEntitled,
    /// This side answered already.
    AlreadyAnswered,
    /// The router could not record it; retry.
    Unavailable,
}

impl Bus {
    /// Asks the router for the proposed links of `asker`'s cases.
    pub async fn ask_links(&self, asker: &AgencyId) -> Result<LinksAnswer, BusError> {
        self.ask(QueryKind::Links, asker, &LinksQuery {}).await
    }

    /// Asks the router for the cases `asker` is guardian of.
    pub async fn ask_cases(&self, asker: &AgencyId) -> Result<CasesAnswer, BusError> {
        self.ask(QueryKind::Cases, asker, &CasesQuery {}).await
    }

    /// Gives `asker`'s answer to a proposed link.
    pub async fn answer_link(&self, asker: &AgencyId, query: &LinkAnswerQuery) -> Result<LinkAnswerAnswer, BusError> {
        self.ask(QueryKind::LinkAnswer, asker, query).await
    }

    /// Asks the router one `kind` request as `asker`.
    async fn ask<Q: Serialize, A: DeserializeOwned>(
        &self,
        kind: QueryKind,
        asker: &AgencyId,
        query: &Q,
    ) -> Result<A, BusError> {
        let body = serde_json::to_vec(query).map_err(|e| BusError::Other(e.to_string()))?;
        let reply = tokio::time::timeout(
            QUERY_TIMEOUT,
            self.client().request(query_subject(kind, asker), body.into()),
        )
        .await
        .map_err(|_| BusError::Unavailable("the router did not answer in time".into()))?
        .map_err(|e| BusError::Unavailable(format!("the router did not answer: {e}")))?;
        serde_json::from_slice(&reply.payload).map_err(|e| BusError::Other(format!("{} answer: {e}", kind.as_str())))
    }

    /// Asks the router for every surviving routing decision about `case`, as `asker`.
    pub async fn ask_decisions(&self, asker: &AgencyId, case: &CaseId) -> Result<DecisionsAnswer, BusError> {
        let mut all = Vec::new();
        let mut first_standing = None;
        let mut offset = 0;
        loop {
            let query = DecisionsQuery {
                case_id: case.to_string(),
                offset,
            };
            match self.ask(QueryKind::Decisions, asker, &query).await? {
                DecisionsAnswer::Decisions {
                    decisions,
                    next,
                    standing,
                } => {
                    all.extend(decisions);
                    first_standing = first_standing.or(standing);
                    match next {
                        Some(n) if n > offset => offset = n,
                        _ => {
                            return Ok(DecisionsAnswer::Decisions {
                                decisions: all,
                                next: None,
                                standing: first_standing,
                            });
                        }
                    }
                }
                other => return Ok(other),
            }
        }
    }

    /// Asks the router for the subject access report on `case`, as `asker` (its guardian).
    pub async fn ask_report(&self, asker: &AgencyId, case: &CaseId) -> Result<ReportAnswer, BusError> {
        let query = |offset, report_id| ReportQuery {
            case_id: case.to_string(),
            offset,
            report_id,
        };
        let (mut whole, mut next) = match self.ask(QueryKind::Report, asker, &query(0, None)).await? {
            ReportAnswer::Report { report, next } => (report, next),
            other => return Ok(other),
        };
        // later pages of the same report (its giving is audited once), each further on
        while let Some(offset) = next {
            match self
                .ask(QueryKind::Report, asker, &query(offset, Some(whole.report_id.clone())))
                .await?
            {
                ReportAnswer::Report { report, next: n } => {
                    whole.entries.extend(report.entries);
                    next = n.filter(|n| *n > offset);
                }
                other => return Ok(other),
            }
        }
        Ok(ReportAnswer::Report {
            report: whole,
            next: None,
        })
    }

    /// Answers `kind` requests with `answer(asker, query)` until `shutdown` (every router in
    /// one queue group per kind, so one of them answers each). A request whose subject or
    /// body does not parse is answered with `unparsable`.
    pub async fn serve_queries<Q, A, F, Fut>(
        &self,
        kind: QueryKind,
        shutdown: impl std::future::Future<Output = ()> + Send,
        unparsable: A,
        answer: F,
    ) where
        Q: DeserializeOwned,
        A: Serialize + Clone,
        F: Fn(AgencyId, Q) -> Fut,
        Fut: std::future::Future<Output = A>,
    {
        use futures::StreamExt;
        tokio::pin!(shutdown);
        loop {
            let mut requests = match self
                .client()
                .queue_subscribe(query_filter(kind), format!("henvis-{}", kind.as_str()))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, kind = kind.as_str(), "query requests unavailable; retrying");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                tokio::select! {
                    () = &mut shutdown => return,
                    m = requests.next() => {
                        let Some(m) = m else { break };
                        let Some(reply) = m.reply.clone() else { continue };
                        let asker = query_asker(kind, &m.subject);
                        let query = serde_json::from_slice::<Q>(&m.payload).ok();
                        let result = match (asker, query) {
                            (Some(asker), Some(query)) => answer(asker, query).await,
                            _ => unparsable.clone(),
                        };
                        match serde_json::to_vec(&result) {
                            Ok(body) => {
                                if let Err(e) = self.client().publish(reply, body.into()).await {
                                    tracing::warn!(error = %e, kind = kind.as_str(), "query answer not sent");
                                }
                            }
                            Err(e) => tracing::error!(error = %e, kind = kind.as_str(), "query answer not encodable; not sent"),
                        }
                    }
                }
            }
        }
    }
}

/// How long a sector service waits for the router's answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
