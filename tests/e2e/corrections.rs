//! What an outside client and a review found, each checked through the real services:
//! out-of-bounds values of every field kind of every event type, bodies that do not decode,
//! oversized requests, reused idempotency keys, references that point nowhere, who may add
//! to a case, what a refusal or a status reveals, and security refusals being counted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut};
use henvis_domain::Sector;
use henvis_policy::{Format, Schema, TimeWindow};
use henvis_proto::henvis::{
    broker::v1::{GetStatusRequest, SubmitRequest},
    events::v1::*,
};
use henvis_tests::Deployment;
use prost::Message;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, ReflectMessage, Value};
use tonic::Code;

use crate::{LIMIT, canary, matrix::sender_of, report, routed, submit};

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn timestamp(m: &prost_reflect::MessageDescriptor, seconds: i64, nanos: i32) -> Value {
    let mut t = DynamicMessage::new(m.clone());
    t.set_field_by_name("seconds", Value::I64(seconds));
    t.set_field_by_name("nanos", Value::I32(nanos));
    Value::Message(t)
}

/// Out-of-bounds values of one (non-list) field, each with the kind of bound it breaks.
fn bad_items(schema: &Schema, f: &FieldDescriptor) -> Vec<(&'static str, Value)> {
    let b = schema.bounds_of(f.full_name()).cloned().unwrap_or_default();
    match f.kind() {
        Kind::Enum(_) => vec![("enum", Value::EnumNumber(999))],
        Kind::String => match b.format {
            Some(Format::Line | Format::Text) => vec![
                ("length", Value::String("x".repeat(b.max_chars as usize + 1))),
                ("control", Value::String("a\u{0}b".into())),
            ],
            Some(_) => vec![("format", Value::String("not valid!".into()))],
            None => vec![],
        },
        Kind::Uint32 => vec![("range", Value::U32(b.max + 1))],
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            let ahead = match b.time {
                Some(TimeWindow::Planned) => 11 * 366 * 24 * 3600,
                _ => 366 * 24 * 3600,
            };
            vec![
                ("future", timestamp(&m, now_secs() + ahead, 0)),
                ("1900", timestamp(&m, -2_208_988_800, 0)),
                ("nanos", timestamp(&m, now_secs() - 60, -1)),
            ]
        }
        _ => vec![],
    }
}

/// Every mutation of `msg`'s fields (one level into henvis messages): the field path that
/// must be named, the kind of bound, and the mutated message.
fn mutations(schema: &Schema, msg: &DynamicMessage, path: &str, depth: usize) -> Vec<(String, String, DynamicMessage)> {
    let mut out = Vec::new();
    for f in msg.descriptor().fields() {
        let field_path = format!("{path}.{}", f.name());
        let nested = matches!(f.kind(), Kind::Message(ref m) if m.full_name().starts_with("henvis."));
        if f.is_list() {
            let b = schema.bounds_of(f.full_name()).cloned().unwrap_or_default();
            if let Value::List(items) = msg.get_field(&f).into_owned()
                && let Some(first) = items.first()
            {
                let mut m = msg.clone();
                m.set_field(&f, Value::List(vec![first.clone(); b.max_items as usize + 1]));
                out.push((field_path.clone(), "count".into(), m));
                if nested && depth == 0 {
                    if let Value::Message(inner) = first {
                        for (p, kind, bad) in mutations(schema, inner, &format!("{field_path}[0]"), depth + 1) {
                            let mut m = msg.clone();
                            m.set_field(&f, Value::List(vec![Value::Message(bad)]));
                            out.push((p, kind, m));
                        }
                    }
                } else {
                    for (kind, v) in bad_items(schema, &f) {
                        let mut m = msg.clone();
                        m.set_field(&f, Value::List(vec![v]));
                        out.push((format!("{field_path}[0]"), kind.into(), m));
                    }
                }
            }
        } else if nested {
            if depth == 0
                && let Value::Message(inner) = msg.get_field(&f).into_owned()
            {
                for (p, kind, bad) in mutations(schema, &inner, &field_path, depth + 1) {
                    let mut m = msg.clone();
                    m.set_field(&f, Value::Message(bad));
                    out.push((p, kind, m));
                }
            }
        } else {
            for (kind, v) in bad_items(schema, &f) {
                let mut m = msg.clone();
                m.set_field(&f, v);
                out.push((field_path.clone(), kind.into(), m));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_and_field_kind_out_of_bounds_is_refused_naming_the_field() {
    let d = Deployment::start().await.unwrap();
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut clients = std::collections::HashMap::new();
    for sector in Sector::ALL {
        clients.insert(sector, d.client(sector, sender_of(sector)).await.unwrap());
    }
    let before = d.stream_messages("IN").await.unwrap();
    let some_case = uuid::Uuid::new_v4().to_string();
    let mut by_kind: std::collections::BTreeMap<String, usize> = Default::default();
    let mut types = 0;
    for mt in schema.message_types() {
        if henvis_domain::SYSTEM_TYPES.contains(&mt.as_str()) {
            continue;
        }
        let sector = Sector::ALL
            .into_iter()
            .find(|s| henvis_domain::originates(*s).contains(&mt.as_str()))
            .unwrap();
        types += 1;
        let (valid, _) = canary::canary_event_tagged(&schema, mt.as_str(), "b", &[]);
        let event =
            DynamicMessage::decode(schema.event_descriptor().clone(), valid.encode_to_vec().as_slice()).unwrap();
        schema
            .validate(&event, SystemTime::now(), &d.directory)
            .unwrap_or_else(|e| panic!("the unmutated `{mt}` is valid: {e}"));
        let kind_field = schema.event_descriptor().get_field_by_name(mt.as_str()).unwrap();
        let Value::Message(inner) = event.get_field(&kind_field).into_owned() else {
            panic!("{mt}")
        };
        let case = if mt.as_str() == "suspected_victim_reported" {
            ""
        } else {
            some_case.as_str()
        };
        for (i, (path, kind, bad)) in mutations(&schema, &inner, &format!("event.{mt}"), 0)
            .into_iter()
            .enumerate()
        {
            let mut ev = DynamicMessage::new(schema.event_descriptor().clone());
            ev.set_field(&kind_field, Value::Message(bad));
            let event = Event::decode(ev.encode_to_vec().as_slice()).unwrap();
            let c = clients.get_mut(&sector).unwrap();
            let e = submit(c, &format!("bad-{mt}-{i}"), case, event)
                .await
                .expect_err(&format!("{path} ({kind}) accepted"));
            assert_eq!(e.code(), Code::InvalidArgument, "{path} ({kind}): {}", e.message());
            assert!(
                e.message().starts_with(&path),
                "{path} ({kind}) names the field: {}",
                e.message()
            );
            *by_kind.entry(kind).or_default() += 1;
        }
    }
    assert_eq!(
        d.stream_messages("IN").await.unwrap(),
        before,
        "nothing refused was stored"
    );
    let total: usize = by_kind.values().sum();
    println!(
        "bad-input matrix: {types} event types, {total} out-of-bounds submissions, each INVALID_ARGUMENT naming the field; by kind: {by_kind:?}; IN unchanged"
    );
    for kind in [
        "enum", "length", "control", "format", "range", "future", "1900", "nanos", "count",
    ] {
        assert!(
            by_kind.get(kind).copied().unwrap_or(0) > 0,
            "the matrix covers `{kind}`"
        );
    }
}

/// Sends raw bytes as the body of a unary call and decodes nothing: for bodies no client
/// generated from the protos would send.
#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

async fn raw_submit(ch: tonic::transport::Channel, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/henvis.broker.v1.ReferralService/Submit");
    grpc.unary(tonic::Request::new(body), path, RawCodec).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_oversized_bodies_are_the_clients_error_and_name_what_failed() {
    let d = Deployment::start().await.unwrap();
    let ch = d.channel_as(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let before = d.stream_messages("IN").await.unwrap();
    // garbage: a field key with a wire type that does not exist
    let e = raw_submit(ch.clone(), vec![0x0f, 0xff, 0xff, 0xff]).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(
        e.message().contains("does not decode as a `SubmitRequest`"),
        "{}",
        e.message()
    );
    // invalid UTF-8 in a string field (idempotency_key, field 1)
    let e = raw_submit(ch.clone(), vec![0x0a, 0x02, 0xff, 0xfe]).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(
        e.message().contains("idempotency_key"),
        "names the field: {}",
        e.message()
    );
    // over the 256 KiB request limit
    let big = SubmitRequest {
        idempotency_key: "big".into(),
        actor_id: "a".repeat(300 * 1024),
        ..Default::default()
    };
    let e = raw_submit(ch.clone(), big.encode_to_vec()).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("262144 bytes"), "names the limit: {}", e.message());
    assert_eq!(d.stream_messages("IN").await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_idempotency_key_with_another_body_is_refused_and_a_true_retry_answered() {
    let d = Deployment::start().await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let first = submit(&mut ngo, "k-1", "", report("101")).await.unwrap();
    let again = submit(&mut ngo, "k-1", "", report("101")).await.unwrap();
    assert!(again.duplicate && again.event_id == first.event_id);
    let before = d.stream_messages("IN").await.unwrap();
    let e = submit(&mut ngo, "k-1", "", report("147")).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{}", e.message());
    assert!(
        e.message().contains("`k-1`") && e.message().contains("differs"),
        "{}",
        e.message()
    );
    assert_eq!(
        d.stream_messages("IN").await.unwrap(),
        before,
        "the second body was not stored"
    );
    // another agency may use the same key for its own event
    let mut other = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let own = submit(&mut other, "k-1", "", report("147")).await.unwrap();
    assert!(!own.duplicate && own.event_id != first.event_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_must_point_at_something_the_sender_may_name() {
    let d = Deployment::start().await.unwrap();
    let mut opener = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let opened = submit(&mut opener, "open", "", report("101")).await.unwrap();
    let case = opened.case_id.clone();
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let appoint = Event {
        kind: Some(event::Kind::GuardianAppointed(GuardianAppointed {
            guardian_agency_id: "ngo-redbarnet".into(),
            guardian_kind: GuardianKind::NgoSocialWorker as i32,
            guardian_contact: String::new(),
            appointed_at: Some(SystemTime::now().into()),
        })),
    };
    submit(&mut kbh, "appoint", &case, appoint).await.unwrap();
    let mut guardian = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let before = d.stream_messages("IN").await.unwrap();
    // withdrawing a consent never recorded
    let withdraw = |id: &str| Event {
        kind: Some(event::Kind::ConsentWithdrawn(ConsentWithdrawn {
            consent_id: id.into(),
            reason: String::new(),
        })),
    };
    let e = submit(&mut guardian, "w-unknown", &case, withdraw("never"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    assert!(
        e.message().starts_with("event.consent_withdrawn.consent_id"),
        "{}",
        e.message()
    );
    // recording a consent id twice
    let consent = |id: &str| Event {
        kind: Some(event::Kind::ConsentRecorded(ConsentRecorded {
            consent_id: id.into(),
            recipient_sectors: vec![ConsentSector::Health as i32],
            valid_from: Some(SystemTime::now().into()),
            valid_until: Some((SystemTime::now() + Duration::from_secs(3600)).into()),
            ..Default::default()
        })),
    };
    submit(&mut guardian, "c1", &case, consent("c1")).await.unwrap();
    let e = submit(&mut guardian, "c1-again", &case, consent("c1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{}", e.message());
    // a validity period that ends before it starts
    let mut backwards = consent("c2");
    if let Some(event::Kind::ConsentRecorded(c)) = &mut backwards.kind {
        c.valid_until = Some((SystemTime::now() - Duration::from_secs(3600)).into());
    }
    let e = submit(&mut guardian, "c2", &case, backwards).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(
        e.message().starts_with("event.consent_recorded.valid_until"),
        "{}",
        e.message()
    );
    // the recorded consent can be withdrawn
    submit(&mut guardian, "w-c1", &case, withdraw("c1")).await.unwrap();
    assert_eq!(
        d.stream_messages("IN").await.unwrap(),
        before + 2,
        "only the valid consent and its withdrawal were stored"
    );
}

/// Only a report that opens a new case (it names none) records its sender as the case's
/// opener: the opener's own retry writes nothing new, and a report naming a case that
/// exists — the opener's second one, or one by the case's police district — records no
/// opening (before, the district would have been recorded as having opened the case, and
/// every such report cost a refused write and a read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_report_that_opens_a_case_records_its_sender_as_the_opener() {
    let d = Deployment::start().await.unwrap();
    let mut opener = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let opened = submit(&mut opener, "open", "", report("101")).await.unwrap();
    routed(&mut opener, &opened.event_id).await;
    let retry = submit(&mut opener, "open", "", report("101")).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.case_id, opened.case_id);
    submit(&mut opener, "second", &opened.case_id, report("101"))
        .await
        .unwrap();
    let mut police = d.client(Sector::Police, "politi-koebenhavn").await.unwrap();
    submit(&mut police, "theirs", &opened.case_id, report("101"))
        .await
        .unwrap();
    let openings = d
        .subjects("KV_henvis_idempotency", "$KV.henvis_idempotency.*.opened.>")
        .await
        .unwrap();
    println!("opening records after an opening, its retry and two reports on the case: {openings:?}");
    assert_eq!(
        openings.into_iter().collect::<Vec<_>>(),
        vec![(
            format!("$KV.henvis_idempotency.ngo-redbarnet.opened.{}", opened.case_id),
            1
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_outside_a_case_cannot_add_to_it_or_learn_that_it_exists() {
    let d = Deployment::start().await.unwrap();
    let mut opener = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let opened = submit(&mut opener, "open", "", report("101")).await.unwrap();
    let missing = || Event {
        kind: Some(event::Kind::ChildMissing(ChildMissing {
            last_seen_at: Some((SystemTime::now() - Duration::from_secs(600)).into()),
            risk: MissingRisk::High as i32,
            ..Default::default()
        })),
    };
    let before = d.stream_messages("IN").await.unwrap();
    let mut stranger = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let on_case = submit(&mut stranger, "m1", &opened.case_id, missing())
        .await
        .unwrap_err();
    let unknown_case = uuid::Uuid::new_v4().to_string();
    let on_nothing = submit(&mut stranger, "m2", &unknown_case, missing()).await.unwrap_err();
    assert_eq!(on_case.code(), Code::NotFound);
    assert_eq!(
        on_case.message().replace(&opened.case_id, "ID"),
        on_nothing.message().replace(&unknown_case, "ID"),
        "the same answer as for a case that does not exist"
    );
    assert_eq!(d.stream_messages("IN").await.unwrap(), before, "nothing stored");
    // the opener, and an agency the case was routed to, may add to it
    submit(&mut opener, "m3", &opened.case_id, missing()).await.unwrap();
    routed(&mut opener, &opened.event_id).await;
    let mut police = d.client(Sector::Police, "politi-koebenhavn").await.unwrap();
    let update = Event {
        kind: Some(event::Kind::InvestigationUpdate(InvestigationUpdate {
            legal_provision: "straffeloven § 262 a".into(),
            status: InvestigationStatus::Opened as i32,
            ..Default::default()
        })),
    };
    submit(&mut police, "i1", &opened.case_id, update).await.unwrap();

    // GetStatus of another agency's event: NOT_FOUND, exactly as an unknown event
    let theirs = stranger
        .inner
        .get_status(GetStatusRequest {
            event_id: opened.event_id.clone(),
        })
        .await
        .unwrap_err();
    let unknown_event = "01a220ca-9ff4-760c-a2f6-a965ae3eddc3";
    let nothing = stranger
        .inner
        .get_status(GetStatusRequest {
            event_id: unknown_event.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    assert_eq!(
        theirs.message().replace(&opened.event_id, "ID"),
        nothing.message().replace(unknown_event, "ID")
    );
    // the sender sees its own event at once, routed or not
    let own = opener
        .inner
        .get_status(GetStatusRequest {
            event_id: opened.event_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(own.into_inner().event_id, opened.event_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_refusals_are_counted_and_the_router_port_says_what_it_serves() {
    use henvis_runtime::refusals::counts;
    let d = Deployment::start().await.unwrap();
    let forged_before = counts().get("forged_identity").copied().unwrap_or(0);
    let wrong_before = counts().get("wrong_service").copied().unwrap_or(0);
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let req = SubmitRequest {
        idempotency_key: "forged".into(),
        event: Some(report("101")),
        sender: Some(henvis_proto::henvis::broker::v1::Sender {
            agency_id: "ngo-hopenow".into(),
            ..Default::default()
        }),
        actor_id: "a".into(),
        ..Default::default()
    };
    let e = ngo.inner.submit(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let ch = d.channel_as(Sector::Health, "ngo-redbarnet").await.unwrap();
    let mut wrong = henvis_proto::henvis::broker::v1::referral_service_client::ReferralServiceClient::new(ch);
    let e = wrong
        .get_status(GetStatusRequest {
            event_id: "01a220ca-9ff4-760c-a2f6-a965ae3eddc3".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(counts().get("forged_identity").copied().unwrap_or(0) > forged_before);
    assert!(counts().get("wrong_service").copied().unwrap_or(0) > wrong_before);
    // an agency on the router's port is told what the port serves, not that it is unknown
    let principal = d.principal("ngo-redbarnet").unwrap();
    let ch = henvis_runtime::tls::connect_as(&d.router.to_string(), d.pki_dir(), &principal)
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let e = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("services and administrators"), "{}", e.message());
    assert!(!e.message().contains("unknown"), "{}", e.message());
}

/// An envelope as a sector service would store it, claiming `sender`.
fn forged_envelope(
    sender: &str,
    sector: i32,
    case_id: &str,
    event: Event,
) -> henvis_proto::henvis::broker::v1::Envelope {
    let mt = match &event.kind {
        Some(event::Kind::SuspectedVictimReported(_)) => "suspected_victim_reported",
        Some(event::Kind::GuardianAppointed(_)) => "guardian_appointed",
        Some(event::Kind::ActionPlanUpdated(_)) => "action_plan_updated",
        _ => "child_missing",
    };
    henvis_proto::henvis::broker::v1::Envelope {
        event_id: henvis_domain::EventId::new_now().to_string(),
        idempotency_key: format!("forged-{}", uuid::Uuid::new_v4()),
        message_type: mt.into(),
        sender: Some(henvis_proto::henvis::broker::v1::Sender {
            agency_id: sender.into(),
            sector,
            actor_id: "x".into(),
            person_id: String::new(),
        }),
        case_id: case_id.into(),
        submitted_at: Some(SystemTime::now().into()),
        event: Some(event),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_into_in_behind_the_checks_are_not_routed_but_kept_with_an_alert() {
    use henvis_proto::henvis::broker::v1::Sector as Pb;
    let d = Deployment::start().await.unwrap();
    let mut opener = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let opened = submit(&mut opener, "open", "", report("101")).await.unwrap();
    routed(&mut opener, &opened.event_id).await;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let appoint = |who: &str| Event {
        kind: Some(event::Kind::GuardianAppointed(GuardianAppointed {
            guardian_agency_id: who.into(),
            guardian_kind: GuardianKind::NgoSocialWorker as i32,
            guardian_contact: String::new(),
            appointed_at: Some(SystemTime::now().into()),
        })),
    };
    submit(&mut kbh, "appoint", &opened.case_id, appoint("ngo-redbarnet"))
        .await
        .unwrap();
    let plan = Event {
        kind: Some(event::Kind::ActionPlanUpdated(ActionPlanUpdated {
            plan_version: 1,
            ..Default::default()
        })),
    };
    let case = opened.case_id.clone();
    // what a compromised NGO service could publish with its own NATS rights
    let forged = [
        (
            "an agency of another sector (the municipality)",
            forged_envelope("kommune-101", Pb::Social as i32, &case, report("101")),
            "suspected_victim_reported",
        ),
        (
            "a type the NGO sector never originates",
            forged_envelope("ngo-hopenow", Pb::Ngo as i32, &case, appoint("ngo-hopenow")),
            "guardian_appointed",
        ),
        (
            "a guardian's plan from an NGO that is not the guardian",
            forged_envelope("ngo-hopenow", Pb::Ngo as i32, &case, plan),
            "action_plan_updated",
        ),
    ];
    let ngo_service = henvis_domain::Principal::Service("ngo".into());
    let nc = henvis_tests::connect_as(&d.nats.url(), d.pki_dir(), &ngo_service)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nc);
    let dead_before = d.stream_messages("DEAD").await.unwrap();
    let mut ids = Vec::new();
    for (what, env, mt) in &forged {
        let subject = format!("henvis.in.ngo.{mt}.{case}");
        // sealed with the case's key, as the service could (it holds the master key)
        js.publish(subject, d.sealed(&case, &env.encode_to_vec()).await.unwrap())
            .await
            .unwrap()
            .await
            .unwrap_or_else(|e| panic!("{what}: the NGO service may publish under its sector: {e}"));
        ids.push(env.event_id.clone());
    }
    // each is kept in the dead letters with an administrator alert …
    let dead = henvis_tests::wait_for(
        "the forged events in the dead letters",
        Duration::from_secs(30),
        || async {
            let n = d.stream_messages("DEAD").await.ok()?;
            (n >= dead_before + forged.len() as u64).then_some(n)
        },
    )
    .await
    .unwrap();
    let alerts = d.read_all("AUDIT", "henvis.audit.admin.>").await.unwrap();
    let unroutable = alerts
        .iter()
        .filter(|(_, p)| String::from_utf8_lossy(p).contains("unroutable_event"))
        .count();
    assert!(
        unroutable >= forged.len(),
        "an administrator alert for each: {unroutable}"
    );
    // … and none was delivered to anyone
    let js_admin = d.jetstream().await.unwrap();
    let out = js_admin.get_stream("OUT").await.unwrap();
    for seq in 1..=out.get_info().await.unwrap().state.last_sequence {
        let Ok(m) = out.get_raw_message(seq).await else {
            continue;
        };
        let delivery =
            henvis_proto::henvis::broker::v1::Delivery::decode(d.opened(&m.payload).await.unwrap().as_slice()).unwrap();
        let id = delivery.envelope.unwrap().event_id;
        assert!(!ids.contains(&id), "a forged event was delivered");
    }
    println!(
        "forged into IN: {} published, dead letters {} (from {dead_before}), delivered 0",
        forged.len(),
        dead
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weaker_existing_stream_or_one_replica_on_a_cluster_refuses_to_start() {
    let d = Deployment::start().await.unwrap();
    // an operator recreates the dead-letter stream in memory
    let js = d.jetstream().await.unwrap();
    let dead = js
        .get_stream("DEAD")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    js.delete_stream("DEAD").await.unwrap();
    js.create_stream(async_nats::jetstream::stream::Config {
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..dead
    })
    .await
    .unwrap();
    let e = henvis_router::build(&d.router_config(1)).await.err().expect("refused");
    let text = format!("{e:#}");
    assert!(
        text.contains("stream `DEAD` exists with a weaker configuration") && text.contains("Memory"),
        "{text}"
    );
    drop(d);
    // a cluster with one replica per stream
    let d = Deployment::start_with(henvis_tests::Options {
        nats_nodes: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let e = henvis_router::build(&d.router_config(1)).await.err().expect("refused");
    assert!(format!("{e:#}").contains("HENVIS_STREAM_REPLICAS=3"), "{e:#}");
    henvis_router::build(&d.router_config(3)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_route_certificate_cannot_join_the_cluster() {
    let mut d = Deployment::start_with(henvis_tests::Options {
        nats_nodes: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let peers = |v: &serde_json::Value| -> std::collections::BTreeSet<String> {
        v["routes"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|x| x["remote_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let formed = henvis_tests::wait_for("the three nodes to route to each other", LIMIT, || async {
        let p = peers(&d.nats.monitor(0, "/routez").await.ok()?);
        (p.len() == 2).then_some(p)
    })
    .await
    .unwrap();
    // a fourth server whose route certificate comes from another CA
    let stranger_pki = tempfile::tempdir().unwrap();
    henvis_pki::DevPki::create(stranger_pki.path(), &d.directory).unwrap();
    let i = d.nats.spawn_stranger(stranger_pki.path()).unwrap();
    henvis_tests::wait_for("the stranger to run", LIMIT, || async {
        d.nats.monitor(i, "/varz").await.ok()
    })
    .await
    .unwrap();
    // it keeps trying; over several of its attempts nobody routes to it
    let mut checks = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < deadline {
        let own = peers(&d.nats.monitor(i, "/routez").await.unwrap());
        let node0 = peers(&d.nats.monitor(0, "/routez").await.unwrap());
        assert!(own.is_empty(), "the stranger joined: {own:?}");
        assert_eq!(node0, formed, "the cluster's routes changed");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "cluster route TLS: the stranger node (another CA) got 0 routes in {checks} checks over 6 s; the cluster kept its 2 peers per node"
    );
}
