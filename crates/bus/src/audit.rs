//! The one way into the audit: a typed [`AuditRecord`], kept under the subject its scope
//! and writer decide, under a deterministic message id (a redelivered step appends
//! nothing twice). The place the audit's hash chain belongs.

use henvis_domain::{AuditRecord, AuditScope, CaseId};
use std::time::Duration;

/// How often a service that keeps failing to write the audit refreshes its alarm.
pub const ALARM_REFRESH: Duration = Duration::from_secs(10);

/// A service cannot write its audit records, so it delivers nothing: administrators must act.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditAlarm {
    /// The service (`router`, `police`, ..., `admin`).
    pub service: String,
    /// Since when, unix seconds.
    pub since: i64,
    /// The latest failure, unix seconds.
    pub last_failure: i64,
    /// Failures counted since (refreshed at most every ten seconds).
    pub failures: u64,
    /// Why, as a fixed phrase.
    pub reason: String,
}

use crate::{
    Bus, BusError, ROUTER_WRITER, audit_admin_subject, audit_case_subject, audit_decision_subject, audit_rules_subject,
};

impl Bus {
    /// Appends `record` to the audit as `writer` ([`ROUTER_WRITER`], a sector service's
    /// sector for administrator alerts, a police district's agency id for its steps on a
    /// case's alerts) under message id `id`. NATS permissions decide whether the writer
    /// may; a routing decision is the router's only.
    pub async fn audit(&self, writer: &str, id: &str, record: &AuditRecord) -> Result<(), BusError> {
        let case = |c: &str| CaseId::parse(c).map_err(|e| BusError::Other(format!("audit record case id: {e}")));
        let subject = match record.scope() {
            AuditScope::Decisions(c) if writer == ROUTER_WRITER => audit_decision_subject(&case(c)?),
            AuditScope::Decisions(_) => {
                return Err(BusError::Other(
                    "routing decisions are written by the router only".into(),
                ));
            }
            AuditScope::Case(c) => audit_case_subject(&case(c)?, writer),
            AuditScope::Admin => audit_admin_subject(writer),
            AuditScope::Rules => audit_rules_subject(),
        };
        let body = serde_json::to_vec(record).map_err(|e| BusError::Other(format!("audit record: {e}")))?;
        match self.publish_stored(subject, id, body.into()).await {
            Ok(_) => {
                self.audit_written().await;
                Ok(())
            }
            Err(e) => {
                self.audit_unwritable(&e).await;
                Err(e)
            }
        }
    }

    /// Raises this service's alarm that it cannot write the audit (at most every
    /// [`ALARM_REFRESH`]), outside the audit, where administrators see it. Nothing is
    /// delivered meanwhile: every caller fails closed on the error.
    async fn audit_unwritable(&self, e: &BusError) {
        let now = std::time::Instant::now();
        {
            let Ok(mut last) = self.audit_alarm.lock() else { return };
            if last.is_some_and(|t| now.duration_since(t) < ALARM_REFRESH) {
                return;
            }
            *last = Some(now);
        }
        let kind = match e {
            BusError::Unavailable(_) => "the audit stream did not acknowledge the record in time",
            BusError::Full(_) => "the audit stream is full",
            BusError::Other(_) | BusError::Erased(_) => "the audit stream refused the record",
        };
        tracing::error!(service = %self.service, reason = kind, "audit record not written: nothing is delivered until it is");
        let key = crate::audit_alarm_key(&self.service);
        let at = crate::unix_now();
        let result = async {
            let bucket = self.alarm_bucket().await?;
            bucket
                .modify::<AuditAlarm>(
                    &key,
                    || {
                        Some(AuditAlarm {
                            service: self.service.to_string(),
                            since: at,
                            last_failure: at,
                            failures: 0,
                            reason: kind.to_owned(),
                        })
                    },
                    |a| {
                        a.last_failure = at;
                        a.failures += 1;
                        a.reason = kind.to_owned();
                        true
                    },
                )
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(service = %self.service, error = %e, "the audit alarm could not be raised either");
        }
    }

    /// Clears this service's audit alarm once a record is written again.
    async fn audit_written(&self) {
        let raised = self.audit_alarm.lock().is_ok_and(|mut last| last.take().is_some());
        if raised {
            tracing::info!(service = %self.service, "audit records are written again");
            let key = crate::audit_alarm_key(&self.service);
            let cleared = async { self.alarm_bucket().await?.delete(&key).await }.await;
            if let Err(e) = cleared {
                tracing::error!(service = %self.service, error = %e, "the audit alarm could not be cleared");
                if let Ok(mut last) = self.audit_alarm.lock() {
                    *last = Some(std::time::Instant::now());
                }
            }
        }
    }

    async fn alarm_bucket(&self) -> Result<&crate::JsonBucket, BusError> {
        self.alarms
            .get_or_try_init(|| crate::JsonBucket::open(&self.js, crate::BUCKET_ALARMS))
            .await
    }

    /// Every raised audit alarm (for administrators).
    pub async fn audit_alarms(&self) -> Result<Vec<AuditAlarm>, BusError> {
        Ok(self
            .latest_values::<AuditAlarm>(crate::BUCKET_ALARMS)
            .await?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    /// Every audit record under `filter` (wildcards allowed), oldest first; a record that
    /// does not parse is an error, never skipped.
    pub async fn audit_records(&self, filter: &str) -> Result<Vec<AuditRecord>, BusError> {
        self.read_subject(crate::STREAM_AUDIT, filter)
            .await?
            .iter()
            .map(|b| serde_json::from_slice(b).map_err(|e| BusError::Other(format!("audit record: {e}"))))
            .collect()
    }
}
