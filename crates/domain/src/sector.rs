//! The four sectors that exchange referrals.

use std::fmt;

/// The sector an agency belongs to. Each sector has its own service, network zone and NATS
/// user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sector {
    /// Police districts and national units.
    Police,
    /// Hospitals and regions.
    Health,
    /// Municipal social services and national social units.
    Social,
    /// Non-governmental organisations.
    Ngo,
}

impl Sector {
    /// Every sector.
    pub const ALL: [Sector; 4] = [Sector::Police, Sector::Health, Sector::Social, Sector::Ngo];

    /// The lowercase name used in subjects, rule files and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Sector::Police => "police",
            Sector::Health => "health",
            Sector::Social => "social",
            Sector::Ngo => "ngo",
        }
    }

    /// Parses a lowercase sector name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Sector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
