//! Proof of the policy engine: property tests against a small, obviously correct reference
//! model over generated rule sets, cases and consent histories; and an exhaustive matrix
//! over the shipped rules with canary-filled events through redaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../../tests/e2e/canary.rs"]
mod canary;

use std::collections::{BTreeMap, BTreeSet};

use henvis_domain::{
    AgencyId, CaseRecord, Class, ClassSet, Consent, Directory, MessageType, NeverDisclose, Sector, Shielded,
};
use henvis_policy::{DecisionInput, RuleSet, Schema, decide, redact};
use proptest::prelude::*;
use prost::Message;
use prost_reflect::Value;

const POOL: &[&str] = &[
    "politi-koebenhavn",
    "politi-oestjylland",
    "kommune-101",
    "kommune-147",
    "kommune-751",
    "region-hovedstaden",
    "ngo-redbarnet",
    "ngo-hopenow",
];
const MUNICIPALITIES: &[&str] = &["101", "147", "751"];
const AT: i64 = 1_790_000_000;

fn id(s: &str) -> AgencyId {
    AgencyId::parse(s).unwrap()
}

// ---- the generated world ---------------------------------------------------------------

#[derive(Debug, Clone)]
enum Sel {
    Municipality,
    District,
    Guardian,
    Participants,
    Sector(Sector),
    Agency(usize),
    Sender,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Basis {
    Statutory,
    Vital,
    Consent,
}

#[derive(Debug, Clone)]
struct RouteM {
    sel: Sel,
    basis: Basis,
    lapsed: bool,
    classes: ClassSet,
    applies: u8, // 0 any, 1 child, 2 adult
}

/// A generated consent: agencies, sectors, all types?, start offset, length, withdrawn.
type ConsentM = (BTreeSet<usize>, BTreeSet<Sector>, bool, i64, i64, bool);

#[derive(Debug, Clone)]
struct World {
    senders: BTreeSet<Sector>,
    routes: Vec<RouteM>,
    sender: usize,
    municipality: Option<usize>,
    guardian: Option<usize>,
    child: bool,
    participants: BTreeSet<usize>,
    never: Vec<(Option<usize>, BTreeSet<usize>, ClassSet)>,
    consents: Vec<ConsentM>,
}

fn class_set() -> impl Strategy<Value = ClassSet> {
    proptest::collection::vec(0..7usize, 0..4).prop_map(|v| v.into_iter().map(|i| Class::ALL[i]).collect())
}

fn sector() -> impl Strategy<Value = Sector> {
    (0..4usize).prop_map(|i| Sector::ALL[i])
}

fn sel() -> impl Strategy<Value = Sel> {
    prop_oneof![
        Just(Sel::Municipality),
        Just(Sel::District),
        Just(Sel::Guardian),
        Just(Sel::Participants),
        sector().prop_map(Sel::Sector),
        (0..POOL.len()).prop_map(Sel::Agency),
        Just(Sel::Sender),
    ]
}

fn route() -> impl Strategy<Value = RouteM> {
    (
        sel(),
        prop_oneof![Just(Basis::Statutory), Just(Basis::Vital), Just(Basis::Consent)],
        any::<bool>(),
        class_set(),
        0..3u8,
    )
        .prop_map(|(sel, basis, lapsed, classes, applies)| {
            // the validator refuses consent routes to the sender (a contradiction)
            let basis = if matches!(sel, Sel::Sender) && basis == Basis::Consent {
                Basis::Statutory
            } else {
                basis
            };
            RouteM {
                sel,
                basis,
                lapsed,
                classes,
                applies,
            }
        })
}

fn world() -> impl Strategy<Value = World> {
    let idx = || 0..POOL.len();
    (
        proptest::collection::btree_set(sector(), 1..4),
        proptest::collection::vec(route(), 0..6),
        idx(),
        proptest::option::of(0..MUNICIPALITIES.len()),
        proptest::option::of(idx()),
        any::<bool>(),
        proptest::collection::btree_set(idx(), 0..4),
        proptest::collection::vec(
            (
                proptest::option::of(idx()),
                proptest::collection::btree_set(idx(), 0..3),
                class_set(),
            ),
            0..3,
        ),
        proptest::collection::vec(
            (
                proptest::collection::btree_set(idx(), 0..3),
                proptest::collection::btree_set(sector(), 0..2),
                any::<bool>(),
                -100..100i64,
                -100..100i64,
                any::<bool>(),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(senders, routes, sender, municipality, guardian, child, participants, never, consents)| World {
                senders,
                routes,
                sender,
                municipality,
                guardian,
                child,
                participants,
                never,
                consents,
            },
        )
}

// ---- the world as a rule file and a case, for the engine -------------------------------

fn rule_file(w: &World) -> String {
    let mut s = String::from(
        "version = \"prop\"\n[[agreement]]\nid = \"valid\"\nname = \"v\"\nvalid_from = \"2000-01-01T00:00:00Z\"\nvalid_until = \"2100-01-01T00:00:00Z\"\nparties = { sectors = [\"police\", \"health\", \"social\", \"ngo\"] }\n[[agreement]]\nid = \"lapsed\"\nname = \"l\"\nvalid_from = \"2000-01-01T00:00:00Z\"\nvalid_until = \"2001-01-01T00:00:00Z\"\nparties = { sectors = [\"police\", \"health\", \"social\", \"ngo\"] }\n[[message]]\ntype = \"child_missing\"\n",
    );
    let sectors: Vec<String> = w.senders.iter().map(|s| format!("\"{s}\"")).collect();
    s += &format!("senders = {{ sectors = [{}] }}\n", sectors.join(", "));
    for (i, r) in w.routes.iter().enumerate() {
        let to = match &r.sel {
            Sel::Municipality => "case_municipality".to_owned(),
            Sel::District => "case_police_district".to_owned(),
            Sel::Guardian => "case_guardian".to_owned(),
            Sel::Participants => "case_participants".to_owned(),
            Sel::Sector(x) => format!("sector:{x}"),
            Sel::Agency(a) => format!("agency:{}", POOL[*a]),
            Sel::Sender => "sender".to_owned(),
        };
        let basis = match r.basis {
            Basis::Statutory => "statutory = \"s\"",
            Basis::Vital => "vital_interest = \"v\"",
            Basis::Consent => "consent = \"c\"",
        };
        let classes: Vec<String> = r.classes.iter().map(|c| format!("\"{c}\"")).collect();
        let applies = ["any", "child", "adult"][r.applies as usize];
        s += &format!(
            "[[message.route]]\nid = \"r{i}\"\nto = \"{to}\"\nbasis = {{ {basis} }}\nagreement = \"{}\"\nclasses = [{}]\napplies_to = \"{applies}\"\n",
            if r.lapsed { "lapsed" } else { "valid" },
            classes.join(", ")
        );
    }
    s
}

fn case(w: &World) -> CaseRecord {
    let mut c = CaseRecord::new();
    c.municipality_code = w.municipality.map(|m| MUNICIPALITIES[m].to_owned());
    c.guardian = w.guardian.map(|g| id(POOL[g]));
    c.child = w.child;
    c.participants = w.participants.iter().map(|p| id(POOL[*p])).collect();
    c.never_disclose = w
        .never
        .iter()
        .map(|(agency, except, classes)| NeverDisclose {
            from: match agency {
                Some(a) => Shielded::Agency(id(POOL[*a])),
                None => Shielded::AllExcept(except.iter().map(|e| id(POOL[*e])).collect()),
            },
            classes: *classes,
        })
        .collect();
    c.consents = w
        .consents
        .iter()
        .enumerate()
        .map(|(i, (agencies, sectors, all_types, from, len, withdrawn))| Consent {
            id: henvis_domain::ConsentId::parse(&format!("c{i}")).unwrap(),
            agencies: agencies.iter().map(|a| id(POOL[*a])).collect(),
            sectors: sectors.clone(),
            message_types: if *all_types {
                BTreeSet::new()
            } else {
                [MessageType::parse("child_missing").unwrap()].into()
            },
            valid_from: AT + from,
            valid_until: AT + from + len,
            withdrawn: *withdrawn,
            recorded_by_event: String::new(),
        })
        .collect();
    c
}

// ---- the reference model: the spec, written plainly --------------------------------------

fn reference(w: &World, dir: &Directory) -> BTreeMap<AgencyId, ClassSet> {
    let sender = id(POOL[w.sender]);
    let sender_sector = dir.agency(&sender).unwrap().sector;
    let mut grants: BTreeMap<AgencyId, ClassSet> = BTreeMap::new();
    if !w.senders.contains(&sender_sector) {
        return grants;
    }
    let c = case(w);
    let municipality = c.municipality_code.as_deref().and_then(|m| dir.municipality(m));
    for r in &w.routes {
        let applies = match r.applies {
            0 => true,
            1 => c.child,
            _ => !c.child,
        };
        if !applies || r.lapsed {
            continue;
        }
        let mut targets: BTreeSet<AgencyId> = match &r.sel {
            Sel::Municipality => municipality.map(|m| m.agency.clone()).into_iter().collect(),
            Sel::District => municipality.map(|m| m.police_district.clone()).into_iter().collect(),
            Sel::Guardian => c.guardian.clone().into_iter().collect(),
            Sel::Participants => c.participants.clone(),
            Sel::Sector(s) => dir.agencies_in(*s).map(|a| a.id.clone()).collect(),
            Sel::Agency(a) => [id(POOL[*a])].into(),
            Sel::Sender => [sender.clone()].into(),
        };
        if !matches!(r.sel, Sel::Sender) {
            targets.remove(&sender);
        }
        for t in targets {
            if r.basis == Basis::Consent {
                let t_sector = dir.agency(&t).unwrap().sector;
                let mt = MessageType::parse("child_missing").unwrap();
                let ok = c.consents.iter().any(|k| {
                    !k.withdrawn
                        && k.valid_from <= AT
                        && AT < k.valid_until
                        && (k.agencies.contains(&t) || k.sectors.contains(&t_sector))
                        && (k.message_types.is_empty() || k.message_types.contains(&mt))
                });
                if !ok {
                    continue;
                }
            }
            let mut g = r.classes;
            g.insert(Class::Basic);
            let e = grants.entry(t).or_default();
            *e = e.union(g);
        }
    }
    grants
        .into_iter()
        .filter_map(|(t, mut g)| {
            for nd in c.never_disclose.iter().filter(|n| n.applies_to(&t)) {
                if nd.classes.is_empty() {
                    return None;
                }
                g = g.difference(nd.classes);
            }
            (!g.is_empty()).then_some((t, g))
        })
        .collect()
}

fn schema() -> Schema {
    Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_engine_agrees_with_the_reference_model_and_never_leaks(w in world()) {
        let schema = schema();
        let dir = Directory::denmark().unwrap();
        let rules = RuleSet::from_toml("prop.toml", &rule_file(&w), &schema, &dir).unwrap();
        let mt = MessageType::parse("child_missing").unwrap();
        let sender = id(POOL[w.sender]);
        let c = case(&w);
        let input = DecisionInput { mt: &mt, sender: &sender, sender_sector: dir.agency(&sender).unwrap().sector, case: &c, at: AT, referral_sender: None, flags: &[], named: &[] };
        let d = decide(&rules, &dir, &input);
        let got: BTreeMap<AgencyId, ClassSet> = d.recipients.iter().map(|r| (r.agency.clone(), r.classes)).collect();
        prop_assert_eq!(&got, &reference(&w, &dir));
        // redaction: no recipient ever receives a field whose class it was not granted
        let (event, canaries) = canary::canary_event(&schema, "child_missing", &[]);
        let encoded = event.encode_to_vec();
        for r in &d.recipients {
            let bytes = redact(&schema, &encoded, r.classes).unwrap().event;
            for (c, class) in canary::found(&bytes, &canaries) {
                prop_assert!(r.classes.contains(class), "{} got {} of class {}", r.agency, c, class);
            }
        }
    }
}

// ---- the exhaustive matrix over the shipped rules ----------------------------------------

#[test]
fn exhaustive_matrix_over_the_shipped_rules_has_no_leak_and_no_over_redaction() {
    let schema = schema();
    let dir = Directory::denmark().unwrap();
    let rules = RuleSet::from_toml(
        "rules/default.toml",
        include_str!("../../../rules/default.toml"),
        &schema,
        &dir,
    )
    .unwrap();
    let senders = [
        "politi-koebenhavn",
        "region-hovedstaden",
        "kommune-101",
        "ngo-hopenow",
        "ngo-redbarnet",
    ];
    let relations: Vec<(&str, CaseRecord)> = {
        let mut base = CaseRecord::new();
        base.municipality_code = Some("101".into());
        let mut with_guardian = base.clone();
        with_guardian.guardian = Some(id("ngo-redbarnet"));
        let mut participants = with_guardian.clone();
        participants.participants = ["region-hovedstaden", "politi-koebenhavn", "ngo-hopenow"]
            .iter()
            .map(|a| id(a))
            .collect();
        let mut adult = participants.clone();
        adult.child = false;
        let mut shielded = participants.clone();
        shielded.never_disclose = vec![
            NeverDisclose {
                from: Shielded::Agency(id("politi-koebenhavn")),
                classes: ClassSet::EMPTY,
            },
            NeverDisclose {
                from: Shielded::AllExcept([id("ngo-redbarnet")].into()),
                classes: [Class::Location].into_iter().collect(),
            },
        ];
        vec![
            ("no guardian", base),
            ("guardian", with_guardian),
            ("participants", participants),
            ("adult", adult),
            ("never-disclose", shielded),
        ]
    };
    let consent = |withdrawn: bool| Consent {
        id: henvis_domain::ConsentId::parse("c").unwrap(),
        agencies: BTreeSet::new(),
        sectors: Sector::ALL.into_iter().collect(),
        message_types: BTreeSet::new(),
        valid_from: 0,
        valid_until: i64::MAX,
        withdrawn,
        recorded_by_event: String::new(),
    };
    let consent_states: [(&str, Vec<Consent>); 3] = [
        ("none", vec![]),
        ("in force", vec![consent(false)]),
        ("withdrawn", vec![consent(true)]),
    ];
    let at = 1_796_000_000; // inside the default agreements
    let (mut combos, mut deliveries, mut unentitled, mut withheld_canaries, mut over_redacted) = (0, 0, 0, 0, 0);
    let types: Vec<MessageType> = schema.message_types().cloned().collect();
    for mt in &types {
        let (event, canaries) = canary::canary_event(
            &schema,
            mt.as_str(),
            &[("municipality_code", Value::String("101".into()))],
        );
        let encoded = event.encode_to_vec();
        for sender in senders {
            let sender = id(sender);
            let sector = dir.agency(&sender).unwrap().sector;
            for (_, relation) in &relations {
                for (_, consents) in &consent_states {
                    combos += 1;
                    let mut c = relation.clone();
                    c.consents = consents.clone();
                    let d = decide(
                        &rules,
                        &dir,
                        &DecisionInput {
                            mt,
                            sender: &sender,
                            sender_sector: sector,
                            case: &c,
                            at,
                            referral_sender: None,
                            flags: &[],
                            named: &[],
                        },
                    );
                    // entitlement, independently: a recipient must be named by a route of
                    // this type whose grant covers every class it got
                    for r in &d.recipients {
                        deliveries += 1;
                        let type_rules = rules.rules_for(mt).unwrap();
                        let entitled = type_rules.senders.permits(&sender, sector)
                            && r.rule_ids
                                .iter()
                                .all(|rid| type_rules.routes.iter().any(|x| &x.id == rid))
                            && r.classes.iter().all(|cl| {
                                r.rule_ids
                                    .iter()
                                    .any(|rid| type_rules.routes.iter().any(|x| &x.id == rid && x.classes.contains(cl)))
                            })
                            && !c.never_disclose.iter().any(|n| {
                                n.applies_to(&r.agency)
                                    && (n.classes.is_empty() || !n.classes.intersection(r.classes).is_empty())
                            });
                        unentitled += usize::from(!entitled || r.agency == sender);
                        let bytes = redact(&schema, &encoded, r.classes).unwrap().event;
                        let seen = canary::found(&bytes, &canaries);
                        withheld_canaries += seen.iter().filter(|(_, cl)| !r.classes.contains(*cl)).count();
                        over_redacted += canaries
                            .iter()
                            .filter(|(cn, cl)| r.classes.contains(*cl) && !seen.iter().any(|(s, _)| s == cn))
                            .count();
                    }
                }
            }
        }
    }
    println!(
        "matrix: {} message types x {} senders x {} case relations x {} consent states = {combos} decisions, {deliveries} deliveries; unentitled {unentitled}, withheld-class canaries delivered {withheld_canaries}, entitled fields missing {over_redacted}",
        types.len(),
        senders.len(),
        relations.len(),
        consent_states.len()
    );
    assert!(deliveries > 500, "the matrix exercises real deliveries");
    assert_eq!((unentitled, withheld_canaries, over_redacted), (0, 0, 0));
}
