//! Workflow guards from the seed, checked where an event is admitted: plans, placements,
//! consent, the never-disclose list and the return assessment come from the case's
//! guardian; only the case's municipality appoints a guardian; a return is carried out only
//! after the guardian confirmed a responsible reception; an age assessment is completed
//! only by the body the case requested it from; only the police submit an
//! investigation update (it defers the police-side part of the guardian's report).

use henvis_domain::{AgencyId, CaseRecord, Directory, MessageType};

/// Message types only the case's guardian may submit.
pub const GUARDIAN_ONLY: &[&str] = &[
    "action_plan_updated",
    "placement_requested",
    "placement_decided",
    "consent_recorded",
    "consent_withdrawn",
    "never_disclose_updated",
    "return_assessed",
];

/// A guard that refuses an event. Messages name the missing step, never case data and
/// never another agency: a refusal tells the sender nothing it was not entitled to know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The sender takes no part in the case: answered exactly like a case that does not
    /// exist, so the answer does not even confirm that the case exists.
    #[error("not a participant")]
    NotParticipant,
    /// A step of the workflow has not happened yet.
    #[error("{0}")]
    MissingStep(String),
    /// The sender is not the one the workflow lets act.
    #[error("{0}")]
    NotAllowed(String),
}

/// Whether `agency` may add events to an existing case: agencies the case already involves
/// (they sent an event of it or one was delivered to them), its guardian, and the bodies
/// the directory relates to it — its municipality, that municipality's police district and
/// region. Any other agency joins a case only by being sent one of its events (a referral
/// routed to it), never by naming its id.
pub fn may_add_to(case: &CaseRecord, agency: &AgencyId, dir: &Directory) -> bool {
    if case.participants.contains(agency) || case.guardian.as_ref() == Some(agency) {
        return true;
    }
    case.municipality_code
        .as_deref()
        .and_then(|c| dir.municipality(c))
        .is_some_and(|m| &m.agency == agency || &m.police_district == agency || &m.region == agency)
}

/// Whether `sender` may submit an event of type `mt` in `case`. `opening` is true for the
/// event that opens a new case (no participants yet).
pub fn admit(mt: &MessageType, sender: &AgencyId, case: &CaseRecord, dir: &Directory) -> Result<(), GuardError> {
    let name = mt.as_str();
    let opening = case.municipality_code.is_none() && case.participants.is_empty() && case.guardian.is_none();
    if !opening && !may_add_to(case, sender, dir) {
        return Err(GuardError::NotParticipant);
    }
    if case.closed_by_event.is_some() {
        return Err(GuardError::MissingStep(
            "the case is closed (`case_closed`): nothing more is routed in it; report a new case with `suspected_victim_reported` if the child needs help again".into(),
        ));
    }
    let municipality = case
        .municipality_code
        .as_deref()
        .and_then(|c| dir.municipality(c))
        .map(|m| &m.agency);
    if GUARDIAN_ONLY.contains(&name) {
        return match &case.guardian {
            None => Err(GuardError::MissingStep(format!(
                "`{name}` comes from the case's guardian, and the case has none yet: the case's municipality appoints one with `guardian_appointed`"
            ))),
            Some(g) if g != sender => Err(GuardError::NotAllowed(format!(
                "only the case's guardian may submit `{name}`"
            ))),
            Some(_) => Ok(()),
        };
    }
    match name {
        "guardian_appointed" => {
            match municipality {
                Some(m) if m == sender => Ok(()),
                Some(_) => Err(GuardError::NotAllowed(
                    "only the case's municipality may appoint its guardian".into(),
                )),
                None => Err(GuardError::MissingStep("the case has no known municipality".into())),
            }
        }
        // it marks the case as under investigation, which defers the police-side part of
        // the guardian's subject access report: the police's step only
        "investigation_update" if dir.agency(sender).map(|a| a.sector) != Some(henvis_domain::Sector::Police) => Err(
            GuardError::NotAllowed("only a police agency may submit `investigation_update`".into()),
        ),
        // the child/adult presumption changes only on the assessment the case asked for,
        // from the body it asked
        "age_assessment_completed" if case.age_assessors.is_empty() => Err(GuardError::MissingStep(
            "an age assessment is completed only after the case requested one (`age_assessment_requested` naming the assessor)".into(),
        )),
        "age_assessment_completed" if !case.age_assessors.contains(sender) => Err(GuardError::NotAllowed(
            "only the body the case's age assessment was requested from may complete it".into(),
        )),
        "case_closed" if municipality != Some(sender) && case.guardian.as_ref() != Some(sender) => Err(
            GuardError::NotAllowed("only the case's guardian or its municipality may close the case".into()),
        ),
        "guardianship_ended" if municipality != Some(sender) => Err(GuardError::NotAllowed(
            "only the case's municipality may end its guardianship".into(),
        )),
        "guardianship_ended" if case.guardian.is_none() => Err(GuardError::MissingStep(
            "the case has no guardian to end the guardianship of".into(),
        )),
        "return_carried_out" if !case.return_reception_confirmed => Err(GuardError::MissingStep(
            "a return is carried out only after the case's guardian confirmed a responsible reception (`return_assessed` with `responsible_reception_confirmed`)".into(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_police_mark_a_case_as_under_investigation() {
        let dir = Directory::denmark().unwrap();
        let mut case = CaseRecord::new();
        case.municipality_code = Some("101".into());
        let m = dir.municipality("101").unwrap().clone();
        let mt = MessageType::parse("investigation_update").unwrap();
        assert_eq!(admit(&mt, &m.police_district, &case, &dir), Ok(()));
        assert!(matches!(
            admit(&mt, &m.agency, &case, &dir),
            Err(GuardError::NotAllowed(e)) if e.contains("only a police agency")
        ));
    }

    #[test]
    fn only_the_requested_body_completes_an_age_assessment() {
        let dir = Directory::denmark().unwrap();
        let mut case = CaseRecord::new();
        case.municipality_code = Some("101".into());
        let region = dir.municipality("101").unwrap().region.clone();
        let other = AgencyId::parse("region-syddanmark").unwrap();
        case.participants.insert(other.clone());
        let mt = MessageType::parse("age_assessment_completed").unwrap();
        assert!(matches!(
            admit(&mt, &region, &case, &dir),
            Err(GuardError::MissingStep(_))
        ));
        case.age_assessors.insert(region.clone());
        assert_eq!(admit(&mt, &region, &case, &dir), Ok(()));
        assert!(matches!(
            admit(&mt, &other, &case, &dir),
            Err(GuardError::NotAllowed(_))
        ));
    }
}
