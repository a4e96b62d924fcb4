//! What changes between two rule sets, in terms of effect rather than text: per message
//! type and recipient relation, the classes gained and lost; per route, its legal basis,
//! agreement, applicability and alert; per message type, who may send it. Administrators
//! read this before approving a proposal.

use std::collections::{BTreeMap, BTreeSet};

use henvis_domain::{ClassSet, MessageType};

use crate::{AppliesTo, LegalBasis, Route, RuleSet, Selector, SenderFilter};

/// One difference in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleChange {
    /// The message type.
    pub message_type: String,
    /// The recipient relation in words, or empty for a change of the type's senders.
    pub recipient: String,
    /// The route concerned (for relation-wide changes: the routes of the newer set, or of
    /// the older one when the relation is gone), comma-separated.
    pub rule_id: String,
    /// What changes (see [`ChangeKind`]).
    pub change: ChangeKind,
    /// The classes gained or lost.
    pub classes: ClassSet,
    /// What it was, in words.
    pub before: String,
    /// What it becomes, in words.
    pub after: String,
}

/// The kinds of change, from the most to the least consequential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// A recipient relation that received nothing now receives the type.
    RecipientAdded,
    /// A recipient relation no longer receives the type.
    RecipientRemoved,
    /// A relation sees more classes.
    ClassesGained,
    /// A relation sees fewer classes.
    ClassesLost,
    /// Other agencies may send the type, or fewer may.
    SendersChanged,
    /// A route's legal basis changed (consent-based or not included).
    LegalBasisChanged,
    /// A route's agreement (its id or validity) changed.
    AgreementChanged,
    /// Child-only, adult-only or every case.
    AppliesToChanged,
    /// The police alert a route raises.
    AlertChanged,
    /// A route appears (its effect is in the relation's classes).
    RouteAdded,
    /// A route disappears (its effect is in the relation's classes).
    RouteRemoved,
}

impl ChangeKind {
    /// Its name, as shown to administrators.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecipientAdded => "recipient added",
            Self::RecipientRemoved => "recipient removed",
            Self::ClassesGained => "classes gained",
            Self::ClassesLost => "classes lost",
            Self::SendersChanged => "senders changed",
            Self::LegalBasisChanged => "legal basis changed",
            Self::AgreementChanged => "agreement changed",
            Self::AppliesToChanged => "applies to changed",
            Self::AlertChanged => "alert changed",
            Self::RouteAdded => "route added",
            Self::RouteRemoved => "route removed",
        }
    }
}

impl Selector {
    /// The recipient relation in words.
    pub fn describe(&self) -> String {
        match self {
            Selector::Sector(s) => format!("every {s} agency"),
            Selector::Agency(a) => format!("agency {a}"),
            Selector::CaseMunicipality => "municipality of the case".into(),
            Selector::CasePoliceDistrict => "police district of the case".into(),
            Selector::CaseGuardian => "guardian of the case".into(),
            Selector::CaseParticipants => "participants of the case".into(),
            Selector::Sender => "sender".into(),
            Selector::ReferralSender => "sender of the referral answered".into(),
            Selector::Named(f) => format!("agencies the event names in `{f}`"),
        }
    }
}

fn classes_text(c: ClassSet) -> String {
    let v: Vec<&str> = c.iter().map(|c| c.as_str()).collect();
    if v.is_empty() { "nothing".into() } else { v.join(", ") }
}

fn senders_text(s: &SenderFilter) -> String {
    let mut parts: Vec<String> = s.sectors.iter().map(|x| format!("sector {x}")).collect();
    parts.extend(s.agencies.iter().map(|a| format!("agency {a}")));
    if parts.is_empty() {
        "nobody".into()
    } else {
        parts.join(", ")
    }
}

fn basis_text(b: &LegalBasis) -> String {
    b.describe()
}

fn applies_text(a: AppliesTo) -> &'static str {
    match a {
        AppliesTo::Any => "every case",
        AppliesTo::Child => "children only",
        AppliesTo::Adult => "adults only",
    }
}

fn alert_text(r: &Route) -> String {
    match (&r.alert, &r.urgent_when) {
        (None, _) => "no alert".into(),
        (Some(u), None) => format!("{} alert", u.as_str()),
        (Some(u), Some(f)) => format!("{} alert, urgent when `{f}`", u.as_str()),
    }
}

/// Per relation: the classes granted and the routes granting them.
fn relations(routes: &[Route]) -> BTreeMap<String, (ClassSet, Vec<String>)> {
    let mut m: BTreeMap<String, (ClassSet, Vec<String>)> = BTreeMap::new();
    for r in routes {
        let e = m.entry(r.selector.describe()).or_default();
        e.0 = e.0.union(r.classes);
        e.1.push(r.id.clone());
    }
    m
}

/// The differences in effect from `from` to `to`, by message type, then kind.
pub fn diff(from: &RuleSet, to: &RuleSet) -> Vec<RuleChange> {
    let types: BTreeSet<&MessageType> = from.message_types().chain(to.message_types()).collect();
    let mut out = Vec::new();
    for mt in types {
        let empty_routes: Vec<Route> = Vec::new();
        let empty_senders = SenderFilter::default();
        let (before_senders, before_routes) = from
            .rules_for(mt)
            .map_or((&empty_senders, &empty_routes), |t| (&t.senders, &t.routes));
        let (after_senders, after_routes) = to
            .rules_for(mt)
            .map_or((&empty_senders, &empty_routes), |t| (&t.senders, &t.routes));
        let change = |recipient: String, rule_id: String, kind, classes, before: String, after: String| RuleChange {
            message_type: mt.to_string(),
            recipient,
            rule_id,
            change: kind,
            classes,
            before,
            after,
        };
        let mut changes = Vec::new();
        if before_senders != after_senders {
            changes.push(change(
                String::new(),
                String::new(),
                ChangeKind::SendersChanged,
                ClassSet::default(),
                senders_text(before_senders),
                senders_text(after_senders),
            ));
        }
        let (rel_before, rel_after) = (relations(before_routes), relations(after_routes));
        let names: BTreeSet<&String> = rel_before.keys().chain(rel_after.keys()).collect();
        for name in names {
            match (rel_before.get(name), rel_after.get(name)) {
                (None, Some((c, ids))) => changes.push(change(
                    name.clone(),
                    ids.join(","),
                    ChangeKind::RecipientAdded,
                    *c,
                    "nothing".into(),
                    classes_text(*c),
                )),
                (Some((c, ids)), None) => changes.push(change(
                    name.clone(),
                    ids.join(","),
                    ChangeKind::RecipientRemoved,
                    *c,
                    classes_text(*c),
                    "nothing".into(),
                )),
                (Some((b, _)), Some((a, ids))) => {
                    for (kind, classes) in [
                        (ChangeKind::ClassesGained, a.difference(*b)),
                        (ChangeKind::ClassesLost, b.difference(*a)),
                    ] {
                        if !classes.is_empty() {
                            changes.push(change(
                                name.clone(),
                                ids.join(","),
                                kind,
                                classes,
                                classes_text(*b),
                                classes_text(*a),
                            ));
                        }
                    }
                }
                (None, None) => {}
            }
        }
        let by_id = |routes: &'_ [Route]| -> BTreeMap<String, Route> {
            routes.iter().map(|r| (r.id.clone(), r.clone())).collect()
        };
        let (ids_before, ids_after) = (by_id(before_routes), by_id(after_routes));
        for (id, b) in &ids_before {
            let Some(a) = ids_after.get(id) else {
                changes.push(change(
                    b.selector.describe(),
                    id.clone(),
                    ChangeKind::RouteRemoved,
                    b.classes,
                    classes_text(b.classes),
                    "nothing".into(),
                ));
                continue;
            };
            let recipient = a.selector.describe();
            if b.basis != a.basis {
                changes.push(change(
                    recipient.clone(),
                    id.clone(),
                    ChangeKind::LegalBasisChanged,
                    ClassSet::default(),
                    basis_text(&b.basis),
                    basis_text(&a.basis),
                ));
            }
            if b.agreement != a.agreement {
                let text = |g: &crate::Agreement| format!("{} ({}..{})", g.id, g.valid_from, g.valid_until);
                changes.push(change(
                    recipient.clone(),
                    id.clone(),
                    ChangeKind::AgreementChanged,
                    ClassSet::default(),
                    text(&b.agreement),
                    text(&a.agreement),
                ));
            }
            if b.applies_to != a.applies_to {
                changes.push(change(
                    recipient.clone(),
                    id.clone(),
                    ChangeKind::AppliesToChanged,
                    ClassSet::default(),
                    applies_text(b.applies_to).into(),
                    applies_text(a.applies_to).into(),
                ));
            }
            if (b.alert, &b.urgent_when) != (a.alert, &a.urgent_when) {
                changes.push(change(
                    recipient.clone(),
                    id.clone(),
                    ChangeKind::AlertChanged,
                    ClassSet::default(),
                    alert_text(b),
                    alert_text(a),
                ));
            }
        }
        for (id, a) in &ids_after {
            if !ids_before.contains_key(id) {
                changes.push(change(
                    a.selector.describe(),
                    id.clone(),
                    ChangeKind::RouteAdded,
                    a.classes,
                    "nothing".into(),
                    classes_text(a.classes),
                ));
            }
        }
        changes.sort_by(|x, y| (x.change, &x.recipient, &x.rule_id).cmp(&(y.change, &y.recipient, &y.rule_id)));
        out.extend(changes);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use henvis_domain::Class;

    use super::*;

    fn load(text: &str) -> RuleSet {
        crate::rules::tests::load(text).unwrap()
    }

    #[test]
    fn an_identical_set_has_no_differences_and_each_change_is_named() {
        let v1 = load(crate::rules::tests::GOOD);
        assert!(diff(&v1, &v1).is_empty());
        let v2 = load(
            &crate::rules::tests::GOOD
                .replace("version = \"t1\"", "version = \"t2\"")
                .replace(r#"["LOCATION", "IDENTITY"]"#, r#"["LOCATION", "HEALTH"]"#),
        );
        let d = diff(&v1, &v2);
        let kinds: Vec<ChangeKind> = d.iter().map(|c| c.change).collect();
        assert_eq!(kinds, vec![ChangeKind::ClassesGained, ChangeKind::ClassesLost], "{d:?}");
        assert!(d[0].classes.contains(Class::Health));
        assert!(d[1].classes.contains(Class::Identity));
        assert_eq!(d[0].recipient, "police district of the case");
        assert_eq!(d[0].message_type, "child_missing");
        // the type gone entirely: the relation loses everything, the route is removed, and
        // nobody may send it any more
        let empty = load("version = \"v0\"\n");
        let kinds: Vec<ChangeKind> = diff(&v1, &empty).iter().map(|c| c.change).collect();
        assert_eq!(
            kinds,
            vec![
                ChangeKind::RecipientRemoved,
                ChangeKind::SendersChanged,
                ChangeKind::RouteRemoved
            ]
        );
    }
}
