//! The referral path: submit → IN → router → OUT → inbox, with redaction and status.

use std::collections::BTreeSet;

use henvis_domain::{Class, Sector};
use henvis_policy::Schema;
use henvis_proto::henvis::broker::v1::DeliveryState;
use henvis_tests::{Deployment, wait_for};
use prost::Message;
use prost_reflect::Value;

use crate::{Inbox, LIMIT, canary::canary_event, canary::found, routed, submit};

fn schema() -> Schema {
    Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap()
}

fn classes(nums: &[i32]) -> BTreeSet<Class> {
    nums.iter().filter_map(|n| Class::from_number(*n)).collect()
}

/// What the default rules grant for `suspected_victim_reported`.
fn granted(agency: &str) -> BTreeSet<Class> {
    use Class::*;
    match agency {
        "kommune-101" => [Basic, Identity, Location, Social, Health, Exploitation].into(),
        "politi-koebenhavn" => [Basic, Identity, Location, Exploitation, Criminal].into(),
        _ => BTreeSet::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ngo_report_reaches_municipality_and_police_district_with_exactly_the_granted_classes() {
    let d = Deployment::start().await.unwrap();
    let s = schema();
    let (event, canaries) = canary_event(
        &s,
        "suspected_victim_reported",
        &[("municipality_code", Value::String("101".into()))],
    );
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = submit(&mut ngo, "svr-1", "", event).await.unwrap();
    assert!(!r.duplicate);

    // the recipients connect only after the router has decided: they still receive it
    let status = routed(&mut ngo, &r.event_id).await;
    let stored: BTreeSet<_> = status
        .recipients
        .iter()
        .filter(|s| s.state == DeliveryState::Stored as i32)
        .map(|s| s.recipient_agency_id.as_str())
        .collect();
    assert_eq!(stored, BTreeSet::from(["kommune-101", "politi-koebenhavn"]));

    let mut unentitled = 0;
    let mut over_redacted = 0;
    for (sector, agency) in [(Sector::Social, "kommune-101"), (Sector::Police, "politi-koebenhavn")] {
        let mut c = d.client(sector, agency).await.unwrap();
        let mut inbox = Inbox::open(&mut c).await;
        let delivery = inbox.next_delivery().await;
        let env = delivery.envelope.clone().unwrap();
        assert_eq!(env.event_id, r.event_id);
        assert_eq!(env.case_id, r.case_id);
        assert_eq!(
            env.sender.as_ref().unwrap().agency_id,
            "ngo-redbarnet",
            "sender stamped by the service"
        );
        assert!(env.idempotency_key.is_empty(), "the sender's key is not forwarded");
        assert_eq!(classes(&delivery.granted_classes), granted(agency));
        let bytes = delivery.encode_to_vec();
        let seen = found(&bytes, &canaries);
        unentitled += seen.iter().filter(|(_, c)| !granted(agency).contains(c)).count();
        over_redacted += canaries
            .iter()
            .filter(|(c, k)| granted(agency).contains(k) && !seen.iter().any(|(s, _)| s == c))
            .count();
        let present: BTreeSet<Class> = canaries.iter().map(|(_, c)| *c).collect();
        let expected_withheld: BTreeSet<Class> = present.difference(&granted(agency)).copied().collect();
        assert_eq!(
            classes(&delivery.withheld_classes),
            expected_withheld,
            "{agency} is told what was withheld"
        );
        inbox.ack(delivery.delivery_id).await;
    }
    // nothing of the child reaches status records, audit records, NATS headers or logs
    let mut elsewhere = 0;
    let mut scanned = 0;
    for (stream, filter) in [("STATUS", "henvis.status.>"), ("AUDIT", "henvis.audit.>")] {
        for (_, bytes) in d.read_all(stream, filter).await.unwrap() {
            scanned += 1;
            elsewhere += found(&bytes, &canaries).len();
        }
    }
    let js = d.jetstream().await.unwrap();
    for stream in ["IN", "OUT"] {
        let s = js.get_stream(stream).await.unwrap();
        let last = s.get_info().await.unwrap().state.last_sequence;
        for seq in 1..=last {
            if let Ok(m) = s.get_raw_message(seq).await {
                scanned += 1;
                let headers = format!("{:?}", m.headers);
                elsewhere += found(headers.as_bytes(), &canaries).len();
            }
        }
    }
    let logs = henvis_tests::captured_logs();
    elsewhere += found(logs.as_bytes(), &canaries).len();
    println!(
        "unentitled canaries delivered: {unentitled}, entitled canaries missing: {over_redacted}, canaries in {scanned} status/audit records, NATS headers and {} bytes of debug logs: {elsewhere}",
        logs.len()
    );
    assert!(logs.contains("event routed"), "the logs were captured");
    assert_eq!(elsewhere, 0);
    assert_eq!((unentitled, over_redacted), (0, 0));

    // nobody else has anything in OUT, and acking removed both deliveries
    let left = wait_for("acked deliveries to leave OUT", LIMIT, || async {
        let n = d.stream_messages("OUT").await.ok()?;
        (n == 0).then_some(n)
    })
    .await
    .unwrap();
    assert_eq!(left, 0);
    // the sender sees both recipients as received
    let status = wait_for("received status", LIMIT, || {
        let mut ngo = ngo.inner.clone();
        let req = ngo_req(&d, &r.event_id);
        async move {
            let s = ngo.get_status(req).await.ok()?.into_inner();
            (s.recipients
                .iter()
                .filter(|x| x.state == DeliveryState::Received as i32)
                .count()
                == 2)
                .then_some(s)
        }
    })
    .await
    .unwrap();
    assert_eq!(status.recipients.len(), 2);
}

fn ngo_req(d: &Deployment, event_id: &str) -> tonic::Request<henvis_proto::henvis::broker::v1::GetStatusRequest> {
    let _ = d;
    tonic::Request::new(henvis_proto::henvis::broker::v1::GetStatusRequest {
        event_id: event_id.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_never_receives_another_agencys_deliveries_and_unacked_ones_come_back() {
    let d = Deployment::start().await.unwrap();
    let s = schema();
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    // a neighbouring municipality and another police district are connected throughout
    let mut frb = d.client(Sector::Social, "kommune-147").await.unwrap();
    let mut frb_inbox = Inbox::open(&mut frb).await;
    let mut fyn = d.client(Sector::Police, "politi-fyn").await.unwrap();
    let mut fyn_inbox = Inbox::open(&mut fyn).await;

    let (event, _) = canary_event(
        &s,
        "suspected_victim_reported",
        &[("municipality_code", Value::String("101".into()))],
    );
    let r = submit(&mut ngo, "svr-iso", "", event).await.unwrap();
    routed(&mut ngo, &r.event_id).await;
    let out = d.subjects("OUT", "henvis.out.>").await.unwrap();
    let mut agencies: Vec<_> = out.keys().map(|s| s.split('.').nth(2).unwrap().to_owned()).collect();
    agencies.sort();
    assert_eq!(agencies, vec!["kommune-101", "politi-koebenhavn"]);
    // after routing, the others' next heartbeat comes with no delivery before it
    assert_eq!(frb_inbox.deliveries_before_heartbeat().await, 0);
    assert_eq!(fyn_inbox.deliveries_before_heartbeat().await, 0);

    // a recipient that drops its stream without acking gets the delivery again
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let first = {
        let mut inbox = Inbox::open(&mut kbh).await;
        inbox.next_delivery().await
    };
    let mut inbox = Inbox::open(&mut kbh).await;
    let again = inbox.next_delivery().await;
    assert_eq!(again.delivery_id, first.delivery_id);
    assert!(again.attempt >= 2, "attempt counts redeliveries");
    inbox.ack(again.delivery_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_up_events_route_by_case_and_the_guardian_receives_health_findings_only() {
    use henvis_proto::henvis::events::v1::*;
    let d = Deployment::start().await.unwrap();
    let s = schema();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let (event, _) = canary_event(
        &s,
        "suspected_victim_reported",
        &[("municipality_code", Value::String("751".into()))],
    );
    let case = submit(&mut ngo, "open", "", event).await.unwrap().case_id;

    let mut social = d.client(Sector::Social, "kommune-751").await.unwrap();
    let appoint = Event {
        kind: Some(event::Kind::GuardianAppointed(GuardianAppointed {
            guardian_agency_id: "ngo-redbarnet".into(),
            guardian_kind: GuardianKind::NgoSocialWorker as i32,
            guardian_contact: "desk 4".into(),
            appointed_at: Some(prost_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            }),
        })),
    };
    let g = submit(&mut social, "guardian", &case, appoint).await.unwrap();
    routed(&mut social, &g.event_id).await;

    let mut health = d.client(Sector::Health, "region-midtjylland").await.unwrap();
    let (event, canaries) = canary_event(&s, "health_assessment_completed", &[]);
    let h = submit(&mut health, "ha", &case, event).await.unwrap();
    let status = routed(&mut health, &h.event_id).await;
    let to = crate::summary(&status);
    // the municipality's route rests on consent, which the guardian has not given
    let (stored, withheld) = (DeliveryState::Stored as i32, DeliveryState::Withheld as i32);
    assert_eq!(
        to,
        vec![
            ("", withheld, "hac-municipality"),
            ("ngo-redbarnet", stored, "hac-guardian")
        ]
    );

    let mut inbox = Inbox::open(&mut ngo).await;
    // the guardian first receives its own appointment, then the health assessment
    let mut got = inbox.next_delivery().await;
    if got.envelope.as_ref().unwrap().message_type == "guardian_appointed" {
        inbox.ack(got.delivery_id).await;
        got = inbox.next_delivery().await;
    }
    assert_eq!(got.envelope.as_ref().unwrap().event_id, h.event_id);
    let seen = found(&got.encode_to_vec(), &canaries);
    assert_eq!(seen.len(), canaries.len(), "health findings reach the guardian whole");
    // and the police district of Aarhus received nothing about health
    let police: Vec<_> = d
        .subjects("OUT", "henvis.out.politi-oestjylland.>")
        .await
        .unwrap()
        .into_keys()
        .collect();
    assert!(
        police.iter().all(|s| !s.ends_with("health_assessment_completed")),
        "{police:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipients_response_closes_the_loop_and_a_stranger_cannot_answer() {
    use henvis_proto::henvis::events::v1::*;
    let d = Deployment::start().await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let r = submit(&mut ngo, "refer", "", crate::report("101")).await.unwrap();
    routed(&mut ngo, &r.event_id).await;
    let response = |outcome: ReferralOutcome| Event {
        kind: Some(event::Kind::ReferralResponse(ReferralResponse {
            in_response_to_event_id: r.event_id.clone(),
            outcome: outcome as i32,
            reason: "will open a child protection case".into(),
        })),
    };
    // a stranger who never received the referral cannot answer it: refused at Submit, as
    // if the case did not exist, and nothing is stored
    let before = d.stream_messages("IN").await.unwrap();
    let mut stranger = d.client(Sector::Social, "kommune-147").await.unwrap();
    let forged = submit(&mut stranger, "forged", &r.case_id, response(ReferralOutcome::Declined))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::NotFound, "{}", forged.message());
    // an agency the case relates to, but to which the referral was not delivered, and an
    // answer to an event that was never sent: refused naming the field
    let mut region = d.client(Sector::Health, "region-hovedstaden").await.unwrap();
    let e = submit(
        &mut region,
        "not-received",
        &r.case_id,
        response(ReferralOutcome::Declined),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    assert!(e.message().contains("in_response_to_event_id"), "{}", e.message());
    let mut nowhere = response(ReferralOutcome::Accepted);
    if let Some(event::Kind::ReferralResponse(x)) = &mut nowhere.kind {
        x.in_response_to_event_id = "01a220ca-9ff4-760c-a2f6-a965ae3eddc3".into();
    }
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let e = submit(&mut kbh, "nowhere", &r.case_id, nowhere).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    assert_eq!(
        d.stream_messages("IN").await.unwrap(),
        before,
        "nothing refused was stored"
    );

    let answer = submit(&mut kbh, "accept", &r.case_id, response(ReferralOutcome::Accepted))
        .await
        .unwrap();
    routed(&mut kbh, &answer.event_id).await;
    let status = routed(&mut ngo, &r.event_id).await;
    let states: BTreeSet<_> = status
        .recipients
        .iter()
        .map(|x| (x.recipient_agency_id.as_str(), x.state))
        .collect();
    assert_eq!(
        states,
        BTreeSet::from([
            ("kommune-101", DeliveryState::Accepted as i32),
            ("politi-koebenhavn", DeliveryState::Stored as i32)
        ]),
        "the refused answers changed nothing"
    );
    // and the referrer receives the response itself
    let mut inbox = Inbox::open(&mut ngo).await;
    let got = inbox.next_delivery().await;
    assert_eq!(got.envelope.unwrap().event_id, answer.event_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_follows_its_referral_live_and_resumes_where_it_left_off() {
    use henvis_proto::henvis::broker::v1::{StatusUpdate, SubscribeStatusRequest, status_update};
    let d = Deployment::start().await.unwrap();
    let s = schema();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let (event, _) = canary_event(
        &s,
        "suspected_victim_reported",
        &[("municipality_code", Value::String("101".into()))],
    );
    let r = submit(&mut ngo, "follow", "", event).await.unwrap();
    let subscribe = |resume_after: u64| {
        let mut c = ngo.inner.clone();
        let req = ngo.req(SubscribeStatusRequest {
            event_id: r.event_id.clone(),
            resume_after,
        });
        async move { c.subscribe_status(req).await.unwrap().into_inner() }
    };
    /// The next status, skipping heartbeats.
    async fn status_change(s: &mut tonic::Streaming<StatusUpdate>) -> (u64, Vec<(String, i32)>) {
        loop {
            if let Some(status) = next_status(s).await {
                return status;
            }
        }
    }
    /// The next status, or `None` for a heartbeat.
    async fn next_status(s: &mut tonic::Streaming<StatusUpdate>) -> Option<(u64, Vec<(String, i32)>)> {
        loop {
            let u = tokio::time::timeout(LIMIT, s.message())
                .await
                .expect("an update")
                .unwrap()?;
            match u.kind {
                Some(status_update::Kind::Status(st)) => {
                    return Some((
                        u.position,
                        st.recipients
                            .into_iter()
                            .map(|x| (x.recipient_agency_id, x.state))
                            .collect(),
                    ));
                }
                Some(status_update::Kind::Heartbeat(_)) => return None,
                None => {}
            }
        }
    }
    let mut live = subscribe(0).await;
    let stored = DeliveryState::Stored as i32;
    let received = DeliveryState::Received as i32;
    let first = status_change(&mut live).await;
    assert_eq!(
        first.1,
        vec![
            ("kommune-101".to_owned(), stored),
            ("politi-koebenhavn".to_owned(), stored)
        ]
    );
    // the municipality acknowledges: the sender sees it at once
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let mut inbox = Inbox::open(&mut kbh).await;
    let delivery = inbox.next_delivery().await;
    inbox.ack(delivery.delivery_id).await;
    let second = status_change(&mut live).await;
    assert_eq!(
        second.1,
        vec![
            ("kommune-101".to_owned(), received),
            ("politi-koebenhavn".to_owned(), stored)
        ]
    );
    drop(live);
    // reconnecting from the last position: nothing old again, only what changes next
    let mut resumed = subscribe(second.0).await;
    assert!(
        next_status(&mut resumed).await.is_none(),
        "a heartbeat before anything new"
    );
    let mut police = d.client(Sector::Police, "politi-koebenhavn").await.unwrap();
    let mut inbox = Inbox::open(&mut police).await;
    let delivery = inbox.next_delivery().await;
    inbox.ack(delivery.delivery_id).await;
    let third = status_change(&mut resumed).await;
    assert_eq!(
        third.1,
        vec![
            ("kommune-101".to_owned(), received),
            ("politi-koebenhavn".to_owned(), received)
        ]
    );
    assert!(third.0 > second.0);
}
