//! Bad input gets a status naming the field and leaves nothing behind; an unreachable
//! NATS gives UNAVAILABLE and a retry with the same key succeeds once it is back.

use henvis_domain::Sector;
use henvis_proto::henvis::{broker::v1::Sender, events::v1::*};
use henvis_tests::{Deployment, wait_for};
use tonic::Code;

use crate::{LIMIT, report, submit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_the_field_named_and_nothing_is_published() {
    let d = Deployment::start().await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let before = d.stream_messages("IN").await.unwrap();
    let mut attempts = 0;

    let missing = Event {
        kind: Some(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
            observed_at: Some(prost_types::Timestamp::default()),
            ..Default::default()
        })),
    };
    let oversize = Event {
        kind: Some(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
            municipality_code: "101".into(),
            observed_at: Some(prost_types::Timestamp::default()),
            exploitation_notes: "x".repeat(70 * 1024),
            ..Default::default()
        })),
    };
    let cases: Vec<(&str, &str, Event, Code, &str)> = vec![
        (
            "k1",
            "",
            missing,
            Code::InvalidArgument,
            "event.suspected_victim_reported.municipality_code",
        ),
        (
            "k2",
            "",
            Event { kind: None },
            Code::InvalidArgument,
            "event: exactly one event kind",
        ),
        ("k3", "", oversize, Code::InvalidArgument, "event: at most 65536 bytes"),
        ("k4", "not-a-case", report("101"), Code::InvalidArgument, "case_id"),
        (
            "k5",
            "",
            report("999"),
            Code::InvalidArgument,
            "event.suspected_victim_reported.municipality_code",
        ),
        ("", "", report("101"), Code::InvalidArgument, "idempotency_key"),
        (
            "k6",
            "0b6f3a52-8c1e-4f0e-9d55-2f1c7a9e4b10",
            report("101"),
            Code::NotFound,
            "case_id",
        ),
        (
            "k7",
            "",
            Event {
                kind: Some(event::Kind::HealthAssessmentCompleted(
                    HealthAssessmentCompleted::default(),
                )),
            },
            Code::PermissionDenied,
            "does not accept `health_assessment_completed`",
        ),
    ];
    for (key, case, event, code, text) in cases {
        attempts += 1;
        let e = submit(&mut ngo, key, case, event).await.unwrap_err();
        assert_eq!(e.code(), code, "{key}: {}", e.message());
        assert!(
            e.message().contains(text),
            "{key}: `{}` should name `{text}`",
            e.message()
        );
    }

    // a sender in the body that contradicts the authenticated caller
    attempts += 1;
    let req = henvis_proto::henvis::broker::v1::SubmitRequest {
        idempotency_key: "k8".into(),
        event: Some(report("101")),
        sender: Some(Sender {
            agency_id: "politi-koebenhavn".into(),
            ..Default::default()
        }),
        actor_id: "a".into(),
        ..Default::default()
    };
    let r = ngo.req(req.clone());
    let e = ngo.inner.submit(r).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("sender.agency_id"), "{}", e.message());

    // no client certificate; a henvis service's certificate; a known agency on another
    // sector's service (the full matrix of refused identities is in tests/e2e/security.rs)
    attempts += 3;
    let ca = std::fs::read(d.pki_dir().join("ca.pem")).unwrap();
    let mut anon = henvis_proto::henvis::broker::v1::referral_service_client::ReferralServiceClient::new(
        d.channel_with(Sector::Ngo, &ca, None).await.unwrap(),
    );
    assert_eq!(
        anon.submit(req.clone()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut raw = henvis_proto::henvis::broker::v1::referral_service_client::ReferralServiceClient::new(
        d.channel(Sector::Ngo).await.unwrap(),
    );
    assert_eq!(raw.submit(req).await.unwrap_err().code(), Code::PermissionDenied);
    let mut wrong = d.client(Sector::Police, "region-hovedstaden").await.unwrap();
    let e = submit(&mut wrong, "k10", "", report("101")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());

    assert_eq!(d.stream_messages("IN").await.unwrap(), before, "nothing was published");
    println!("bad requests: {attempts} attempted, 0 accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_key_returns_the_original_event() {
    let d = Deployment::start().await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let first = submit(&mut ngo, "same-key", "", report("101")).await.unwrap();
    let again = submit(&mut ngo, "same-key", "", report("101")).await.unwrap();
    assert_eq!(
        (again.event_id.as_str(), again.case_id.as_str(), again.duplicate),
        (first.event_id.as_str(), first.case_id.as_str(), true)
    );
    // another agency's identical key is its own event
    let mut other = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let theirs = submit(&mut other, "same-key", "", report("101")).await.unwrap();
    assert_ne!(theirs.event_id, first.event_id);
    assert_eq!(d.stream_messages("IN").await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_is_unavailable_while_nats_is_down_and_a_retry_succeeds_after() {
    let mut d = Deployment::start().await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    d.nats.kill();
    let e = wait_for("submit to fail while NATS is down", LIMIT, || {
        let mut ngo_inner = ngo.inner.clone();
        let r = ngo.req(henvis_proto::henvis::broker::v1::SubmitRequest {
            idempotency_key: "during-outage".into(),
            event: Some(report("101")),
            actor_id: "officer-7".into(),
            ..Default::default()
        });
        async move { ngo_inner.submit(r).await.err() }
    })
    .await
    .unwrap();
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    assert!(e.message().contains("retry"), "{}", e.message());
    d.nats.restart().await.unwrap();
    let ok = wait_for("the retry to succeed", LIMIT, || {
        let mut c = ngo.inner.clone();
        let r = ngo.req(henvis_proto::henvis::broker::v1::SubmitRequest {
            idempotency_key: "during-outage".into(),
            event: Some(report("101")),
            actor_id: "officer-7".into(),
            ..Default::default()
        });
        async move { c.submit(r).await.ok() }
    })
    .await
    .unwrap();
    let again = submit(&mut ngo, "during-outage", "", report("101")).await.unwrap();
    assert_eq!(again.event_id, ok.into_inner().event_id);
    assert_eq!(d.stream_messages("IN").await.unwrap(), 1, "stored exactly once");
}
