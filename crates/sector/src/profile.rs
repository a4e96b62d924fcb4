//! The data that makes a sector service the police, health, social or NGO service.

use henvis_domain::Sector;

/// What a sector service accepts from its agencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectorProfile {
    /// The sector.
    pub sector: Sector,
    /// The message types its agencies may originate. The router's rule set decides who
    /// receives them; this only keeps, say, a hospital from appointing a guardian.
    pub originates: &'static [&'static str],
}

impl SectorProfile {
    /// The profile of a sector, following the roles in the seed.
    pub fn of(sector: Sector) -> Self {
        let originates: &'static [&'static str] = match sector {
            Sector::Police => &[
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
                "referral_response",
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
                "referral_response",
            ],
        };
        Self { sector, originates }
    }

    /// Whether agencies of this sector may originate `mt`.
    pub fn originates(&self, mt: &str) -> bool {
        self.originates.contains(&mt)
    }
}
