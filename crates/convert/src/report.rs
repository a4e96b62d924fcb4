//! The subject access report between its domain form (built by the router and the admin
//! service, rendered by the CLI) and its wire form.

use henvis_domain::{
    Class,
    report::{DeferralNotice, Entry, EventRef, ReportEntry, SubjectAccessReport, Viewer},
};
use henvis_proto::henvis::broker::v1 as pb;
use pb::report_entry::Entry as PbEntry;

/// Class names (`BASIC`, ...) as their wire numbers (`henvis.options.v1.Sensitivity`).
pub fn class_numbers(names: &[String]) -> Vec<i32> {
    names
        .iter()
        .filter_map(|n| n.parse::<Class>().ok())
        .map(|c| c as i32)
        .collect()
}

fn names(numbers: &[i32]) -> Vec<String> {
    numbers
        .iter()
        .filter_map(|n| Class::from_number(*n))
        .map(|c| c.as_str().to_owned())
        .collect()
}

fn time(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn seconds(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| t.seconds)
}

fn viewer_to_wire(v: Viewer) -> i32 {
    (match v {
        Viewer::Guardian => pb::ReportViewer::Guardian,
        Viewer::Administrator => pb::ReportViewer::Administrator,
    }) as i32
}

fn viewer_name(n: i32) -> String {
    match pb::ReportViewer::try_from(n) {
        Ok(pb::ReportViewer::Administrator) => Viewer::Administrator.as_str().into(),
        _ => Viewer::Guardian.as_str().into(),
    }
}

fn event_to_wire(e: &EventRef) -> Option<pb::ReportEvent> {
    Some(pb::ReportEvent {
        event_id: e.event_id.clone(),
        message_type: e.message_type.clone(),
        sender_agency_id: e.sender.clone(),
    })
}

fn event_from_wire(e: Option<&pb::ReportEvent>) -> EventRef {
    e.map(|e| EventRef {
        event_id: e.event_id.clone(),
        message_type: e.message_type.clone(),
        sender: e.sender_agency_id.clone(),
    })
    .unwrap_or_default()
}

/// The report as sent.
pub fn report_to_wire(r: &SubjectAccessReport) -> pb::SubjectAccessReport {
    pb::SubjectAccessReport {
        report_id: r.report_id.clone(),
        case_id: r.case_id.clone(),
        generated_at: time(r.generated_at),
        viewer: viewer_to_wire(r.viewer),
        requested_by: r.requested_by.clone(),
        deferral: r.deferral.as_ref().map(|d| pb::ReportDeferral {
            in_force: d.in_force,
            statement: d.statement.clone(),
            since: d.since.and_then(time),
            ends_at: d.ends_at.and_then(time),
            marked_by_agency_id: d.marked_by.clone().unwrap_or_default(),
            entries_deferred: d.entries_deferred,
        }),
        entries: r.entries.iter().map(entry_to_wire).collect(),
    }
}

fn entry_to_wire(e: &ReportEntry) -> pb::ReportEntry {
    let entry = match &e.entry {
        Entry::Delivered {
            event,
            rule_set_version,
            recipient,
            classes,
            rule_ids,
            legal_bases,
            agreements,
            consent_ids,
            restricted_classes,
        } => PbEntry::Delivered(pb::ReportDelivered {
            event: event_to_wire(event),
            rule_set_version: rule_set_version.clone(),
            recipient_agency_id: recipient.clone(),
            classes: class_numbers(classes),
            rule_ids: rule_ids.clone(),
            legal_bases: legal_bases.clone(),
            agreements: agreements.clone(),
            consent_ids: consent_ids.clone(),
            restricted_classes: class_numbers(restricted_classes),
        }),
        Entry::Withheld {
            event,
            rule_set_version,
            recipient,
            rule_id,
            reason,
            explanation,
        } => PbEntry::Withheld(pb::ReportWithheld {
            event: event_to_wire(event),
            rule_set_version: rule_set_version.clone(),
            recipient_agency_id: recipient.clone().unwrap_or_default(),
            rule_id: rule_id.clone(),
            reason: reason.clone(),
            explanation: explanation.clone(),
        }),
        Entry::CaseChanged { event, change } => PbEntry::CaseChanged(pb::ReportCaseChange {
            event: event_to_wire(event),
            change: change.clone(),
        }),
        Entry::AlertAccess {
            action,
            alert_id,
            district,
            person,
            to,
            classes,
        } => PbEntry::AlertAccess(pb::ReportAlertAccess {
            action: action.clone(),
            alert_id: alert_id.clone(),
            district_agency_id: district.clone(),
            person_id: person.clone(),
            handed_to_person_id: to.clone().unwrap_or_default(),
            classes: class_numbers(classes),
        }),
        Entry::Reported {
            report_id,
            requested_by,
            viewer,
        } => PbEntry::Reported(pb::ReportGiven {
            report_id: report_id.clone(),
            requested_by: requested_by.clone(),
            viewer: viewer_to_wire(if viewer == Viewer::Administrator.as_str() {
                Viewer::Administrator
            } else {
                Viewer::Guardian
            }),
        }),
    };
    pb::ReportEntry {
        at: time(e.at),
        deferred: e.deferred,
        entry: Some(entry),
    }
}

/// The report as received (entries of a kind this build does not know are left out).
pub fn report_from_wire(r: &pb::SubjectAccessReport) -> SubjectAccessReport {
    SubjectAccessReport {
        report_id: r.report_id.clone(),
        case_id: r.case_id.clone(),
        generated_at: seconds(r.generated_at.as_ref()),
        viewer: if r.viewer == pb::ReportViewer::Administrator as i32 {
            Viewer::Administrator
        } else {
            Viewer::Guardian
        },
        requested_by: r.requested_by.clone(),
        deferral: r.deferral.as_ref().map(|d| DeferralNotice {
            in_force: d.in_force,
            statement: d.statement.clone(),
            since: d.since.as_ref().map(|t| t.seconds),
            ends_at: d.ends_at.as_ref().map(|t| t.seconds),
            marked_by: (!d.marked_by_agency_id.is_empty()).then(|| d.marked_by_agency_id.clone()),
            entries_deferred: d.entries_deferred,
        }),
        entries: r.entries.iter().filter_map(entry_from_wire).collect(),
    }
}

fn entry_from_wire(e: &pb::ReportEntry) -> Option<ReportEntry> {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let entry = match e.entry.as_ref()? {
        PbEntry::Delivered(d) => Entry::Delivered {
            event: event_from_wire(d.event.as_ref()),
            rule_set_version: d.rule_set_version.clone(),
            recipient: d.recipient_agency_id.clone(),
            classes: names(&d.classes),
            rule_ids: d.rule_ids.clone(),
            legal_bases: d.legal_bases.clone(),
            agreements: d.agreements.clone(),
            consent_ids: d.consent_ids.clone(),
            restricted_classes: names(&d.restricted_classes),
        },
        PbEntry::Withheld(w) => Entry::Withheld {
            event: event_from_wire(w.event.as_ref()),
            rule_set_version: w.rule_set_version.clone(),
            recipient: some(&w.recipient_agency_id),
            rule_id: w.rule_id.clone(),
            reason: w.reason.clone(),
            explanation: w.explanation.clone(),
        },
        PbEntry::CaseChanged(c) => Entry::CaseChanged {
            event: event_from_wire(c.event.as_ref()),
            change: c.change.clone(),
        },
        PbEntry::AlertAccess(a) => Entry::AlertAccess {
            action: a.action.clone(),
            alert_id: a.alert_id.clone(),
            district: a.district_agency_id.clone(),
            person: a.person_id.clone(),
            to: some(&a.handed_to_person_id),
            classes: names(&a.classes),
        },
        PbEntry::Reported(g) => Entry::Reported {
            report_id: g.report_id.clone(),
            requested_by: g.requested_by.clone(),
            viewer: viewer_name(g.viewer),
        },
    };
    Some(ReportEntry {
        at: seconds(e.at.as_ref()),
        deferred: e.deferred,
        entry,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_report_reads_back_as_sent() {
        let ev = EventRef {
            event_id: "e".into(),
            message_type: "child_missing".into(),
            sender: "kommune-101".into(),
        };
        let r = SubjectAccessReport {
            report_id: "r".into(),
            case_id: "c".into(),
            generated_at: 9,
            viewer: Viewer::Administrator,
            requested_by: "admin-1".into(),
            deferral: Some(DeferralNotice {
                in_force: true,
                statement: "s".into(),
                since: Some(1),
                ends_at: Some(2),
                marked_by: Some("politi-fyn".into()),
                entries_deferred: 3,
            }),
            entries: vec![
                ReportEntry {
                    at: 1,
                    deferred: true,
                    entry: Entry::Delivered {
                        event: ev.clone(),
                        rule_set_version: "v".into(),
                        recipient: "politi-fyn".into(),
                        classes: vec!["BASIC".into(), "LOCATION".into()],
                        rule_ids: vec!["r1".into()],
                        legal_bases: vec!["statutory: x".into()],
                        agreements: vec!["a".into()],
                        consent_ids: vec!["c1".into()],
                        restricted_classes: vec!["HEALTH".into()],
                    },
                },
                ReportEntry {
                    at: 2,
                    deferred: false,
                    entry: Entry::Withheld {
                        event: ev.clone(),
                        rule_set_version: "v".into(),
                        recipient: None,
                        rule_id: "r2".into(),
                        reason: "no_recipient".into(),
                        explanation: "x".into(),
                    },
                },
                ReportEntry {
                    at: 3,
                    deferred: false,
                    entry: Entry::CaseChanged {
                        event: ev,
                        change: "consent_recorded".into(),
                    },
                },
                ReportEntry {
                    at: 4,
                    deferred: true,
                    entry: Entry::AlertAccess {
                        action: "handed_over".into(),
                        alert_id: "a".into(),
                        district: "politi-fyn".into(),
                        person: "p1".into(),
                        to: Some("p2".into()),
                        classes: vec![],
                    },
                },
                ReportEntry {
                    at: 5,
                    deferred: false,
                    entry: Entry::Reported {
                        report_id: "r0".into(),
                        requested_by: "ngo-a".into(),
                        viewer: "guardian".into(),
                    },
                },
            ],
        };
        assert_eq!(report_from_wire(&report_to_wire(&r)), r);
    }
}
