//! Who a certificate speaks for. Every henvis certificate names exactly one principal in a
//! URI subject alternative name, `henvis://<kind>/<id>`; services bind it to the directory.

use std::fmt;

use crate::{AgencyId, IdError, PersonId};

/// The principal a certificate identifies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// An agency's system (`henvis://agency/<agency id>`).
    Agency(AgencyId),
    /// A person acting as themself, such as a police contact person
    /// (`henvis://person/<person id>`).
    Person(PersonId),
    /// A henvis administrator (`henvis://admin/<person id>`).
    Admin(PersonId),
    /// A henvis service (`henvis://service/<name>`), for its server certificate and its
    /// connections to NATS.
    Service(String),
}

/// The URI scheme of principal names.
pub const PRINCIPAL_SCHEME: &str = "henvis://";

impl Principal {
    /// Parses a principal URI.
    pub fn from_uri(uri: &str) -> Result<Self, IdError> {
        let bad = IdError {
            kind: "principal",
            expected: "a URI `henvis://agency/<id>`, `henvis://person/<id>`, `henvis://admin/<id>` or `henvis://service/<name>`",
        };
        let rest = uri.strip_prefix(PRINCIPAL_SCHEME).ok_or(bad.clone())?;
        let (kind, id) = rest.split_once('/').ok_or(bad.clone())?;
        match kind {
            "agency" => Ok(Self::Agency(AgencyId::parse(id)?)),
            "person" => Ok(Self::Person(PersonId::parse(id)?)),
            "admin" => Ok(Self::Admin(PersonId::parse(id)?)),
            "service" if !id.is_empty() && id.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') => {
                Ok(Self::Service(id.to_owned()))
            }
            _ => Err(bad),
        }
    }

    /// The principal's URI.
    pub fn uri(&self) -> String {
        self.to_string()
    }

    /// A relative file path for its certificate: `<kind>/<id>`.
    pub fn path(&self) -> String {
        let (kind, id) = self.parts();
        format!("{kind}/{id}")
    }

    fn parts(&self) -> (&'static str, &str) {
        match self {
            Self::Agency(a) => ("agency", a.as_str()),
            Self::Person(p) => ("person", p.as_str()),
            Self::Admin(p) => ("admin", p.as_str()),
            Self::Service(s) => ("service", s.as_str()),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, id) = self.parts();
        write!(f, "{PRINCIPAL_SCHEME}{kind}/{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_uris_round_trip_and_reject_anything_else() {
        for uri in [
            "henvis://agency/kommune-101",
            "henvis://person/politi-koebenhavn-kp1",
            "henvis://admin/admin-1",
            "henvis://service/router",
        ] {
            assert_eq!(Principal::from_uri(uri).unwrap().uri(), uri);
        }
        for bad in [
            "https://agency/kommune-101",
            "henvis://agency",
            "henvis://root/x",
            "henvis://service/",
            "henvis://agency/Kommune 101",
        ] {
            assert!(Principal::from_uri(bad).is_err(), "{bad}");
        }
    }
}
