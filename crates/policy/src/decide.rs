//! The routing decision: for one event, which agencies receive it with which classes, and
//! which intended recipients are withheld and why. Deny by default: a message type without
//! rules reaches nobody, a sender the rules do not name reaches nobody.

use std::collections::BTreeMap;

use henvis_domain::{AgencyId, ClassSet, Directory, MessageType, Sector};

use crate::{RuleSet, Selector};

/// What the router knows about the case when it decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseFacts {
    /// Code of the municipality responsible for the case.
    pub municipality_code: Option<String>,
    /// The agency of the case's guardian, once appointed.
    pub guardian: Option<AgencyId>,
}

/// One agency that receives the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The agency.
    pub agency: AgencyId,
    /// The union of the classes its routes grant.
    pub classes: ClassSet,
    /// The routes that entitle it, in rule order.
    pub rule_ids: Vec<String>,
    /// The legal bases of those routes, as text, in the same order.
    pub bases: Vec<String>,
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
}

impl WithheldReason {
    /// A stable, data-free text for status and audit.
    pub fn describe(&self) -> &'static str {
        match self {
            WithheldReason::SenderNotPermitted => "sender not permitted to send this message type",
            WithheldReason::NoRoutes => "no route for this message type",
            WithheldReason::NoRecipient(why) => why,
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

/// Decides who receives an event of type `mt` from `sender` in a case with `case` facts.
pub fn decide(
    rules: &RuleSet,
    dir: &Directory,
    mt: &MessageType,
    sender: &AgencyId,
    sender_sector: Sector,
    case: &CaseFacts,
) -> Decision {
    let mut decision = Decision {
        rule_set_version: rules.version().to_owned(),
        recipients: Vec::new(),
        withheld: Vec::new(),
    };
    let Some(type_rules) = rules.rules_for(mt) else {
        decision.withheld.push(Withheld {
            rule_id: String::new(),
            recipient: None,
            reason: WithheldReason::NoRoutes,
        });
        return decision;
    };
    if !type_rules.senders.permits(sender, sender_sector) {
        decision.withheld.push(Withheld {
            rule_id: String::new(),
            recipient: None,
            reason: WithheldReason::SenderNotPermitted,
        });
        return decision;
    }
    let municipality = case.municipality_code.as_deref().and_then(|c| dir.municipality(c));
    let mut by_agency: BTreeMap<AgencyId, Recipient> = BTreeMap::new();
    for route in &type_rules.routes {
        let all: Vec<AgencyId> = match &route.selector {
            Selector::Sector(s) => dir.agencies_in(*s).map(|a| a.id.clone()).collect(),
            Selector::Agency(a) => vec![a.clone()],
            Selector::CaseMunicipality => municipality.map(|m| m.agency.clone()).into_iter().collect(),
            Selector::CasePoliceDistrict => municipality.map(|m| m.police_district.clone()).into_iter().collect(),
            Selector::CaseGuardian => case.guardian.clone().into_iter().collect(),
            Selector::Sender => vec![sender.clone()],
        };
        // a sender never receives its own event except through an explicit `sender` route;
        // a route that names only the sender is simply not needed, not withheld
        let sender_only = !all.is_empty() && all.iter().all(|a| a == sender);
        if sender_only && route.selector != Selector::Sender {
            continue;
        }
        let targets: Vec<AgencyId> = if route.selector == Selector::Sender {
            all
        } else {
            all.into_iter().filter(|a| a != sender).collect()
        };
        if targets.is_empty() {
            let why = match route.selector {
                Selector::CaseGuardian => "case has no guardian yet",
                Selector::CaseMunicipality | Selector::CasePoliceDistrict => "case has no known municipality",
                _ => "no agency matches the route",
            };
            decision.withheld.push(Withheld {
                rule_id: route.id.clone(),
                recipient: None,
                reason: WithheldReason::NoRecipient(why),
            });
        }
        for agency in targets {
            let r = by_agency.entry(agency.clone()).or_insert_with(|| Recipient {
                agency,
                classes: ClassSet::EMPTY,
                rule_ids: Vec::new(),
                bases: Vec::new(),
            });
            r.classes = r.classes.union(route.classes);
            r.rule_ids.push(route.id.clone());
            r.bases.push(route.basis.describe());
        }
    }
    decision.recipients = by_agency.into_values().collect();
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Schema;
    use henvis_domain::Class;

    const RULES: &str = r#"
version = "t"
[[message]]
type = "suspected_victim_reported"
senders = { sectors = ["ngo", "police"] }
[[message.route]]
id = "m"
to = "case_municipality"
basis = { statutory = "serviceloven § 153" }
classes = ["IDENTITY", "HEALTH"]
[[message.route]]
id = "p"
to = "case_police_district"
basis = { statutory = "straffeloven § 262 a" }
classes = ["EXPLOITATION"]
[[message.route]]
id = "g"
to = "case_guardian"
basis = { statutory = "værgemål" }
classes = ["SOCIAL"]
[[message.route]]
id = "p2"
to = "agency:politi-koebenhavn"
basis = { statutory = "x" }
classes = ["CRIMINAL"]
"#;

    fn setup() -> (RuleSet, Directory) {
        let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
        let dir = Directory::denmark().unwrap();
        (RuleSet::from_toml("t.toml", RULES, &schema, &dir).unwrap(), dir)
    }

    fn id(s: &str) -> AgencyId {
        AgencyId::parse(s).unwrap()
    }

    #[test]
    fn case_relations_resolve_through_the_directory_and_grants_merge() {
        let (rules, dir) = setup();
        let mt = MessageType::parse("suspected_victim_reported").unwrap();
        let case = CaseFacts {
            municipality_code: Some("101".into()),
            guardian: None,
        };
        let d = decide(&rules, &dir, &mt, &id("ngo-redbarnet"), Sector::Ngo, &case);
        let got: Vec<_> = d
            .recipients
            .iter()
            .map(|r| {
                (
                    r.agency.as_str(),
                    r.classes.iter().collect::<Vec<_>>(),
                    r.rule_ids.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "kommune-101",
                    vec![Class::Basic, Class::Identity, Class::Health],
                    vec!["m".to_owned()]
                ),
                (
                    "politi-koebenhavn",
                    vec![Class::Basic, Class::Exploitation, Class::Criminal],
                    vec!["p".to_owned(), "p2".to_owned()]
                ),
            ]
        );
        assert_eq!(
            d.withheld,
            vec![Withheld {
                rule_id: "g".into(),
                recipient: None,
                reason: WithheldReason::NoRecipient("case has no guardian yet")
            }]
        );
    }

    #[test]
    fn a_sender_is_never_its_own_recipient() {
        let (rules, dir) = setup();
        let mt = MessageType::parse("suspected_victim_reported").unwrap();
        let case = CaseFacts {
            municipality_code: Some("101".into()),
            guardian: None,
        };
        let d = decide(&rules, &dir, &mt, &id("politi-koebenhavn"), Sector::Police, &case);
        let to: Vec<_> = d.recipients.iter().map(|r| r.agency.as_str()).collect();
        assert_eq!(to, vec!["kommune-101"]);
    }

    #[test]
    fn unknown_senders_and_types_reach_nobody() {
        let (rules, dir) = setup();
        let case = CaseFacts {
            municipality_code: Some("101".into()),
            guardian: None,
        };
        let svr = MessageType::parse("suspected_victim_reported").unwrap();
        let d = decide(&rules, &dir, &svr, &id("region-hovedstaden"), Sector::Health, &case);
        assert!(d.recipients.is_empty());
        assert_eq!(d.withheld[0].reason, WithheldReason::SenderNotPermitted);
        let other = MessageType::parse("child_missing").unwrap();
        let d = decide(&rules, &dir, &other, &id("ngo-redbarnet"), Sector::Ngo, &case);
        assert!(d.recipients.is_empty());
        assert_eq!(d.withheld[0].reason, WithheldReason::NoRoutes);
    }
}
