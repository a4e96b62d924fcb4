//! The data that makes a sector service the police, health, social or NGO service.

use henvis_domain::Sector;

/// What a sector service accepts from its agencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectorProfile {
    /// The sector.
    pub sector: Sector,
    /// The message types its agencies may originate ([`henvis_domain::originates`]).
    pub originates: &'static [&'static str],
}

impl SectorProfile {
    /// The profile of a sector.
    pub fn of(sector: Sector) -> Self {
        Self {
            sector,
            originates: henvis_domain::originates(sector),
        }
    }

    /// Whether agencies of this sector may originate `mt`.
    pub fn originates(&self, mt: &str) -> bool {
        self.originates.contains(&mt)
    }
}
