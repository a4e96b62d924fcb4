//! Workflow guards from the seed, checked where an event is admitted: plans, placements,
//! consent, the never-disclose list and the return assessment come from the case's
//! guardian; only the case's municipality appoints a guardian; a return is carried out only
//! after the guardian confirmed a responsible reception.

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

/// A guard that refuses an event. Messages name the missing step, never case data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// A step of the workflow has not happened yet.
    #[error("{0}")]
    MissingStep(String),
    /// The sender is not the one the workflow lets act.
    #[error("{0}")]
    NotAllowed(String),
}

/// Whether `sender` may submit an event of type `mt` in `case`.
pub fn admit(mt: &MessageType, sender: &AgencyId, case: &CaseRecord, dir: &Directory) -> Result<(), GuardError> {
    let name = mt.as_str();
    if GUARDIAN_ONLY.contains(&name) {
        return match &case.guardian {
            None => Err(GuardError::MissingStep(format!(
                "`{name}` comes from the case's guardian, and the case has none yet: the case's municipality appoints one with `guardian_appointed`"
            ))),
            Some(g) if g != sender => Err(GuardError::NotAllowed(format!(
                "only the case's guardian (`{g}`) may submit `{name}`"
            ))),
            Some(_) => Ok(()),
        };
    }
    match name {
        "guardian_appointed" => {
            let municipality = case.municipality_code.as_deref().and_then(|c| dir.municipality(c)).map(|m| &m.agency);
            match municipality {
                Some(m) if m == sender => Ok(()),
                Some(m) => Err(GuardError::NotAllowed(format!("only the case's municipality (`{m}`) may appoint its guardian"))),
                None => Err(GuardError::MissingStep("the case has no known municipality".into())),
            }
        }
        "return_carried_out" if !case.return_reception_confirmed => Err(GuardError::MissingStep(
            "a return is carried out only after the case's guardian confirmed a responsible reception (`return_assessed` with `responsible_reception_confirmed`)".into(),
        )),
        _ => Ok(()),
    }
}
