//! The data that makes a sector service the police, health, social or NGO service.

use henvis_domain::Sector;

/// What a sector service serves beyond the common and typed APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// Case alerts for contact persons (`henvis.police.v1.AlertService`) and their
    /// escalation when unclaimed (alerts.rs).
    CaseAlerts,
}

/// What a sector service accepts from its agencies, and what else it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectorProfile {
    /// The sector.
    pub sector: Sector,
    /// The message types its agencies may originate ([`henvis_domain::originates`]).
    pub originates: &'static [&'static str],
    /// What it serves besides.
    pub extras: &'static [Extra],
}

impl SectorProfile {
    /// The profile of a sector.
    pub fn of(sector: Sector) -> Self {
        Self {
            sector,
            originates: henvis_domain::originates(sector),
            extras: match sector {
                Sector::Police => &[Extra::CaseAlerts],
                Sector::Health | Sector::Social | Sector::Ngo => &[],
            },
        }
    }

    /// Whether agencies of this sector may originate `mt`.
    pub fn originates(&self, mt: &str) -> bool {
        self.originates.contains(&mt)
    }
}
