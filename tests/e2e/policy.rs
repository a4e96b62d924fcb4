//! The policy end to end: workflow guards at submit, consent recorded and withdrawn by the
//! guardian, the withdrawal racing in-flight referrals, and rule sets published live.

use std::{collections::HashSet, time::SystemTime};

use henvis_domain::Sector;
use henvis_proto::henvis::{broker::v1::DeliveryState, events::v1::*};
use henvis_tests::{Client, Deployment, wait_for};
use tonic::Code;

use crate::{LIMIT, routed, submit};

pub(crate) fn ts(offset_secs: i64) -> Option<prost_types::Timestamp> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Some(prost_types::Timestamp {
        seconds: now + offset_secs,
        nanos: 0,
    })
}

pub(crate) fn ev(kind: event::Kind) -> Event {
    Event { kind: Some(kind) }
}

pub(crate) async fn open_case(d: &Deployment, municipality: &str) -> String {
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let report = ev(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
        municipality_code: municipality.into(),
        observed_at: ts(0),
        ..Default::default()
    }));
    submit(&mut ngo, &format!("open-{}", uuid::Uuid::new_v4()), "", report)
        .await
        .unwrap()
        .case_id
}

/// A case in København with `guardian` appointed by the municipality, and the
/// municipality's client.
pub(crate) async fn case_with_guardian(d: &Deployment, guardian: &str) -> (String, Client) {
    let case = open_case(d, "101").await;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let a = submit(&mut kbh, "appoint", &case, appoint(guardian)).await.unwrap();
    routed(&mut kbh, &a.event_id).await;
    (case, kbh)
}

pub(crate) fn appoint(guardian: &str) -> Event {
    ev(event::Kind::GuardianAppointed(GuardianAppointed {
        guardian_agency_id: guardian.into(),
        guardian_kind: GuardianKind::NgoSocialWorker as i32,
        guardian_contact: String::new(),
        appointed_at: ts(0),
    }))
}

fn plan() -> Event {
    ev(event::Kind::ActionPlanUpdated(ActionPlanUpdated {
        plan_version: 1,
        ..Default::default()
    }))
}

pub(crate) fn health_assessment() -> Event {
    ev(event::Kind::HealthAssessmentCompleted(HealthAssessmentCompleted {
        findings: "f".into(),
        assessed_at: ts(0),
        ..Default::default()
    }))
}

fn consent(id: &str, agency: &str) -> Event {
    ev(event::Kind::ConsentRecorded(ConsentRecorded {
        consent_id: id.into(),
        recipient_agency_ids: vec![agency.into()],
        valid_from: ts(-3600),
        valid_until: ts(365 * 24 * 3600),
        ..Default::default()
    }))
}

fn withdraw(id: &str) -> Event {
    ev(event::Kind::ConsentWithdrawn(ConsentWithdrawn {
        consent_id: id.into(),
        reason: String::new(),
    }))
}

async fn state_for(c: &mut Client, event_id: &str, agency: &str) -> Option<i32> {
    let s = routed(c, event_id).await;
    s.recipients
        .iter()
        .find(|r| r.recipient_agency_id == agency)
        .map(|r| r.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_guards_refuse_out_of_order_steps_and_nothing_is_routed() {
    let d = Deployment::start().await.unwrap();
    let case = open_case(&d, "101").await;
    let before = d.stream_messages("IN").await.unwrap();
    let mut guardian = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let mut other_ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let mut frb = d.client(Sector::Social, "kommune-147").await.unwrap();

    // the case's municipality may add to the case, but a plan comes from a guardian
    let e = submit(&mut kbh, "plan-early", &case, plan()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(
        e.message().contains("guardian_appointed"),
        "names the missing step: {}",
        e.message()
    );
    // agencies that take no part in the case learn nothing, not even that it exists
    let unknown = "0196f3a0-7b5c-7cc0-8000-000000000001";
    let e_unknown = submit(&mut guardian, "plan-unknown", unknown, plan())
        .await
        .unwrap_err();
    for (key, who, event) in [
        ("plan-outsider", &mut guardian, plan()),
        ("appoint-wrong", &mut frb, appoint("ngo-redbarnet")),
    ] {
        let e = submit(who, key, &case, event).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{}", e.message());
        assert_eq!(
            e.message().replace(&case, "ID"),
            e_unknown.message().replace(unknown, "ID"),
            "answered exactly like an unknown case"
        );
    }
    let e = submit(
        &mut kbh,
        "return-early",
        &case,
        ev(event::Kind::ReturnCarriedOut(ReturnCarriedOut {
            country_code: "RO".into(),
            departed_at: ts(-60),
            ..Default::default()
        })),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("responsible reception"), "{}", e.message());
    assert_eq!(
        d.stream_messages("IN").await.unwrap(),
        before,
        "nothing refused was stored"
    );

    submit(&mut kbh, "appoint", &case, appoint("ngo-redbarnet"))
        .await
        .unwrap();
    let e = submit(&mut other_ngo, "plan-not-guardian", &case, plan())
        .await
        .unwrap_err();
    // the NGO that opened the case takes part in it, and is refused without being told
    // who the guardian is; so is the case's municipality
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(!e.message().contains("ngo-redbarnet"), "{}", e.message());
    let e = submit(&mut kbh, "plan-not-guardian-2", &case, plan())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(!e.message().contains("ngo-redbarnet"), "{}", e.message());
    submit(&mut guardian, "plan", &case, plan()).await.unwrap();
    let assess = ev(event::Kind::ReturnAssessed(ReturnAssessed {
        responsible_reception_confirmed: true,
        country_code: "RO".into(),
        ..Default::default()
    }));
    submit(&mut guardian, "assess", &case, assess).await.unwrap();
    let carried = ev(event::Kind::ReturnCarriedOut(ReturnCarriedOut {
        country_code: "RO".into(),
        departed_at: ts(-60),
        ..Default::default()
    }));
    submit(&mut kbh, "return", &case, carried).await.unwrap();
    assert_eq!(d.stream_messages("IN").await.unwrap(), before + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_from_the_guardian_opens_a_consent_route_and_its_withdrawal_closes_it() {
    let d = Deployment::start().await.unwrap();
    let case = open_case(&d, "101").await;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    submit(&mut kbh, "appoint", &case, appoint("ngo-redbarnet"))
        .await
        .unwrap();
    let mut guardian = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let mut region = d.client(Sector::Health, "region-hovedstaden").await.unwrap();

    let first = submit(&mut region, "ha-1", &case, health_assessment()).await.unwrap();
    assert_eq!(
        state_for(&mut region, &first.event_id, "kommune-101").await,
        None,
        "no consent: not named to the sender"
    );
    // consent may only come from the guardian
    let e = submit(&mut kbh, "consent-not-guardian", &case, consent("c1", "kommune-101"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    submit(&mut guardian, "consent", &case, consent("c1", "kommune-101"))
        .await
        .unwrap();
    let second = submit(&mut region, "ha-2", &case, health_assessment()).await.unwrap();
    assert_eq!(
        state_for(&mut region, &second.event_id, "kommune-101").await,
        Some(DeliveryState::Stored as i32)
    );
    submit(&mut guardian, "withdraw", &case, withdraw("c1")).await.unwrap();
    let third = submit(&mut region, "ha-3", &case, health_assessment()).await.unwrap();
    assert_eq!(state_for(&mut region, &third.event_id, "kommune-101").await, None);

    // the guardian sees why through its own system; nobody else may ask
    let req = henvis_proto::henvis::broker::v1::GetCaseDecisionsRequest { case_id: case.clone() };
    let r = guardian.req(req.clone());
    let view = guardian.inner.get_case_decisions(r).await.unwrap().into_inner();
    let last = view.decisions.iter().find(|x| x.event_id == third.event_id).unwrap();
    assert!(
        last.withheld
            .iter()
            .any(|w| w.rule_id == "hac-municipality" && w.reason == "consent_withdrawn"),
        "{last:?}"
    );
    let middle = view.decisions.iter().find(|x| x.event_id == second.event_id).unwrap();
    assert!(
        middle
            .delivered
            .iter()
            .any(|x| x.agency_id == "kommune-101" && x.consent_ids == ["c1"]),
        "{middle:?}"
    );
    let r = region.req(req);
    assert_eq!(
        region.inner.get_case_decisions(r).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // the audit says why, with the rule and the consent
    let audit = d.audit(&case).await.unwrap();
    let decision = |event_id: &str| {
        audit
            .iter()
            .rev()
            .find(|(_, r)| r["kind"] == "routing_decision" && r["event_id"] == event_id)
            .unwrap()
            .1
            .clone()
    };
    let third = decision(&third.event_id);
    assert!(
        third["withheld"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["rule_id"] == "hac-municipality" && w["reason"] == "consent_withdrawn"),
        "{third}"
    );
    let second = decision(&second.event_id);
    let kbh_entry = second["delivered"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agency"] == "kommune-101")
        .unwrap()
        .clone();
    assert_eq!(kbh_entry["consent_ids"][0], "c1");
    assert_eq!(kbh_entry["classes"], serde_json::json!(["BASIC", "HEALTH"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_withdrawal_governs_every_referral_decided_after_it_with_two_routers() {
    const IN_FLIGHT: usize = 120;
    let d = Deployment::start().await.unwrap();
    d.start_router().await.unwrap();
    let case = open_case(&d, "101").await;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    submit(&mut kbh, "appoint", &case, appoint("ngo-redbarnet"))
        .await
        .unwrap();
    let mut guardian = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    submit(&mut guardian, "consent", &case, consent("c1", "kommune-101"))
        .await
        .unwrap();

    // many referrals of the case in flight from several clients, while the guardian
    // withdraws; each client then sends a few more once the withdrawal is acknowledged
    let (withdrawn, withdrawn_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let mut region = d.client(Sector::Health, "region-hovedstaden").await.unwrap();
        let case = case.clone();
        let mut withdrawn_rx = withdrawn_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..IN_FLIGHT / 4 + 5 {
                if i == IN_FLIGHT / 4 {
                    let _ = withdrawn_rx.wait_for(|w| *w).await;
                }
                // sent after the withdrawal was acknowledged ⇒ acknowledged after it
                let sent = std::time::Instant::now();
                let r = submit(&mut region, &format!("race-{worker}-{i}"), &case, health_assessment())
                    .await
                    .unwrap();
                acked.push((r.event_id, sent));
            }
            acked
        }));
    }
    // withdraw once some referrals are decided and more are in flight, so that decisions
    // fall on both sides of the withdrawal
    let decision_subject = format!("henvis.audit.decision.{case}.router");
    let decided = || async {
        let subjects = d.subjects("AUDIT", &decision_subject).await.ok()?;
        Some(subjects.values().sum::<usize>())
    };
    let baseline = decided().await.unwrap_or(0);
    let wait_some = wait_for("some referrals decided, more in flight", LIMIT, || async {
        (decided().await? >= baseline + 5).then_some(())
    });
    wait_some.await.unwrap();
    submit(&mut guardian, "withdraw", &case, withdraw("c1")).await.unwrap();
    let withdrawn_at = std::time::Instant::now();
    let _ = withdrawn.send(true);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let mut region = d.client(Sector::Health, "region-hovedstaden").await.unwrap();
    for (event_id, _) in &acked {
        routed(&mut region, event_id).await;
    }

    // order every decision against the withdrawal in the audit
    let audit = d.audit(&case).await.unwrap();
    let withdrawal_seq = audit
        .iter()
        .find(|(_, r)| r["kind"] == "case_change" && r["change"] == "consent_withdrawn")
        .map(|(s, _)| *s)
        .expect("the withdrawal is audited");
    let voided: HashSet<(String, u64)> = audit
        .iter()
        .filter(|(_, r)| r["kind"] == "routing_decision_voided")
        .map(|(_, r)| {
            (
                r["event_id"].as_str().unwrap().to_owned(),
                r["case_revision"].as_u64().unwrap(),
            )
        })
        .collect();
    let (mut before, mut after, mut violations) = (0, 0, 0);
    for (seq, r) in audit
        .iter()
        .filter(|(_, r)| r["kind"] == "routing_decision" && r["message_type"] == "health_assessment_completed")
    {
        if voided.contains(&(
            r["event_id"].as_str().unwrap().to_owned(),
            r["case_revision"].as_u64().unwrap(),
        )) {
            continue;
        }
        let rests_on_c1 = r["delivered"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["consent_ids"].as_array().unwrap().iter().any(|c| c == "c1"));
        if *seq < withdrawal_seq {
            before += 1;
        } else {
            after += 1;
            violations += usize::from(rests_on_c1);
        }
    }
    // and every referral sent after the withdrawal was acknowledged is withheld
    let mut late = 0;
    let mut late_delivered = 0;
    for (event_id, at) in &acked {
        if *at > withdrawn_at {
            late += 1;
            late_delivered += usize::from(state_for(&mut region, event_id, "kommune-101").await.is_some());
        }
    }
    println!(
        "withdrawal race: {} referrals, decisions before the withdrawal {before}, after {after}, after resting on the withdrawn consent {violations}; sent after the withdrawal was acknowledged {late}, delivered on consent {late_delivered}",
        acked.len()
    );
    assert_eq!(acked.len(), IN_FLIGHT + 20);
    assert_eq!((violations, late_delivered), (0, 0));
    // the race was real: decisions on both sides of the withdrawal, and referrals sent
    // after it was acknowledged
    assert!(
        before > 0 && after > 0 && late > 0,
        "before {before}, after {after}, late {late}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_rule_set_takes_effect_without_restart_and_a_failing_one_is_refused() {
    let d = Deployment::start().await.unwrap();
    let default = henvis_router::DEFAULT_RULES;
    let failing = format!(
        "{default}\n[[test]]\nname = \"wrong on purpose\"\nmessage = \"child_missing\"\nsender = \"ngo-hopenow\"\ncase = {{ municipality = \"101\" }}\nexpect = []\n"
    );
    let e = d
        .admin_client(&henvis_tests::admin("admin-1"))
        .await
        .unwrap()
        .propose_rule_set(henvis_proto::henvis::admin::v1::ProposeRuleSetRequest {
            file: "failing.toml".into(),
            text: failing,
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("failing.toml:") && e.message().contains("wrong on purpose"),
        "{e}"
    );

    // version 2: a missing child no longer reaches the municipality
    let v2 = default
        .replace("version = \"2026-11-28.1\"", "version = \"test-2\"")
        .replace(
            "id = \"cm-municipality\"\nto = \"case_municipality\"",
            "id = \"cm-municipality\"\nto = \"case_guardian\"",
        )
        // the set's own test must follow the change, or publishing refuses it
        .replace(
            "  { to = \"kommune-101\", classes = [\"IDENTITY\", \"LOCATION\"] },\n",
            "",
        );
    let live = d.put_live("v2.toml", &v2).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(live.rule_set_version, "test-2");
    assert!(live.tests_passed > 20);
    let case = open_case(&d, "101").await;
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let mut n = 0;
    wait_for("routers to take the new rule set", LIMIT, || {
        n += 1;
        let missing = ev(event::Kind::ChildMissing(ChildMissing {
            last_seen_at: ts(0),
            risk: MissingRisk::High as i32,
            ..Default::default()
        }));
        let case = case.clone();
        let ngo_c = d.client(Sector::Ngo, "ngo-hopenow");
        async move {
            let mut c = ngo_c.await.ok()?;
            let r = submit(&mut c, &format!("missing-{n}"), &case, missing).await.ok()?;
            let s = routed(&mut c, &r.event_id).await;
            s.recipients
                .iter()
                .all(|x| x.recipient_agency_id != "kommune-101")
                .then_some(())
        }
    })
    .await
    .unwrap();
    let _ = &mut ngo;
    let rules_audit = d.read_all("AUDIT", "henvis.audit.rules").await.unwrap();
    assert_eq!(
        rules_audit.len(),
        2,
        "only the accepted set is recorded: proposed and approved"
    );
}
