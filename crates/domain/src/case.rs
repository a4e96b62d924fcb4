//! The case record the router keeps per pseudonymous case id.

use crate::AgencyId;

/// What henvis keeps about a case: only what routing needs, never the child's data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaseRecord {
    /// Code of the municipality responsible for the case (where the child was found).
    pub municipality_code: String,
    /// The agency that opened the case.
    pub opened_by: AgencyId,
    /// The event that opened it.
    pub opened_by_event: String,
    /// The agency of the appointed guardian, once appointed.
    #[serde(default)]
    pub guardian: Option<AgencyId>,
}
