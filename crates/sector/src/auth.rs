//! The caller, from the principal its client certificate names (see henvis-runtime's
//! `tls`), bound to the agency directory: an agency system is the agency; a contact person
//! acts for their police district.

use henvis_domain::{AgencyId, Directory, PersonId, Principal, Sector};

use crate::ApiError;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The calling agency.
    pub agency: AgencyId,
    /// Its sector, from the directory.
    pub sector: Sector,
    /// The person, when a contact person calls as themself.
    pub person: Option<PersonId>,
}

impl Caller {
    /// The caller a principal stands for, if the directory knows it as an agency or a
    /// contact person.
    pub fn of(principal: &Principal, dir: &Directory) -> Result<Self, ApiError> {
        match principal {
            Principal::Agency(agency) => {
                let entry = dir.agency(agency).ok_or(ApiError::Unauthenticated(
                    "certificate names an agency unknown to the directory",
                ))?;
                if dir.is_disabled_agency(agency) {
                    return Err(ApiError::Unauthenticated(
                        "certificate names an agency disabled in the directory",
                    ));
                }
                Ok(Self {
                    agency: agency.clone(),
                    sector: entry.sector,
                    person: None,
                })
            }
            Principal::Person(person) => {
                let agency = dir.contact_person(person).ok_or(ApiError::Unauthenticated(
                    "certificate names a person unknown to the directory",
                ))?;
                if dir.is_disabled_person(person) {
                    return Err(ApiError::Unauthenticated(
                        "certificate names a person disabled in the directory",
                    ));
                }
                Ok(Self {
                    agency: agency.clone(),
                    sector: Sector::Police,
                    person: Some(person.clone()),
                })
            }
            Principal::Admin(_) | Principal::Service(_) => Err(ApiError::PermissionDenied(
                "administrators and services do not submit or read referrals".into(),
            )),
        }
    }
}

/// Whether a sector service lets `principal` in at all: agencies and contact persons of
/// the directory, and henvis services (for health and reflection). Administrators work
/// through the router's tools, not the sector services.
pub fn admit(dir: &Directory, principal: &Principal) -> Result<(), String> {
    match principal {
        Principal::Agency(a) if dir.agency(a).is_none() => {
            Err("client certificate names an agency unknown to the agency directory".into())
        }
        Principal::Person(p) if dir.contact_person(p).is_none() => {
            Err("client certificate names a contact person unknown to the agency directory".into())
        }
        Principal::Agency(a) if dir.is_disabled_agency(a) => {
            Err("client certificate names an agency disabled in the agency directory".into())
        }
        Principal::Person(p) if dir.is_disabled_person(p) => {
            Err("client certificate names a contact person disabled in the agency directory".into())
        }
        Principal::Admin(_) => Err("administrators do not use the sector services; use the administrator tools".into()),
        _ => Ok(()),
    }
}
