//! Erasing a case (crypto-shredding) under four eyes: a police hold refuses it unless
//! overridden; once approved, nothing the broker holds of the case opens again — its
//! submitted events, a delivery still waiting, its alert's details and its idempotency
//! records — not for the services, not for a direct read of the stored bytes; another case
//! is untouched; the audit verifies; the agencies that had it are named.

use henvis_domain::Sector;
use henvis_proto::henvis::{
    admin::v1::{ApproveCaseErasureRequest, ProposeCaseErasureRequest, RuleSetState},
    events::v1::*,
    police::v1::{FetchAlertDetailsRequest, ListAlertsRequest, alert_service_client::AlertServiceClient},
};
use henvis_tests::{Deployment, admin, wait_for};
use prost::Message as _;
use tonic::Code;

use crate::{Inbox, LIMIT, policy::ev, routed, submit};

const CANARY: &str = "Canary-Erasure-Zebulon";

fn opening() -> Event {
    ev(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
        municipality_code: "101".into(),
        observed_at: crate::policy::ts(0),
        given_name: CANARY.into(),
        ..Default::default()
    }))
}

/// Every sealed payload of `case` the broker stores, by where: IN, OUT, alert details,
/// idempotency records.
async fn sealed_of(d: &Deployment, case: &str) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (_, p) in d.read_all("IN", &format!("henvis.in.*.*.{case}")).await.unwrap() {
        out.push(("IN", p.to_vec()));
    }
    // OUT is a work queue: read by sequence
    let s = d.jetstream().await.unwrap().get_stream("OUT").await.unwrap();
    let state = s.get_info().await.unwrap().state;
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(m) = s.get_raw_message(seq).await
            && henvis_bus::sealed_case(&m.payload) == Some(case)
        {
            out.push(("OUT", m.payload.to_vec()));
        }
    }
    for (what, stream) in [
        ("alert details", "KV_henvis_alert_details"),
        ("idempotency record", "KV_henvis_idempotency"),
    ] {
        let filter = format!("$KV.{}.>", stream.trim_start_matches("KV_"));
        for (_, p) in d.read_all(stream, &filter).await.unwrap() {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p) else {
                continue;
            };
            let Some(bytes) = v["envelope_hex"].as_str().and_then(|h| hex::decode(h).ok()) else {
                continue;
            };
            if henvis_bus::sealed_case(&bytes) == Some(case) {
                out.push((what, bytes));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_case_opens_nowhere_another_is_untouched_and_the_audit_verifies() {
    let d = Deployment::start_with(henvis_tests::Options {
        // the routers sweep every 2 s (no case here is closed)
        closed_case_retention_secs: 2,
        ..henvis_tests::Options::default()
    })
    .await
    .unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let a_open = submit(&mut ngo, "open-a", "", opening()).await.unwrap();
    let a = a_open.case_id.clone();
    let a_status = routed(&mut ngo, &a_open.event_id).await;
    let b_open = submit(&mut ngo, "open-b", "", opening()).await.unwrap();
    let b = b_open.case_id.clone();
    routed(&mut ngo, &b_open.event_id).await;
    let recipients: Vec<String> = a_status
        .recipients
        .iter()
        .filter(|r| r.state != henvis_proto::henvis::broker::v1::DeliveryState::Withheld as i32)
        .map(|r| r.recipient_agency_id.clone())
        .collect();
    assert!(
        recipients.iter().any(|r| r == "kommune-101") && recipients.iter().any(|r| r == "politi-koebenhavn"),
        "{recipients:?}"
    );
    // the municipality reads and acknowledges both openings; the police's wait in OUT
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let mut inbox = Inbox::open(&mut kbh).await;
    for _ in 0..2 {
        let dl = inbox.next_delivery().await;
        inbox.ack(dl.delivery_id).await;
    }
    drop(inbox);
    // the police hold case B under investigation
    let mut police = d.client(Sector::Police, "politi-koebenhavn").await.unwrap();
    let inv = submit(
        &mut police,
        "inv-b",
        &b,
        ev(event::Kind::InvestigationUpdate(InvestigationUpdate {
            legal_provision: "straffeloven § 262 a".into(),
            status: InvestigationStatus::Opened as i32,
            ..Default::default()
        })),
    )
    .await
    .unwrap();
    routed(&mut police, &inv.event_id).await;
    // the alerts of both cases, their details stored
    let mut kp = AlertServiceClient::new(d.channel_as(Sector::Police, "politi-koebenhavn-kp1").await.unwrap());
    let alert_of = |case: String| {
        let kp = kp.clone();
        async move {
            wait_for("the case's alert", LIMIT, || {
                let mut kp = kp.clone();
                let case = case.clone();
                async move {
                    let alerts = kp.list_alerts(ListAlertsRequest {}).await.ok()?.into_inner().alerts;
                    alerts.into_iter().find(|x| x.case_id == case)
                }
            })
            .await
            .unwrap()
        }
    };
    let alert_a = alert_of(a.clone()).await;
    let alert_b = alert_of(b.clone()).await;
    kp.fetch_alert_details(FetchAlertDetailsRequest {
        alert_id: alert_a.alert_id.clone(),
    })
    .await
    .unwrap();

    // what is stored of case A: sealed, no canary in the raw bytes, and it opens
    let before = sealed_of(&d, &a).await;
    let kinds = |v: &[(&'static str, Vec<u8>)]| {
        let mut k: Vec<&str> = v.iter().map(|(w, _)| *w).collect();
        k.dedup();
        k
    };
    assert_eq!(
        kinds(&before),
        ["IN", "OUT", "alert details", "idempotency record"],
        "every kind of stored payload of the case"
    );
    for (what, p) in &before {
        assert!(!String::from_utf8_lossy(p).contains(CANARY), "{what} holds plaintext");
        d.opened(p)
            .await
            .unwrap_or_else(|e| panic!("{what} opens before the erasure: {e}"));
    }

    // four eyes; a police hold refuses unless overridden
    let mut admin1 = d.admin_client(&admin("admin-1")).await.unwrap();
    let mut admin2 = d.admin_client(&admin("admin-2")).await.unwrap();
    let held = admin1
        .propose_case_erasure(ProposeCaseErasureRequest {
            case_id: b.clone(),
            reason: "the guardian's request".into(),
            police_hold_override: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(held.code(), Code::FailedPrecondition);
    assert!(held.message().contains("police_hold_override"), "{}", held.message());
    let bad = admin1
        .propose_case_erasure(ProposeCaseErasureRequest {
            case_id: a.clone(),
            reason: String::new(),
            police_hold_override: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("reason"), "{}", bad.message());
    let proposed = admin1
        .propose_case_erasure(ProposeCaseErasureRequest {
            case_id: a.clone(),
            reason: "data protection: the guardian's request under GDPR art. 17".into(),
            police_hold_override: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(proposed.state, RuleSetState::Proposed as i32);
    // nothing happens on a proposal
    for (what, p) in &before {
        d.opened(p)
            .await
            .unwrap_or_else(|e| panic!("{what} opens while proposed: {e}"));
    }
    let own = admin1
        .approve_case_erasure(ApproveCaseErasureRequest {
            erasure_id: proposed.erasure_id,
        })
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::PermissionDenied);
    // the erasure lands mid-run: other agencies keep submitting (cases in Odense) until
    // every check below is done, and each of their referrals must still arrive once
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (load, acked, failures) = crate::delivery::start_load_in(
        &d,
        100,
        &["ngo-redbarnet", "ngo-reden-international"],
        &["461".to_owned()],
        "bg",
        true,
        Some(running.clone()),
    )
    .await;
    crate::delivery::load_reaches(&acked, &failures, 20).await;
    let erased = admin2
        .approve_case_erasure(ApproveCaseErasureRequest {
            erasure_id: proposed.erasure_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.state, RuleSetState::Live as i32);
    let mut named = erased.delivered_to.clone();
    named.sort();
    let mut want = recipients.clone();
    want.sort();
    assert_eq!(named, want, "the agencies that had the case are named");
    assert!(
        erased.statement.contains("outside the broker's reach"),
        "{}",
        erased.statement
    );

    // nothing of case A opens any more, wherever it lies
    let after = sealed_of(&d, &a).await;
    let mut refused = 0;
    for (what, p) in &after {
        let e = d.opened(p).await.expect_err(what);
        assert!(e.to_string().contains("erased"), "{what}: {e}");
        refused += 1;
    }
    let load_running = load.iter().any(|l| !l.is_finished());
    // the services refuse it: the alert's details, a new event, a retry of the opening
    let details = kp
        .fetch_alert_details(FetchAlertDetailsRequest {
            alert_id: alert_a.alert_id.clone(),
        })
        .await
        .unwrap_err();
    assert_ne!(details.code(), Code::Ok);
    let again = submit(&mut ngo, "open-a", "", opening()).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{}", again.message());
    let more = submit(
        &mut ngo,
        "more-a",
        &a,
        ev(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
            municipality_code: "101".into(),
            observed_at: crate::policy::ts(0),
            ..Default::default()
        })),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(more.code(), Code::FailedPrecondition | Code::NotFound),
        "{more:?}"
    );
    // the police's waiting delivery of case A leaves their inbox unread; case B's arrives
    let mut pol_inbox = Inbox::open(&mut police).await;
    let dl = pol_inbox.next_delivery().await;
    let env = dl.envelope.clone().unwrap();
    assert_eq!(env.case_id, b, "only case B's delivery is offered");
    pol_inbox.ack(dl.delivery_id).await;
    wait_for("case A's delivery to leave OUT", LIMIT, || async {
        let left = sealed_of(&d, &a).await.iter().filter(|(w, _)| *w == "OUT").count();
        (left == 0).then_some(())
    })
    .await
    .unwrap();
    drop(pol_inbox);
    // case B is untouched: its details open for the contact person
    kp.fetch_alert_details(FetchAlertDetailsRequest {
        alert_id: alert_b.alert_id.clone(),
    })
    .await
    .unwrap();
    for (what, p) in sealed_of(&d, &b).await {
        d.opened(&p).await.unwrap_or_else(|e| panic!("case B's {what}: {e}"));
    }
    // the load ends; every one of its referrals reached its recipients once
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    crate::delivery::drain(&d).await;
    let acked = acked.lock().unwrap().clone();
    let intended = crate::delivery::intended(&d, &acked);
    let mut delivered: std::collections::BTreeMap<(String, String), usize> = Default::default();
    let out = d.jetstream().await.unwrap().get_stream("OUT").await.unwrap();
    let state = out.get_info().await.unwrap().state;
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(m) = out.get_raw_message(seq).await else {
            continue;
        };
        if henvis_bus::sealed_case(&m.payload) == Some(a.as_str()) {
            continue;
        }
        let dl =
            henvis_proto::henvis::broker::v1::Delivery::decode(d.opened(&m.payload).await.unwrap().as_slice()).unwrap();
        let event = dl.envelope.unwrap().event_id;
        if acked.contains_key(&event) {
            let recipient = m.subject.split('.').nth(2).unwrap_or_default().to_owned();
            *delivered.entry((event, recipient)).or_default() += 1;
        }
    }
    let once = intended.iter().filter(|p| delivered.get(*p) == Some(&1)).count();
    assert!(load_running, "the erasure landed while the load ran");
    assert_eq!(
        (once, delivered.len(), delivered.values().filter(|n| **n > 1).count()),
        (intended.len(), intended.len(), 0),
        "every referral of the load delivered once"
    );
    // the routers remove the id-only records left (case record, alert), audited
    let case_a = henvis_domain::CaseId::parse(&a).unwrap();
    let bus = henvis_bus::Bus::connect(
        &d.nats.url(),
        "inspector",
        Some(&henvis_bus::NatsIdentity::of(d.pki_dir(), &henvis_tests::inspector())),
    )
    .await
    .unwrap();
    wait_for("case A's records removed", LIMIT, || async {
        bus.case(&case_a).await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    let audit = d.audit(&a).await.unwrap();
    let kinds_in_audit: Vec<&str> = audit
        .iter()
        .filter_map(|(_, r)| r["kind"].as_str())
        .filter(|k| k.starts_with("case_eras") || *k == "case_data_erased")
        .collect();
    assert_eq!(
        kinds_in_audit,
        ["case_erasure_proposed", "case_erased", "case_data_erased"]
    );
    let comp = crate::delivery::audit_complete(&d, "an erasure").await;
    println!(
        "erasure: case A's {} stored payloads ({:?}) open before, {refused} refuse after (\"erased\"), 0 canaries in their bytes; named {:?}; case B's open; erased while {} other referrals were submitted, each delivered once to its {} intended recipients; audit verifies ({} events decided)",
        before.len(),
        kinds(&before),
        erased.delivered_to,
        acked.len(),
        intended.len(),
        comp.events_decided
    );
}
