//! The routing decision: for one event, which agencies receive it with which classes, and
//! which intended recipients are withheld and why. Deny by default: a message type without
//! rules reaches nobody, a sender the rules do not name reaches nobody, a consent route
//! without consent in force delivers nothing, a lapsed agreement delivers nothing, and the
//! guardian's never-disclose list overrides every route.

use std::collections::BTreeMap;

use henvis_domain::{AgencyId, CaseRecord, ClassSet, Directory, MessageType, Sector};

use crate::{AppliesTo, LegalBasis, RuleSet, Selector, Urgency};

/// Everything a decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct DecisionInput<'a> {
    /// The message type.
    pub mt: &'a MessageType,
    /// The authenticated sender.
    pub sender: &'a AgencyId,
    /// The sender's sector.
    pub sender_sector: Sector,
    /// The case as the router knows it (consents and never-disclose list included).
    pub case: &'a CaseRecord,
    /// The time the decision is made for (the event's submission), unix seconds.
    pub at: i64,
    /// For a referral response: the sender of the referral answered, once the router has
    /// verified that the responder received it.
    pub referral_sender: Option<&'a AgencyId>,
    /// The BASIC boolean fields set in the event (for `urgent_when`), by name.
    pub flags: &'a [String],
    /// The agencies the event names, as (field path, agency id) (for `named:` routes).
    pub named: &'a [(String, String)],
}

/// One agency that receives the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The agency.
    pub agency: AgencyId,
    /// The classes it may see: the union of its routes' grants, less never-disclose.
    pub classes: ClassSet,
    /// The routes that entitle it, in rule order.
    pub rule_ids: Vec<String>,
    /// The legal bases of those routes, as text, in the same order.
    pub bases: Vec<String>,
    /// The agreements those routes rest on, in the same order.
    pub agreements: Vec<String>,
    /// The consents a consent-based route rested on.
    pub consent_ids: Vec<String>,
    /// Classes its routes granted that the never-disclose list removed.
    pub restricted: ClassSet,
    /// The most urgent alert its routes raise.
    pub alert: Option<Urgency>,
}

/// Why an intended delivery did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WithheldReason {
    /// The rules do not let this sender send this message type.
    SenderNotPermitted,
    /// The rule set has no routes for the message type.
    NoRoutes,
    /// The route's recipient could not be determined (e.g. no guardian yet).
    NoRecipient(&'static str),
    /// The route does not apply to this case (child or adult).
    NotApplicable,
    /// The route's cooperation agreement is not in force.
    AgreementLapsed,
    /// The route rests on consent and no consent in force covers it.
    NoConsent,
    /// The consent that covered it was withdrawn.
    ConsentWithdrawn,
    /// The guardian's never-disclose list keeps the event from this recipient.
    NeverDisclose,
    /// Administrators disabled the recipient in the directory.
    RecipientDisabled,
    /// The recipient did not sign the cooperation agreement the route rests on.
    NotAParty,
}

impl WithheldReason {
    /// A stable code for rule tests, status and audit.
    pub fn code(&self) -> &'static str {
        match self {
            WithheldReason::SenderNotPermitted => "sender_not_permitted",
            WithheldReason::NoRoutes => "no_routes",
            WithheldReason::NoRecipient(_) => "no_recipient",
            WithheldReason::NotApplicable => "not_applicable",
            WithheldReason::AgreementLapsed => "agreement_lapsed",
            WithheldReason::NoConsent => "no_consent",
            WithheldReason::ConsentWithdrawn => "consent_withdrawn",
            WithheldReason::NeverDisclose => "never_disclose",
            WithheldReason::RecipientDisabled => "recipient_disabled",
            WithheldReason::NotAParty => "not_a_party",
        }
    }

    /// A data-free explanation for the guardian and administrators.
    pub fn describe(&self) -> &'static str {
        match self {
            WithheldReason::SenderNotPermitted => "sender not permitted to send this message type",
            WithheldReason::NoRoutes => "no route for this message type",
            WithheldReason::NoRecipient(why) => why,
            WithheldReason::NotApplicable => "route does not apply to this case",
            WithheldReason::AgreementLapsed => "the cooperation agreement is not in force",
            WithheldReason::NoConsent => "no consent in force",
            WithheldReason::ConsentWithdrawn => "consent withdrawn",
            WithheldReason::NeverDisclose => "on the guardian's never-disclose list",
            WithheldReason::RecipientDisabled => "the recipient is disabled in the directory",
            WithheldReason::NotAParty => "the recipient is not a party to the agreement the route rests on",
        }
    }
}

/// One intended delivery that was withheld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    /// The route concerned (empty when no route applies).
    pub rule_id: String,
    /// The agency that would have received it, where known.
    pub recipient: Option<AgencyId>,
    /// Why.
    pub reason: WithheldReason,
    /// Whether the sender may see the reason (else: "withheld by policy").
    pub sender_sees_reason: bool,
}

/// The decision for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The rule set version that decided.
    pub rule_set_version: String,
    /// Who receives, ordered by agency id.
    pub recipients: Vec<Recipient>,
    /// What was withheld.
    pub withheld: Vec<Withheld>,
}

fn withheld(rule_id: &str, recipient: Option<AgencyId>, reason: WithheldReason, sees: bool) -> Withheld {
    Withheld {
        rule_id: rule_id.to_owned(),
        recipient,
        reason,
        sender_sees_reason: sees,
    }
}

/// Decides who receives an event.
pub fn decide(rules: &RuleSet, dir: &Directory, input: &DecisionInput<'_>) -> Decision {
    let DecisionInput {
        mt,
        sender,
        sender_sector,
        case,
        at,
        referral_sender,
        flags,
        named,
    } = *input;
    let mut decision = Decision {
        rule_set_version: rules.version().to_owned(),
        recipients: Vec::new(),
        withheld: Vec::new(),
    };
    let Some(type_rules) = rules.rules_for(mt) else {
        decision
            .withheld
            .push(withheld("", None, WithheldReason::NoRoutes, false));
        return decision;
    };
    if !type_rules.senders.permits(sender, sender_sector) {
        decision
            .withheld
            .push(withheld("", None, WithheldReason::SenderNotPermitted, false));
        return decision;
    }
    let municipality = case.municipality_code.as_deref().and_then(|c| dir.municipality(c));
    let mut by_agency: BTreeMap<AgencyId, Recipient> = BTreeMap::new();
    for route in &type_rules.routes {
        let sees = route.sender_sees_reason;
        let applies = match route.applies_to {
            AppliesTo::Any => true,
            AppliesTo::Child => case.child,
            AppliesTo::Adult => !case.child,
        };
        if !applies {
            decision
                .withheld
                .push(withheld(&route.id, None, WithheldReason::NotApplicable, sees));
            continue;
        }
        if !route.agreement.in_force(at) {
            decision
                .withheld
                .push(withheld(&route.id, None, WithheldReason::AgreementLapsed, sees));
            continue;
        }
        let all: Vec<AgencyId> = match &route.selector {
            Selector::Sector(s) => dir.agencies_in(*s).map(|a| a.id.clone()).collect(),
            Selector::Agency(a) => vec![a.clone()],
            Selector::CaseMunicipality => municipality.map(|m| m.agency.clone()).into_iter().collect(),
            Selector::CasePoliceDistrict => municipality.map(|m| m.police_district.clone()).into_iter().collect(),
            Selector::CaseGuardian => case.guardian.clone().into_iter().collect(),
            Selector::CaseParticipants => case.participants.iter().cloned().collect(),
            Selector::Sender => vec![sender.clone()],
            Selector::ReferralSender => referral_sender.cloned().into_iter().collect(),
            Selector::Named(field) => {
                let mut ids: Vec<AgencyId> = named
                    .iter()
                    .filter(|(f, _)| f == field)
                    .filter_map(|(_, a)| AgencyId::parse(a).ok())
                    .filter(|a| dir.agency(a).is_some())
                    .collect();
                ids.sort();
                ids.dedup();
                ids
            }
        };
        // a sender never receives its own event except through an explicit `sender` route;
        // a route that names only the sender is simply not needed, not withheld
        let is_sender_route = route.selector == Selector::Sender;
        if !is_sender_route && !all.is_empty() && all.iter().all(|a| a == sender) {
            continue;
        }
        let targets: Vec<AgencyId> = all.into_iter().filter(|a| is_sender_route || a != sender).collect();
        if targets.is_empty() {
            let why = match route.selector {
                Selector::CaseGuardian => "case has no guardian yet",
                Selector::CaseMunicipality | Selector::CasePoliceDistrict => "case has no known municipality",
                Selector::CaseParticipants => "case has no other participants yet",
                Selector::ReferralSender => "the referral answered is unknown, or the responder never received it",
                Selector::Named(_) => "the event names no agency of the directory in this field",
                _ => "no agency matches the route",
            };
            decision
                .withheld
                .push(withheld(&route.id, None, WithheldReason::NoRecipient(why), sees));
        }
        for agency in targets {
            if dir.is_disabled_agency(&agency) {
                decision.withheld.push(withheld(
                    &route.id,
                    Some(agency),
                    WithheldReason::RecipientDisabled,
                    sees,
                ));
                continue;
            }
            let Some(sector) = dir.agency(&agency).map(|a| a.sector) else {
                decision.withheld.push(withheld(
                    &route.id,
                    Some(agency),
                    WithheldReason::NoRecipient("the agency is not in the directory"),
                    sees,
                ));
                continue;
            };
            if !route.agreement.is_party(&agency, sector) {
                decision
                    .withheld
                    .push(withheld(&route.id, Some(agency), WithheldReason::NotAParty, sees));
                continue;
            }
            let mut consent_ids = Vec::new();
            if let LegalBasis::Consent(_) = route.basis {
                let covering: Vec<_> = case.consents.iter().filter(|c| c.covers(&agency, sector, mt)).collect();
                match covering.iter().find(|c| c.in_force(at)) {
                    Some(c) => consent_ids.push(c.id.to_string()),
                    None => {
                        let reason = if covering.iter().any(|c| c.withdrawn) {
                            WithheldReason::ConsentWithdrawn
                        } else {
                            WithheldReason::NoConsent
                        };
                        decision.withheld.push(withheld(&route.id, Some(agency), reason, sees));
                        continue;
                    }
                }
            }
            let r = by_agency.entry(agency.clone()).or_insert_with(|| Recipient {
                agency,
                classes: ClassSet::EMPTY,
                rule_ids: Vec::new(),
                bases: Vec::new(),
                agreements: Vec::new(),
                consent_ids: Vec::new(),
                restricted: ClassSet::EMPTY,
                alert: None,
            });
            r.classes = r.classes.union(route.classes);
            r.rule_ids.push(route.id.clone());
            r.bases.push(route.basis.describe());
            r.agreements.push(route.agreement.id.clone());
            r.consent_ids.extend(consent_ids);
            r.alert = r.alert.max(route.alert_for(flags));
        }
    }
    // the never-disclose list overrides every route
    for (agency, mut r) in by_agency {
        let mut whole = false;
        for nd in case.never_disclose.iter().filter(|nd| nd.applies_to(&agency)) {
            if nd.classes.is_empty() {
                whole = true;
            } else {
                r.restricted = r.restricted.union(r.classes.intersection(nd.classes));
                r.classes = r.classes.difference(nd.classes);
            }
        }
        if whole || r.classes.is_empty() {
            for rule in &r.rule_ids {
                decision.withheld.push(withheld(
                    rule,
                    Some(agency.clone()),
                    WithheldReason::NeverDisclose,
                    false,
                ));
            }
        } else {
            decision.recipients.push(r);
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Schema;
    use henvis_domain::{Class, Consent, NeverDisclose, Shielded};

    const RULES: &str = r#"
version = "t"
[[agreement]]
id = "a"
name = "A"
valid_from = "2026-01-01T00:00:00Z"
valid_until = "2027-01-01T00:00:00Z"
parties = { sectors = ["police", "health", "social", "ngo"] }
[[message]]
type = "child_missing"
senders = { sectors = ["ngo", "police"] }
[[message.route]]
id = "m"
to = "case_municipality"
basis = { statutory = "barnets lov § 133" }
agreement = "a"
classes = ["IDENTITY", "HEALTH"]
[[message.route]]
id = "p"
to = "case_police_district"
basis = { vital_interest = "x" }
agreement = "a"
classes = ["EXPLOITATION"]
alert = "urgent"
[[message.route]]
id = "g"
to = "case_guardian"
basis = { statutory = "værgemål" }
agreement = "a"
classes = ["SOCIAL"]
[[message.route]]
id = "p2"
to = "agency:politi-koebenhavn"
basis = { statutory = "x" }
agreement = "a"
classes = ["CRIMINAL"]
[[message.route]]
id = "c"
to = "sector:health"
basis = { consent = "care" }
agreement = "a"
classes = ["HEALTH"]
"#;

    fn setup() -> (RuleSet, Directory) {
        let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
        let dir = Directory::denmark().unwrap();
        (RuleSet::from_toml("t.toml", RULES, &schema, &dir).unwrap(), dir)
    }

    fn id(s: &str) -> AgencyId {
        AgencyId::parse(s).unwrap()
    }

    const AT: i64 = 1_780_000_000; // 2026-05-28

    fn run(rules: &RuleSet, dir: &Directory, sender: &str, sector: Sector, case: &CaseRecord, at: i64) -> Decision {
        let mt = MessageType::parse("child_missing").unwrap();
        decide(
            rules,
            dir,
            &DecisionInput {
                mt: &mt,
                sender: &id(sender),
                sender_sector: sector,
                case,
                at,
                referral_sender: None,
                flags: &[],
                named: &[],
            },
        )
    }

    fn kbh() -> CaseRecord {
        CaseRecord {
            municipality_code: Some("101".into()),
            ..CaseRecord::new()
        }
    }

    #[test]
    fn case_relations_resolve_through_the_directory_and_grants_merge() {
        let (rules, dir) = setup();
        let d = run(&rules, &dir, "ngo-redbarnet", Sector::Ngo, &kbh(), AT);
        let got: Vec<_> = d
            .recipients
            .iter()
            .map(|r| {
                (
                    r.agency.as_str(),
                    r.classes.iter().collect::<Vec<_>>(),
                    r.rule_ids.clone(),
                    r.alert,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "kommune-101",
                    vec![Class::Basic, Class::Identity, Class::Health],
                    vec!["m".to_owned()],
                    None
                ),
                (
                    "politi-koebenhavn",
                    vec![Class::Basic, Class::Exploitation, Class::Criminal],
                    vec!["p".to_owned(), "p2".to_owned()],
                    Some(Urgency::Urgent)
                ),
            ]
        );
        let reasons: Vec<_> = d
            .withheld
            .iter()
            .map(|w| (w.rule_id.as_str(), w.reason.code()))
            .collect();
        assert_eq!(reasons.iter().filter(|(r, _)| *r == "g").count(), 1);
        assert_eq!(
            reasons.iter().filter(|(r, c)| *r == "c" && *c == "no_consent").count(),
            5,
            "each region: no consent"
        );
    }

    #[test]
    fn a_sender_is_never_its_own_recipient() {
        let (rules, dir) = setup();
        let d = run(&rules, &dir, "politi-koebenhavn", Sector::Police, &kbh(), AT);
        let to: Vec<_> = d.recipients.iter().map(|r| r.agency.as_str()).collect();
        assert_eq!(to, vec!["kommune-101"]);
    }

    #[test]
    fn consent_in_force_delivers_and_withdrawal_stops_it() {
        let (rules, dir) = setup();
        let mut case = kbh();
        case.consents.push(Consent {
            id: henvis_domain::ConsentId::parse("c1").unwrap(),
            agencies: [id("region-hovedstaden")].into(),
            sectors: Default::default(),
            message_types: Default::default(),
            valid_from: AT - 10,
            valid_until: AT + 10,
            withdrawn: false,
            recorded_by_event: String::new(),
        });
        let d = run(&rules, &dir, "ngo-redbarnet", Sector::Ngo, &case, AT);
        let region = d
            .recipients
            .iter()
            .find(|r| r.agency.as_str() == "region-hovedstaden")
            .unwrap();
        assert_eq!(region.consent_ids, vec!["c1".to_owned()]);
        let late = run(&rules, &dir, "ngo-redbarnet", Sector::Ngo, &case, AT + 10);
        assert!(
            late.recipients
                .iter()
                .all(|r| r.agency.as_str() != "region-hovedstaden"),
            "expired"
        );
        case.consents[0].withdrawn = true;
        let d = run(&rules, &dir, "ngo-redbarnet", Sector::Ngo, &case, AT);
        assert!(d.recipients.iter().all(|r| r.agency.as_str() != "region-hovedstaden"));
        assert!(
            d.withheld
                .iter()
                .any(|w| w.recipient == Some(id("region-hovedstaden")) && w.reason == WithheldReason::ConsentWithdrawn)
        );
    }

    #[test]
    fn never_disclose_overrides_every_route_and_lapsed_agreements_deliver_nothing() {
        let (rules, dir) = setup();
        let mut case = kbh();
        case.never_disclose = vec![
            NeverDisclose {
                from: Shielded::Agency(id("politi-koebenhavn")),
                classes: ClassSet::EMPTY,
            },
            NeverDisclose {
                from: Shielded::AllExcept([id("ngo-redbarnet")].into()),
                classes: [Class::Health].into_iter().collect(),
            },
        ];
        let d = run(&rules, &dir, "ngo-redbarnet", Sector::Ngo, &case, AT);
        let got: Vec<_> = d
            .recipients
            .iter()
            .map(|r| (r.agency.as_str(), r.classes.iter().collect::<Vec<_>>()))
            .collect();
        assert_eq!(got, vec![("kommune-101", vec![Class::Basic, Class::Identity])]);
        assert_eq!(
            d.recipients[0].restricted.iter().collect::<Vec<_>>(),
            vec![Class::Health]
        );
        assert!(
            d.withheld
                .iter()
                .any(|w| w.reason == WithheldReason::NeverDisclose && w.recipient == Some(id("politi-koebenhavn")))
        );
        let lapsed = run(&rules, &dir, "ngo-redbarnet", Sector::Ngo, &kbh(), 1_900_000_000);
        assert!(lapsed.recipients.is_empty());
        assert!(
            lapsed
                .withheld
                .iter()
                .all(|w| w.reason == WithheldReason::AgreementLapsed)
        );
    }

    #[test]
    fn unknown_senders_and_types_reach_nobody() {
        let (rules, dir) = setup();
        let d = run(&rules, &dir, "region-hovedstaden", Sector::Health, &kbh(), AT);
        assert!(d.recipients.is_empty());
        assert_eq!(d.withheld[0].reason, WithheldReason::SenderNotPermitted);
        let other = MessageType::parse("investigation_update").unwrap();
        let d = decide(
            &rules,
            &dir,
            &DecisionInput {
                mt: &other,
                sender: &id("ngo-redbarnet"),
                sender_sector: Sector::Ngo,
                case: &kbh(),
                at: AT,
                referral_sender: None,
                flags: &[],
                named: &[],
            },
        );
        assert!(d.recipients.is_empty());
        assert_eq!(d.withheld[0].reason, WithheldReason::NoRoutes);
    }
}
