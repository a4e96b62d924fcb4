//! Conversions at the edge, from wire types (henvis-proto) to domain types
//! (henvis-domain), with errors that name the field. The sector services and the router
//! share them, so a case change means the same wherever it is applied.
//!
//! Pure: no I/O, no policy.

mod report;
mod stats;
pub use report::{class_numbers, report_from_wire, report_to_wire};
pub use stats::{stats_from_wire, stats_to_wire};

use std::collections::BTreeSet;

use henvis_domain::{
    AgencyId, CaseChange, Class, ClassSet, Consent, ConsentId, FieldError, MessageType, NeverDisclose, Sector, Shielded,
};
use henvis_proto::henvis::events::v1::{
    AgeAssessmentOutcome, ConsentSector, Event, InvestigationStatus, SubjectAccessDeferral, event::Kind,
    never_disclose_entry::From as Nd,
};

fn agency(field: &str, s: &str) -> Result<AgencyId, FieldError> {
    AgencyId::parse(s).map_err(|e| FieldError::new(field, e.expected))
}

fn seconds(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| t.seconds)
}

/// A sector's number on the wire (`henvis.broker.v1.Sector`).
pub fn wire_sector(s: Sector) -> i32 {
    use henvis_proto::henvis::broker::v1::Sector as Pb;
    (match s {
        Sector::Police => Pb::Police,
        Sector::Health => Pb::Health,
        Sector::Social => Pb::Social,
        Sector::Ngo => Pb::Ngo,
    }) as i32
}

/// A reference inside an event that does not hold against its case (the message names
/// only what the sender already knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    /// It names something the case does not have.
    Missing(String),
    /// It reuses an id the case already has.
    Reused(String),
}

/// The consent references of an event against its case as it stands: a consent withdrawn
/// must have been recorded in the case, and a recorded id must be new. Submit and the
/// administrators' simulation check the same.
pub fn check_consent_references(event: &Event, case: &henvis_domain::CaseRecord) -> Result<(), ReferenceError> {
    match &event.kind {
        Some(Kind::ConsentWithdrawn(w)) if !case.consents.iter().any(|c| c.id.as_str() == w.consent_id) => {
            Err(ReferenceError::Missing(format!(
                "event.consent_withdrawn.consent_id: the case has no consent `{}`; withdraw an id recorded with `consent_recorded`",
                w.consent_id
            )))
        }
        Some(Kind::ConsentRecorded(r)) if case.consents.iter().any(|c| c.id.as_str() == r.consent_id) => {
            Err(ReferenceError::Reused(format!(
                "event.consent_recorded.consent_id: `{}` is already used in this case; record a new consent under a new id",
                r.consent_id
            )))
        }
        _ => Ok(()),
    }
}

/// The refusal of a referral response to an event that was not delivered to the responder
/// in its case.
pub fn referral_not_delivered(answered_event_id: &str, responder: &AgencyId) -> String {
    format!(
        "event.referral_response.in_response_to_event_id: no event `{answered_event_id}` of this case was delivered to `{responder}`; answer an event from your inbox"
    )
}

/// The change an event makes to its case record.
pub fn case_change(event: &Event, event_id: &str) -> Result<CaseChange, FieldError> {
    let Some(kind) = &event.kind else {
        return Ok(CaseChange::None);
    };
    Ok(match kind {
        Kind::SuspectedVictimReported(r) => CaseChange::Opened {
            municipality_code: r.municipality_code.clone(),
        },
        Kind::GuardianAppointed(g) => CaseChange::GuardianAppointed(agency(
            "event.guardian_appointed.guardian_agency_id",
            &g.guardian_agency_id,
        )?),
        Kind::AgeAssessmentRequested(r) => CaseChange::AgeAssessmentRequested(agency(
            "event.age_assessment_requested.assessor_agency_id",
            &r.assessor_agency_id,
        )?),
        Kind::AgeAssessmentCompleted(a) => CaseChange::AgeAssessed {
            child: a.outcome() != AgeAssessmentOutcome::Adult,
        },
        Kind::ReturnAssessed(r) => CaseChange::ReturnAssessed {
            reception_confirmed: r.responsible_reception_confirmed,
        },
        Kind::ConsentRecorded(c) => {
            let f = "event.consent_recorded";
            let mut agencies = BTreeSet::new();
            for (i, a) in c.recipient_agency_ids.iter().enumerate() {
                agencies.insert(agency(&format!("{f}.recipient_agency_ids[{i}]"), a)?);
            }
            let mut sectors = BTreeSet::new();
            for s in c.recipient_sectors() {
                sectors.insert(match s {
                    ConsentSector::Police => Sector::Police,
                    ConsentSector::Health => Sector::Health,
                    ConsentSector::Social => Sector::Social,
                    ConsentSector::Ngo => Sector::Ngo,
                    ConsentSector::Unspecified => {
                        return Err(FieldError::new(
                            format!("{f}.recipient_sectors"),
                            "a sector other than `CONSENT_SECTOR_UNSPECIFIED`",
                        ));
                    }
                });
            }
            if agencies.is_empty() && sectors.is_empty() {
                return Err(FieldError::new(
                    format!("{f}.recipient_agency_ids"),
                    "at least one recipient agency or sector",
                ));
            }
            let mut message_types = BTreeSet::new();
            for (i, m) in c.message_types.iter().enumerate() {
                message_types.insert(
                    MessageType::parse(m)
                        .map_err(|e| FieldError::new(format!("{f}.message_types[{i}]"), e.expected))?,
                );
            }
            let (valid_from, valid_until) = (seconds(c.valid_from.as_ref()), seconds(c.valid_until.as_ref()));
            if valid_until <= valid_from {
                return Err(FieldError::new(format!("{f}.valid_until"), "a time after `valid_from`"));
            }
            CaseChange::ConsentRecorded(Consent {
                id: ConsentId::parse(&c.consent_id)
                    .map_err(|e| FieldError::new(format!("{f}.consent_id"), e.expected))?,
                agencies,
                sectors,
                message_types,
                valid_from,
                valid_until,
                withdrawn: false,
                recorded_by_event: event_id.to_owned(),
            })
        }
        Kind::ConsentWithdrawn(w) => CaseChange::ConsentWithdrawn(
            ConsentId::parse(&w.consent_id)
                .map_err(|e| FieldError::new("event.consent_withdrawn.consent_id", e.expected))?,
        ),
        Kind::NeverDiscloseUpdated(n) => {
            let mut list = Vec::with_capacity(n.entries.len());
            for (i, e) in n.entries.iter().enumerate() {
                let f = format!("event.never_disclose_updated.entries[{i}]");
                let from = match &e.from {
                    Some(Nd::AgencyId(a)) => Shielded::Agency(agency(&format!("{f}.agency_id"), a)?),
                    Some(Nd::AllExcept(l)) => {
                        let mut except = BTreeSet::new();
                        for (j, a) in l.agency_ids.iter().enumerate() {
                            except.insert(agency(&format!("{f}.all_except.agency_ids[{j}]"), a)?);
                        }
                        Shielded::AllExcept(except)
                    }
                    None => return Err(FieldError::new(format!("{f}.from"), "`agency_id` or `all_except`")),
                };
                let mut classes = ClassSet::EMPTY;
                for c in &e.classes {
                    classes.insert(Class::from_number(*c).ok_or_else(|| {
                        FieldError::new(format!("{f}.classes"), "sensitivity classes other than unspecified")
                    })?);
                }
                list.push(NeverDisclose { from, classes });
            }
            CaseChange::NeverDiscloseReplaced(list)
        }
        Kind::CaseClosed(_) => CaseChange::Closed,
        Kind::GuardianshipEnded(_) => CaseChange::GuardianshipEnded,
        Kind::InvestigationUpdate(u) => CaseChange::SubjectAccessDeferral {
            deferred: match u.subject_access() {
                SubjectAccessDeferral::Defer => true,
                SubjectAccessDeferral::Lift => false,
                SubjectAccessDeferral::Unspecified => u.status() != InvestigationStatus::Closed,
            },
        },
        _ => CaseChange::None,
    })
}
