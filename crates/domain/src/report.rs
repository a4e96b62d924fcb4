//! The subject access report on one case: the account a child's guardian (and through them
//! the child) and an administrator are owed of what henvis did with the child's data — who
//! received which classes of which event, when, under which rule version, legal basis,
//! agreement and consent; what was withheld and why; what the case record changed; who
//! opened, claimed or handed over its police alerts; who was given this account before.
//!
//! Built from the case's audit records alone (ids, classes, rules, never the child's data),
//! with [`build`], the same function for the router (which answers guardians) and the admin
//! service (which answers administrators). While the police have the case marked as under
//! investigation (criminal code § 262 a) and the mark is younger than the configured maximum
//! age, the guardian's report leaves out every police-side entry — an event the police sent,
//! a delivery to or withholding from a police agency, any alert step — and says that a part
//! is deferred, without saying how much or since when; the administrator's report keeps every
//! entry and marks the deferred ones. Rendered as a text table ([`render_text`]) or a
//! printable HTML document ([`render_html`]); its JSON is its serde form.

use std::fmt::Write as _;

use crate::{AgencyId, AuditRecord, CaseRecord, Directory, EventId, Sector, standing_decisions};

/// How long a deferral lasts at most unless configured otherwise (`HENVIS_DEFERRAL_MAX_DAYS`).
pub const DEFAULT_DEFERRAL_MAX_DAYS: u64 = 180;

/// What the guardian's report says in place of the deferred part.
pub const DEFERRAL_STATEMENT: &str = "Part of this account is deferred under the data protection act (databeskyttelsesloven § 22) and will be given when the deferral ends.";

/// Who a report is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Viewer {
    /// The case's guardian (a deferral applies).
    Guardian,
    /// An administrator (sees everything).
    Administrator,
}

impl Viewer {
    /// Its name in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guardian => "guardian",
            Self::Administrator => "administrator",
        }
    }
}

/// The event an entry is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventRef {
    /// Its id.
    pub event_id: String,
    /// Its message type.
    pub message_type: String,
    /// The agency that sent it.
    pub sender: String,
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    /// An agency received an event, with these classes, on these grounds.
    Delivered {
        /// The event.
        event: EventRef,
        /// The rule set version that decided.
        rule_set_version: String,
        /// The recipient.
        recipient: String,
        /// The classes it received.
        classes: Vec<String>,
        /// The routes that entitled it.
        rule_ids: Vec<String>,
        /// Their legal bases.
        legal_bases: Vec<String>,
        /// The cooperation agreements they rest on.
        agreements: Vec<String>,
        /// The consents a consent route rested on.
        consent_ids: Vec<String>,
        /// Classes the never-disclose list kept from it.
        restricted_classes: Vec<String>,
    },
    /// An intended delivery did not happen.
    Withheld {
        /// The event.
        event: EventRef,
        /// The rule set version that decided.
        rule_set_version: String,
        /// The agency, where known.
        recipient: Option<String>,
        /// The route.
        rule_id: String,
        /// The reason code.
        reason: String,
        /// A data-free explanation.
        explanation: String,
    },
    /// An event changed the case record.
    CaseChanged {
        /// The event.
        event: EventRef,
        /// The change, by name.
        change: String,
    },
    /// A police contact person took a step on one of the case's alerts.
    AlertAccess {
        /// `details_read`, `claimed`, `handed_over`, `closed_as_<outcome>` or `reopened`.
        action: String,
        /// The alert.
        alert_id: String,
        /// The district.
        district: String,
        /// The person (an opaque id).
        person: String,
        /// For a hand-over, to whom.
        to: Option<String>,
        /// For a details read, the classes read.
        classes: Vec<String>,
    },
    /// This account was given before.
    Reported {
        /// The report.
        report_id: String,
        /// To whom.
        requested_by: String,
        /// `guardian` or `administrator`.
        viewer: String,
    },
}

/// One line of the account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReportEntry {
    /// When, unix seconds.
    pub at: i64,
    /// Whether a deferral in force keeps it from the guardian (always false in a
    /// guardian's report, which leaves such entries out).
    pub deferred: bool,
    /// What happened.
    #[serde(flatten)]
    pub entry: Entry,
}

/// The deferral of a case's report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeferralNotice {
    /// Whether it is in force (false: the mark stands but its maximum age has passed).
    pub in_force: bool,
    /// What the guardian is told.
    pub statement: String,
    /// For an administrator: since when (the marking event's submission), unix seconds.
    pub since: Option<i64>,
    /// For an administrator: when it ends at the latest, unix seconds.
    pub ends_at: Option<i64>,
    /// For an administrator: the police agency that marked the case.
    pub marked_by: Option<String>,
    /// For an administrator: how many entries it keeps from the guardian.
    pub entries_deferred: u64,
}

/// The account of one case.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubjectAccessReport {
    /// Its id (the audit record of its giving carries it).
    pub report_id: String,
    /// The case.
    pub case_id: String,
    /// When it was made, unix seconds.
    pub generated_at: i64,
    /// For whom.
    pub viewer: Viewer,
    /// Who asked (the guardian's agency or the administrator).
    pub requested_by: String,
    /// The deferral, when the case is marked (for a guardian: only while in force).
    pub deferral: Option<DeferralNotice>,
    /// The account, oldest first.
    pub entries: Vec<ReportEntry>,
}

/// What [`build`] needs besides the audit.
pub struct ReportRequest<'a> {
    /// The report's id.
    pub report_id: &'a str,
    /// The case.
    pub case_id: &'a str,
    /// The case record as it stands (its deferral mark).
    pub case: &'a CaseRecord,
    /// For whom.
    pub viewer: Viewer,
    /// Who asked.
    pub requested_by: &'a str,
    /// Now, unix seconds.
    pub now: i64,
    /// The longest a deferral lasts, seconds.
    pub deferral_max_secs: i64,
    /// The directory (which agencies are police).
    pub directory: &'a Directory,
}

/// Builds the report on `req.case_id` from its audit records (`records`, in audit order),
/// with the number of entries a deferral in force keeps from the guardian (for the audit
/// record of its giving; a guardian's report itself does not say).
pub fn build(req: &ReportRequest<'_>, records: &[AuditRecord]) -> (SubjectAccessReport, u64) {
    let police = |agency: &str| {
        AgencyId::parse(agency)
            .ok()
            .and_then(|a| req.directory.agency(&a))
            .is_some_and(|a| a.sector == Sector::Police)
    };
    let mut entries: Vec<(ReportEntry, bool)> = Vec::new();
    let mut push = |at: i64, entry: Entry, police_side: bool| {
        entries.push((
            ReportEntry {
                at,
                deferred: false,
                entry,
            },
            police_side,
        ));
    };
    for d in standing_decisions(records) {
        let event = EventRef {
            event_id: d.event_id.clone(),
            message_type: d.message_type.clone(),
            sender: d.sender.clone(),
        };
        let police_event = police(&d.sender) || d.message_type == "investigation_update";
        for r in &d.delivered {
            push(
                d.decided_at,
                Entry::Delivered {
                    event: event.clone(),
                    rule_set_version: d.rule_set_version.clone(),
                    recipient: r.agency.clone(),
                    classes: r.classes.clone(),
                    rule_ids: r.rule_ids.clone(),
                    legal_bases: r.legal_bases.clone(),
                    agreements: r.agreements.clone(),
                    consent_ids: r.consent_ids.clone(),
                    restricted_classes: r.restricted_by_never_disclose.clone(),
                },
                police_event || police(&r.agency),
            );
        }
        for w in &d.withheld {
            push(
                d.decided_at,
                Entry::Withheld {
                    event: event.clone(),
                    rule_set_version: d.rule_set_version.clone(),
                    recipient: w.agency.clone(),
                    rule_id: w.rule_id.clone(),
                    reason: w.reason.clone(),
                    explanation: w.explanation.clone(),
                },
                police_event || w.agency.as_deref().is_some_and(police),
            );
        }
    }
    for r in records {
        match r {
            AuditRecord::CaseChange {
                event_id,
                message_type,
                by,
                change,
                ..
            } => push(
                EventId::parse(event_id).map_or(0, |e| e.unix_seconds()),
                Entry::CaseChanged {
                    event: EventRef {
                        event_id: event_id.clone(),
                        message_type: message_type.clone(),
                        sender: by.clone(),
                    },
                    change: change.clone(),
                },
                police(by) || message_type == "investigation_update",
            ),
            AuditRecord::AlertDetailsRead {
                alert_id,
                district,
                person,
                classes,
                at,
                ..
            } => push(
                *at,
                Entry::AlertAccess {
                    action: "details_read".into(),
                    alert_id: alert_id.clone(),
                    district: district.clone(),
                    person: person.clone(),
                    to: None,
                    classes: classes.clone(),
                },
                true,
            ),
            AuditRecord::AlertClaimed(s)
            | AuditRecord::AlertHandedOver(s)
            | AuditRecord::AlertClosed(s)
            | AuditRecord::AlertReopened(s) => push(
                s.at,
                Entry::AlertAccess {
                    action: match r {
                        AuditRecord::AlertClaimed(_) => "claimed".to_owned(),
                        AuditRecord::AlertHandedOver(_) => "handed_over".to_owned(),
                        AuditRecord::AlertClosed(_) => {
                            format!("closed_as_{}", s.outcome.as_deref().unwrap_or("unknown"))
                        }
                        _ => "reopened".to_owned(),
                    },
                    alert_id: s.alert_id.clone(),
                    district: s.district.clone(),
                    person: s.person.clone(),
                    to: s.to.clone(),
                    classes: Vec::new(),
                },
                true,
            ),
            AuditRecord::SubjectAccessReported {
                report_id,
                requested_by,
                viewer,
                at,
                ..
            } => push(
                *at,
                Entry::Reported {
                    report_id: report_id.clone(),
                    requested_by: requested_by.clone(),
                    viewer: viewer.clone(),
                },
                false,
            ),
            _ => {}
        }
    }
    entries.sort_by_key(|(e, _)| e.at);

    let deferral = req.case.deferred_by_event.as_deref().map(|event_id| {
        let since = EventId::parse(event_id).map_or(0, |e| e.unix_seconds());
        let ends_at = since.saturating_add(req.deferral_max_secs);
        let marked_by = records.iter().find_map(|r| match r {
            AuditRecord::CaseChange { event_id: e, by, .. } if e == event_id => Some(by.clone()),
            _ => None,
        });
        (since, ends_at, marked_by, req.now < ends_at)
    });
    let in_force = deferral.as_ref().is_some_and(|d| d.3);
    let entries_deferred = if in_force {
        entries.iter().filter(|(_, p)| *p).count() as u64
    } else {
        0
    };
    let (entries, deferral): (Vec<ReportEntry>, _) = match req.viewer {
        Viewer::Administrator => (
            entries
                .into_iter()
                .map(|(mut e, p)| {
                    e.deferred = in_force && p;
                    e
                })
                .collect(),
            deferral.map(|(since, ends_at, marked_by, in_force)| DeferralNotice {
                in_force,
                statement: DEFERRAL_STATEMENT.into(),
                since: Some(since),
                ends_at: Some(ends_at),
                marked_by,
                entries_deferred,
            }),
        ),
        Viewer::Guardian => (
            entries
                .into_iter()
                .filter(|(_, p)| !(in_force && *p))
                .map(|(e, _)| e)
                .collect(),
            in_force.then(|| DeferralNotice {
                in_force: true,
                statement: DEFERRAL_STATEMENT.into(),
                since: None,
                ends_at: None,
                marked_by: None,
                entries_deferred: 0,
            }),
        ),
    };
    let report = SubjectAccessReport {
        report_id: req.report_id.to_owned(),
        case_id: req.case_id.to_owned(),
        generated_at: req.now,
        viewer: req.viewer,
        requested_by: req.requested_by.to_owned(),
        deferral,
        entries,
    };
    (report, entries_deferred)
}

/// The audit record of giving `report`, which a deferral kept `deferred` entries out of.
pub fn given(report: &SubjectAccessReport, deferred: u64) -> AuditRecord {
    AuditRecord::SubjectAccessReported {
        report_id: report.report_id.clone(),
        case_id: report.case_id.clone(),
        requested_by: report.requested_by.clone(),
        viewer: report.viewer.as_str().to_owned(),
        entries: report.entries.len() as u64,
        deferred_entries: deferred,
        at: report.generated_at,
    }
}

fn utc(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "-".into() } else { items.join(", ") }
}

/// One entry as the columns of a table: when, event, what happened, who, classes, grounds.
fn columns(e: &ReportEntry) -> [String; 6] {
    let event = |ev: &EventRef| format!("{} {} from {}", ev.message_type, ev.event_id, ev.sender);
    let mark = if e.deferred { " [deferred]" } else { "" };
    match &e.entry {
        Entry::Delivered {
            event: ev,
            rule_set_version,
            recipient,
            classes,
            rule_ids,
            legal_bases,
            agreements,
            consent_ids,
            restricted_classes,
        } => {
            let mut grounds = format!(
                "rules {} (set {rule_set_version}); {}; agreement {}",
                list(rule_ids),
                list(legal_bases),
                list(agreements)
            );
            if !consent_ids.is_empty() {
                let _ = write!(grounds, "; consent {}", list(consent_ids));
            }
            let mut classes = list(classes);
            if !restricted_classes.is_empty() {
                let _ = write!(classes, " (kept back: {})", list(restricted_classes));
            }
            [
                utc(e.at),
                event(ev),
                format!("delivered{mark}"),
                recipient.clone(),
                classes,
                grounds,
            ]
        }
        Entry::Withheld {
            event: ev,
            rule_set_version,
            recipient,
            rule_id,
            reason,
            explanation,
        } => [
            utc(e.at),
            event(ev),
            format!("withheld{mark}"),
            recipient.clone().unwrap_or_else(|| "-".into()),
            "-".into(),
            format!("rule {rule_id} (set {rule_set_version}): {reason}: {explanation}"),
        ],
        Entry::CaseChanged { event: ev, change } => [
            utc(e.at),
            event(ev),
            format!("case changed{mark}"),
            "-".into(),
            "-".into(),
            change.clone(),
        ],
        Entry::AlertAccess {
            action,
            alert_id,
            district,
            person,
            to,
            classes,
        } => [
            utc(e.at),
            format!("alert {alert_id}"),
            format!("alert {}{mark}", action.replace('_', " ")),
            format!("{person} ({district})"),
            list(classes),
            to.as_ref().map_or_else(String::new, |t| format!("to {t}")),
        ],
        Entry::Reported {
            report_id,
            requested_by,
            viewer,
        } => [
            utc(e.at),
            format!("report {report_id}"),
            "account given".into(),
            format!("{requested_by} ({viewer})"),
            "-".into(),
            String::new(),
        ],
    }
}

const HEADINGS: [&str; 6] = ["When", "Event", "What", "Who", "Classes", "Grounds"];

fn header_lines(r: &SubjectAccessReport) -> Vec<String> {
    let mut lines = vec![
        format!("Subject access report on case {}", r.case_id),
        format!(
            "Made {} for {} ({}), report {}",
            utc(r.generated_at),
            r.requested_by,
            r.viewer.as_str(),
            r.report_id
        ),
    ];
    if let Some(d) = &r.deferral {
        match (r.viewer, d.in_force) {
            (Viewer::Guardian, _) => lines.push(d.statement.clone()),
            (Viewer::Administrator, true) => lines.push(format!(
                "Deferred for the guardian (criminal code § 262 a): marked by {} since {}, until {} at the latest; {} entries kept from the guardian, marked [deferred].",
                d.marked_by.as_deref().unwrap_or("-"),
                d.since.map_or_else(|| "-".into(), utc),
                d.ends_at.map_or_else(|| "-".into(), utc),
                d.entries_deferred
            )),
            (Viewer::Administrator, false) => lines.push(format!(
                "A police deferral marked by {} since {} ended at its maximum age on {}; the guardian sees everything.",
                d.marked_by.as_deref().unwrap_or("-"),
                d.since.map_or_else(|| "-".into(), utc),
                d.ends_at.map_or_else(|| "-".into(), utc)
            )),
        }
    }
    lines
}

/// The report as a plain-text table.
pub fn render_text(r: &SubjectAccessReport) -> String {
    let rows: Vec<[String; 6]> = r.entries.iter().map(columns).collect();
    let mut widths = HEADINGS.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = header_lines(r).join("\n");
    out.push_str("\n\n");
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    out.push_str(&line(&HEADINGS.map(str::to_owned)));
    for row in &rows {
        out.push_str(&line(row));
    }
    if rows.is_empty() {
        out.push_str("(nothing recorded)\n");
    }
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The report as a self-contained HTML document with print styles (no scripts, no external
/// resources), to print or save as PDF and hand over.
pub fn render_html(r: &SubjectAccessReport) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>Subject access report</title>\n<style>\n\
         body{font-family:system-ui,sans-serif;margin:2rem;color:#111}\n\
         h1{font-size:1.4rem}\n p.deferral{border-left:4px solid #444;padding-left:.6rem}\n\
         table{border-collapse:collapse;width:100%;font-size:.85rem}\n\
         th,td{border:1px solid #999;padding:.25rem .4rem;text-align:left;vertical-align:top}\n\
         th{background:#eee}\n tr.deferred td{background:#f4f4f4;font-style:italic}\n\
         @media print{body{margin:0}@page{size:A4 landscape;margin:12mm}thead{display:table-header-group}tr{break-inside:avoid}}\n\
         </style>\n</head>\n<body>\n",
    );
    let _ = writeln!(out, "<h1>Subject access report on case {}</h1>", escape(&r.case_id));
    for (i, l) in header_lines(r).iter().enumerate().skip(1) {
        let class = if i >= 2 { " class=\"deferral\"" } else { "" };
        let _ = writeln!(out, "<p{class}>{}</p>", escape(l));
    }
    out.push_str("<table>\n<thead><tr>");
    for h in HEADINGS {
        let _ = write!(out, "<th scope=\"col\">{h}</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for e in &r.entries {
        out.push_str(if e.deferred { "<tr class=\"deferred\">" } else { "<tr>" });
        for c in columns(e) {
            let _ = write!(out, "<td>{}</td>", escape(&c));
        }
        out.push_str("</tr>\n");
    }
    if r.entries.is_empty() {
        out.push_str("<tr><td colspan=\"6\">Nothing recorded.</td></tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{AlertStepRecord, AuditDecision, AuditRecipient, AuditWithheld};

    const POLICE_EVENT: &str = "0196f3a0-7b5c-7cc0-8000-000000000009";

    fn recipient(agency: &str, classes: &[&str]) -> AuditRecipient {
        AuditRecipient {
            agency: agency.into(),
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            rule_ids: vec![format!("r-{agency}")],
            legal_bases: vec!["statutory: serviceloven § 154".into()],
            agreements: vec!["a-1".into()],
            consent_ids: vec![],
            restricted_by_never_disclose: vec![],
            alert: None,
        }
    }

    fn decision(
        event: &str,
        mt: &str,
        sender: &str,
        at: i64,
        to: Vec<AuditRecipient>,
        withheld: &[&str],
    ) -> AuditRecord {
        AuditRecord::RoutingDecision(AuditDecision {
            event_id: event.into(),
            case_id: "c".into(),
            message_type: mt.into(),
            sender: sender.into(),
            actor: String::new(),
            rule_set_version: "2026.1".into(),
            case_revision: 1,
            decided_at: at,
            payload_sha256: String::new(),
            flags: vec![],
            referral_sender: None,
            named: vec![],
            delivered: to,
            withheld: withheld
                .iter()
                .map(|a| AuditWithheld {
                    rule_id: format!("r-{a}"),
                    agency: Some((*a).into()),
                    reason: "no_consent".into(),
                    explanation: "no consent covers it".into(),
                })
                .collect(),
        })
    }

    fn records() -> Vec<AuditRecord> {
        vec![
            decision(
                "e1",
                "suspected_victim_reported",
                "kommune-101",
                100,
                vec![
                    recipient("politi-koebenhavn", &["BASIC", "LOCATION"]),
                    recipient("ngo-hopenow", &["BASIC"]),
                ],
                &["region-hovedstaden"],
            ),
            AuditRecord::CaseChange {
                event_id: POLICE_EVENT.into(),
                case_id: "c".into(),
                message_type: "investigation_update".into(),
                by: "politi-koebenhavn".into(),
                change: "subject_access_deferred".into(),
            },
            decision(
                POLICE_EVENT,
                "investigation_update",
                "politi-koebenhavn",
                200,
                vec![recipient("kommune-101", &["BASIC", "CRIMINAL"])],
                &[],
            ),
            AuditRecord::AlertDetailsRead {
                alert_id: "al-1".into(),
                case_id: "c".into(),
                district: "politi-koebenhavn".into(),
                person: "kp-1".into(),
                classes: vec!["BASIC".into(), "LOCATION".into()],
                at: 150,
            },
            AuditRecord::AlertClaimed(AlertStepRecord {
                alert_id: "al-1".into(),
                case_id: "c".into(),
                district: "politi-koebenhavn".into(),
                person: "kp-1".into(),
                to: None,
                outcome: None,
                at: 140,
            }),
        ]
    }

    fn report(viewer: Viewer, deferred: bool, now: i64) -> SubjectAccessReport {
        counted(viewer, deferred, now).0
    }

    fn counted(viewer: Viewer, deferred: bool, now: i64) -> (SubjectAccessReport, u64) {
        let mut case = CaseRecord::new();
        if deferred {
            case.deferred_by_event = Some(POLICE_EVENT.into());
        }
        build(
            &ReportRequest {
                report_id: "rep-1",
                case_id: "c",
                case: &case,
                viewer,
                requested_by: "ngo-hopenow",
                now,
                deferral_max_secs: 3600,
                directory: &Directory::denmark().unwrap(),
            },
            &records(),
        )
    }

    fn since() -> i64 {
        EventId::parse(POLICE_EVENT).unwrap().unix_seconds()
    }

    fn shape(r: &SubjectAccessReport) -> Vec<(i64, bool, String)> {
        r.entries
            .iter()
            .map(|e| {
                let what = match &e.entry {
                    Entry::Delivered { recipient, .. } => format!("delivered {recipient}"),
                    Entry::Withheld { recipient, .. } => format!("withheld {}", recipient.as_deref().unwrap_or("-")),
                    Entry::CaseChanged { change, .. } => format!("changed {change}"),
                    Entry::AlertAccess { action, .. } => format!("alert {action}"),
                    Entry::Reported { .. } => "reported".into(),
                };
                (e.at, e.deferred, what)
            })
            .collect()
    }

    #[test]
    fn without_a_deferral_the_guardian_sees_everything_in_time_order() {
        let r = report(Viewer::Guardian, false, since());
        let s = |at: i64, what: &str| (at, false, what.to_owned());
        assert_eq!(
            shape(&r),
            vec![
                s(100, "delivered politi-koebenhavn"),
                s(100, "delivered ngo-hopenow"),
                s(100, "withheld region-hovedstaden"),
                s(140, "alert claimed"),
                s(150, "alert details_read"),
                s(200, "delivered kommune-101"),
                s(since(), "changed subject_access_deferred"),
            ]
        );
        assert_eq!(r.deferral, None);
        let Entry::Delivered {
            classes,
            agreements,
            legal_bases,
            rule_set_version,
            ..
        } = &r.entries[0].entry
        else {
            panic!("a delivery")
        };
        assert_eq!(classes, &["BASIC", "LOCATION"]);
        assert_eq!(agreements, &["a-1"]);
        assert_eq!(legal_bases, &["statutory: serviceloven § 154"]);
        assert_eq!(rule_set_version, "2026.1");
    }

    #[test]
    fn a_deferral_in_force_keeps_every_police_side_entry_from_the_guardian_only() {
        let g = report(Viewer::Guardian, true, since() + 10);
        assert_eq!(
            shape(&g),
            vec![
                (100, false, "delivered ngo-hopenow".into()),
                (100, false, "withheld region-hovedstaden".into())
            ]
        );
        let notice = g.deferral.clone().unwrap();
        assert_eq!(
            (notice.in_force, notice.since, notice.marked_by, notice.entries_deferred),
            (true, None, None, 0),
            "the guardian is told that a part is deferred, nothing more"
        );
        assert_eq!(notice.statement, DEFERRAL_STATEMENT);
        assert_eq!(
            counted(Viewer::Guardian, true, since() + 10).1,
            5,
            "counted for the audit"
        );

        let a = report(Viewer::Administrator, true, since() + 10);
        assert_eq!(a.entries.len(), 7, "the administrator sees every entry");
        assert_eq!(a.entries.iter().filter(|e| e.deferred).count(), 5);
        let notice = a.deferral.unwrap();
        assert_eq!(
            (
                notice.in_force,
                notice.since,
                notice.ends_at,
                notice.marked_by.as_deref(),
                notice.entries_deferred
            ),
            (true, Some(since()), Some(since() + 3600), Some("politi-koebenhavn"), 5)
        );
    }

    #[test]
    fn a_deferral_ends_at_its_maximum_age() {
        let g = report(Viewer::Guardian, true, since() + 3600);
        assert_eq!(g.entries.len(), 7);
        assert_eq!(g.deferral, None);
        let a = report(Viewer::Administrator, true, since() + 3600);
        assert!(a.entries.iter().all(|e| !e.deferred));
        assert!(!a.deferral.unwrap().in_force);
    }

    #[test]
    fn renderings_carry_every_entry_and_escape_html() {
        let mut r = report(Viewer::Administrator, true, since() + 10);
        let text = render_text(&r);
        assert_eq!(text.lines().count(), 3 + 2 + 7, "{text}");
        assert!(
            text.contains("[deferred]") && text.contains("marked by politi-koebenhavn"),
            "{text}"
        );
        if let Entry::Withheld { explanation, .. } = &mut r.entries[2].entry {
            *explanation = "<script>x</script>".into();
        }
        let html = render_html(&r);
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert_eq!(html.matches("<tr class=\"deferred\">").count(), 5);
        assert!(html.contains("@media print"));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<SubjectAccessReport>(&json).unwrap(), r);
    }
}
