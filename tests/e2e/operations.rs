//! What operators see and rely on: Prometheus metrics and probes on each service's
//! operator port (the real binaries), readiness through a NATS outage and a drain, a
//! service that waits for NATS at start, and the configuration check.

use std::net::SocketAddr;

use henvis_domain::Sector;
use henvis_proto::henvis::events::v1::{Event, SuspectedVictimReported, event};
use henvis_tests::{Deployment, Options, RouterProcess, free_addr, http_get, metric, wait_for};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{Inbox, LIMIT, routed, submit};

const GIVEN: &str = "Zeta-Canary-4411";
const FAMILY: &str = "Omega-Canary-9902";

fn named_report() -> Event {
    Event {
        kind: Some(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
            municipality_code: "101".into(),
            observed_at: Some(prost_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            }),
            given_name: GIVEN.into(),
            family_name: FAMILY.into(),
            ..Default::default()
        })),
    }
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    body
}

/// Waits until `sample` in `addr`'s metrics satisfies `ok`; returns its value.
async fn await_metric(addr: SocketAddr, sample: &str, ok: impl Fn(f64) -> bool) -> f64 {
    wait_for(sample, LIMIT + LIMIT, || async {
        let text = http_get(addr, "/metrics").await.ok()?.1;
        metric(&text, sample).filter(|v| ok(*v))
    })
    .await
    .unwrap_or_else(|_| panic!("{sample} never as expected"))
}

async fn await_ready(addr: SocketAddr, status: u16, word: &str) {
    wait_for(&format!("/readyz {status} {word}"), LIMIT + LIMIT, || async {
        let (s, body) = http_get(addr, "/readyz").await.ok()?;
        (s == status && body.trim() == word).then_some(())
    })
    .await
    .unwrap();
}

/// Every label value in `text` is an id: letters, digits and `_ . / -` only.
fn labels_are_ids(text: &str) {
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let labels = rest.split('}').next().unwrap_or_default();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let value = pair
                .split_once('=')
                .map(|(_, v)| v.trim_matches('"'))
                .unwrap_or_default();
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | '+')),
                "label value `{value}` in `{line}`"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_report_calls_decisions_deliveries_and_backlog_as_metrics_naming_no_child() {
    let mut d = Deployment::start_with(Options {
        in_process_router: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let (router_m, ngo_m, social_m) = (free_addr().unwrap(), free_addr().unwrap(), free_addr().unwrap());
    let _router = RouterProcess::spawn_with(
        &d.nats.url(),
        600,
        d.pki_dir(),
        &[("HENVIS_METRICS_LISTEN", router_m.to_string())],
    )
    .unwrap();
    let _ngo = d
        .run_sector_as_process_with(Sector::Ngo, &[("HENVIS_METRICS_LISTEN", ngo_m.to_string())])
        .await
        .unwrap();
    let _social = d
        .run_sector_as_process_with(Sector::Social, &[("HENVIS_METRICS_LISTEN", social_m.to_string())])
        .await
        .unwrap();
    for addr in [router_m, ngo_m, social_m] {
        await_ready(addr, 200, "ready").await;
        assert_eq!(http_get(addr, "/livez").await.unwrap().0, 200);
    }

    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = submit(&mut ngo, "metrics-1", "", named_report()).await.unwrap();
    routed(&mut ngo, &r.event_id).await;
    let bad = submit(&mut ngo, "", "", named_report()).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let submit_rpc = "/henvis.broker.v1.ReferralService/Submit";
    let t = scrape(ngo_m).await;
    assert_eq!(
        metric(&t, r#"henvis_submits_total{sector="ngo",outcome="accepted"}"#),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        metric(&t, r#"henvis_submits_total{sector="ngo",outcome="INVALID_ARGUMENT"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &t,
            &format!(r#"henvis_grpc_requests_total{{rpc="{submit_rpc}",code="OK"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &t,
            &format!(r#"henvis_grpc_requests_total{{rpc="{submit_rpc}",code="INVALID_ARGUMENT"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&t, r#"henvis_submit_duration_seconds_count{sector="ngo"}"#),
        Some(2.0)
    );
    assert_eq!(metric(&t, "henvis_nats_connected"), Some(1.0));
    assert_eq!(metric(&t, "henvis_ready"), Some(1.0));

    // the router: its decision, and the municipality's delivery waiting
    let delivered = await_metric(
        router_m,
        r#"henvis_router_decisions_total{outcome="delivered",reason=""}"#,
        |v| v >= 1.0,
    )
    .await;
    assert_eq!(metric(&scrape(router_m).await, "henvis_router_events_total"), Some(1.0));
    let backlog = await_metric(router_m, r#"henvis_inbox_backlog{agency="kommune-101"}"#, |v| v >= 1.0).await;
    assert!(
        metric(
            &scrape(router_m).await,
            r#"henvis_inbox_oldest_unacked_seconds{agency="kommune-101"}"#
        )
        .is_some()
    );
    // the municipality reads and acknowledges: its latency is measured, the backlog empties
    let mut municipality = d.client(Sector::Social, "kommune-101").await.unwrap();
    let mut inbox = Inbox::open(&mut municipality).await;
    inbox.ack_through(&r.event_id).await;
    await_metric(
        social_m,
        r#"henvis_delivery_latency_seconds_count{sector="social"}"#,
        |v| v >= 1.0,
    )
    .await;
    await_metric(router_m, r#"henvis_inbox_backlog{agency="kommune-101"}"#, |v| v == 0.0).await;

    // nothing on any operator port names the child
    for addr in [router_m, ngo_m, social_m] {
        let text = scrape(addr).await;
        assert!(!text.contains(GIVEN) && !text.contains(FAMILY), "a name in the metrics");
        labels_are_ids(&text);
    }
    println!("metrics: {delivered} delivered decisions, backlog {backlog} before the inbox was read, then 0");
}

async fn health(d: &Deployment, sector: Sector) -> Option<i32> {
    let ch = d.channel(sector).await.ok()?;
    let r = HealthClient::new(ch)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_nats_connection_and_the_drain_while_liveness_stays() {
    let mut d = Deployment::start().await.unwrap();
    let social_m = free_addr().unwrap();
    let mut social = d
        .run_sector_as_process_with(Sector::Social, &[("HENVIS_METRICS_LISTEN", social_m.to_string())])
        .await
        .unwrap();
    await_ready(social_m, 200, "ready").await;
    assert_eq!(health(&d, Sector::Social).await, Some(ServingStatus::Serving as i32));

    // NATS goes away: not ready (gRPC health NOT_SERVING), alive, and back when NATS is
    d.nats.kill();
    await_ready(social_m, 503, "nats_down").await;
    assert_eq!(http_get(social_m, "/livez").await.unwrap().0, 200);
    assert_eq!(health(&d, Sector::Social).await, Some(ServingStatus::NotServing as i32));
    assert_eq!(metric(&scrape(social_m).await, "henvis_nats_connected"), Some(0.0));
    d.nats.restart().await.unwrap();
    await_ready(social_m, 200, "ready").await;
    assert_eq!(health(&d, Sector::Social).await, Some(ServingStatus::Serving as i32));
    assert!(metric(&scrape(social_m).await, "henvis_nats_disconnects_total").is_some_and(|v| v >= 1.0));

    // SIGTERM with an inbox stream open: draining (503) until the grace ends, then it exits
    let mut municipality = d.client(Sector::Social, "kommune-101").await.unwrap();
    let _inbox = Inbox::open(&mut municipality).await;
    social.terminate().unwrap();
    await_ready(social_m, 503, "draining").await;
    let status = wait_for("the service to exit", henvis_runtime::SHUTDOWN_GRACE + LIMIT, || {
        let exited = social.exited();
        async move { exited }
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_during_a_nats_outage_waits_for_nats_and_then_serves() {
    let mut d = Deployment::start().await.unwrap();
    d.stop_sector(Sector::Ngo).await.unwrap();
    d.nats.kill();
    let ngo_m = free_addr().unwrap();
    let _ngo = d
        .start_sector_process(Sector::Ngo, &[("HENVIS_METRICS_LISTEN", ngo_m.to_string())])
        .unwrap();
    // alive and saying why it is not ready
    await_ready(ngo_m, 503, "starting").await;
    assert_eq!(http_get(ngo_m, "/livez").await.unwrap().0, 200);
    d.nats.restart().await.unwrap();
    await_ready(ngo_m, 200, "ready").await;
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = submit(&mut ngo, "after-outage-1", "", crate::report("101"))
        .await
        .unwrap();
    routed(&mut ngo, &r.event_id).await;
}

/// Runs `bin` with `args` and `env`; (success, stdout, stderr).
fn run(bin: &str, args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let mut cmd = std::process::Command::new(dir.join(bin));
    cmd.args(args).env_remove("HENVIS_PKI_DIR").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_checks_its_configuration_before_opening_a_port() {
    let pki = tempfile::tempdir().unwrap();
    henvis_pki::DevPki::create(pki.path(), &henvis_domain::Directory::denmark().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let master = std::fs::read_to_string(pki.path().join("service/case-master.key"))
        .unwrap()
        .trim()
        .to_owned();
    let file = dir.path().join("henvis.toml");
    std::fs::write(
        &file,
        format!("pki_dir = \"{}\"\nretention_secs = 86400\n", pki.path().display()),
    )
    .unwrap();
    let config = file.display().to_string();
    for bin in [
        "henvis-router",
        "henvis-admin",
        "henvis-police",
        "henvis-health",
        "henvis-social",
        "henvis-ngo",
    ] {
        // file, then environment, then flags; the settings in effect with their sources
        let (ok, out, err) = run(
            bin,
            &["--config", &config, "--check-config", "--duplicate-window-secs", "120"],
            &[("HENVIS_AUDIT_RETENTION_DAYS", "400".into())],
        );
        assert!(ok, "{bin}: {err}");
        for line in [
            "retention_secs = 86400  # file",
            "audit_retention_days = 400  # env",
            "duplicate_window_secs = 120  # flag",
            "nats_url = \"nats://127.0.0.1:4222\"  # default",
            "# configuration OK",
        ] {
            assert!(out.contains(line), "{bin}: `{line}` not in\n{out}");
        }
        assert!(!out.contains(&master), "{bin} printed the case master key");
        // an unknown key is refused by name, and no port was opened for it
        let metrics = free_addr().unwrap();
        let bad = dir.path().join(format!("{bin}.toml"));
        std::fs::write(
            &bad,
            format!("pki_dir = \"{}\"\nretention_sec = 86400\n", pki.path().display()),
        )
        .unwrap();
        let (ok, _, err) = run(
            bin,
            &["--config", &bad.display().to_string()],
            &[("HENVIS_METRICS_LISTEN", metrics.to_string())],
        );
        assert!(!ok && err.contains("unknown key `retention_sec`"), "{bin}: {err}");
        assert!(http_get(metrics, "/livez").await.is_err(), "{bin} opened its port");
        // a file the settings name that does not hold what it should
        let (ok, _, err) = run(
            bin,
            &["--config", &config, "--check-config"],
            &[("HENVIS_PKI_DIR", dir.path().display().to_string())],
        );
        assert!(!ok && err.contains("pki_dir"), "{bin}: {err}");
        // an audit kept no longer than the data it describes
        let (ok, _, err) = run(
            bin,
            &["--config", &config, "--check-config", "--audit-retention-days", "1"],
            &[],
        );
        assert!(!ok && err.contains("HENVIS_AUDIT_RETENTION_DAYS"), "{bin}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_configurations_in_deploy_are_valid() {
    let pki = tempfile::tempdir().unwrap();
    henvis_pki::DevPki::create(pki.path(), &henvis_domain::Directory::denmark().unwrap()).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = |rel: &str| pki.path().join(rel).display().to_string();
    // the production paths of secrets and the PKI, pointed at a development PKI
    let env = [
        ("HENVIS_PKI_DIR", p("")),
        ("HENVIS_CASE_MASTER_KEY_FILE", p("service/case-master.key")),
        ("HENVIS_AUDIT_SIGNING_KEY", p("service/audit-signing.p8")),
        ("HENVIS_AUDIT_PUBLIC_KEY", p("audit-signing.pub")),
    ];
    for name in ["router", "admin", "police", "health", "social", "ngo"] {
        let file = root.join(format!("deploy/config/{name}.toml"));
        let (ok, out, err) = run(
            &format!("henvis-{name}"),
            &["--config", &file.display().to_string(), "--check-config"],
            &env,
        );
        assert!(ok, "deploy/config/{name}.toml: {err}");
        assert!(out.contains("stream_replicas = 3  # file"), "{name}: {out}");
    }
}

/// A received span: its service, trace id and name.
type Received = (String, Vec<u8>, String);

/// An OTLP trace collector: every span it receives.
#[derive(Clone, Default)]
struct Collector(std::sync::Arc<std::sync::Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let mut got = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push((service.clone(), span.trace_id, span.name));
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_referral_is_one_trace_from_submit_to_every_acknowledged_delivery() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut d = Deployment::start_with(Options {
        in_process_router: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let otlp = [
        ("HENVIS_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ];
    let _router = RouterProcess::spawn_with(&d.nats.url(), 600, d.pki_dir(), &otlp).unwrap();
    let _ngo = d.run_sector_as_process_with(Sector::Ngo, &otlp).await.unwrap();
    let _social = d.run_sector_as_process_with(Sector::Social, &otlp).await.unwrap();

    // the NGO's own system started the trace; henvis continues it
    let trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    let trace_id = hex::decode(trace_hex).unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let mut request = ngo.req(henvis_proto::henvis::broker::v1::SubmitRequest {
        idempotency_key: "traced-1".into(),
        case_id: String::new(),
        event: Some(named_report()),
        sender: None,
        actor_id: "officer-7".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_hex}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    let r = ngo.inner.submit(request).await.unwrap().into_inner();
    routed(&mut ngo, &r.event_id).await;
    let mut municipality = d.client(Sector::Social, "kommune-101").await.unwrap();
    let mut inbox = Inbox::open(&mut municipality).await;
    inbox.ack_through(&r.event_id).await;
    let expected = [
        ("henvis-ngo", "/henvis.broker.v1.ReferralService/Submit"),
        ("henvis-router", "route"),
        ("henvis-social", "offer"),
        ("henvis-social", "acknowledge"),
    ];
    let spans = wait_for("every service's spans of the referral", LIMIT + LIMIT, || {
        let got = collector.0.lock().unwrap().clone();
        let ours: Vec<(String, String)> = got
            .into_iter()
            .filter(|(_, t, _)| *t == trace_id)
            .map(|(s, _, n)| (s, n))
            .collect();
        let all = expected
            .iter()
            .all(|(s, n)| ours.iter().any(|(ss, nn)| ss == s && nn == n));
        async move { all.then_some(ours) }
    })
    .await
    .unwrap_or_else(|e| {
        let got = collector.0.lock().unwrap().clone();
        let seen: Vec<_> = got.iter().map(|(s, t, n)| (s, hex::encode(t), n)).collect();
        panic!("{e}: the collector has {seen:?}")
    });
    // and no span names the child
    let everything = format!("{:?}", collector.0.lock().unwrap());
    assert!(!everything.contains(GIVEN) && !everything.contains(FAMILY));
    println!(
        "trace {trace_hex}: {} spans from {:?}",
        spans.len(),
        expected.map(|e| e.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_account_answers_the_nats_servers_certificate_and_no_henvis_service() {
    let d = Deployment::start().await.unwrap();
    // the operator, with the nats-server's own certificate: the system account's reports
    let operator = henvis_tests::connect_as(
        &d.nats.url(),
        d.pki_dir(),
        &henvis_domain::Principal::Service("nats".into()),
    )
    .await
    .unwrap();
    let report = tokio::time::timeout(LIMIT, operator.request("$SYS.REQ.SERVER.PING.JSZ", "".into()))
        .await
        .expect("an answer in time")
        .expect("the system account answers");
    let v: serde_json::Value = serde_json::from_slice(&report.payload).unwrap();
    assert!(v["data"]["streams"].as_u64().unwrap_or(0) >= 8, "{v}");
    // every henvis service lives in the HENVIS account: system subjects answer nobody there
    for service in ["router", "admin", "police", "ngo"] {
        let c = henvis_tests::connect_as(
            &d.nats.url(),
            d.pki_dir(),
            &henvis_domain::Principal::Service(service.into()),
        )
        .await
        .unwrap();
        // (a service without the right to publish there gets no answer at all: 3 s will do)
        let asked = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            c.request("$SYS.REQ.SERVER.PING.JSZ", "".into()),
        )
        .await;
        assert!(!matches!(asked, Ok(Ok(_))), "{service} reached the system account");
    }
}
