//! Which message types each sector's agencies may originate, following the roles in the
//! seed. The sector services admit only these; the rule validation refuses a rule that
//! names a sender sector which could never send the type.

use crate::Sector;

/// The message types agencies of `sector` may originate.
pub fn originates(sector: Sector) -> &'static [&'static str] {
    match sector {
        Sector::Police => &[
            "alert_escalated",
            "suspected_victim_reported",
            "age_assessment_requested",
            "child_missing",
            "investigation_update",
            "referral_response",
        ],
        Sector::Health => &[
            "suspected_victim_reported",
            "age_assessment_completed",
            "health_assessment_completed",
            "child_missing",
            "referral_response",
        ],
        // municipal caseworkers: guardians, plans, placements, returns, consent
        Sector::Social => &[
            "suspected_victim_reported",
            "age_assessment_requested",
            "guardian_appointed",
            "action_plan_updated",
            "placement_requested",
            "placement_decided",
            "child_missing",
            "return_assessed",
            "return_carried_out",
            "consent_recorded",
            "consent_withdrawn",
            "never_disclose_updated",
            "referral_response",
            "case_closed",
            "guardianship_ended",
        ],
        // outreach, shelters and NGO social workers acting as guardians
        Sector::Ngo => &[
            "suspected_victim_reported",
            "action_plan_updated",
            "placement_requested",
            "placement_decided",
            "child_missing",
            "return_assessed",
            "return_carried_out",
            "consent_recorded",
            "consent_withdrawn",
            "never_disclose_updated",
            "referral_response",
            "case_closed",
        ],
    }
}

/// Message types only henvis itself emits (the police service's escalation).
pub const SYSTEM_TYPES: &[&str] = &["alert_escalated"];
