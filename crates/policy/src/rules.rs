//! The rule set: a versioned TOML file administrators write. For each message type it says
//! who may send it and its routes: recipient, legal basis, the cooperation agreement it
//! rests on, the classes granted, and whether it raises a police alert. The file carries its
//! own test cases; loading runs them and refuses a set whose tests fail.
//! See rules/default.toml for the shipped set and docs/RULES.md for the format.

use std::collections::{BTreeMap, BTreeSet};

use henvis_domain::{AgencyId, Class, ClassSet, Directory, MessageType, Sector};
use serde::Deserialize;
use toml::Spanned;

use crate::{Schema, rule_tests::RuleTest};

/// The message type that opens a case; no consent can exist before it.
pub const OPENING_TYPE: &str = "suspected_victim_reported";

/// Why a rule file was refused: names the file, the line and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {rule}: {message}")]
pub struct RuleError {
    /// The file, as given to the loader.
    pub file: String,
    /// 1-based line of the offending entry (0 when unknown).
    pub line: usize,
    /// The rule (route id, message type, agreement or test) concerned, or `file`.
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
    #[serde(default)]
    tests_at: Option<Spanned<String>>,
    #[serde(rename = "agreement", default)]
    agreements: Vec<AgreementRow>,
    #[serde(rename = "message", default)]
    messages: Vec<MessageRow>,
    #[serde(rename = "test", default)]
    tests: Vec<Spanned<crate::rule_tests::TestRow>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgreementRow {
    id: Spanned<String>,
    #[allow(dead_code)]
    name: String,
    valid_from: String,
    valid_until: String,
    parties: PartiesRow,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartiesRow {
    #[serde(default)]
    sectors: Vec<String>,
    #[serde(default)]
    agencies: Vec<String>,
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
    agreement: String,
    classes: Vec<String>,
    #[serde(default)]
    applies_to: Option<String>,
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    urgent_when: Option<String>,
    #[serde(default)]
    sender_sees_reason: bool,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BasisRow {
    statutory: Option<String>,
    vital_interest: Option<String>,
    consent: Option<String>,
}

/// Parses an RFC 3339 time into unix seconds.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    s.parse::<prost_types::Timestamp>().ok().map(|t| t.seconds)
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
    /// Every agency of a sector.
    Sector(Sector),
    /// One named agency.
    Agency(AgencyId),
    /// The social service of the case's municipality.
    CaseMunicipality,
    /// The police district the case's municipality belongs to.
    CasePoliceDistrict,
    /// The agency of the case's guardian.
    CaseGuardian,
    /// Every agency already taking part in the case.
    CaseParticipants,
    /// The sender itself (for receipts and status).
    Sender,
    /// For `referral_response`: the sender of the referral answered.
    ReferralSender,
    /// The agencies the event itself names in one agency-id field (a path within the
    /// message type's message, e.g. `facility_agency_id`, `measures.responsible_agency_id`).
    Named(String),
}

impl Selector {
    fn parse(s: &str, dir: &Directory, named_fields: &[String]) -> Result<Self, String> {
        let expected = "expected `case_municipality`, `case_police_district`, `case_guardian`, `case_participants`, `sender`, `referral_sender`, `sector:<police|health|social|ngo>`, `agency:<id>` or `named:<agency-id field of the message>`";
        match s {
            "case_municipality" => Ok(Selector::CaseMunicipality),
            "case_police_district" => Ok(Selector::CasePoliceDistrict),
            "case_guardian" => Ok(Selector::CaseGuardian),
            "case_participants" => Ok(Selector::CaseParticipants),
            "sender" => Ok(Selector::Sender),
            "referral_sender" => Ok(Selector::ReferralSender),
            _ => {
                if let Some(sec) = s.strip_prefix("sector:") {
                    Sector::parse(sec)
                        .map(Selector::Sector)
                        .ok_or_else(|| format!("`to`: unknown sector `{sec}`; {expected}"))
                } else if let Some(field) = s.strip_prefix("named:") {
                    if named_fields.iter().any(|f| f == field) {
                        Ok(Selector::Named(field.to_owned()))
                    } else if named_fields.is_empty() {
                        Err(format!(
                            "`to`: `{field}`: this message type names no agency in any field"
                        ))
                    } else {
                        Err(format!(
                            "`to`: `{field}` is not an agency-id field of this message type; expected one of {}",
                            named_fields
                                .iter()
                                .map(|f| format!("`{f}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    }
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

    /// Whether every agency this selector can name is a police agency.
    fn only_police(&self, dir: &Directory) -> bool {
        match self {
            Selector::CasePoliceDistrict | Selector::Sector(Sector::Police) => true,
            Selector::Agency(a) => dir.agency(a).is_some_and(|x| x.sector == Sector::Police),
            _ => false,
        }
    }
}

/// The legal basis a route rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegalBasis {
    /// A statute, with its citation (e.g. `barnets lov § 133`).
    Statutory(String),
    /// The child's vital interest, with the reason.
    VitalInterest(String),
    /// The guardian's consent, for the stated purpose: delivers only under consent in
    /// force that covers the recipient and the message type.
    Consent(String),
}

impl LegalBasis {
    /// A short text for audit records: `statutory: <citation>`.
    pub fn describe(&self) -> String {
        match self {
            LegalBasis::Statutory(c) => format!("statutory: {c}"),
            LegalBasis::VitalInterest(r) => format!("vital interest: {r}"),
            LegalBasis::Consent(p) => format!("consent: {p}"),
        }
    }
}

/// A cooperation agreement a route rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// Its id.
    pub id: String,
    /// Start of validity, unix seconds.
    pub valid_from: i64,
    /// End of validity (exclusive), unix seconds.
    pub valid_until: i64,
    /// Sectors whose every agency signed it.
    pub party_sectors: BTreeSet<Sector>,
    /// Single agencies that signed it.
    pub party_agencies: BTreeSet<AgencyId>,
}

impl Agreement {
    /// Whether it is in force at `at`.
    pub fn in_force(&self, at: i64) -> bool {
        self.valid_from <= at && at < self.valid_until
    }

    /// Whether `agency` (of `sector`) signed it.
    pub fn is_party(&self, agency: &AgencyId, sector: Sector) -> bool {
        self.party_sectors.contains(&sector) || self.party_agencies.contains(agency)
    }

    /// Whether any agency of `sector` can be a party.
    fn reaches_sector(&self, sector: Sector, dir: &Directory) -> bool {
        self.party_sectors.contains(&sector)
            || self
                .party_agencies
                .iter()
                .any(|a| dir.agency(a).is_some_and(|x| x.sector == sector))
    }

    /// Whether any recipient `selector` can name can be a party (routes to agencies the
    /// case or the event decide at the time are checked when they deliver).
    fn can_reach(&self, selector: &Selector, dir: &Directory) -> bool {
        match selector {
            Selector::Sector(s) => self.reaches_sector(*s, dir),
            Selector::Agency(a) => dir.agency(a).is_some_and(|x| self.is_party(a, x.sector)),
            Selector::CaseMunicipality => self.reaches_sector(Sector::Social, dir),
            Selector::CasePoliceDistrict => self.reaches_sector(Sector::Police, dir),
            Selector::CaseGuardian => self.reaches_sector(Sector::Social, dir) || self.reaches_sector(Sector::Ngo, dir),
            Selector::CaseParticipants | Selector::Sender | Selector::ReferralSender | Selector::Named(_) => true,
        }
    }
}

/// Which cases a route applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppliesTo {
    /// Every case.
    Any,
    /// Cases presumed or assessed to concern a child.
    Child,
    /// Cases an age assessment concluded concern an adult.
    Adult,
}

/// How urgent a police alert is (kept in the domain's alert records).
pub use henvis_domain::Urgency;

impl Route {
    /// The alert this route raises for an event whose set BASIC flags are `flags`.
    pub fn alert_for(&self, flags: &[String]) -> Option<Urgency> {
        match (&self.alert, &self.urgent_when) {
            (Some(_), Some(f)) if flags.contains(f) => Some(Urgency::Urgent),
            (a, _) => *a,
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
    /// The agreement it rests on.
    pub agreement: Agreement,
    /// The classes granted (BASIC always included).
    pub classes: ClassSet,
    /// Which cases it applies to.
    pub applies_to: AppliesTo,
    /// The police alert it raises, if any.
    pub alert: Option<Urgency>,
    /// A BASIC boolean field of the event that, when true, makes the alert urgent (e.g.
    /// `immediate_danger`).
    pub urgent_when: Option<String>,
    /// Whether the sender may see why this route was withheld.
    pub sender_sees_reason: bool,
}

/// The rules of one message type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRules {
    /// Who may send it.
    pub senders: SenderFilter,
    /// Its routes.
    pub routes: Vec<Route>,
}

/// A validated rule set whose own tests pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    version: String,
    types: BTreeMap<MessageType, TypeRules>,
    tests: usize,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count() + 1)
}

/// Builds errors that point into one file.
pub(crate) struct Errors<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Errors<'_> {
    pub(crate) fn at(&self, offset: usize, rule: &str, message: impl Into<String>) -> RuleError {
        RuleError {
            file: self.file.to_owned(),
            line: line_of(self.text, offset),
            rule: rule.to_owned(),
            message: message.into(),
        }
    }
}

impl RuleSet {
    /// Parses and validates a rule file against the schema and the agency directory, then
    /// runs its test cases. `file` is only used to name the file in errors.
    pub fn from_toml(file: &str, text: &str, schema: &Schema, dir: &Directory) -> Result<Self, RuleError> {
        let errs = Errors { file, text };
        let row: FileRow = toml::from_str(text)
            .map_err(|e| errs.at(e.span().map_or(usize::MAX, |s| s.start), "file", e.message().to_owned()))
            .map_err(|mut e| {
                if e.line == 0 {
                    e.line = 1;
                }
                e
            })?;
        let version = row.version.get_ref().trim().to_owned();
        if version.is_empty() {
            return Err(errs.at(
                row.version.span().start,
                "file",
                "`version`: expected a non-empty version string",
            ));
        }
        let mut agreements = BTreeMap::new();
        for a in &row.agreements {
            let at = a.id.span().start;
            let id = a.id.get_ref();
            let from = parse_time(&a.valid_from).ok_or_else(|| {
                errs.at(
                    at,
                    id,
                    "`valid_from`: expected an RFC 3339 time such as `2026-01-01T00:00:00Z`",
                )
            })?;
            let until = parse_time(&a.valid_until).ok_or_else(|| {
                errs.at(
                    at,
                    id,
                    "`valid_until`: expected an RFC 3339 time such as `2027-01-01T00:00:00Z`",
                )
            })?;
            if until <= from {
                return Err(errs.at(at, id, "`valid_until`: expected a time after `valid_from`"));
            }
            let mut party_sectors = BTreeSet::new();
            for s in &a.parties.sectors {
                party_sectors.insert(Sector::parse(s).ok_or_else(|| {
                    errs.at(
                        at,
                        id,
                        format!("`parties.sectors`: unknown sector `{s}`; expected police, health, social or ngo"),
                    )
                })?);
            }
            let mut party_agencies = BTreeSet::new();
            for p in &a.parties.agencies {
                let agency = AgencyId::parse(p)
                    .ok()
                    .filter(|x| dir.agency(x).is_some())
                    .ok_or_else(|| {
                        errs.at(
                            at,
                            id,
                            format!("`parties.agencies`: `{p}` is not in the agency directory"),
                        )
                    })?;
                party_agencies.insert(agency);
            }
            if party_sectors.is_empty() && party_agencies.is_empty() {
                return Err(errs.at(
                    at,
                    id,
                    "`parties`: expected the sectors or agencies that signed the agreement, e.g. `parties = { sectors = [\"police\", \"social\"] }`",
                ));
            }
            if agreements
                .insert(
                    id.clone(),
                    Agreement {
                        id: id.clone(),
                        valid_from: from,
                        valid_until: until,
                        party_sectors,
                        party_agencies,
                    },
                )
                .is_some()
            {
                return Err(errs.at(at, id, "agreement id defined more than once"));
            }
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
                    errs.at(
                        at,
                        name,
                        format!(
                            "unknown message type `{name}`; expected one of the event kinds of henvis.events.v1.Event"
                        ),
                    )
                })?;
            let mut senders = SenderFilter::default();
            for s in &m.senders.sectors {
                let sector = Sector::parse(s)
                    .ok_or_else(|| errs.at(at, name, format!("`senders.sectors`: unknown sector `{s}`")))?;
                if !henvis_domain::originates(sector).contains(&name.as_str()) {
                    return Err(errs.at(at, name, format!("`senders.sectors`: the {sector} service never accepts `{name}` from its agencies; remove `{sector}`")));
                }
                senders.sectors.insert(sector);
            }
            for a in &m.senders.agencies {
                let id = AgencyId::parse(a).map_err(|e| errs.at(at, name, format!("`senders.agencies`: {e}")))?;
                let Some(agency) = dir.agency(&id) else {
                    return Err(errs.at(
                        at,
                        name,
                        format!("`senders.agencies`: agency `{a}` is not in the agency directory"),
                    ));
                };
                if !henvis_domain::originates(agency.sector).contains(&name.as_str()) {
                    return Err(errs.at(
                        at,
                        name,
                        format!(
                            "`senders.agencies`: `{a}` is a {} agency, whose service never accepts `{name}`",
                            agency.sector
                        ),
                    ));
                }
                senders.agencies.insert(id);
            }
            if senders.sectors.is_empty() && senders.agencies.is_empty() {
                return Err(errs.at(at, name, "`senders`: expected at least one sector or agency"));
            }
            let mut routes = Vec::new();
            for r in m.routes {
                let rat = r.id.span().start;
                let id = r.id.get_ref().clone();
                if id.is_empty() || !route_ids.insert(id.clone()) {
                    return Err(errs.at(rat, &id, "`id`: expected a non-empty route id unique in the rule set"));
                }
                let selector =
                    Selector::parse(&r.to, dir, &schema.agency_fields(&mt)).map_err(|m| errs.at(rat, &id, m))?;
                if selector == Selector::ReferralSender && name != "referral_response" {
                    return Err(errs.at(rat, &id, "`to`: `referral_sender` names the sender of the referral a `referral_response` answers; other message types have none"));
                }
                let basis = match (r.basis.statutory, r.basis.vital_interest, r.basis.consent) {
                    (Some(c), None, None) if !c.trim().is_empty() => LegalBasis::Statutory(c),
                    (None, Some(v), None) if !v.trim().is_empty() => LegalBasis::VitalInterest(v),
                    (None, None, Some(p)) if !p.trim().is_empty() => LegalBasis::Consent(p),
                    _ => {
                        return Err(errs.at(rat, &id, "`basis`: expected exactly one of `statutory = \"<citation>\"`, `vital_interest = \"<reason>\"` or `consent = \"<purpose>\"`"));
                    }
                };
                if matches!(basis, LegalBasis::Consent(_)) && name == OPENING_TYPE {
                    return Err(errs.at(rat, &id, format!("`basis.consent`: `{OPENING_TYPE}` opens the case, so no consent can exist for it yet; use a statutory or vital-interest basis")));
                }
                if matches!(basis, LegalBasis::Consent(_)) && selector == Selector::Sender {
                    return Err(errs.at(
                        rat,
                        &id,
                        "`basis.consent`: a route to the sender needs no consent; use a statutory basis",
                    ));
                }
                let agreement = agreements.get(&r.agreement).cloned().ok_or_else(|| {
                    errs.at(
                        rat,
                        &id,
                        format!(
                            "`agreement`: unknown agreement `{}`; define it in an `[[agreement]]` table",
                            r.agreement
                        ),
                    )
                })?;
                if !agreement.can_reach(&selector, dir) {
                    return Err(errs.at(
                        rat,
                        &id,
                        format!(
                            "`agreement`: no recipient of `to = \"{}\"` can ever be a party to `{}`; route it under an agreement they signed",
                            r.to, agreement.id
                        ),
                    ));
                }
                let mut classes = ClassSet::EMPTY;
                classes.insert(Class::Basic);
                for c in &r.classes {
                    let class = Class::ALL
                        .into_iter()
                        .find(|k| k.as_str() == c)
                        .ok_or_else(|| errs.at(rat, &id, format!("`classes`: unknown class `{c}`; expected BASIC, IDENTITY, LOCATION, HEALTH, SOCIAL, EXPLOITATION or CRIMINAL")))?;
                    classes.insert(class);
                }
                let applies_to = match r.applies_to.as_deref() {
                    None | Some("any") => AppliesTo::Any,
                    Some("child") => AppliesTo::Child,
                    Some("adult") => AppliesTo::Adult,
                    Some(o) => {
                        return Err(errs.at(
                            rat,
                            &id,
                            format!("`applies_to`: unknown `{o}`; expected `any`, `child` or `adult`"),
                        ));
                    }
                };
                let alert = match r.alert.as_deref() {
                    None => None,
                    Some("normal") => Some(Urgency::Normal),
                    Some("urgent") => Some(Urgency::Urgent),
                    Some(o) => {
                        return Err(errs.at(
                            rat,
                            &id,
                            format!("`alert`: unknown urgency `{o}`; expected `normal` or `urgent`"),
                        ));
                    }
                };
                if alert.is_some() && !selector.only_police(dir) {
                    return Err(errs.at(rat, &id, "`alert`: alerts go to police contact persons; the route's recipient must be `case_police_district`, `sector:police` or a police agency"));
                }
                if let Some(flag) = &r.urgent_when {
                    if alert.is_none() {
                        return Err(errs.at(
                            rat,
                            &id,
                            "`urgent_when`: only a route with an `alert` can make it urgent",
                        ));
                    }
                    if !schema.is_basic_flag(&mt, flag) {
                        return Err(errs.at(
                            rat,
                            &id,
                            format!("`urgent_when`: `{flag}` is not a BASIC boolean field of `{name}`; name one the router may read (e.g. `immediate_danger`)"),
                        ));
                    }
                }
                routes.push(Route {
                    id,
                    selector,
                    basis,
                    agreement,
                    classes,
                    applies_to,
                    alert,
                    urgent_when: r.urgent_when.clone(),
                    sender_sees_reason: r.sender_sees_reason,
                });
            }
            if types.insert(mt, TypeRules { senders, routes }).is_some() {
                return Err(errs.at(
                    at,
                    name,
                    format!("message type `{name}` has more than one `[[message]]` entry"),
                ));
            }
        }
        let set = RuleSet {
            version,
            types,
            tests: row.tests.len(),
        };
        let default_at = match &row.tests_at {
            Some(t) => Some(
                parse_time(t.get_ref())
                    .ok_or_else(|| errs.at(t.span().start, "file", "`tests_at`: expected an RFC 3339 time"))?,
            ),
            None => None,
        };
        for t in row.tests {
            let offset = t.span().start;
            let test = RuleTest::from_row(t.into_inner(), default_at, schema, dir)
                .map_err(|(rule, m)| errs.at(offset, &rule, m))?;
            test.run(&set, dir).map_err(|m| errs.at(offset, &test.name, m))?;
        }
        Ok(set)
    }

    /// The rule set's version, recorded with every decision.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How many test cases the file carried (all passed).
    pub fn test_count(&self) -> usize {
        self.tests
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn load(text: &str) -> Result<RuleSet, RuleError> {
        let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
        RuleSet::from_toml("test.toml", text, &schema, &Directory::denmark().unwrap())
    }

    pub(crate) const GOOD: &str = r#"
version = "t1"
[[agreement]]
id = "a"
name = "A"
valid_from = "2026-01-01T00:00:00Z"
valid_until = "2027-01-01T00:00:00Z"
parties = { sectors = ["police", "health", "social", "ngo"] }

[[message]]
type = "child_missing"
senders = { sectors = ["ngo"] }

[[message.route]]
id = "cm-police"
to = "case_police_district"
basis = { vital_interest = "missing child" }
agreement = "a"
classes = ["LOCATION", "IDENTITY"]
"#;

    #[test]
    fn the_shipped_default_rules_load_and_their_tests_pass() {
        let r = load(include_str!("../../../rules/default.toml")).unwrap();
        assert_eq!(r.message_types().count(), 18, "every type but never_disclose_updated");
        assert!(r.test_count() >= 20, "{}", r.test_count());
    }

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
                11,
                "child_vanished",
                "unknown message type",
            ),
            (
                GOOD.replace("\"IDENTITY\"", "\"SECRET\""),
                15,
                "cm-police",
                "unknown class `SECRET`",
            ),
            (
                GOOD.replace("case_police_district", "agency:ngo-nobody"),
                15,
                "cm-police",
                "not in the agency directory",
            ),
            (
                GOOD.replace("case_police_district", "the_mayor"),
                15,
                "cm-police",
                "unknown recipient",
            ),
            (
                GOOD.replace("vital_interest = \"missing child\"", "consent = \"\""),
                15,
                "cm-police",
                "exactly one",
            ),
            (
                GOOD.replace("{ vital_interest = \"missing child\" }", "{}"),
                15,
                "cm-police",
                "exactly one",
            ),
            (GOOD.replace("[\"ngo\"]", "[]"), 11, "child_missing", "at least one"),
            (
                GOOD.replace("[\"ngo\"]", "[\"police\", \"health\", \"ngo\", \"social\"]")
                    .replace("child_missing", "investigation_update"),
                11,
                "investigation_update",
                "never accepts",
            ),
            (
                GOOD.replace("case_police_district", "named:facility_agency_id"),
                15,
                "cm-police",
                "names no agency",
            ),
            (
                GOOD.replace(
                    "sectors = [\"police\", \"health\", \"social\", \"ngo\"]",
                    "sectors = [\"health\"]",
                ),
                15,
                "cm-police",
                "can ever be a party to `a`",
            ),
            (
                GOOD.replace(
                    "parties = { sectors = [\"police\", \"health\", \"social\", \"ngo\"] }",
                    "parties = {}",
                ),
                4,
                "a",
                "`parties`: expected the sectors or agencies",
            ),
            (
                GOOD.replace("agreement = \"a\"", "agreement = \"b\""),
                15,
                "cm-police",
                "unknown agreement `b`",
            ),
            (
                GOOD.replace("valid_until = \"2027", "valid_until = \"2025"),
                4,
                "a",
                "after `valid_from`",
            ),
            (
                GOOD.replace("classes = [\"LOCATION\"", "alert = \"urgent\"\nclasses = [\"LOCATION\"")
                    .replace("case_police_district", "case_municipality"),
                15,
                "cm-police",
                "alerts go to police",
            ),
            (
                GOOD.replace("child_missing", "suspected_victim_reported")
                    .replace("vital_interest = \"missing child\"", "consent = \"p\""),
                15,
                "cm-police",
                "no consent can exist",
            ),
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
        let e = load("version = \"x\"\nbogus = 1\n").unwrap_err();
        assert_eq!((e.line, e.rule.as_str()), (2, "file"), "{e}");
    }

    #[test]
    fn a_failing_test_case_refuses_the_set() {
        let with_test = format!(
            "{GOOD}\n[[test]]\nname = \"police see health\"\nmessage = \"child_missing\"\nsender = \"ngo-hopenow\"\nat = \"2026-06-01T00:00:00Z\"\ncase = {{ municipality = \"101\" }}\nexpect = [{{ to = \"politi-koebenhavn\", classes = [\"LOCATION\", \"IDENTITY\", \"HEALTH\"] }}]\n"
        );
        let e = load(&with_test).unwrap_err();
        assert_eq!((e.line, e.rule.as_str()), (21, "police see health"), "{e}");
        assert!(e.message.contains("expected `politi-koebenhavn` (BASIC, IDENTITY, LOCATION, HEALTH), got `politi-koebenhavn` (BASIC, IDENTITY, LOCATION)"), "{e}");
        let passing = with_test.replace(", \"HEALTH\"]", "]");
        assert_eq!(load(&passing).unwrap().test_count(), 1);
    }
}
