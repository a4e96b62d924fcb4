//! Police district contact persons: district isolation, claims seen at once, hand-over,
//! the authorised detail fetch with a read receipt, reconnect and resume, and escalation
//! of unclaimed urgent alerts that survives a restart of the police service.

use henvis_domain::{Class, Sector};
use henvis_policy::Schema;
use henvis_proto::henvis::{
    events::v1::*,
    police::v1::{
        Alert, AlertState, AlertUpdate, AlertsRequest, ClaimAlertRequest, FetchAlertDetailsRequest,
        HandOverAlertRequest, ListAlertsRequest, alert_service_client::AlertServiceClient, alert_update,
    },
};
use henvis_tests::{Deployment, Options, wait_for};
use prost::Message;
use prost_reflect::Value;
use tonic::{Code, Request, Streaming, transport::Channel};

use crate::{Inbox, LIMIT, canary, routed, submit};

struct Person {
    client: AlertServiceClient<Channel>,
}

impl Person {
    async fn new(d: &Deployment, id: &str) -> Self {
        let client = AlertServiceClient::new(d.channel_as(Sector::Police, id).await.unwrap());
        Self { client }
    }
    fn req<T>(&self, t: T) -> Request<T> {
        Request::new(t)
    }
    async fn stream(&mut self, resume_after: u64) -> Feed {
        let r = self.req(AlertsRequest { resume_after });
        let mut s = self.client.alerts(r).await.unwrap().into_inner();
        let mut before = Vec::new();
        loop {
            match next(&mut s).await.kind {
                Some(alert_update::Kind::CaughtUp(_)) => return Feed { s, before },
                Some(alert_update::Kind::Alert(a)) => before.push(a),
                _ => {}
            }
        }
    }
    async fn list(&mut self) -> Vec<Alert> {
        let r = self.req(ListAlertsRequest {});
        self.client.list_alerts(r).await.unwrap().into_inner().alerts
    }
}

struct Feed {
    s: Streaming<AlertUpdate>,
    /// The alerts sent before `caught_up`.
    before: Vec<Alert>,
}

async fn next(s: &mut Streaming<AlertUpdate>) -> AlertUpdate {
    tokio::time::timeout(LIMIT, s.message())
        .await
        .expect("an alert update in time")
        .unwrap()
        .unwrap()
}

impl Feed {
    /// The next alert update matching `f`, skipping heartbeats and others.
    async fn until(&mut self, f: impl Fn(&Alert) -> bool) -> Alert {
        loop {
            if let Some(alert_update::Kind::Alert(a)) = next(&mut self.s).await.kind
                && f(&a)
            {
                return a;
            }
        }
    }
}

fn ts(s: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: s, nanos: 0 })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_persons_see_their_own_district_claims_at_once_and_fetch_details_with_a_receipt() {
    let d = Deployment::start().await.unwrap();
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut kp1 = Person::new(&d, "politi-koebenhavn-kp1").await;
    let mut kp2 = Person::new(&d, "politi-koebenhavn-kp2").await;
    let mut fyn = Person::new(&d, "politi-fyn-kp1").await;
    let mut feed1 = kp1.stream(0).await;
    let mut feed2 = kp2.stream(0).await;
    let mut feed_fyn = fyn.stream(0).await;
    assert!(feed1.before.is_empty() && feed_fyn.before.is_empty());

    // a report in København raises a normal alert for Københavns Politi only
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let (report, canaries) = canary::canary_event(
        &schema,
        "suspected_victim_reported",
        &[
            ("municipality_code", Value::String("101".into())),
            ("immediate_danger", Value::Bool(false)),
        ],
    );
    let kbh = submit(&mut ngo, "kbh", "", report).await.unwrap();
    let (fyn_report, _) = canary::canary_event(
        &schema,
        "suspected_victim_reported",
        &[("municipality_code", Value::String("461".into()))],
    );
    let odense = submit(&mut ngo, "odense", "", fyn_report).await.unwrap();
    let a1 = feed1.until(|a| a.alert_id == kbh.event_id).await;
    feed2.until(|a| a.alert_id == kbh.event_id).await;
    let f = feed_fyn.until(|a| a.alert_id == odense.event_id).await;
    assert_eq!(
        (
            a1.kind.as_str(),
            a1.urgency.as_str(),
            a1.district_agency_id.as_str(),
            a1.case_id.as_str()
        ),
        (
            "suspected_victim_reported",
            "normal",
            "politi-koebenhavn",
            kbh.case_id.as_str()
        )
    );
    assert_eq!(a1.state, AlertState::Open as i32);
    assert!(
        canary::found(&a1.encode_to_vec(), &canaries).is_empty(),
        "an alert carries no details of the child"
    );
    assert_eq!(f.district_agency_id, "politi-fyn");
    let kbh_ids: Vec<_> = kp1.list().await.into_iter().map(|a| a.alert_id).collect();
    assert_eq!(kbh_ids, vec![kbh.event_id.clone()], "district isolation");

    // a claim is seen at once by the district's other contact person
    let r = kp1.req(ClaimAlertRequest {
        alert_id: a1.alert_id.clone(),
    });
    kp1.client.claim_alert(r).await.unwrap();
    let seen = feed2
        .until(|a| a.alert_id == a1.alert_id && a.state == AlertState::Claimed as i32)
        .await;
    assert_eq!(seen.claimed_by, "politi-koebenhavn-kp1");
    let r = kp2.req(ClaimAlertRequest {
        alert_id: a1.alert_id.clone(),
    });
    let e = kp2.client.claim_alert(r).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("politi-koebenhavn-kp1"), "{}", e.message());
    // hand-over, only within the district
    let r = kp1.req(HandOverAlertRequest {
        alert_id: a1.alert_id.clone(),
        to_person_id: "politi-fyn-kp1".into(),
    });
    assert_eq!(
        kp1.client.hand_over_alert(r).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let r = kp1.req(HandOverAlertRequest {
        alert_id: a1.alert_id.clone(),
        to_person_id: "politi-koebenhavn-kp2".into(),
    });
    kp1.client.hand_over_alert(r).await.unwrap();
    feed1
        .until(|a| a.alert_id == a1.alert_id && a.claimed_by == "politi-koebenhavn-kp2")
        .await;

    // details: need-to-know applied, refused to another district and to a bare agency
    let r = kp2.req(FetchAlertDetailsRequest {
        alert_id: a1.alert_id.clone(),
    });
    let details = kp2.client.fetch_alert_details(r).await.unwrap().into_inner();
    let granted: Vec<Class> = details
        .granted_classes
        .iter()
        .filter_map(|c| Class::from_number(*c))
        .collect();
    assert_eq!(
        granted,
        vec![
            Class::Basic,
            Class::Identity,
            Class::Location,
            Class::Exploitation,
            Class::Criminal
        ]
    );
    let seen = canary::found(&details.envelope.unwrap().encode_to_vec(), &canaries);
    assert!(
        seen.iter().all(|(_, c)| granted.contains(c)),
        "no health or social details"
    );
    assert!(seen.iter().any(|(_, c)| *c == Class::Identity));
    let r = fyn.req(FetchAlertDetailsRequest {
        alert_id: a1.alert_id.clone(),
    });
    assert_eq!(
        fyn.client.fetch_alert_details(r).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let mut agency = AlertServiceClient::new(d.channel_as(Sector::Police, "politi-koebenhavn").await.unwrap());
    let r = Request::new(ListAlertsRequest {});
    assert_eq!(agency.list_alerts(r).await.unwrap_err().code(), Code::PermissionDenied);
    let audit = d.audit(&kbh.case_id).await.unwrap();
    let receipts: Vec<_> = audit
        .iter()
        .filter(|(_, r)| r["kind"] == "alert_details_read")
        .map(|(_, r)| r["person"].clone())
        .collect();
    assert_eq!(receipts, vec![serde_json::json!("politi-koebenhavn-kp2")]);
    let steps: Vec<_> = audit
        .iter()
        .filter(|(_, r)| r["alert_id"] == a1.alert_id)
        .map(|(_, r)| r["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        steps,
        vec!["alert_claimed", "alert_handed_over", "alert_details_read"],
        "every step is recorded"
    );
    // a claim asked again records nothing twice
    let r = kp2.req(ClaimAlertRequest {
        alert_id: a1.alert_id.clone(),
    });
    kp2.client.claim_alert(r).await.unwrap();
    // the alerts' own histories against the audit: every step and read has its record
    let comp = crate::delivery::audit_complete(&d, "the alert steps").await;
    assert_eq!(comp.alert_steps, 3);

    // a contact person who connects later gets the open alerts first; resume skips what was seen
    let mut kp3 = Person::new(&d, "politi-koebenhavn-kp3").await;
    let late = kp3.stream(0).await;
    assert_eq!(
        late.before.iter().map(|a| a.alert_id.as_str()).collect::<Vec<_>>(),
        vec![kbh.event_id.as_str()]
    );
    let last = late.before.last().unwrap().revision;
    let resumed = kp3.stream(last).await;
    assert!(resumed.before.is_empty(), "nothing newer than the resume position");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_urgent_alert_escalates_at_its_deadline_across_a_restart_and_the_guardian_is_told() {
    const DEADLINE: i64 = 2;
    let mut d = Deployment::start_with(Options {
        urgent_alert_deadline_secs: DEADLINE as u64,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut opener = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let open = Event {
        kind: Some(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
            municipality_code: "101".into(),
            observed_at: ts(now()),
            ..Default::default()
        })),
    };
    let case = submit(&mut opener, "open", "", open).await.unwrap().case_id;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let appoint = Event {
        kind: Some(event::Kind::GuardianAppointed(GuardianAppointed {
            guardian_agency_id: "ngo-redbarnet".into(),
            guardian_kind: GuardianKind::NgoSocialWorker as i32,
            guardian_contact: String::new(),
            appointed_at: ts(now()),
        })),
    };
    submit(&mut kbh, "appoint", &case, appoint).await.unwrap();
    let missing = || Event {
        kind: Some(event::Kind::ChildMissing(ChildMissing {
            last_seen_at: ts(now()),
            risk: MissingRisk::High as i32,
            ..Default::default()
        })),
    };
    let unclaimed = submit(&mut opener, "missing-1", &case, missing()).await.unwrap();
    let claimed = submit(&mut opener, "missing-2", &case, missing()).await.unwrap();
    routed(&mut opener, &unclaimed.event_id).await;
    routed(&mut opener, &claimed.event_id).await;
    let mut kp1 = Person::new(&d, "politi-koebenhavn-kp1").await;
    let r = kp1.req(ClaimAlertRequest {
        alert_id: claimed.event_id.clone(),
    });
    kp1.client.claim_alert(r).await.unwrap();
    let raised = kp1
        .list()
        .await
        .iter()
        .find(|a| a.alert_id == unclaimed.event_id)
        .unwrap()
        .raised_at
        .unwrap()
        .seconds;

    // the police service is down when the deadline passes, and comes back after it
    d.stop_sector(Sector::Police).await.unwrap();
    wait_for("the deadline to pass", LIMIT, || async {
        (now() > raised + DEADLINE).then_some(())
    })
    .await
    .unwrap();
    d.start_sector(Sector::Police).await.unwrap();

    let mut kp1 = Person::new(&d, "politi-koebenhavn-kp1").await;
    let escalated = wait_for("the escalation", LIMIT, || {
        let mut c = kp1.client.clone();
        let r = kp1.req(ListAlertsRequest {});
        let id = unclaimed.event_id.clone();
        async move {
            let alerts = c.list_alerts(r).await.ok()?.into_inner().alerts;
            alerts
                .into_iter()
                .find(|a| a.alert_id == id && a.state == AlertState::Escalated as i32)
        }
    })
    .await
    .unwrap();
    assert!(escalated.state_at.unwrap().seconds >= raised + DEADLINE);
    let list = kp1.list().await;
    let still = list.iter().find(|a| a.alert_id == claimed.event_id).unwrap();
    assert_eq!(
        still.state,
        AlertState::Claimed as i32,
        "a claimed alert is never escalated"
    );
    // the national unit has its copy
    let mut nsk = Person::new(&d, "politi-nsk-kp1").await;
    let copies = nsk.list().await;
    assert_eq!(
        copies
            .iter()
            .map(|a| (a.alert_id.as_str(), a.escalated_from.as_str()))
            .collect::<Vec<_>>(),
        vec![(unclaimed.event_id.as_str(), "politi-koebenhavn")]
    );
    // and the guardian is told
    let mut guardian = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let mut inbox = Inbox::open(&mut guardian).await;
    let notice = loop {
        let delivery = inbox.next_delivery().await;
        if delivery.envelope.as_ref().unwrap().message_type == "alert_escalated" {
            break delivery;
        }
        inbox.ack(delivery.delivery_id).await;
    };
    let Some(event::Kind::AlertEscalated(n)) = notice.envelope.unwrap().event.unwrap().kind else {
        panic!("an escalation notice")
    };
    assert_eq!(
        (n.alert_id.as_str(), n.escalated_to_agency_id.as_str()),
        (unclaimed.event_id.as_str(), "politi-nsk")
    );
    // exactly one escalation event, though every tick of the restarted service saw the alert
    let in_stream = d.subjects("IN", "henvis.in.police.alert_escalated.>").await.unwrap();
    assert_eq!(in_stream.values().sum::<usize>(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_in_immediate_danger_raises_an_urgent_alert_that_escalates_when_unclaimed() {
    const DEADLINE: i64 = 2;
    let d = Deployment::start_with(Options {
        urgent_alert_deadline_secs: DEADLINE as u64,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let report = |danger: bool| Event {
        kind: Some(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
            municipality_code: "746".into(),
            observed_at: ts(now() - 60),
            immediate_danger: danger,
            ..Default::default()
        })),
    };
    let danger = submit(&mut ngo, "danger", "", report(true)).await.unwrap();
    let calm = submit(&mut ngo, "calm", "", report(false)).await.unwrap();
    // Skanderborg belongs to Sydøstjyllands Politi
    let mut kp = Person::new(&d, "politi-sydoestjylland-kp1").await;
    let alerts = wait_for("both alerts", LIMIT, || {
        let mut c = kp.client.clone();
        let r = kp.req(ListAlertsRequest {});
        async move {
            let a = c.list_alerts(r).await.ok()?.into_inner().alerts;
            (a.len() == 2).then_some(a)
        }
    })
    .await
    .unwrap();
    let of = |id: &str| alerts.iter().find(|a| a.alert_id == id).unwrap().clone();
    let (urgent, normal) = (of(&danger.event_id), of(&calm.event_id));
    assert_eq!((urgent.urgency.as_str(), normal.urgency.as_str()), ("urgent", "normal"));
    let deadline = urgent.deadline.expect("an urgent alert shows its deadline");
    assert_eq!(deadline.seconds, urgent.raised_at.unwrap().seconds + DEADLINE);
    assert!(normal.deadline.is_none(), "a normal alert has no deadline here");
    // nobody claims it: it goes to the national unit
    let nsk = Person::new(&d, "politi-nsk-kp1").await;
    let copy = wait_for("the escalation to the national unit", LIMIT, || {
        let mut c = nsk.client.clone();
        let r = nsk.req(ListAlertsRequest {});
        let id = danger.event_id.clone();
        async move {
            let a = c.list_alerts(r).await.ok()?.into_inner().alerts;
            a.into_iter().find(|a| a.alert_id == id)
        }
    })
    .await
    .unwrap();
    assert_eq!(copy.escalated_from, "politi-sydoestjylland");
    let list = kp.list().await;
    assert_eq!(
        list.iter().find(|a| a.alert_id == calm.event_id).unwrap().state,
        AlertState::Open as i32,
        "the normal alert stays with the district"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_police_service_does_constant_work_however_many_alerts_are_stored() {
    use std::time::Duration;

    use henvis_domain::{AgencyId, AlertRecord, AlertState as State};
    const STORED: usize = 10_000;
    let d = Deployment::start().await.unwrap();
    // 10,000 stored alerts (normal ones, and urgent ones already claimed)
    let bus = henvis_bus::Bus::connect(
        &d.nats.url(),
        "test-alerts",
        Some(&henvis_bus::NatsIdentity::of(d.pki_dir(), &henvis_tests::inspector())),
    )
    .await
    .unwrap();
    let bucket = bus.alert_bucket().await.unwrap();
    let district = AgencyId::parse("politi-fyn").unwrap();
    let records: Vec<AlertRecord> = (0..STORED)
        .map(|i| AlertRecord {
            alert_id: henvis_domain::EventId::parse(&format!("01a220ca-9ff4-760c-a2f6-{i:012}")).unwrap(),
            case_id: "case".into(),
            kind: "suspected_victim_reported".into(),
            urgency: if i % 2 == 0 {
                henvis_domain::Urgency::Normal
            } else {
                henvis_domain::Urgency::Urgent
            },
            district: district.clone(),
            raised_at: now(),
            state: if i % 2 == 0 {
                State::Open
            } else {
                State::Claimed {
                    by: henvis_domain::PersonId::parse("politi-fyn-kp1").unwrap(),
                    at: now(),
                }
            },
            escalated_from: None,
            granted_classes: vec![],
            escalation_notified: false,
            history: vec![],
        })
        .collect();
    for chunk in records.chunks(500) {
        futures::future::try_join_all(
            chunk
                .iter()
                .map(|a| async move { bucket.create_if_absent(&a.key(), a).await }),
        )
        .await
        .unwrap();
    }
    // the police service connected before the alerts were written; give it a fresh start
    // so that it reads them all, then measure its NATS traffic while nothing happens
    let mut d = d;
    d.stop_sector(Sector::Police).await.unwrap();
    d.start_sector(Sector::Police).await.unwrap();
    let varz = || async {
        let v: serde_json::Value = d.nats.varz().await.unwrap();
        (
            v["in_msgs"].as_u64().unwrap(),
            v["out_msgs"].as_u64().unwrap(),
            v["cpu"].as_f64().unwrap_or(0.0),
        )
    };
    // settled once the restarted service's watch has read every stored alert: traffic
    // falls to its idle level (measured over one-second windows, up to the usual limit)
    wait_for(
        "the police service to finish reading the stored alerts",
        LIMIT,
        || async {
            let (a, b, _) = varz().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (c, e, _) = varz().await;
            ((c - a) + (e - b) < 200).then_some(())
        },
    )
    .await
    .unwrap();
    let (in0, out0, _) = varz().await;
    let window = Duration::from_secs(5);
    tokio::time::sleep(window).await;
    let (in1, out1, cpu) = varz().await;
    let per_sec = ((in1 - in0) + (out1 - out0)) as f64 / window.as_secs_f64();
    println!(
        "idle with {STORED} stored alerts: {per_sec:.1} NATS messages/s through the server (in {} out {}), nats-server cpu {cpu:.1} %",
        in1 - in0,
        out1 - out0
    );
    // before: every tick listed all 10,000 keys and read each (tens of thousands of
    // messages a second); now only heartbeats and the router's idle fetches remain
    assert!(per_sec < 100.0, "idle traffic grows with stored alerts: {per_sec:.1}/s");
}

/// The alert under `key` as stored, and its revision.
async fn stored_alert(d: &Deployment, key: &str) -> Option<(henvis_domain::AlertRecord, u64)> {
    let s = d.jetstream().await.ok()?.get_stream("KV_henvis_alerts").await.ok()?;
    let m = s
        .get_last_raw_message_by_subject(&format!("$KV.henvis_alerts.{key}"))
        .await
        .ok()?;
    Some((serde_json::from_slice(&m.payload).ok()?, m.sequence))
}

/// Changes the alert under `key` as a police service does, compare-and-set, without the
/// audit record that service writes next: what a crash between the two leaves behind.
async fn change_alert_unaudited(d: &Deployment, key: &str, change: impl FnOnce(&mut henvis_domain::AlertRecord)) {
    let (mut a, revision) = stored_alert(d, key).await.expect("the alert");
    change(&mut a);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Expected-Last-Subject-Sequence", revision.to_string().as_str());
    d.jetstream()
        .await
        .unwrap()
        .publish_with_headers(
            format!("$KV.henvis_alerts.{key}"),
            headers,
            serde_json::to_vec(&a).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The audit records of `case_id` of kind `kind` by `person` at `at`.
async fn step_records(d: &Deployment, case_id: &str, kind: &str, person: &str, at: i64) -> usize {
    d.audit(case_id)
        .await
        .unwrap()
        .iter()
        .filter(|(_, r)| r["kind"] == kind && r["person"] == person && r["at"] == at)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_step_left_without_its_audit_record_by_a_crash_is_recorded_once_by_the_alert_watch() {
    let mut d = Deployment::start().await.unwrap();
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let (report, _) = canary::canary_event(
        &schema,
        "suspected_victim_reported",
        &[
            ("municipality_code", Value::String("101".into())),
            ("immediate_danger", Value::Bool(false)),
        ],
    );
    let kbh = submit(&mut ngo, "unaudited", "", report).await.unwrap();
    let key = format!("politi-koebenhavn.{}", kbh.event_id);
    wait_for("the alert", LIMIT, || async {
        stored_alert(&d, &key).await.map(|_| ())
    })
    .await
    .unwrap();
    let (kp1, kp2) = ("politi-koebenhavn-kp1", "politi-koebenhavn-kp2");
    let person = |p: &str| henvis_domain::PersonId::parse(p).unwrap();

    // a claim stored while the police service runs, its audit record never written
    let claimed_at = now();
    change_alert_unaudited(&d, &key, |a| {
        a.state = henvis_domain::AlertState::Claimed {
            by: person(kp1),
            at: claimed_at,
        };
        a.history
            .push((henvis_domain::ALERT_CLAIMED.into(), kp1.into(), claimed_at));
    })
    .await;
    wait_for("the claim's audit record", LIMIT, || async {
        (step_records(&d, &kbh.case_id, "alert_claimed", kp1, claimed_at).await == 1).then_some(())
    })
    .await
    .unwrap();

    // a hand-over stored while no police service runs: the one started next records it
    d.stop_sector(Sector::Police).await.unwrap();
    let handed_at = claimed_at + 1;
    change_alert_unaudited(&d, &key, |a| {
        a.state = henvis_domain::AlertState::Claimed {
            by: person(kp2),
            at: handed_at,
        };
        a.history.push((
            format!("{}{kp2}", henvis_domain::ALERT_HANDED_OVER_TO),
            kp1.into(),
            handed_at,
        ));
    })
    .await;
    assert_eq!(
        step_records(&d, &kbh.case_id, "alert_handed_over", kp1, handed_at).await,
        0
    );
    d.start_sector(Sector::Police).await.unwrap();
    wait_for("the hand-over's audit record", LIMIT, || async {
        (step_records(&d, &kbh.case_id, "alert_handed_over", kp1, handed_at).await == 1).then_some(())
    })
    .await
    .unwrap();
    // the claim, written again by the restarted service, is still stored once
    assert_eq!(
        step_records(&d, &kbh.case_id, "alert_claimed", kp1, claimed_at).await,
        1
    );
    let comp = crate::delivery::audit_complete(&d, "the unaudited alert steps").await;
    assert_eq!((comp.alert_steps, comp.alert_steps_without_record), (2, 0));
}
