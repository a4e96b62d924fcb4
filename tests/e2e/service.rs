//! Every service serves the standard health service and server reflection; the typed
//! sector API submits through the same path as the common one.

use henvis_domain::Sector;
use henvis_proto::henvis::broker::v1::DeliveryState;
use henvis_proto::henvis::{
    events::v1::*,
    police::v1::{ReportChildMissingRequest, police_service_client::PoliceServiceClient},
};
use henvis_tests::Deployment;
use tokio_stream::StreamExt;

use crate::{routed, submit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served_by_every_service() {
    let d = Deployment::start().await.unwrap();
    let router = d.service_channel(d.router).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(router);
    let s = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
        "the router"
    );
    for sector in Sector::ALL {
        let ch = d.channel(sector).await.unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
        let s = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "henvis.broker.v1.ReferralService".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            s.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        let names = listed_services(ch).await;
        // exactly what this port serves: its sector's typed service (and, on the police
        // service, alerts), the common API, health and reflection v1 and v1alpha
        let mut expected: std::collections::BTreeSet<String> = [
            "henvis.broker.v1.ReferralService".to_owned(),
            format!("henvis.{sector}.v1.{}Service", capitalised(sector)),
            "grpc.health.v1.Health".to_owned(),
            "grpc.reflection.v1.ServerReflection".to_owned(),
            "grpc.reflection.v1alpha.ServerReflection".to_owned(),
        ]
        .into();
        if sector == Sector::Police {
            expected.insert("henvis.police.v1.AlertService".to_owned());
        }
        assert_eq!(names, expected, "{sector}");
    }
    // the router's port: health and reflection only
    let names = listed_services(d.service_channel(d.router).await.unwrap()).await;
    let expected: std::collections::BTreeSet<String> = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(names, expected, "the router");
}

/// The services a port lists through gRPC reflection (v1).
async fn listed_services(ch: tonic::transport::Channel) -> std::collections::BTreeSet<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(r)) = resp.next().await else {
        panic!("reflection answered")
    };
    let Some(MessageResponse::ListServicesResponse(l)) = r.message_response else {
        panic!("a service list")
    };
    l.service.into_iter().map(|s| s.name).collect()
}

fn capitalised(s: Sector) -> String {
    let n = s.as_str();
    format!("{}{}", n[..1].to_uppercase(), &n[1..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_police_typed_api_reports_a_missing_child_on_an_open_case() {
    let d = Deployment::start().await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-reden-international").await.unwrap();
    let case = submit(&mut ngo, "open", "", crate::report("461"))
        .await
        .unwrap()
        .case_id;
    let mut police = PoliceServiceClient::new(d.channel_as(Sector::Police, "politi-fyn").await.unwrap());
    let req = tonic::Request::new(ReportChildMissingRequest {
        idempotency_key: "missing-1".into(),
        case_id: case.clone(),
        event: Some(ChildMissing {
            last_seen_at: Some(prost_types::Timestamp {
                seconds: 1_790_000_100,
                nanos: 0,
            }),
            risk: MissingRisk::High as i32,
            ..Default::default()
        }),
        actor_id: "officer-1".into(),
    });
    let r = police.report_child_missing(req).await.unwrap().into_inner();
    assert_eq!(r.case_id, case);
    let mut status_client = d.client(Sector::Police, "politi-fyn").await.unwrap();
    let status = routed(&mut status_client, &r.event_id).await;
    // Odense's police district is the sender itself; the municipality still gets it
    let to = crate::summary(&status);
    let (stored, withheld) = (DeliveryState::Stored as i32, DeliveryState::Withheld as i32);
    // no guardian yet: that route is withheld, and the sender sees only that, not why
    assert_eq!(
        to,
        vec![
            ("", withheld, "cm-guardian"),
            ("kommune-461", stored, "cm-municipality")
        ],
        "{status:?}"
    );
    assert!(
        status
            .recipients
            .iter()
            .all(|r| r.state != withheld || r.reason == "withheld by policy")
    );
}

/// Every nats-server configuration deploy/ ships.
const NATS_CONFIGS: &[&str] = &[
    "deploy/nats/single.conf",
    "deploy/nats/cluster-1.conf",
    "deploy/nats/cluster-2.conf",
    "deploy/nats/cluster-3.conf",
];

#[test]
fn the_shipped_nats_configurations_are_valid_for_the_pinned_server() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let version = std::process::Command::new(henvis_tests::nats_server_bin())
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let minor: u32 = version
        .trim_start_matches("nats-server: v")
        .split('.')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        version.starts_with("nats-server: v2.") && minor >= 12,
        "{version}: 2.12 or newer is needed for sync_interval"
    );
    let pki = tempfile::tempdir().unwrap();
    henvis_pki::DevPki::create(pki.path(), &henvis_domain::Directory::denmark().unwrap()).unwrap();
    for conf in NATS_CONFIGS {
        let store = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(henvis_tests::nats_server_bin())
            .env("HENVIS_NATS_STORE", store.path())
            .env("HENVIS_NATS_CERT", pki.path().join("service/nats.pem"))
            .env("HENVIS_NATS_KEY", pki.path().join("service/nats.key"))
            .env("HENVIS_NATS_CA", pki.path().join("ca.pem"))
            .env("HENVIS_NATS_STORE_KEY", "a-test-key-of-thirty-two-bytes!!")
            .arg("-t")
            .arg("-c")
            .arg(root.join(conf))
            .output()
            .unwrap();
        assert!(out.status.success(), "{conf}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stops_within_its_grace_with_an_inbox_open_and_the_delivery_comes_back() {
    let mut d = Deployment::start().await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = submit(&mut ngo, "grace-1", "", crate::report("101")).await.unwrap();
    routed(&mut ngo, &r.event_id).await;
    // the municipality's system holds its inbox open and does not acknowledge
    let mut municipality = d.client(Sector::Social, "kommune-101").await.unwrap();
    let mut inbox = crate::Inbox::open(&mut municipality).await;
    let first = inbox.next_delivery().await;
    assert_eq!(first.envelope.as_ref().unwrap().event_id, r.event_id);
    // the service is asked to stop: it does, the open stream notwithstanding
    let limit = henvis_runtime::SHUTDOWN_GRACE + std::time::Duration::from_secs(20);
    let started = std::time::Instant::now();
    tokio::time::timeout(limit, d.stop_sector(Sector::Social))
        .await
        .expect("the service stops within its grace")
        .unwrap();
    let took = started.elapsed();
    drop(inbox);
    // and the unacknowledged delivery is offered again by the next one
    d.start_sector(Sector::Social).await.unwrap();
    let mut municipality = d.client(Sector::Social, "kommune-101").await.unwrap();
    let mut inbox = crate::Inbox::open(&mut municipality).await;
    let again = inbox.next_delivery().await;
    assert_eq!(again.envelope.as_ref().unwrap().event_id, r.event_id);
    assert!(again.attempt >= 2, "offered again: attempt {}", again.attempt);
    inbox.ack(again.delivery_id).await;
    println!(
        "stopped with an inbox open in {:.1} s (grace {} s); the delivery offered again, attempt {}",
        took.as_secs_f64(),
        henvis_runtime::SHUTDOWN_GRACE.as_secs(),
        again.attempt
    );
}
