//! The subject access report end to end: a case with deliveries, a withholding, a guardian
//! appointment and an alert a contact person claimed and read; then a police deferral
//! (§ 262 a) that keeps the police-side part from the guardian only, audited, and its lift.
//! The report is checked entry by entry against the audit records it is built from.

use henvis_domain::{Directory, Sector, report::DEFERRAL_STATEMENT};
use henvis_proto::henvis::{
    admin::v1::SubjectAccessReportRequest,
    broker::v1::{GetSubjectAccessReportRequest, ReportViewer, SubjectAccessReport, report_entry::Entry},
    events::v1::*,
    police::v1::{
        ClaimAlertRequest, FetchAlertDetailsRequest, ListAlertsRequest, alert_service_client::AlertServiceClient,
    },
};
use henvis_tests::{Client, Deployment, admin, wait_for};
use tonic::Code;

use crate::{
    LIMIT,
    policy::{appoint, ev, health_assessment, open_case},
    routed, submit,
};

fn investigation(status: InvestigationStatus) -> Event {
    ev(event::Kind::InvestigationUpdate(InvestigationUpdate {
        legal_provision: "straffeloven § 262 a".into(),
        status: status as i32,
        ..Default::default()
    }))
}

async fn guardian_report(c: &mut Client, case: &str) -> Result<SubjectAccessReport, tonic::Status> {
    let r = c.req(GetSubjectAccessReportRequest { case_id: case.into() });
    c.inner
        .get_subject_access_report(r)
        .await
        .map(tonic::Response::into_inner)
}

async fn admin_report(d: &Deployment, case: &str) -> SubjectAccessReport {
    d.admin_client(&admin("admin-1"))
        .await
        .unwrap()
        .subject_access_report(SubjectAccessReportRequest { case_id: case.into() })
        .await
        .unwrap()
        .into_inner()
}

/// An entry as one comparable line: what, about which event, to or by whom, classes and
/// grounds.
fn line(e: &henvis_proto::henvis::broker::v1::ReportEntry) -> String {
    match e.entry.as_ref().unwrap() {
        Entry::Delivered(x) => {
            let ev = x.event.as_ref().unwrap();
            format!(
                "delivered {} {} from {} to {} classes {:?} rules {:?} bases {:?} agreements {:?} consents {:?} set {}",
                ev.message_type,
                ev.event_id,
                ev.sender_agency_id,
                x.recipient_agency_id,
                x.classes,
                x.rule_ids,
                x.legal_bases,
                x.agreements,
                x.consent_ids,
                x.rule_set_version
            )
        }
        Entry::Withheld(x) => {
            let ev = x.event.as_ref().unwrap();
            format!(
                "withheld {} {} from {} to {} rule {} reason {} ({}) set {}",
                ev.message_type,
                ev.event_id,
                ev.sender_agency_id,
                x.recipient_agency_id,
                x.rule_id,
                x.reason,
                x.explanation,
                x.rule_set_version
            )
        }
        Entry::CaseChanged(x) => {
            let ev = x.event.as_ref().unwrap();
            format!(
                "changed {} {} by {}: {}",
                ev.message_type, ev.event_id, ev.sender_agency_id, x.change
            )
        }
        Entry::AlertAccess(x) => format!(
            "alert {} {} by {} of {} classes {:?}",
            x.action, x.alert_id, x.person_id, x.district_agency_id, x.classes
        ),
        Entry::Reported(x) => format!("reported {} to {}", x.report_id, x.requested_by),
    }
}

fn class_numbers(v: &serde_json::Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().parse::<henvis_domain::Class>().unwrap() as i32)
        .collect()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// What the audit says the account must hold, each entry as a [`line`] and whether it is
/// police-side (kept from the guardian during a deferral). Voided decisions left out.
fn expected(audit: &[(u64, serde_json::Value)], dir: &Directory) -> Vec<(String, bool)> {
    let police = |a: &str| {
        henvis_domain::AgencyId::parse(a)
            .ok()
            .and_then(|a| dir.agency(&a).map(|x| x.sector))
            == Some(Sector::Police)
    };
    let records: Vec<henvis_domain::AuditRecord> = audit
        .iter()
        .map(|(_, r)| serde_json::from_value(r.clone()).unwrap())
        .collect();
    let standing: Vec<String> = henvis_domain::standing_decisions(&records)
        .iter()
        .map(|d| format!("{}:{}:{}", d.event_id, d.case_revision, d.rule_set_version))
        .collect();
    let mut out = Vec::new();
    for (_, r) in audit {
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
        match r["kind"].as_str().unwrap() {
            "routing_decision" => {
                let key = format!("{}:{}:{}", s("event_id"), r["case_revision"], s("rule_set_version"));
                if !standing.contains(&key) {
                    continue;
                }
                let police_event = police(&s("sender")) || s("message_type") == "investigation_update";
                for x in r["delivered"].as_array().unwrap() {
                    out.push((
                        format!(
                            "delivered {} {} from {} to {} classes {:?} rules {:?} bases {:?} agreements {:?} consents {:?} set {}",
                            s("message_type"),
                            s("event_id"),
                            s("sender"),
                            x["agency"].as_str().unwrap(),
                            class_numbers(&x["classes"]),
                            strings(&x["rule_ids"]),
                            strings(&x["legal_bases"]),
                            strings(&x["agreements"]),
                            strings(&x["consent_ids"]),
                            s("rule_set_version")
                        ),
                        police_event || police(x["agency"].as_str().unwrap()),
                    ));
                }
                for x in r["withheld"].as_array().unwrap() {
                    let to = x["agency"].as_str().unwrap_or_default();
                    out.push((
                        format!(
                            "withheld {} {} from {} to {} rule {} reason {} ({}) set {}",
                            s("message_type"),
                            s("event_id"),
                            s("sender"),
                            to,
                            x["rule_id"].as_str().unwrap(),
                            x["reason"].as_str().unwrap(),
                            x["explanation"].as_str().unwrap(),
                            s("rule_set_version")
                        ),
                        police_event || police(to),
                    ));
                }
            }
            "case_change" => out.push((
                format!(
                    "changed {} {} by {}: {}",
                    s("message_type"),
                    s("event_id"),
                    s("by"),
                    s("change")
                ),
                police(&s("by")) || s("message_type") == "investigation_update",
            )),
            "alert_details_read" => out.push((
                format!(
                    "alert details_read {} by {} of {} classes {:?}",
                    s("alert_id"),
                    s("person"),
                    s("district"),
                    class_numbers(&r["classes"])
                ),
                true,
            )),
            "alert_claimed" => out.push((
                format!(
                    "alert claimed {} by {} of {} classes []",
                    s("alert_id"),
                    s("person"),
                    s("district")
                ),
                true,
            )),
            "subject_access_reported" => {
                out.push((format!("reported {} to {}", s("report_id"), s("requested_by")), false));
            }
            _ => {}
        }
    }
    out.sort();
    out
}

fn lines(r: &SubjectAccessReport) -> Vec<String> {
    let mut l: Vec<String> = r.entries.iter().map(line).collect();
    l.sort();
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subject_access_report_accounts_for_everything_and_a_police_deferral_holds_back_only_the_guardians_part() {
    let d = Deployment::start().await.unwrap();
    let dir = Directory::denmark().unwrap();
    let case = open_case(&d, "101").await;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let appointed = submit(&mut kbh, "appoint", &case, appoint("ngo-redbarnet"))
        .await
        .unwrap();
    routed(&mut kbh, &appointed.event_id).await;
    let mut guardian = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    // the health assessment reaches the municipality only with consent: withheld
    let mut region = d.client(Sector::Health, "region-hovedstaden").await.unwrap();
    let ha = submit(&mut region, "ha", &case, health_assessment()).await.unwrap();
    routed(&mut region, &ha.event_id).await;
    // a contact person claims the case's alert and opens its details
    let mut kp = AlertServiceClient::new(d.channel_as(Sector::Police, "politi-koebenhavn-kp1").await.unwrap());
    let alert = wait_for("the case's alert", LIMIT, || {
        let mut kp = kp.clone();
        let case = case.clone();
        async move {
            let alerts = kp.list_alerts(ListAlertsRequest {}).await.ok()?.into_inner().alerts;
            alerts.into_iter().find(|a| a.case_id == case)
        }
    })
    .await
    .unwrap();
    kp.claim_alert(ClaimAlertRequest {
        alert_id: alert.alert_id.clone(),
    })
    .await
    .unwrap();
    kp.fetch_alert_details(FetchAlertDetailsRequest {
        alert_id: alert.alert_id.clone(),
    })
    .await
    .unwrap();

    // 1. no deferral: the guardian's account is the whole audit of the case
    let before = guardian_report(&mut guardian, &case).await.unwrap();
    let audit = d.audit(&case).await.unwrap();
    let want = expected(&audit, &dir);
    let without_this: Vec<String> = lines(&before);
    let want_lines: Vec<String> = want
        .iter()
        .map(|(l, _)| l.clone())
        .filter(|l| !l.starts_with(&format!("reported {}", before.report_id)))
        .collect();
    assert_eq!(without_this, want_lines, "the guardian's account, entry by entry");
    assert_eq!(
        (
            before.viewer,
            before.requested_by.as_str(),
            before.case_id.as_str(),
            before.deferral.is_none()
        ),
        (ReportViewer::Guardian as i32, "ngo-redbarnet", case.as_str(), true)
    );
    let kinds = |r: &SubjectAccessReport, p: &dyn Fn(&str) -> bool| r.entries.iter().map(line).filter(|l| p(l)).count();
    assert!(
        kinds(&before, &|l| l.starts_with("withheld health_assessment_completed")
            && l.contains("reason no_consent"))
            >= 1
    );
    assert_eq!(kinds(&before, &|l| l.starts_with("alert claimed")), 1);
    assert_eq!(kinds(&before, &|l| l.starts_with("alert details_read")), 1);
    assert_eq!(kinds(&before, &|l| l.contains(": guardian_appointed")), 1);
    assert!(
        before.entries.iter().any(
            |e| matches!(&e.entry, Some(Entry::Delivered(x)) if !x.agreements.is_empty() && !x.legal_bases.is_empty())
        ),
        "deliveries name their legal bases and agreements"
    );
    // nobody but the guardian
    let e = guardian_report(&mut region, &case).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());

    // 2. the police mark the case as under investigation; only the police may
    let e = submit(
        &mut kbh,
        "not-police",
        &case,
        investigation(InvestigationStatus::Opened),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    let mut police = d.client(Sector::Police, "politi-koebenhavn").await.unwrap();
    let marked = submit(&mut police, "inv-1", &case, investigation(InvestigationStatus::Opened))
        .await
        .unwrap();
    routed(&mut police, &marked.event_id).await;

    let deferred = guardian_report(&mut guardian, &case).await.unwrap();
    let admin_view = admin_report(&d, &case).await;
    let audit = d.audit(&case).await.unwrap();
    let want = expected(&audit, &dir);
    let not_yet = |l: &String| !l.starts_with(&format!("reported {}", admin_view.report_id));
    // the guardian: every entry that is not police-side, and the statement, nothing more
    let guardian_want: Vec<String> = want
        .iter()
        .filter(|(l, police)| !police && not_yet(l) && !l.starts_with(&format!("reported {}", deferred.report_id)))
        .map(|(l, _)| l.clone())
        .collect();
    assert_eq!(
        lines(&deferred),
        guardian_want,
        "the deferred guardian's account, entry by entry"
    );
    let notice = deferred.deferral.clone().unwrap();
    assert_eq!(
        (
            notice.in_force,
            notice.statement.as_str(),
            notice.since.is_none(),
            notice.marked_by_agency_id.as_str(),
            notice.entries_deferred
        ),
        (true, DEFERRAL_STATEMENT, true, "", 0),
        "the guardian learns that a part is deferred, not how much, since when or by whom"
    );
    for e in &deferred.entries {
        let l = line(e);
        assert!(
            !l.contains("politi-") && !l.contains("investigation_update"),
            "police-side entry shown: {l}"
        );
    }
    // the administrator: everything, the police-side entries marked
    let admin_want: Vec<String> = want
        .iter()
        .filter(|(l, _)| not_yet(l))
        .map(|(l, _)| l.clone())
        .collect();
    assert_eq!(
        lines(&admin_view),
        admin_want,
        "the administrator's account, entry by entry"
    );
    let marked_lines: Vec<String> = {
        let mut m: Vec<String> = admin_view.entries.iter().filter(|e| e.deferred).map(line).collect();
        m.sort();
        m
    };
    let police_lines: Vec<String> = want
        .iter()
        .filter(|(l, p)| *p && not_yet(l))
        .map(|(l, _)| l.clone())
        .collect();
    assert_eq!(marked_lines, police_lines);
    let notice = admin_view.deferral.clone().unwrap();
    assert_eq!(
        (
            notice.in_force,
            notice.marked_by_agency_id.as_str(),
            notice.entries_deferred as usize
        ),
        (true, "politi-koebenhavn", police_lines.len())
    );
    assert!(notice.since.unwrap().seconds <= notice.ends_at.unwrap().seconds);
    // the deferral is audited: its mark, and each report given with how much it held back
    let given = |id: &str| {
        audit
            .iter()
            .find(|(_, r)| r["kind"] == "subject_access_reported" && r["report_id"] == id)
            .map(|(_, r)| r.clone())
            .unwrap()
    };
    let g = given(&deferred.report_id);
    assert_eq!(
        (
            g["viewer"].as_str(),
            g["requested_by"].as_str(),
            g["deferred_entries"].as_u64()
        ),
        (Some("guardian"), Some("ngo-redbarnet"), Some(police_lines.len() as u64))
    );
    assert_eq!(given(&before.report_id)["deferred_entries"], 0);
    assert!(audit.iter().any(|(_, r)| r["kind"] == "case_change"
        && r["change"] == "subject_access_deferred"
        && r["by"] == "politi-koebenhavn"
        && r["event_id"] == marked.event_id));

    // 3. the police lift it when the investigation closes: the guardian sees everything
    let closed = submit(&mut police, "inv-2", &case, investigation(InvestigationStatus::Closed))
        .await
        .unwrap();
    routed(&mut police, &closed.event_id).await;
    let after = guardian_report(&mut guardian, &case).await.unwrap();
    assert!(after.deferral.is_none());
    let want = expected(&d.audit(&case).await.unwrap(), &dir);
    let want_lines: Vec<String> = want
        .iter()
        .map(|(l, _)| l.clone())
        .filter(|l| !l.starts_with(&format!("reported {}", after.report_id)))
        .collect();
    assert_eq!(lines(&after), want_lines);
    assert!(
        lines(&after)
            .iter()
            .any(|l| l.starts_with("delivered investigation_update") || l.contains("investigation_update"))
    );
    println!(
        "subject access: {} entries before the deferral; deferred: guardian {} entries + statement, administrator {} ({} marked); lifted: guardian {}",
        before.entries.len(),
        deferred.entries.len(),
        admin_view.entries.len(),
        police_lines.len(),
        after.entries.len()
    );
}
