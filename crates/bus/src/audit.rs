//! The one way into the audit: a typed [`AuditRecord`], kept under the subject its scope
//! and writer decide, under a deterministic message id (a redelivered step appends
//! nothing twice). The place the audit's hash chain belongs.

use henvis_domain::{AuditRecord, AuditScope, CaseId};

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
        self.publish_stored(subject, id, body.into()).await.map(|_| ())
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
