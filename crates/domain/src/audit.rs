//! The audit record of a routing decision. Ids, classes, rules, legal bases, consent ids
//! and a payload hash: never the child's data. The router writes it; the guardian's and
//! administrators' views read it.

/// A routing decision, or the voiding of one (`kind`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditDecision {
    /// `routing_decision` or `routing_decision_voided`.
    pub kind: String,
    /// The event.
    pub event_id: String,
    /// Its case.
    pub case_id: String,
    /// Its message type.
    #[serde(default)]
    pub message_type: String,
    /// The sending agency.
    #[serde(default)]
    pub sender: String,
    /// The acting person's opaque id.
    #[serde(default)]
    pub actor: String,
    /// The rule set version that decided.
    #[serde(default)]
    pub rule_set_version: String,
    /// The case record revision the decision rests on.
    pub case_revision: u64,
    /// The decision time (the event's submission), unix seconds.
    #[serde(default)]
    pub decided_at: i64,
    /// SHA-256 of the encoded event.
    #[serde(default)]
    pub payload_sha256: String,
    /// Who received it.
    #[serde(default)]
    pub delivered: Vec<AuditRecipient>,
    /// What was withheld.
    #[serde(default)]
    pub withheld: Vec<AuditWithheld>,
}

/// One recipient of a decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecipient {
    /// The agency.
    pub agency: String,
    /// The classes it may see (upper-case names).
    pub classes: Vec<String>,
    /// The routes that entitle it.
    pub rule_ids: Vec<String>,
    /// Their legal bases.
    pub legal_bases: Vec<String>,
    /// The consents a consent route rested on.
    #[serde(default)]
    pub consent_ids: Vec<String>,
    /// Classes the never-disclose list removed.
    #[serde(default)]
    pub restricted_by_never_disclose: Vec<String>,
    /// The alert urgency its routes raise, if any.
    #[serde(default)]
    pub alert: Option<String>,
}

/// One withheld intended delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditWithheld {
    /// The route.
    pub rule_id: String,
    /// The agency, where known.
    pub agency: Option<String>,
    /// The reason code.
    pub reason: String,
    /// A data-free explanation.
    pub explanation: String,
}
