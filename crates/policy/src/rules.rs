//! The rule set: a versioned TOML file administrators write. For each message type it says
//! who may send it and its routes: recipient, legal basis and the classes granted.
//! See rules/default.toml for the shipped set and docs/RULES.md for the format.

use std::collections::{BTreeMap, BTreeSet};

use henvis_domain::{AgencyId, Class, ClassSet, Directory, MessageType, Sector};
use serde::Deserialize;
use toml::Spanned;

use crate::Schema;

/// Why a rule file was refused: names the file, the line and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {rule}: {message}")]
pub struct RuleError {
    /// The file, as given to the loader.
    pub file: String,
    /// 1-based line of the offending entry (0 when the file does not parse at all).
    pub line: usize,
    /// The rule (route id or message type) concerned, or `file`.
    pub rule: String,
    /// What is wrong and what was expected.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRow {
    version: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(rename = "message", default)]
    messages: Vec<MessageRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRow {
    #[serde(rename = "type")]
    message_type: Spanned<String>,
    senders: SendersRow,
    #[serde(rename = "route", default)]
    routes: Vec<RouteRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendersRow {
    #[serde(default)]
    sectors: Vec<String>,
    #[serde(default)]
    agencies: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteRow {
    id: Spanned<String>,
    to: String,
    basis: BasisRow,
    classes: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BasisRow {
    statutory: Option<String>,
    vital_interest: Option<String>,
    consent: Option<bool>,
}

/// Who may send a message type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderFilter {
    /// Every agency of these sectors may send it.
    pub sectors: BTreeSet<Sector>,
    /// These agencies may send it.
    pub agencies: BTreeSet<AgencyId>,
}

impl SenderFilter {
    /// Whether the agency may send.
    pub fn permits(&self, agency: &AgencyId, sector: Sector) -> bool {
        self.sectors.contains(&sector) || self.agencies.contains(agency)
    }
}

/// Who a route delivers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every agency of a sector (the sender excluded).
    Sector(Sector),
    /// One named agency.
    Agency(AgencyId),
    /// The social service of the case's municipality.
    CaseMunicipality,
    /// The police district the case's municipality belongs to.
    CasePoliceDistrict,
    /// The agency of the case's guardian.
    CaseGuardian,
    /// The sender itself (for receipts and status).
    Sender,
}

impl Selector {
    fn parse(s: &str, dir: &Directory) -> Result<Self, String> {
        let expected = "expected `case_municipality`, `case_police_district`, `case_guardian`, `sender`, `sector:<police|health|social|ngo>` or `agency:<id>`";
        match s {
            "case_municipality" => Ok(Selector::CaseMunicipality),
            "case_police_district" => Ok(Selector::CasePoliceDistrict),
            "case_guardian" => Ok(Selector::CaseGuardian),
            "sender" => Ok(Selector::Sender),
            _ => {
                if let Some(sec) = s.strip_prefix("sector:") {
                    Sector::parse(sec)
                        .map(Selector::Sector)
                        .ok_or_else(|| format!("`to`: unknown sector `{sec}`; {expected}"))
                } else if let Some(id) = s.strip_prefix("agency:") {
                    let a = AgencyId::parse(id).map_err(|e| format!("`to`: {e}"))?;
                    if dir.agency(&a).is_none() {
                        return Err(format!("`to`: agency `{id}` is not in the agency directory"));
                    }
                    Ok(Selector::Agency(a))
                } else {
                    Err(format!("`to`: unknown recipient `{s}`; {expected}"))
                }
            }
        }
    }
}

/// The legal basis a route rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegalBasis {
    /// A statute, with its citation (e.g. `serviceloven § 153`).
    Statutory(String),
    /// The child's vital interest, with the reason.
    VitalInterest(String),
}

impl LegalBasis {
    /// A short text for audit records and status: `statutory: <citation>`.
    pub fn describe(&self) -> String {
        match self {
            LegalBasis::Statutory(c) => format!("statutory: {c}"),
            LegalBasis::VitalInterest(r) => format!("vital interest: {r}"),
        }
    }
}

/// One route of a message type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Unique id within the rule set.
    pub id: String,
    /// Who receives.
    pub selector: Selector,
    /// Why it is lawful.
    pub basis: LegalBasis,
    /// The classes granted (BASIC always included).
    pub classes: ClassSet,
}

/// The rules of one message type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRules {
    /// Who may send it.
    pub senders: SenderFilter,
    /// Its routes.
    pub routes: Vec<Route>,
}

/// A validated rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    version: String,
    types: BTreeMap<MessageType, TypeRules>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count() + 1)
}

impl RuleSet {
    /// Parses and validates a rule file against the schema and the agency directory.
    /// `file` is only used to name the file in errors.
    pub fn from_toml(file: &str, text: &str, schema: &Schema, dir: &Directory) -> Result<Self, RuleError> {
        let row: FileRow = toml::from_str(text).map_err(|e| RuleError {
            file: file.to_owned(),
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            rule: "file".to_owned(),
            message: e.message().to_owned(),
        })?;
        let err = |offset: usize, rule: &str, message: String| RuleError {
            file: file.to_owned(),
            line: line_of(text, offset),
            rule: rule.to_owned(),
            message,
        };
        let version = row.version.get_ref().trim().to_owned();
        if version.is_empty() {
            return Err(err(
                row.version.span().start,
                "file",
                "`version`: expected a non-empty version string".into(),
            ));
        }
        let mut types = BTreeMap::new();
        let mut route_ids = BTreeSet::new();
        for m in row.messages {
            let at = m.message_type.span().start;
            let name = m.message_type.get_ref();
            let mt = MessageType::parse(name)
                .ok()
                .filter(|mt| schema.knows(mt))
                .ok_or_else(|| {
                    err(
                        at,
                        name,
                        format!(
                            "unknown message type `{name}`; expected one of the event kinds of henvis.events.v1.Event"
                        ),
                    )
                })?;
            let mut senders = SenderFilter::default();
            for s in &m.senders.sectors {
                senders.sectors.insert(
                    Sector::parse(s)
                        .ok_or_else(|| err(at, name, format!("`senders.sectors`: unknown sector `{s}`")))?,
                );
            }
            for a in &m.senders.agencies {
                let id = AgencyId::parse(a).map_err(|e| err(at, name, format!("`senders.agencies`: {e}")))?;
                if dir.agency(&id).is_none() {
                    return Err(err(
                        at,
                        name,
                        format!("`senders.agencies`: agency `{a}` is not in the agency directory"),
                    ));
                }
                senders.agencies.insert(id);
            }
            if senders.sectors.is_empty() && senders.agencies.is_empty() {
                return Err(err(
                    at,
                    name,
                    "`senders`: expected at least one sector or agency".into(),
                ));
            }
            let mut routes = Vec::new();
            for r in m.routes {
                let rat = r.id.span().start;
                let id = r.id.get_ref().clone();
                if id.is_empty() || !route_ids.insert(id.clone()) {
                    return Err(err(
                        rat,
                        &id,
                        "`id`: expected a non-empty route id unique in the rule set".into(),
                    ));
                }
                let selector = Selector::parse(&r.to, dir).map_err(|m| err(rat, &id, m))?;
                let basis = match (r.basis.statutory, r.basis.vital_interest, r.basis.consent) {
                    (Some(c), None, None) if !c.trim().is_empty() => LegalBasis::Statutory(c),
                    (None, Some(v), None) if !v.trim().is_empty() => LegalBasis::VitalInterest(v),
                    (None, None, Some(_)) => {
                        return Err(err(rat, &id, "`basis.consent`: consent-based routes are not supported by this version of the router; use `statutory` or `vital_interest`".into()));
                    }
                    _ => {
                        return Err(err(rat, &id, "`basis`: expected exactly one of `statutory = \"<citation>\"` or `vital_interest = \"<reason>\"`".into()));
                    }
                };
                let mut classes = ClassSet::EMPTY;
                classes.insert(Class::Basic);
                for c in &r.classes {
                    let class = Class::ALL
                        .into_iter()
                        .find(|k| k.as_str() == c)
                        .ok_or_else(|| err(rat, &id, format!("`classes`: unknown class `{c}`; expected BASIC, IDENTITY, LOCATION, HEALTH, SOCIAL, EXPLOITATION or CRIMINAL")))?;
                    classes.insert(class);
                }
                routes.push(Route {
                    id,
                    selector,
                    basis,
                    classes,
                });
            }
            if types.insert(mt, TypeRules { senders, routes }).is_some() {
                return Err(err(
                    at,
                    name,
                    format!("message type `{name}` has more than one `[[message]]` entry"),
                ));
            }
        }
        Ok(RuleSet { version, types })
    }

    /// The rule set's version, recorded with every decision.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The rules of a message type; `None` means nobody receives it.
    pub fn rules_for(&self, mt: &MessageType) -> Option<&TypeRules> {
        self.types.get(mt)
    }

    /// Every message type the set has rules for.
    pub fn message_types(&self) -> impl Iterator<Item = &MessageType> {
        self.types.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_rules_load() {
        let text = include_str!("../../../rules/default.toml");
        let r = load(text).unwrap();
        assert_eq!(r.message_types().count(), 14, "every type but referral_response");
    }

    fn load(text: &str) -> Result<RuleSet, RuleError> {
        let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
        RuleSet::from_toml("test.toml", text, &schema, &Directory::denmark().unwrap())
    }

    const GOOD: &str = r#"
version = "t1"

[[message]]
type = "child_missing"
senders = { sectors = ["ngo"] }

[[message.route]]
id = "cm-police"
to = "case_police_district"
basis = { vital_interest = "missing child" }
classes = ["LOCATION", "IDENTITY"]
"#;

    #[test]
    fn a_valid_file_loads() {
        let r = load(GOOD).unwrap();
        assert_eq!(r.version(), "t1");
        let t = r.rules_for(&MessageType::parse("child_missing").unwrap()).unwrap();
        assert_eq!(t.routes[0].selector, Selector::CasePoliceDistrict);
        assert!(t.routes[0].classes.contains(Class::Basic), "BASIC is implied");
        assert!(!t.routes[0].classes.contains(Class::Health));
    }

    #[test]
    fn errors_name_file_line_and_rule() {
        let cases = [
            (
                GOOD.replace("child_missing", "child_vanished"),
                5,
                "child_vanished",
                "unknown message type",
            ),
            (
                GOOD.replace("\"IDENTITY\"", "\"SECRET\""),
                9,
                "cm-police",
                "unknown class `SECRET`",
            ),
            (
                GOOD.replace("case_police_district", "agency:ngo-nobody"),
                9,
                "cm-police",
                "not in the agency directory",
            ),
            (
                GOOD.replace("case_police_district", "the_mayor"),
                9,
                "cm-police",
                "unknown recipient",
            ),
            (
                GOOD.replace("vital_interest = \"missing child\"", "consent = true"),
                9,
                "cm-police",
                "consent-based",
            ),
            (
                GOOD.replace("basis = { vital_interest = \"missing child\" }", "basis = {}"),
                9,
                "cm-police",
                "exactly one",
            ),
            (GOOD.replace("[\"ngo\"]", "[]"), 5, "child_missing", "at least one"),
        ];
        for (text, line, rule, msg) in cases {
            let e = load(&text).unwrap_err();
            assert_eq!(
                (e.file.as_str(), e.line, e.rule.as_str()),
                ("test.toml", line, rule),
                "{e}"
            );
            assert!(e.message.contains(msg), "{e}");
        }
        let dup = format!(
            "{GOOD}\n[[message.route]]\nid = \"cm-police\"\nto = \"sender\"\nbasis = {{ statutory = \"x\" }}\nclasses = []\n"
        );
        assert!(load(&dup).unwrap_err().message.contains("unique"));
        let e = load("version = \"x\"\nbogus = 1\n").unwrap_err();
        assert_eq!((e.line, e.rule.as_str()), (2, "file"), "{e}");
    }
}
