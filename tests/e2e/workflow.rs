//! The seed's workflow steps the broker used to get wrong: agencies an event names receive
//! it, only the requested body changes the child/adult presumption, alerts are closed and
//! reopened, and status shows a later answer.

use henvis_domain::Sector;
use henvis_proto::henvis::{
    broker::v1::{DeliveryState, GetStatusResponse},
    events::v1::*,
    police::v1::{
        AlertOutcome, AlertState, AlertsRequest, ClaimAlertRequest, CloseAlertRequest, ListAlertsRequest,
        ReopenAlertRequest, alert_service_client::AlertServiceClient, alert_update,
    },
};
use henvis_tests::{Client, Deployment, wait_for};
use tonic::Code;

use crate::{
    Inbox, LIMIT,
    policy::{appoint, case_with_guardian, ev, open_case, ts},
    routed, submit,
};

fn state_of(s: &GetStatusResponse, agency: &str) -> Option<(i32, String)> {
    s.recipients
        .iter()
        .find(|r| r.recipient_agency_id == agency)
        .map(|r| (r.state, r.rule_id.clone()))
}

/// Routed, and `agency` is among the recipients stored by route `rule`.
async fn reaches(c: &mut Client, event_id: &str, agency: &str, rule: &str) {
    let s = routed(c, event_id).await;
    assert_eq!(
        state_of(&s, agency),
        Some((DeliveryState::Stored as i32, rule.to_owned())),
        "{agency} by {rule}: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agencies_an_event_names_receive_it_with_their_routes_classes() {
    let d = Deployment::start().await.unwrap();
    let (case, mut kbh) = case_with_guardian(&d, "ngo-redbarnet").await;
    let mut guardian = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();

    // the body asked to assess the child's age
    let req = ev(event::Kind::AgeAssessmentRequested(AgeAssessmentRequested {
        reason: "age in doubt".into(),
        assessor_agency_id: "region-sjaelland".into(),
        ..Default::default()
    }));
    let r = submit(&mut kbh, "aar", &case, req).await.unwrap();
    reaches(&mut kbh, &r.event_id, "region-sjaelland", "aar-assessor").await;
    // the agencies responsible for the plan's measures
    let plan = ev(event::Kind::ActionPlanUpdated(ActionPlanUpdated {
        plan_version: 1,
        measures: vec![
            Measure {
                description: "schooling".into(),
                responsible_agency_id: "ngo-hopenow".into(),
                due_at: ts(3600),
            },
            Measure {
                description: "therapy".into(),
                responsible_agency_id: "region-hovedstaden".into(),
                due_at: ts(3600),
            },
        ],
        ..Default::default()
    }));
    let r = submit(&mut guardian, "plan", &case, plan).await.unwrap();
    reaches(&mut guardian, &r.event_id, "ngo-hopenow", "apu-responsible").await;
    reaches(&mut guardian, &r.event_id, "region-hovedstaden", "apu-responsible").await;
    // the place that takes the child in, with where
    let placed = ev(event::Kind::PlacementDecided(PlacementDecided {
        placement_kind: PlacementKind::TraffickingShelter as i32,
        facility_agency_id: "ngo-reden-international".into(),
        facility_location: Some(Location {
            description: "the shelter".into(),
            ..Default::default()
        }),
        starts_at: ts(3600),
        ..Default::default()
    }));
    let r = submit(&mut guardian, "placed", &case, placed).await.unwrap();
    reaches(&mut guardian, &r.event_id, "ngo-reden-international", "pd-facility").await;
    let mut shelter = d.client(Sector::Ngo, "ngo-reden-international").await.unwrap();
    let delivery = Inbox::open(&mut shelter).await.next_delivery().await;
    let env = delivery.envelope.unwrap();
    assert_eq!(env.event_id, r.event_id);
    let Some(event::Kind::PlacementDecided(p)) = env.event.unwrap().kind else {
        panic!("the placement")
    };
    assert_eq!(
        p.facility_location.unwrap().description,
        "the shelter",
        "LOCATION granted"
    );
    // the escort of a return, once the guardian confirmed a reception
    let assessed = ev(event::Kind::ReturnAssessed(ReturnAssessed {
        responsible_reception_confirmed: true,
        country_code: "RO".into(),
        escort_needed: true,
        ..Default::default()
    }));
    let r = submit(&mut guardian, "assessed", &case, assessed).await.unwrap();
    routed(&mut guardian, &r.event_id).await;
    let carried = ev(event::Kind::ReturnCarriedOut(ReturnCarriedOut {
        country_code: "RO".into(),
        departed_at: ts(-60),
        escort_agency_id: "politi-nordsjaelland".into(),
        ..Default::default()
    }));
    let r = submit(&mut guardian, "carried", &case, carried).await.unwrap();
    reaches(&mut guardian, &r.event_id, "politi-nordsjaelland", "rco-escort").await;
    println!(
        "named recipients: assessor, two measure owners, the placement facility (with LOCATION) and the return escort each received their event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_body_asked_to_assess_a_childs_age_may_change_the_presumption() {
    let d = Deployment::start().await.unwrap();
    let (case, mut kbh) = case_with_guardian(&d, "ngo-redbarnet").await;
    let completed = |outcome: AgeAssessmentOutcome| {
        ev(event::Kind::AgeAssessmentCompleted(AgeAssessmentCompleted {
            outcome: outcome as i32,
            completed_at: ts(-60),
            ..Default::default()
        }))
    };
    // the case's own region, before anything was requested
    let mut hovedstaden = d.client(Sector::Health, "region-hovedstaden").await.unwrap();
    let e = submit(&mut hovedstaden, "early", &case, completed(AgeAssessmentOutcome::Adult))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(e.message().contains("age_assessment_requested"), "{}", e.message());
    // requested from another region: the case's region still may not conclude it
    let req = ev(event::Kind::AgeAssessmentRequested(AgeAssessmentRequested {
        reason: "age in doubt".into(),
        assessor_agency_id: "region-sjaelland".into(),
        ..Default::default()
    }));
    let r = submit(&mut kbh, "aar", &case, req).await.unwrap();
    routed(&mut kbh, &r.event_id).await;
    let e = submit(
        &mut hovedstaden,
        "not-asked",
        &case,
        completed(AgeAssessmentOutcome::Adult),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    // the child-only route still applies
    let health = || {
        ev(event::Kind::HealthAssessmentCompleted(HealthAssessmentCompleted {
            findings: "f".into(),
            assessed_at: ts(0),
            ..Default::default()
        }))
    };
    let h = submit(&mut hovedstaden, "ha-1", &case, health()).await.unwrap();
    let before = routed(&mut hovedstaden, &h.event_id).await;
    assert!(state_of(&before, "ngo-redbarnet").is_some(), "{before:?}");
    // the body asked concludes: an adult; child-only routes stop
    let mut sjaelland = d.client(Sector::Health, "region-sjaelland").await.unwrap();
    let c = submit(
        &mut sjaelland,
        "concluded",
        &case,
        completed(AgeAssessmentOutcome::Adult),
    )
    .await
    .unwrap();
    routed(&mut sjaelland, &c.event_id).await;
    let h = submit(&mut hovedstaden, "ha-2", &case, health()).await.unwrap();
    let after = routed(&mut hovedstaden, &h.event_id).await;
    assert!(
        after
            .recipients
            .iter()
            .all(|r| r.recipient_agency_id != "ngo-redbarnet" || r.state == DeliveryState::Withheld as i32),
        "{after:?}"
    );
    println!(
        "age presumption: refused before a request (FAILED_PRECONDITION) and from a body not asked (PERMISSION_DENIED); the body asked concluded and the child-only route stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_person_closes_an_alert_with_its_outcome_and_it_can_be_reopened() {
    let d = Deployment::start().await.unwrap();
    let case = open_case(&d, "101").await;
    let kp = |id: &'static str| {
        let d = &d;
        async move { AlertServiceClient::new(d.channel_as(Sector::Police, id).await.unwrap()) }
    };
    let (mut kp1, mut kp2) = (kp("politi-koebenhavn-kp1").await, kp("politi-koebenhavn-kp2").await);
    let mut feed = kp2
        .alerts(AlertsRequest { resume_after: 0 })
        .await
        .unwrap()
        .into_inner();
    let alert = wait_for("the case's alert", LIMIT, || {
        let mut kp1 = kp1.clone();
        let case = case.clone();
        async move {
            let alerts = kp1.list_alerts(ListAlertsRequest {}).await.ok()?.into_inner().alerts;
            alerts.into_iter().find(|a| a.case_id == case)
        }
    })
    .await
    .unwrap();
    let id = alert.alert_id.clone();
    let close = |outcome: AlertOutcome| CloseAlertRequest {
        alert_id: id.clone(),
        outcome: outcome as i32,
    };
    // only the one holding it closes it, and only with an outcome
    assert_eq!(
        kp1.close_alert(close(AlertOutcome::ChildSafe))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    kp1.claim_alert(ClaimAlertRequest { alert_id: id.clone() })
        .await
        .unwrap();
    assert_eq!(
        kp2.close_alert(close(AlertOutcome::ChildSafe))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let e = kp1.close_alert(close(AlertOutcome::Unspecified)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("outcome"), "{}", e.message());
    let closed = kp1
        .close_alert(close(AlertOutcome::ChildSafe))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (closed.state, closed.outcome, closed.claimed_by.as_str()),
        (
            AlertState::Closed as i32,
            AlertOutcome::ChildSafe as i32,
            "politi-koebenhavn-kp1"
        )
    );
    // seen in the feed, gone from the list of alerts to act on
    let seen = |state: AlertState| {
        let id = id.clone();
        move |u: &henvis_proto::henvis::police::v1::AlertUpdate| matches!(&u.kind, Some(alert_update::Kind::Alert(a)) if a.alert_id == id && a.state == state as i32)
    };
    let mut until = async |f: &dyn Fn(&henvis_proto::henvis::police::v1::AlertUpdate) -> bool| loop {
        let u = tokio::time::timeout(LIMIT, feed.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if f(&u) {
            break;
        }
    };
    until(&seen(AlertState::Closed)).await;
    let open: Vec<String> = kp2
        .list_alerts(ListAlertsRequest {})
        .await
        .unwrap()
        .into_inner()
        .alerts
        .into_iter()
        .map(|a| a.alert_id)
        .collect();
    assert!(!open.contains(&id), "a closed alert is not listed");
    // another contact person reopens it
    let reopened = kp2
        .reopen_alert(ReopenAlertRequest { alert_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reopened.state, AlertState::Open as i32);
    until(&seen(AlertState::Open)).await;
    assert_eq!(
        kp2.reopen_alert(ReopenAlertRequest { alert_id: id.clone() })
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition,
        "only a closed alert reopens"
    );
    // both steps in the case's audit, and in the alert's history
    let audit = d.audit(&case).await.unwrap();
    let steps: Vec<(String, String)> = audit
        .iter()
        .filter(|(_, r)| r["alert_id"] == id.as_str())
        .map(|(_, r)| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("alert_claimed".to_owned(), String::new()),
            ("alert_closed".to_owned(), "child_safe".to_owned()),
            ("alert_reopened".to_owned(), String::new())
        ]
    );
    let comp = crate::delivery::audit_complete(&d, "closing and reopening an alert").await;
    assert_eq!(comp.alert_steps, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_sees_an_answer_given_after_another() {
    let d = Deployment::start().await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let report = ev(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
        municipality_code: "101".into(),
        observed_at: ts(0),
        ..Default::default()
    }));
    let r = submit(&mut ngo, "open", "", report).await.unwrap();
    routed(&mut ngo, &r.event_id).await;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let answer = |outcome: ReferralOutcome| {
        ev(event::Kind::ReferralResponse(ReferralResponse {
            in_response_to_event_id: r.event_id.clone(),
            outcome: outcome as i32,
            reason: String::new(),
        }))
    };
    let state = async |ngo: &mut Client, want: DeliveryState| {
        wait_for("the sender's status", LIMIT, || {
            let mut inner = ngo.inner.clone();
            let req = ngo.req(henvis_proto::henvis::broker::v1::GetStatusRequest {
                event_id: r.event_id.clone(),
            });
            async move {
                let s = inner.get_status(req).await.ok()?.into_inner();
                (state_of(&s, "kommune-101")?.0 == want as i32).then_some(())
            }
        })
        .await
        .unwrap();
    };
    let declined = submit(&mut kbh, "declined", &r.case_id, answer(ReferralOutcome::Declined))
        .await
        .unwrap();
    routed(&mut kbh, &declined.event_id).await;
    state(&mut ngo, DeliveryState::Declined).await;
    let accepted = submit(&mut kbh, "accepted", &r.case_id, answer(ReferralOutcome::Accepted))
        .await
        .unwrap();
    routed(&mut kbh, &accepted.event_id).await;
    state(&mut ngo, DeliveryState::Accepted).await;
    println!("status: DECLINED, then ACCEPTED shows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_that_cannot_load_the_live_set_routes_with_the_last_approved_one() {
    let d = Deployment::start().await.unwrap();
    let version =
        |v: &str| henvis_router::DEFAULT_RULES.replacen("version = \"2026-11-28.1\"", &format!("version = \"{v}\""), 1);
    d.put_live("one.toml", &version("approved-1")).await.unwrap();
    d.put_live("two.toml", &version("approved-2")).await.unwrap();
    // the live set becomes one a starting router cannot load (as a directory change can
    // make it): it routes with the newest approved set that loads, not the shipped file
    let bus = henvis_bus::Bus::connect(
        &d.nats.url(),
        "inspector",
        Some(&henvis_bus::NatsIdentity::of(d.pki_dir(), &henvis_tests::inspector())),
    )
    .await
    .unwrap();
    bus.put_rules(&version("approved-2").replace("[[message.route]]", "[[message.rout]]"))
        .await
        .unwrap();
    let router = henvis_router::build(&d.router_config(1)).await.unwrap();
    assert_eq!(router.rule_set_version(), "approved-2");
    println!(
        "fallback: a starting router refused the live text and routes with approved-2, the newest approved set that loads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_guardianship_ends_the_guardians_rights_and_closing_a_case_ends_its_routing() {
    let d = Deployment::start().await.unwrap();
    let (case, mut kbh) = case_with_guardian(&d, "ngo-redbarnet").await;
    let mut guardian = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let ended = ev(event::Kind::GuardianshipEnded(GuardianshipEnded {
        reason: GuardianshipEndReason::Replaced as i32,
        ended_at: ts(-60),
    }));
    let e = submit(&mut guardian, "self-end", &case, ended.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    // the municipality ends it; the former guardian is told, and loses the guardian's rights
    let r = submit(&mut kbh, "end", &case, ended.clone()).await.unwrap();
    reaches(&mut kbh, &r.event_id, "ngo-redbarnet", "ge-participants").await;
    let report = guardian
        .inner
        .get_subject_access_report(
            guardian.req(henvis_proto::henvis::broker::v1::GetSubjectAccessReportRequest { case_id: case.clone() }),
        )
        .await
        .unwrap_err();
    assert_eq!(report.code(), Code::PermissionDenied);
    let consent = ev(event::Kind::ConsentRecorded(ConsentRecorded {
        consent_id: "c1".into(),
        recipient_agency_ids: vec!["kommune-101".into()],
        valid_from: ts(-3600),
        valid_until: ts(3600),
        ..Default::default()
    }));
    let e = submit(&mut guardian, "late-consent", &case, consent).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    let e = submit(&mut kbh, "end-again", &case, ended).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "no guardian to end: {}",
        e.message()
    );
    // a new guardian is appointed and then the case is closed, by the guardian or the
    // municipality only
    let a = submit(&mut kbh, "appoint-2", &case, appoint("ngo-hopenow"))
        .await
        .unwrap();
    routed(&mut kbh, &a.event_id).await;
    let close = ev(event::Kind::CaseClosed(CaseClosed {
        reason: CaseClosureReason::ChildSafe as i32,
        closed_at: ts(-60),
    }));
    let mut former = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let e = submit(&mut former, "close-former", &case, close.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    let mut new_guardian = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let before = d.stream_messages("IN").await.unwrap();
    let c = submit(&mut new_guardian, "close", &case, close).await.unwrap();
    reaches(&mut new_guardian, &c.event_id, "kommune-101", "cc-participants").await;
    // nothing more is routed in it
    let mut region = d.client(Sector::Health, "region-hovedstaden").await.unwrap();
    let health = ev(event::Kind::HealthAssessmentCompleted(HealthAssessmentCompleted {
        findings: "f".into(),
        assessed_at: ts(0),
        ..Default::default()
    }));
    let e = submit(&mut region, "after-close", &case, health).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("closed"), "{}", e.message());
    assert_eq!(
        d.stream_messages("IN").await.unwrap(),
        before + 1,
        "only the closure stored"
    );
    let audit = d.audit(&case).await.unwrap();
    for change in ["guardianship_ended", "case_closed"] {
        assert!(
            audit
                .iter()
                .any(|(_, r)| r["kind"] == "case_change" && r["change"] == change),
            "{change} audited"
        );
    }
    // its open alert (the opening report's, for København's police) ended with it
    let closed_alert = audit
        .iter()
        .find(|(_, r)| r["kind"] == "alert_closed")
        .map(|(_, r)| r.clone())
        .unwrap();
    assert_eq!(
        (closed_alert["person"].as_str(), closed_alert["outcome"].as_str()),
        (Some("henvis"), Some("case_closed"))
    );
    let mut kp = AlertServiceClient::new(d.channel_as(Sector::Police, "politi-koebenhavn-kp1").await.unwrap());
    let listed = kp.list_alerts(ListAlertsRequest {}).await.unwrap().into_inner().alerts;
    assert!(
        listed.iter().all(|a| a.case_id != case),
        "a closed case's alert is not listed"
    );
    let comp = crate::delivery::audit_complete(&d, "closing a case").await;
    assert_eq!(comp.alert_steps, 1);
    println!(
        "guardianship ended by the municipality only; the former guardian told and without rights; the case closed by its guardian; later events refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_delivers_only_to_parties_of_its_agreement() {
    let d = Deployment::start().await.unwrap();
    let admin1 = d.admin_client(&henvis_tests::admin("admin-1")).await.unwrap();
    // the default set without its own tests (they expect every NGO to be a party)
    let base = henvis_router::DEFAULT_RULES.replacen("version = \"2026-11-28.1\"", "version = \"parties-1\"", 1);
    let base = base[..base.find("\n[[test]]").unwrap()].to_owned();
    // a route to the police district under an agreement the police never signed: refused
    let unsigned = base.replacen(
        "parties = { sectors = [\"police\", \"health\", \"social\", \"ngo\"] }",
        "parties = { sectors = [\"health\", \"social\", \"ngo\"] }",
        1,
    );
    let e = admin1
        .clone()
        .propose_rule_set(henvis_proto::henvis::admin::v1::ProposeRuleSetRequest {
            file: "unsigned.toml".into(),
            text: unsigned,
            note: "police dropped from the agreement".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("can ever be a party"), "{}", e.message());
    // an agreement only the police, the municipalities and one NGO signed: a guardian from
    // another NGO is not a party, and is withheld as such
    let one_ngo = base.replacen(
        "parties = { sectors = [\"police\", \"health\", \"social\", \"ngo\"] }",
        "parties = { sectors = [\"police\", \"health\", \"social\"], agencies = [\"ngo-hopenow\"] }",
        1,
    );
    d.put_live("one-ngo.toml", &one_ngo).await.unwrap();
    let (case, mut kbh) = case_with_guardian(&d, "ngo-redbarnet").await;
    let missing = ev(event::Kind::ChildMissing(ChildMissing {
        last_seen_at: ts(-600),
        risk: MissingRisk::High as i32,
        ..Default::default()
    }));
    let r = submit(&mut kbh, "missing", &case, missing).await.unwrap();
    let s = routed(&mut kbh, &r.event_id).await;
    // the sender learns only that the guardian's route was withheld by policy
    assert!(
        s.recipients
            .iter()
            .any(|r| r.rule_id == "cm-guardian" && r.state == DeliveryState::Withheld as i32),
        "{s:?}"
    );
    assert_eq!(
        state_of(&s, "politi-koebenhavn").map(|(state, _)| state),
        Some(DeliveryState::Stored as i32),
        "{s:?}"
    );
    let audit = d.audit(&case).await.unwrap();
    let decision = audit
        .iter()
        .find(|(_, x)| x["kind"] == "routing_decision" && x["event_id"] == r.event_id.as_str())
        .unwrap()
        .1
        .clone();
    assert_eq!(decision["rule_set_version"], "parties-1");
    assert!(
        decision["withheld"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["agency"] == "ngo-redbarnet" && w["reason"] == "not_a_party"),
        "{decision}"
    );
    println!(
        "agreement parties: a route to non-signatories refused at proposal; a guardian outside the parties withheld as not_a_party"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_cases_data_is_erased_after_its_retention_and_the_audit_still_verifies() {
    let d = Deployment::start_with(henvis_tests::Options {
        closed_case_retention_secs: 2,
        ..henvis_tests::Options::default()
    })
    .await
    .unwrap();
    let case = open_case(&d, "101").await;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let close = ev(event::Kind::CaseClosed(CaseClosed {
        reason: CaseClosureReason::ChildSafe as i32,
        closed_at: ts(-60),
    }));
    let bus = henvis_bus::Bus::connect(
        &d.nats.url(),
        "inspector",
        Some(&henvis_bus::NatsIdentity::of(d.pki_dir(), &henvis_tests::inspector())),
    )
    .await
    .unwrap();
    let id = henvis_domain::CaseId::parse(&case).unwrap();
    let alerts_of_case = || async {
        bus.stored_alerts()
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.case_id == case)
            .count()
    };
    wait_for("the case's alert", LIMIT, || async {
        (alerts_of_case().await == 1).then_some(())
    })
    .await
    .unwrap();
    let c = submit(&mut kbh, "close", &case, close).await.unwrap();
    routed(&mut kbh, &c.event_id).await;
    // the retention after closure passes: record, alert and alert details are gone
    wait_for("the closed case erased", LIMIT * 2, || async {
        (bus.case(&id).await.ok()?.is_none() && alerts_of_case().await == 0).then_some(())
    })
    .await
    .unwrap();
    let audit = d.audit(&case).await.unwrap();
    let erased: Vec<&serde_json::Value> = audit
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r["kind"] == "case_data_erased")
        .collect();
    assert_eq!(erased.len(), 1, "audited once, however many routers swept");
    assert_eq!(
        (erased[0]["alerts"].as_u64(), erased[0]["closed_by_event"].as_str()),
        (Some(1), Some(c.event_id.as_str()))
    );
    // nothing of the case is left to add to; the audit (ids only) still verifies
    let e = submit(&mut kbh, "after-erase", &case, appoint("ngo-redbarnet"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let comp = crate::delivery::audit_complete(&d, "erasing a closed case").await;
    println!(
        "retention: a closed case's record, alert and details erased after 2 s, audited; the audit verifies ({} events decided)",
        comp.events_decided
    );
}

/// The cases `agency` is guardian of, as ListGuardianCases answers it.
async fn guardian_cases(d: &Deployment, agency: &str) -> Vec<String> {
    use henvis_proto::henvis::broker::v1::ListGuardianCasesRequest;
    let mut c = d.client(Sector::Ngo, agency).await.unwrap();
    let r = c.req(ListGuardianCasesRequest {});
    c.inner
        .list_guardian_cases(r)
        .await
        .unwrap()
        .into_inner()
        .cases
        .into_iter()
        .map(|c| c.case_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guardian_lists_exactly_its_cases_and_a_starting_router_notes_the_guardians_of_older_cases() {
    let d = Deployment::start().await.unwrap();
    let (mine, _kbh) = crate::policy::case_with_guardian(&d, "ngo-redbarnet").await;
    let theirs = crate::policy::open_case(&d, "101").await;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let a = submit(
        &mut kbh,
        "appoint-hopenow",
        &theirs,
        crate::policy::appoint("ngo-hopenow"),
    )
    .await
    .unwrap();
    routed(&mut kbh, &a.event_id).await;
    assert_eq!(guardian_cases(&d, "ngo-redbarnet").await, vec![mine.clone()]);
    assert_eq!(guardian_cases(&d, "ngo-hopenow").await, vec![theirs.clone()]);
    assert!(guardian_cases(&d, "ngo-reden-international").await.is_empty());

    // a store from before the list existed: no index entries, no mark that they were made
    let nats = henvis_tests::connect_as(&d.nats.url(), d.pki_dir(), &henvis_tests::inspector())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nats);
    let linkage = js.get_stream("KV_henvis_linkage").await.unwrap();
    for filter in ["$KV.henvis_linkage.guardian.>", "$KV.henvis_linkage.index.>"] {
        linkage.purge().filter(filter).await.unwrap();
    }
    assert!(guardian_cases(&d, "ngo-redbarnet").await.is_empty());
    // a router starting notes every case's guardian once
    let _router = henvis_tests::RouterProcess::spawn(&d.nats.url(), 600, d.pki_dir()).unwrap();
    let listed = wait_for("the older case in its guardian's list", LIMIT, || async {
        let l = guardian_cases(&d, "ngo-redbarnet").await;
        (!l.is_empty()).then_some(l)
    })
    .await
    .unwrap();
    assert_eq!(listed, vec![mine]);
    assert_eq!(guardian_cases(&d, "ngo-hopenow").await, vec![theirs]);
}
