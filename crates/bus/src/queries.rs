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

impl Bus {
    /// Answers decisions requests with `answer(asker, query)` until `shutdown` (every
    /// router in one queue group, so one of them answers each). A request whose subject or
    /// body does not parse is answered `NoCase` without calling `answer`.
    pub async fn answer_decisions<F, Fut>(&self, shutdown: impl std::future::Future<Output = ()> + Send, answer: F)
    where
        F: Fn(AgencyId, DecisionsQuery) -> Fut,
        Fut: std::future::Future<Output = DecisionsAnswer>,
    {
        use futures::StreamExt;
        tokio::pin!(shutdown);
        loop {
            let mut requests = match self
                .client()
                .queue_subscribe(crate::decisions_query_filter(), "henvis-decisions".into())
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "decisions requests unavailable; retrying");
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
                        let asker = crate::decisions_query_asker(&m.subject);
                        let query = serde_json::from_slice::<DecisionsQuery>(&m.payload).ok();
                        let result = match (asker, query) {
                            (Some(asker), Some(query)) => answer(asker, query).await,
                            _ => DecisionsAnswer::NoCase,
                        };
                        match serde_json::to_vec(&result) {
                            Ok(body) => {
                                if let Err(e) = self.client().publish(reply, body.into()).await {
                                    tracing::warn!(error = %e, "decisions answer not sent");
                                }
                            }
                            Err(e) => tracing::error!(error = %e, "decisions answer not encodable; not sent"),
                        }
                    }
                }
            }
        }
    }
}

/// How long a sector service waits for the router's answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
