//! Test cases a rule file carries: this event, from this sender, in this case and consent
//! state, reaches exactly these recipients with exactly these classes (and these routes are
//! withheld, for these reasons). Loading a rule file runs them all.

use std::collections::{BTreeMap, BTreeSet};

use henvis_domain::{
    AgencyId, CaseRecord, Class, ClassSet, Consent, Directory, MessageType, NeverDisclose, Sector, Shielded,
};
use serde::Deserialize;

use crate::{DecisionInput, RuleSet, Schema, decide, rules::parse_time};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestRow {
    name: String,
    message: String,
    sender: String,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    case: CaseRow,
    #[serde(default)]
    consents: Vec<ConsentRow>,
    expect: Vec<ExpectRow>,
    #[serde(default)]
    withheld: Option<Vec<WithheldRow>>,
    #[serde(default)]
    referral_sender: Option<String>,
    /// BASIC boolean fields set in the test event (e.g. `immediate_danger`).
    #[serde(default)]
    flags: Vec<String>,
    /// The expected alert per recipient: `normal` or `urgent` (recipients not named
    /// raise no alert); checked only when given.
    #[serde(default)]
    alerts: Option<BTreeMap<String, String>>,
    /// The agencies the test event names, by agency-id field (e.g. `facility_agency_id =
    /// ["ngo-x"]`), for `named:` routes.
    #[serde(default)]
    named: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CaseRow {
    municipality: Option<String>,
    guardian: Option<String>,
    child: Option<bool>,
    #[serde(default)]
    participants: Vec<String>,
    #[serde(default)]
    never_disclose: Vec<NeverDiscloseRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NeverDiscloseRow {
    agency: Option<String>,
    all_except: Option<Vec<String>>,
    #[serde(default)]
    classes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentRow {
    #[serde(default)]
    agencies: Vec<String>,
    #[serde(default)]
    sectors: Vec<String>,
    #[serde(default)]
    message_types: Vec<String>,
    from: String,
    until: String,
    #[serde(default)]
    withdrawn: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectRow {
    to: String,
    classes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithheldRow {
    rule: String,
    reason: String,
}

/// A parsed test case.
pub(crate) struct RuleTest {
    pub name: String,
    mt: MessageType,
    sender: AgencyId,
    sector: Sector,
    at: i64,
    case: CaseRecord,
    expect: BTreeMap<AgencyId, ClassSet>,
    withheld: Option<BTreeSet<(String, String)>>,
    referral_sender: Option<AgencyId>,
    flags: Vec<String>,
    alerts: Option<BTreeMap<String, String>>,
    named: Vec<(String, String)>,
}

fn classes(list: &[String]) -> Result<ClassSet, String> {
    let mut set = ClassSet::EMPTY;
    for c in list {
        set.insert(
            Class::ALL
                .into_iter()
                .find(|k| k.as_str() == c)
                .ok_or_else(|| format!("unknown class `{c}`"))?,
        );
    }
    Ok(set)
}

fn describe(c: ClassSet) -> String {
    c.iter().map(Class::as_str).collect::<Vec<_>>().join(", ")
}

impl RuleTest {
    pub(crate) fn from_row(
        row: TestRow,
        default_at: Option<i64>,
        schema: &Schema,
        dir: &Directory,
    ) -> Result<Self, (String, String)> {
        let name = row.name.clone();
        let fail = |m: String| (name.clone(), m);
        let agency = |s: &str| -> Result<AgencyId, (String, String)> {
            let a = AgencyId::parse(s).map_err(|e| fail(format!("{e}")))?;
            dir.agency(&a)
                .ok_or_else(|| fail(format!("agency `{s}` is not in the agency directory")))?;
            Ok(a)
        };
        let mt = MessageType::parse(&row.message)
            .ok()
            .filter(|m| schema.knows(m))
            .ok_or_else(|| fail(format!("`message`: unknown message type `{}`", row.message)))?;
        if let Some(f) = row.flags.iter().find(|f| !schema.is_basic_flag(&mt, f)) {
            return Err(fail(format!("`flags`: `{f}` is not a BASIC boolean field of `{mt}`")));
        }
        let sender = agency(&row.sender)?;
        let sector = dir
            .agency(&sender)
            .map(|a| a.sector)
            .ok_or_else(|| fail("`sender`: unknown agency".into()))?;
        let at = match row.at.as_deref() {
            Some(t) => parse_time(t).ok_or_else(|| fail("`at`: expected an RFC 3339 time".into()))?,
            None => default_at.ok_or_else(|| fail("`at`: required unless the file sets `tests_at`".into()))?,
        };
        let mut case = CaseRecord::new();
        case.municipality_code = row.case.municipality.clone();
        if let Some(m) = &case.municipality_code
            && dir.municipality(m).is_none()
        {
            return Err(fail(format!("`case.municipality`: unknown municipality `{m}`")));
        }
        case.guardian = row.case.guardian.as_deref().map(agency).transpose()?;
        case.child = row.case.child.unwrap_or(true);
        for p in &row.case.participants {
            case.participants.insert(agency(p)?);
        }
        for nd in &row.case.never_disclose {
            let from = match (&nd.agency, &nd.all_except) {
                (Some(a), None) => Shielded::Agency(agency(a)?),
                (None, Some(list)) => Shielded::AllExcept(list.iter().map(|a| agency(a)).collect::<Result<_, _>>()?),
                _ => {
                    return Err(fail(
                        "`case.never_disclose`: expected exactly one of `agency` or `all_except`".into(),
                    ));
                }
            };
            case.never_disclose.push(NeverDisclose {
                from,
                classes: classes(&nd.classes).map_err(fail)?,
            });
        }
        for (i, c) in row.consents.iter().enumerate() {
            let mut sectors = BTreeSet::new();
            for s in &c.sectors {
                sectors.insert(Sector::parse(s).ok_or_else(|| fail(format!("`consents`: unknown sector `{s}`")))?);
            }
            let mut message_types = BTreeSet::new();
            for m in &c.message_types {
                message_types.insert(MessageType::parse(m).map_err(|e| fail(format!("`consents`: {e}")))?);
            }
            case.consents.push(Consent {
                id: henvis_domain::ConsentId::parse(&format!("test-consent-{i}"))
                    .map_err(|e| fail(format!("`consents`: {e}")))?,
                agencies: c.agencies.iter().map(|a| agency(a)).collect::<Result<_, _>>()?,
                sectors,
                message_types,
                valid_from: parse_time(&c.from)
                    .ok_or_else(|| fail("`consents.from`: expected an RFC 3339 time".into()))?,
                valid_until: parse_time(&c.until)
                    .ok_or_else(|| fail("`consents.until`: expected an RFC 3339 time".into()))?,
                withdrawn: c.withdrawn,
                recorded_by_event: String::new(),
            });
        }
        let mut expect = BTreeMap::new();
        for e in &row.expect {
            let mut set = classes(&e.classes).map_err(fail)?;
            set.insert(Class::Basic);
            expect.insert(agency(&e.to)?, set);
        }
        let referral_sender = row.referral_sender.as_deref().map(agency).transpose()?;
        let fields = schema.agency_fields(&mt);
        let mut named = Vec::new();
        for (field, ids) in &row.named {
            if !fields.contains(field) {
                return Err(fail(format!("`named`: `{field}` is not an agency-id field of `{mt}`")));
            }
            for id in ids {
                named.push((field.clone(), agency(id)?.to_string()));
            }
        }
        let withheld = row
            .withheld
            .map(|w| w.into_iter().map(|w| (w.rule, w.reason)).collect());
        Ok(RuleTest {
            name,
            mt,
            sender,
            sector,
            at,
            case,
            expect,
            withheld,
            referral_sender,
            flags: row.flags,
            alerts: row.alerts,
            named,
        })
    }

    pub(crate) fn run(&self, rules: &RuleSet, dir: &Directory) -> Result<(), String> {
        let d = decide(
            rules,
            dir,
            &DecisionInput {
                mt: &self.mt,
                sender: &self.sender,
                sender_sector: self.sector,
                case: &self.case,
                at: self.at,
                referral_sender: self.referral_sender.as_ref(),
                flags: &self.flags,
                named: &self.named,
            },
        );
        if let Some(expected) = &self.alerts {
            let got: BTreeMap<String, String> = d
                .recipients
                .iter()
                .filter_map(|r| r.alert.map(|u| (r.agency.to_string(), u.as_str().to_owned())))
                .collect();
            if &got != expected {
                return Err(format!("expected alerts {expected:?}, got {got:?}"));
            }
        }
        let got: BTreeMap<AgencyId, ClassSet> = d.recipients.iter().map(|r| (r.agency.clone(), r.classes)).collect();
        if got != self.expect {
            let show = |m: &BTreeMap<AgencyId, ClassSet>| {
                if m.is_empty() {
                    "nobody".to_owned()
                } else {
                    m.iter()
                        .map(|(a, c)| format!("`{a}` ({})", describe(*c)))
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            };
            return Err(format!(
                "test failed: expected {}, got {}",
                show(&self.expect),
                show(&got)
            ));
        }
        if let Some(expected) = &self.withheld {
            let got: BTreeSet<(String, String)> = d
                .withheld
                .iter()
                .map(|w| (w.rule_id.clone(), w.reason.code().to_owned()))
                .collect();
            if &got != expected {
                let show = |s: &BTreeSet<(String, String)>| {
                    s.iter().map(|(r, w)| format!("{r}={w}")).collect::<Vec<_>>().join(", ")
                };
                return Err(format!(
                    "test failed: expected withheld [{}], got [{}]",
                    show(expected),
                    show(&got)
                ));
            }
        }
        Ok(())
    }
}
