//! Requests the router answers for sector services over core NATS request/reply, so that
//! no sector service needs read rights on the audit: a case's routing decisions, which the
//! router reads and gives to the case's guardian only. The subject names the asking agency
//! and NATS permissions let a sector service ask only as its own agencies.

use std::time::Duration;

use henvis_domain::{AgencyId, AuditDecision, CaseId};

use crate::{Bus, BusError, decisions_query_subject};

/// A request for one page of a case's surviving routing decisions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecisionsQuery {
    /// The case.
    pub case_id: String,
    /// How many surviving decisions to skip (the previous page's `next`).
    #[serde(default)]
    pub offset: usize,
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

impl Bus {
    /// Asks the router for every surviving routing decision about `case`, as `asker`.
    pub async fn ask_decisions(&self, asker: &AgencyId, case: &CaseId) -> Result<DecisionsAnswer, BusError> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let query = DecisionsQuery {
                case_id: case.to_string(),
                offset,
            };
            let body = serde_json::to_vec(&query).map_err(|e| BusError::Other(e.to_string()))?;
            let reply = tokio::time::timeout(
                QUERY_TIMEOUT,
                self.client().request(decisions_query_subject(asker), body.into()),
            )
            .await
            .map_err(|_| BusError::Unavailable("the router did not answer in time".into()))?
            .map_err(|e| BusError::Unavailable(format!("the router did not answer: {e}")))?;
            match serde_json::from_slice::<DecisionsAnswer>(&reply.payload)
                .map_err(|e| BusError::Other(format!("decisions answer: {e}")))?
            {
                DecisionsAnswer::Decisions { decisions, next } => {
                    all.extend(decisions);
                    match next {
                        Some(n) if n > offset => offset = n,
                        _ => {
                            return Ok(DecisionsAnswer::Decisions {
                                decisions: all,
                                next: None,
                            });
                        }
                    }
                }
                other => return Ok(other),
            }
        }
    }
}

/// How long a sector service waits for the router's answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
