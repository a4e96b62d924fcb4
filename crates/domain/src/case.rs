//! The case record: what henvis keeps per pseudonymous case id so that routing, consent and
//! the workflow guards can be decided. Ids, flags and scopes only, never the child's data.
//!
//! Every change comes from a stored event and is applied idempotently: set-type fields keep
//! the value of the newest event (event ids are time-ordered), collections are keyed by id,
//! and a withdrawn consent is never reinstated.

use std::collections::BTreeSet;

use crate::{AgencyId, ClassSet, ConsentId, MessageType, Sector};

/// A consent the guardian gave on the child's behalf.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Consent {
    /// The guardian's id for it.
    pub id: ConsentId,
    /// Agencies it covers.
    #[serde(default)]
    pub agencies: BTreeSet<AgencyId>,
    /// Sectors it covers.
    #[serde(default)]
    pub sectors: BTreeSet<Sector>,
    /// Message types it covers; empty: all.
    #[serde(default)]
    pub message_types: BTreeSet<MessageType>,
    /// Start of validity, unix seconds.
    pub valid_from: i64,
    /// End of validity (exclusive), unix seconds.
    pub valid_until: i64,
    /// Set once withdrawn; never cleared.
    #[serde(default)]
    pub withdrawn: bool,
    /// The event that recorded it.
    pub recorded_by_event: String,
}

impl Consent {
    /// Whether the consent's scope covers this recipient and message type (regardless of
    /// time and withdrawal).
    pub fn covers(&self, agency: &AgencyId, sector: Sector, mt: &MessageType) -> bool {
        (self.agencies.contains(agency) || self.sectors.contains(&sector))
            && (self.message_types.is_empty() || self.message_types.contains(mt))
    }

    /// Whether it is in force at `at` (unix seconds).
    pub fn in_force(&self, at: i64) -> bool {
        !self.withdrawn && self.valid_from <= at && at < self.valid_until
    }
}

/// Who a never-disclose entry keeps information from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shielded {
    /// One agency (e.g. one tied to a suspect).
    Agency(AgencyId),
    /// Everyone except these agencies (e.g. a shelter's location).
    AllExcept(BTreeSet<AgencyId>),
}

/// One entry of the guardian's never-disclose list. Overrides every route.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NeverDisclose {
    /// Who is shielded from.
    pub from: Shielded,
    /// The classes kept from them; empty: the whole event.
    #[serde(default, with = "class_set_serde")]
    pub classes: ClassSet,
}

impl NeverDisclose {
    /// Whether the entry applies to `agency`.
    pub fn applies_to(&self, agency: &AgencyId) -> bool {
        match &self.from {
            Shielded::Agency(a) => a == agency,
            Shielded::AllExcept(except) => !except.contains(agency),
        }
    }
}

mod class_set_serde {
    use crate::{Class, ClassSet};
    pub fn serialize<S: serde::Serializer>(c: &ClassSet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(c.iter())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ClassSet, D::Error> {
        let v: Vec<Class> = serde::Deserialize::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

/// A change to a case, derived from one stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseChange {
    /// The event reveals nothing the case record keeps.
    None,
    /// The opening report: the responsible municipality.
    Opened {
        /// Three-digit municipality code.
        municipality_code: String,
    },
    /// A guardian was appointed.
    GuardianAppointed(AgencyId),
    /// An age assessment was requested from this body.
    AgeAssessmentRequested(AgencyId),
    /// An age assessment concluded: `child` is false only for an adult outcome.
    AgeAssessed {
        /// Whether the case still concerns a child.
        child: bool,
    },
    /// The guardian assessed the return.
    ReturnAssessed {
        /// A responsible reception is confirmed.
        reception_confirmed: bool,
    },
    /// The guardian recorded a consent.
    ConsentRecorded(Consent),
    /// The guardian withdrew a consent.
    ConsentWithdrawn(ConsentId),
    /// The guardian replaced the never-disclose list.
    NeverDiscloseReplaced(Vec<NeverDisclose>),
    /// The case was closed: nothing more is routed in it.
    Closed,
    /// The guardianship ended: the case has no guardian until another is appointed.
    GuardianshipEnded,
    /// The police marked the case as under investigation (criminal code § 262 a), which
    /// defers the police-side part of the guardian's subject access report, or lifted the
    /// mark.
    SubjectAccessDeferral {
        /// True to defer, false to lift.
        deferred: bool,
    },
}

impl CaseChange {
    /// A data-free name of the change, for the audit.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Opened { .. } => "opened",
            Self::GuardianAppointed(_) => "guardian_appointed",
            Self::AgeAssessmentRequested(_) => "age_assessment_requested",
            Self::AgeAssessed { .. } => "age_assessed",
            Self::ReturnAssessed { .. } => "return_assessed",
            Self::ConsentRecorded(_) => "consent_recorded",
            Self::ConsentWithdrawn(_) => "consent_withdrawn",
            Self::NeverDiscloseReplaced(_) => "never_disclose_replaced",
            Self::Closed => "case_closed",
            Self::GuardianshipEnded => "guardianship_ended",
            Self::SubjectAccessDeferral { deferred: true } => "subject_access_deferred",
            Self::SubjectAccessDeferral { deferred: false } => "subject_access_deferral_lifted",
        }
    }
}

/// What henvis keeps about a case.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CaseRecord {
    /// Code of the municipality responsible for the case (where the child was found).
    #[serde(default)]
    pub municipality_code: Option<String>,
    /// The agency of the appointed guardian.
    #[serde(default)]
    pub guardian: Option<AgencyId>,
    /// The bodies an age assessment was requested from: only they may complete one.
    #[serde(default)]
    pub age_assessors: BTreeSet<AgencyId>,
    /// False once an age assessment concluded the person is an adult; a case is presumed
    /// to concern a child until then.
    #[serde(default = "yes")]
    pub child: bool,
    /// Whether the guardian has confirmed a responsible reception for a return.
    #[serde(default)]
    pub return_reception_confirmed: bool,
    /// Agencies that have sent or received an event of the case.
    #[serde(default)]
    pub participants: BTreeSet<AgencyId>,
    /// The guardian's consents, by id.
    #[serde(default)]
    pub consents: Vec<Consent>,
    /// The guardian's never-disclose list.
    #[serde(default)]
    pub never_disclose: Vec<NeverDisclose>,
    /// Once closed: the event that closed it (its id tells when; retention counts from it).
    #[serde(default)]
    pub closed_by_event: Option<String>,
    /// While the police have the case marked as under investigation: the event that set
    /// the mark (its id is time-ordered and tells when). Later marks while it stands do
    /// not move it, so the configured maximum age of a deferral counts from the first.
    #[serde(default)]
    pub deferred_by_event: Option<String>,
    /// Newest event applied per set-type field, so a redelivered older event never
    /// overwrites a newer one: (field, event id).
    #[serde(default)]
    pub applied: Vec<(String, String)>,
}

fn yes() -> bool {
    true
}

impl CaseRecord {
    /// A new case record: presumed a child, nothing else known.
    pub fn new() -> Self {
        Self {
            child: true,
            ..Default::default()
        }
    }

    /// Whether `event_id` is newer than the last event applied to `field`; records it.
    fn newer(&mut self, field: &str, event_id: &str) -> bool {
        match self.applied.iter_mut().find(|(f, _)| f == field) {
            Some((_, last)) if last.as_str() >= event_id => false,
            Some((_, last)) => {
                *last = event_id.to_owned();
                true
            }
            None => {
                self.applied.push((field.to_owned(), event_id.to_owned()));
                true
            }
        }
    }

    /// Applies a change from event `event_id` (idempotent). Returns whether anything changed.
    pub fn apply(&mut self, change: &CaseChange, event_id: &str) -> bool {
        let before = self.clone();
        match change {
            CaseChange::None => {}
            CaseChange::Opened { municipality_code } => {
                if self.municipality_code.is_none() {
                    self.municipality_code = Some(municipality_code.clone());
                }
            }
            CaseChange::GuardianAppointed(g) => {
                if self.newer("guardian", event_id) {
                    self.guardian = Some(g.clone());
                }
            }
            CaseChange::AgeAssessmentRequested(a) => {
                self.age_assessors.insert(a.clone());
            }
            CaseChange::AgeAssessed { child } => {
                if self.newer("age", event_id) {
                    self.child = *child;
                }
            }
            CaseChange::ReturnAssessed { reception_confirmed } => {
                if self.newer("return", event_id) {
                    self.return_reception_confirmed = *reception_confirmed;
                }
            }
            CaseChange::ConsentRecorded(c) => {
                if !self.consents.iter().any(|x| x.id == c.id) {
                    self.consents.push(c.clone());
                }
            }
            CaseChange::ConsentWithdrawn(id) => {
                for c in self.consents.iter_mut().filter(|c| &c.id == id) {
                    c.withdrawn = true;
                }
            }
            CaseChange::NeverDiscloseReplaced(list) => {
                if self.newer("never_disclose", event_id) {
                    self.never_disclose = list.clone();
                }
            }
            CaseChange::Closed => {
                if self.closed_by_event.is_none() {
                    self.closed_by_event = Some(event_id.to_owned());
                }
            }
            CaseChange::GuardianshipEnded => {
                if self.newer("guardian", event_id) {
                    self.guardian = None;
                }
            }
            CaseChange::SubjectAccessDeferral { deferred } => {
                if self.newer("deferral", event_id) {
                    match (deferred, &self.deferred_by_event) {
                        (true, None) => self.deferred_by_event = Some(event_id.to_owned()),
                        (true, Some(_)) => {}
                        (false, _) => self.deferred_by_event = None,
                    }
                }
            }
        }
        *self != before
    }

    /// Whether the record already shows the change event `event_id` makes (or a newer one
    /// of the same field): how a sector service knows the router has applied it.
    pub fn reflects(&self, change: &CaseChange, event_id: &str) -> bool {
        let applied = |field: &str| {
            self.applied
                .iter()
                .any(|(f, last)| f == field && last.as_str() >= event_id)
        };
        match change {
            CaseChange::None => true,
            CaseChange::Opened { .. } => self.municipality_code.is_some(),
            CaseChange::GuardianAppointed(_) => applied("guardian"),
            CaseChange::AgeAssessmentRequested(a) => self.age_assessors.contains(a),
            CaseChange::AgeAssessed { .. } => applied("age"),
            CaseChange::ReturnAssessed { .. } => applied("return"),
            CaseChange::NeverDiscloseReplaced(_) => applied("never_disclose"),
            CaseChange::SubjectAccessDeferral { .. } => applied("deferral"),
            CaseChange::Closed => self.closed_by_event.is_some(),
            CaseChange::GuardianshipEnded => applied("guardian"),
            CaseChange::ConsentRecorded(c) => self.consents.iter().any(|x| x.id == c.id),
            CaseChange::ConsentWithdrawn(id) => {
                let mut named = self.consents.iter().filter(|c| &c.id == id).peekable();
                named.peek().is_some() && named.all(|c| c.withdrawn)
            }
        }
    }

    /// Adds participants; returns whether any was new.
    pub fn add_participants<'a>(&mut self, agencies: impl IntoIterator<Item = &'a AgencyId>) -> bool {
        let mut changed = false;
        for a in agencies {
            changed |= self.participants.insert(a.clone());
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AgencyId {
        AgencyId::parse(s).unwrap()
    }

    #[test]
    fn a_record_reflects_a_change_once_applied_and_not_before() {
        let mut c = CaseRecord::new();
        let consent = Consent {
            id: ConsentId::parse("c1").unwrap(),
            agencies: BTreeSet::new(),
            sectors: BTreeSet::new(),
            message_types: BTreeSet::new(),
            valid_from: 0,
            valid_until: 10,
            withdrawn: false,
            recorded_by_event: "01".into(),
        };
        let changes = [
            (
                CaseChange::Opened {
                    municipality_code: "101".into(),
                },
                "01",
            ),
            (CaseChange::GuardianAppointed(id("ngo-a1")), "02"),
            (CaseChange::AgeAssessmentRequested(id("region-x")), "02a"),
            (CaseChange::AgeAssessed { child: false }, "03"),
            (
                CaseChange::ReturnAssessed {
                    reception_confirmed: true,
                },
                "04",
            ),
            (CaseChange::ConsentRecorded(consent), "05"),
            (CaseChange::ConsentWithdrawn(ConsentId::parse("c1").unwrap()), "06"),
            (CaseChange::NeverDiscloseReplaced(Vec::new()), "07"),
            (CaseChange::SubjectAccessDeferral { deferred: true }, "08"),
            (CaseChange::GuardianshipEnded, "09"),
            (CaseChange::Closed, "10"),
        ];
        for (change, event) in &changes {
            assert!(!c.reflects(change, event), "{} before it is applied", change.name());
            c.apply(change, event);
            assert!(c.reflects(change, event), "{} once applied", change.name());
        }
        // an older event of a field a newer one has set is reflected (it never applies)
        assert!(c.reflects(&CaseChange::GuardianAppointed(id("ngo-old")), "01"));
        assert!(!c.reflects(&CaseChange::GuardianAppointed(id("ngo-new")), "11"));
        assert_eq!((c.guardian.clone(), c.closed_by_event.as_deref()), (None, Some("10")));
    }

    #[test]
    fn a_deferral_counts_from_its_first_mark_and_ends_when_lifted() {
        let mut c = CaseRecord::new();
        let defer = CaseChange::SubjectAccessDeferral { deferred: true };
        let lift = CaseChange::SubjectAccessDeferral { deferred: false };
        assert!(c.apply(&defer, "02"));
        assert!(c.apply(&defer, "03"), "a later mark is recorded as applied");
        assert_eq!(
            c.deferred_by_event.as_deref(),
            Some("02"),
            "but does not move the start"
        );
        assert!(!c.apply(&lift, "01"), "an older lift never ends a newer mark");
        assert!(c.apply(&lift, "04"));
        assert_eq!(c.deferred_by_event, None);
        assert!(c.apply(&defer, "05"));
        assert_eq!(
            c.deferred_by_event.as_deref(),
            Some("05"),
            "a new mark starts a new deferral"
        );
    }

    #[test]
    fn changes_are_idempotent_and_newest_wins() {
        let mut c = CaseRecord::new();
        assert!(c.child, "presumed a child");
        assert!(c.apply(&CaseChange::GuardianAppointed(id("ngo-a1")), "02"));
        assert!(
            !c.apply(&CaseChange::GuardianAppointed(id("ngo-a1")), "02"),
            "redelivery changes nothing"
        );
        assert!(
            !c.apply(&CaseChange::GuardianAppointed(id("ngo-old")), "01"),
            "an older event never wins"
        );
        assert_eq!(c.guardian, Some(id("ngo-a1")));
        let consent = Consent {
            id: ConsentId::parse("c1").unwrap(),
            agencies: [id("ngo-a1")].into(),
            sectors: BTreeSet::new(),
            message_types: BTreeSet::new(),
            valid_from: 0,
            valid_until: 100,
            withdrawn: false,
            recorded_by_event: "03".into(),
        };
        assert!(c.apply(&CaseChange::ConsentRecorded(consent.clone()), "03"));
        assert!(c.apply(&CaseChange::ConsentWithdrawn(ConsentId::parse("c1").unwrap()), "04"));
        assert!(
            !c.apply(&CaseChange::ConsentRecorded(consent), "03"),
            "a withdrawn consent is never reinstated"
        );
        assert!(c.consents[0].withdrawn && !c.consents[0].in_force(50));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<CaseRecord>(&json).unwrap(), c);
    }
}
