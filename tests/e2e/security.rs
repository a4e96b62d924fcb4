//! Who a caller is comes from its client certificate, never from what it says: every
//! identity that must be refused is tried against a real service over real TLS.

use std::time::Duration;

use henvis_domain::{AgencyId, Principal, Sector};
use henvis_pki::{Ca, DevPki, Validity};
use henvis_proto::henvis::broker::v1::{Sender, SubmitRequest, referral_service_client::ReferralServiceClient};
use henvis_tests::{Deployment, wait_for};
use time::OffsetDateTime;
use tonic::Code;

use crate::{LIMIT, report};

/// Every sensitive field of the events tried carries a canary string.
fn canary_report() -> (
    henvis_proto::henvis::events::v1::Event,
    Vec<(String, henvis_domain::Class)>,
) {
    let schema = henvis_policy::Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
    crate::canary::canary_event(
        &schema,
        "suspected_victim_reported",
        &[("municipality_code", prost_reflect::Value::String("101".into()))],
    )
}

fn submit_req(key: &str) -> SubmitRequest {
    SubmitRequest {
        idempotency_key: key.into(),
        event: Some(canary_report().0),
        actor_id: "a".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_identity_that_must_be_refused_is_refused_and_a_renewed_certificate_works_without_restart() {
    let d = Deployment::start().await.unwrap();
    let ca_pem = std::fs::read(d.pki_dir().join("ca.pem")).unwrap();
    let before = d.stream_messages("IN").await.unwrap();
    let redbarnet = Principal::Agency(AgencyId::parse("ngo-redbarnet").unwrap());
    let mut attempts = 0;
    let mut accepted = 0;
    let mut tried: Vec<String> = Vec::new();
    // one attempt: a Submit to the NGO service presenting `identity`, expecting `code`
    macro_rules! attempt {
        ($what:expr, $sector:expr, $identity:expr, $req:expr, $code:expr) => {{
            attempts += 1;
            let identity: Option<(String, String)> = $identity;
            let ch = d
                .channel_with(
                    $sector,
                    &ca_pem,
                    identity.as_ref().map(|(c, k)| (c.as_bytes(), k.as_bytes())),
                )
                .await;
            let outcome = match ch {
                Ok(ch) => ReferralServiceClient::new(ch).submit($req).await.map(|_| ()),
                Err(e) => Err(tonic::Status::unavailable(e.to_string())),
            };
            match outcome {
                Ok(()) => {
                    accepted += 1;
                    tried.push(format!("{} -> ACCEPTED", $what));
                }
                Err(e) => {
                    assert_eq!(e.code(), $code, "{}: {}", $what, e.message());
                    tried.push(format!("{} -> {:?} ({})", $what, e.code(), e.message()));
                }
            }
        }};
    }
    let pki = DevPki::open(d.pki_dir()).unwrap();
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let pair = |i: henvis_pki::Issued| Some((i.cert_pem, i.key_pem));

    attempt!(
        "no certificate",
        Sector::Ngo,
        None,
        submit_req("s1"),
        Code::Unauthenticated
    );
    let rogue = Ca::new("rogue").unwrap();
    attempt!(
        "self-signed certificate",
        Sector::Ngo,
        Some((rogue.cert_pem().to_owned(), rogue.key_pem())),
        submit_req("s2"),
        Code::Unauthenticated
    );
    attempt!(
        "certificate from another CA",
        Sector::Ngo,
        pair(rogue.issue(&redbarnet, Validity::days(30), 7).unwrap()),
        submit_req("s3"),
        Code::Unauthenticated
    );
    let expired = Validity {
        not_before: now - 30 * day,
        not_after: now - day,
    };
    attempt!(
        "expired certificate",
        Sector::Ngo,
        pair(pki.ca().issue(&redbarnet, expired, 9001).unwrap()),
        submit_req("s4"),
        Code::Unauthenticated
    );
    let future = Validity {
        not_before: now + day,
        not_after: now + 30 * day,
    };
    attempt!(
        "certificate not yet valid",
        Sector::Ngo,
        pair(pki.ca().issue(&redbarnet, future, 9002).unwrap()),
        submit_req("s5"),
        Code::Unauthenticated
    );
    let stranger = Principal::Agency(AgencyId::parse("kommune-999").unwrap());
    attempt!(
        "valid certificate of an agency unknown to the directory",
        Sector::Ngo,
        pair(pki.ca().issue(&stranger, Validity::days(30), 9003).unwrap()),
        submit_req("s6"),
        Code::Unauthenticated
    );
    let file = |p: &Principal| {
        let (c, k) = pki.paths(p);
        Some((std::fs::read_to_string(c).unwrap(), std::fs::read_to_string(k).unwrap()))
    };
    let health = Principal::Agency(AgencyId::parse("region-hovedstaden").unwrap());
    attempt!(
        "health agency calling the police service",
        Sector::Police,
        file(&health),
        submit_req("s7"),
        Code::PermissionDenied
    );
    let mut claims_other = submit_req("s8");
    claims_other.sender = Some(Sender {
        agency_id: "politi-koebenhavn".into(),
        ..Default::default()
    });
    attempt!(
        "body claiming another sender",
        Sector::Ngo,
        file(&redbarnet),
        claims_other,
        Code::InvalidArgument
    );

    let kp1 = Principal::Person(henvis_domain::PersonId::parse("politi-koebenhavn-kp1").unwrap());
    let mut other_actor = submit_req("s10");
    other_actor.actor_id = "politi-koebenhavn-kp2".into();
    attempt!(
        "contact person claiming to be another person",
        Sector::Police,
        file(&kp1),
        other_actor,
        Code::InvalidArgument
    );

    // plaintext: the service speaks only TLS
    attempts += 1;
    let plain = tonic::transport::Channel::from_shared(format!("http://{}", d.endpoints[&Sector::Ngo]))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    match plain {
        Ok(ch) => {
            let e = ReferralServiceClient::new(ch)
                .submit(submit_req("s9"))
                .await
                .unwrap_err();
            tried.push(format!("plain TCP -> {:?}", e.code()));
        }
        Err(e) => tried.push(format!("plain TCP -> connection refused ({e})")),
    }

    assert_eq!(
        d.stream_messages("IN").await.unwrap(),
        before,
        "nothing refused was stored"
    );

    // a person calling as themself is recorded as the person their certificate names
    let mut own = submit_req("person-1");
    own.actor_id = String::new();
    let ch = d.channel_as(Sector::Police, "politi-koebenhavn-kp1").await.unwrap();
    ReferralServiceClient::new(ch).submit(own).await.unwrap();
    let stored = d.read_all("IN", "henvis.in.police.>").await.unwrap();
    let env = <henvis_proto::henvis::broker::v1::Envelope as prost::Message>::decode(
        d.opened(&stored[0].1).await.unwrap().as_slice(),
    )
    .unwrap();
    let sender = env.sender.unwrap();
    assert_eq!(
        (
            sender.agency_id.as_str(),
            sender.person_id.as_str(),
            sender.actor_id.as_str()
        ),
        ("politi-koebenhavn", "politi-koebenhavn-kp1", "politi-koebenhavn-kp1")
    );

    // revoked: a working certificate stops working once its revocation is published (the
    // service reads the new list without a restart)
    let hopenow = Principal::Agency(AgencyId::parse("ngo-hopenow").unwrap());
    let works = |p: Principal, key: &'static str| {
        let d = &d;
        async move {
            let mut c = ReferralServiceClient::new(d.channel_as(Sector::Ngo, &principal_id(&p)).await.ok()?);
            c.submit(submit_req(key)).await.err()
        }
    };
    assert!(
        works(hopenow.clone(), "ok-1").await.is_none(),
        "valid before revocation"
    );
    let (cert, key) = file(&hopenow).unwrap();
    let mut writable = DevPki::open(d.pki_dir()).unwrap();
    writable.revoke(&hopenow).unwrap();
    wait_for("the revocation to take effect", LIMIT, || {
        let (cert, key) = (cert.clone(), key.clone());
        let ca = ca_pem.clone();
        let d = &d;
        async move {
            let ch = d
                .channel_with(Sector::Ngo, &ca, Some((cert.as_bytes(), key.as_bytes())))
                .await
                .ok()?;
            let e = ReferralServiceClient::new(ch).submit(submit_req("rev")).await.err()?;
            (e.code() == Code::Unauthenticated && e.message().contains("revoked")).then_some(())
        }
    })
    .await
    .unwrap();
    attempts += 1;
    tried.push("revoked certificate -> Unauthenticated (client certificate revoked)".into());

    // a revocation list past its next update refuses everyone, rather than being ignored
    writable.publish_crl(-time::Duration::minutes(1)).unwrap();
    wait_for("the stale revocation list to be noticed", LIMIT, || async {
        let e = works(redbarnet.clone(), "stale").await?;
        (e.code() == Code::Unauthenticated && e.message().contains("revocation list out of date")).then_some(())
    })
    .await
    .unwrap();
    attempts += 1;
    tried.push("valid certificate, stale revocation list -> Unauthenticated".into());
    writable.publish_crl(time::Duration::days(30)).unwrap();
    wait_for("a fresh revocation list", LIMIT, || async {
        works(redbarnet.clone(), "fresh").await.is_none().then_some(())
    })
    .await
    .unwrap();

    // rotation: a renewed agency certificate and a renewed server certificate work at once
    let renewed = writable.issue(&redbarnet, Validity::days(90)).unwrap();
    writable
        .issue(&Principal::Service("ngo".into()), Validity::days(90))
        .unwrap();
    wait_for("the renewed certificates to work", LIMIT, || async {
        works(redbarnet.clone(), "renewed").await.is_none().then_some(())
    })
    .await
    .unwrap();

    for t in &tried {
        println!("  {t}");
    }
    // at debug level, nothing of the refused (or accepted) events reached a log line or an
    // error message
    let canaries = canary_report().1;
    let logs = henvis_tests::captured_logs();
    let leaked = crate::canary::found(logs.as_bytes(), &canaries);
    let in_errors = crate::canary::found(tried.join("\n").as_bytes(), &canaries);
    println!(
        "security matrix: {attempts} refused-identity attempts, {accepted} accepted; renewed certificate {} works without restart; canaries in {} bytes of debug logs {}, in error messages {}",
        renewed.serial,
        logs.len(),
        leaked.len(),
        in_errors.len()
    );
    assert_eq!(accepted, 0);
    assert!(leaked.is_empty() && in_errors.is_empty(), "{leaked:?} {in_errors:?}");
}

fn principal_id(p: &Principal) -> String {
    match p {
        Principal::Agency(a) => a.to_string(),
        Principal::Person(p) => p.to_string(),
        other => other.to_string(),
    }
}

/// A NATS connection over TLS as `principal` that records the server's errors.
async fn nats_as(
    d: &Deployment,
    principal: &Principal,
) -> (async_nats::Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = errors.clone();
    let addrs: Vec<async_nats::ServerAddr> = d.nats.url().split(',').map(|u| u.parse().unwrap()).collect();
    let options = async_nats::ConnectOptions::new().event_callback(move |e| {
        let seen = seen.clone();
        async move {
            if let async_nats::Event::ServerError(e) = e {
                seen.lock().unwrap().push(e.to_string());
            }
        }
    });
    let client = henvis_bus::NatsIdentity::of(d.pki_dir(), principal)
        .apply(options)
        .connect(addrs)
        .await
        .unwrap();
    (client, errors)
}

/// How a probe of NATS rights is made.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// A JetStream publish; accepted when stored.
    Store,
    /// A key-value purge marker; accepted when stored.
    Purge,
    /// A request; accepted when answered with data.
    Request,
}

/// The headers of a key-value purge marker (a rollup of the key's subject).
const PURGE_MARKER: [(&str, &str); 2] = [("KV-Operation", "PURGE"), ("Nats-Rollup", "sub")];

/// One attempt over its own connection: the line to print and whether it was accepted.
async fn probe(d: &Deployment, what: &str, who: &Principal, kind: Probe, subject: &str, body: &str) -> (String, bool) {
    let (accepted, errors, _connection) = match kind {
        Probe::Store => stored_as(d, who, subject, &[], body).await,
        Probe::Purge => stored_as(d, who, subject, &PURGE_MARKER, body).await,
        Probe::Request => {
            let (c, errors) = nats_as(d, who).await;
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                c.request(subject.to_owned(), body.to_owned().into()),
            )
            .await;
            let answered = matches!(&answer, Ok(Ok(m)) if !m.payload.is_empty() && !String::from_utf8_lossy(&m.payload).contains("error"));
            (answered, errors, c)
        }
    };
    (format!("{what} -> {}", refused(&errors, what).await), accepted)
}

/// A publish of `body` as `who` with `headers` over its own connection: whether JetStream
/// stored it, and the errors the server sends that connection (which stays open while the
/// caller holds the errors' connection, the third part).
async fn stored_as(
    d: &Deployment,
    who: &Principal,
    subject: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (bool, std::sync::Arc<std::sync::Mutex<Vec<String>>>, async_nats::Client) {
    let (c, errors) = nats_as(d, who).await;
    let js = async_nats::jetstream::new(c.clone());
    let mut map = async_nats::HeaderMap::new();
    for (k, v) in headers {
        map.insert(*k, *v);
    }
    let stored = match js
        .publish_with_headers(subject.to_owned(), map, body.to_owned().into())
        .await
    {
        Ok(ack) => tokio::time::timeout(Duration::from_secs(2), ack)
            .await
            .is_ok_and(|a| a.is_ok()),
        Err(_) => false,
    };
    (stored, errors, c)
}

async fn refused(errors: &std::sync::Arc<std::sync::Mutex<Vec<String>>>, what: &str) -> String {
    wait_for(what, LIMIT, || async {
        let e = errors.lock().unwrap();
        e.iter().find(|m| m.contains("Permissions Violation")).cloned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_server_refuses_a_sector_service_everything_beyond_its_own_sector() {
    use futures::StreamExt;
    let d = Deployment::start().await.unwrap();
    // something for the police to read: a referral to København's police district
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = crate::submit(&mut ngo, "nats-1", "", report("101")).await.unwrap();
    crate::routed(&mut ngo, &r.event_id).await;
    // and a police agency's own submission, whose idempotency record holds its envelope
    let mut kbh_police = d.client(Sector::Police, "politi-koebenhavn").await.unwrap();
    crate::submit(&mut kbh_police, "police-1", "", report("101"))
        .await
        .unwrap();
    let police_record = henvis_bus::idempotency_record_key("politi-koebenhavn", "police-1");
    let direct_get = format!("$JS.API.DIRECT.GET.KV_henvis_idempotency.$KV.henvis_idempotency.{police_record}");
    let msg_get_body = format!(r#"{{"last_by_subj":"$KV.henvis_idempotency.{police_record}"}}"#);
    let ngo_service = Principal::Service("ngo".into());
    let in_before = d.stream_messages("IN").await.unwrap();
    let health = Principal::Service("health".into());
    let mut attempts = 0;
    let mut accepted = 0;
    let mut tried = Vec::new();

    // 1. the health service's credentials subscribe to police deliveries (core NATS)
    attempts += 1;
    let (c, errors) = nats_as(&d, &health).await;
    let mut sub = c.subscribe("henvis.out.politi-koebenhavn.>").await.unwrap();
    tried.push(format!(
        "health subscribes to police deliveries -> {}",
        refused(&errors, "a refusal").await
    ));
    accepted += usize::from(
        tokio::time::timeout(Duration::from_millis(200), sub.next())
            .await
            .is_ok_and(|m| m.is_some()),
    );

    // 2. the health service's credentials read police deliveries through JetStream: a
    //    consumer on OUT for the police district, and a read of OUT by sequence
    let police = Principal::Service("police".into());
    for (what, who, subject, body) in [
        (
            "health creates a consumer on police deliveries",
            &health,
            "$JS.API.CONSUMER.CREATE.OUT.spy.henvis.out.politi-koebenhavn.>",
            r#"{"stream_name":"OUT","config":{"name":"spy","filter_subject":"henvis.out.politi-koebenhavn.>","ack_policy":"explicit"}}"#,
        ),
        (
            "health reads another sector's submissions in IN by sequence",
            &health,
            "$JS.API.STREAM.MSG.GET.IN",
            r#"{"seq":1}"#,
        ),
        (
            "health reads OUT by sequence",
            &health,
            "$JS.API.STREAM.MSG.GET.OUT",
            r#"{"seq":1}"#,
        ),
        (
            "health takes over the police district's inbox consumer",
            &health,
            "$JS.API.CONSUMER.MSG.NEXT.OUT.inbox-politi-koebenhavn",
            r#"{"batch":1}"#,
        ),
        (
            "police reads the NGO's submission in IN by sequence (only the router reads IN)",
            &police,
            "$JS.API.STREAM.MSG.GET.IN",
            r#"{"seq":1}"#,
        ),
        (
            "the NGO service reads a police agency's idempotency record (its envelope) directly",
            &ngo_service,
            direct_get.as_str(),
            "",
        ),
        (
            "the NGO service reads a police agency's idempotency record from the leader",
            &ngo_service,
            "$JS.API.STREAM.MSG.GET.KV_henvis_idempotency",
            msg_get_body.as_str(),
        ),
    ] {
        attempts += 1;
        let (c, errors) = nats_as(&d, who).await;
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            c.request(subject.to_owned(), body.to_owned().into()),
        )
        .await;
        let got_data = matches!(&answer, Ok(Ok(m)) if !m.payload.is_empty() && !String::from_utf8_lossy(&m.payload).contains("error"));
        accepted += usize::from(got_data);
        tried.push(format!("{what} -> {}", refused(&errors, "a refusal").await));
    }

    // 3. stored publishes beyond a service's own rights: into the police sector's
    //    inbound subjects, over a police agency's idempotency record, a status record as
    //    the municipality
    for (what, who, subject) in [
        (
            "health publishes to the police inbound subjects",
            &health,
            "henvis.in.police.report.0196f3a0-7b5c-7cc0-8000-000000000001".to_owned(),
        ),
        (
            "the NGO service overwrites a police agency's idempotency record",
            &ngo_service,
            format!("$KV.henvis_idempotency.{police_record}"),
        ),
        (
            "the NGO service writes a status record as the municipality",
            &ngo_service,
            format!("henvis.status.ngo-redbarnet.{}.kommune-101", r.event_id),
        ),
    ] {
        attempts += 1;
        let (c, errors) = nats_as(&d, who).await;
        let js = async_nats::jetstream::new(c);
        let stored = match js.publish(subject, "x".into()).await {
            Ok(ack) => tokio::time::timeout(Duration::from_secs(2), ack)
                .await
                .is_ok_and(|a| a.is_ok()),
            Err(_) => false,
        };
        accepted += usize::from(stored);
        tried.push(format!("{what} -> {}", refused(&errors, "a refusal").await));
    }

    // 4. the health service changes a stream's configuration (to allow purging the audit)
    attempts += 1;
    let (c, errors) = nats_as(&d, &health).await;
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        c.request(
            "$JS.API.STREAM.UPDATE.AUDIT",
            r#"{"name":"AUDIT","deny_purge":false}"#.into(),
        ),
    )
    .await;
    tried.push(format!(
        "health updates the AUDIT stream -> {}",
        refused(&errors, "a refusal").await
    ));

    // 4b. not even the router or the admin service may delete or purge the audit or the
    //     submitted events
    let audit_before = d.stream_messages("AUDIT").await.unwrap();
    let router = Principal::Service("router".into());
    let admin = Principal::Service("admin".into());
    for (who, name) in [(&router, "the router"), (&admin, "the admin service")] {
        for (op, stream) in [
            ("DELETE", "AUDIT"),
            ("PURGE", "AUDIT"),
            ("DELETE", "IN"),
            ("PURGE", "IN"),
        ] {
            attempts += 1;
            let (c, errors) = nats_as(&d, who).await;
            let subject = format!("$JS.API.STREAM.{op}.{stream}");
            let answer = tokio::time::timeout(Duration::from_secs(2), c.request(subject, "".into())).await;
            let done = matches!(&answer, Ok(Ok(m)) if String::from_utf8_lossy(&m.payload).contains("\"success\":true"));
            accepted += usize::from(done);
            tried.push(format!(
                "{name}: {op} {stream} -> {}",
                refused(&errors, "a refusal").await
            ));
        }
    }
    assert_eq!(
        d.stream_messages("AUDIT").await.unwrap(),
        audit_before,
        "the audit is intact"
    );

    // 4c. every sector service against every other agency and sector: nothing a router
    //     decision rests on, nothing written as someone else, nothing of the audit read
    let dir = henvis_domain::Directory::denmark().unwrap();
    let first = |s: Sector| dir.agencies_in(s).next().unwrap().id.clone();
    let case = r.case_id.clone();
    let mut probes: Vec<(String, Principal, Probe, String, String)> = Vec::new();
    for sector in Sector::ALL {
        let me = Principal::Service(sector.to_string());
        for other in Sector::ALL.into_iter().filter(|o| *o != sector) {
            let them = first(other);
            probes.push((
                format!("{sector} publishes into IN as the {other} sector"),
                me.clone(),
                Probe::Store,
                format!("henvis.in.{other}.suspected_victim_reported.{case}"),
                String::new(),
            ));
            for kind in henvis_bus::QueryKind::ALL {
                probes.push((
                    format!("{sector} asks the router for a case's {} as {them}", kind.as_str()),
                    me.clone(),
                    Probe::Request,
                    henvis_bus::query_subject(kind, &them),
                    format!(r#"{{"case_id":"{case}"}}"#),
                ));
            }
            probes.push((
                format!("{sector} writes a case audit record as {them}"),
                me.clone(),
                Probe::Store,
                format!("henvis.audit.case.{case}.{them}"),
                String::new(),
            ));
            probes.push((
                format!("{sector} writes an administrator alert as the {other} service"),
                me.clone(),
                Probe::Store,
                henvis_bus::audit_admin_subject(other.as_str()),
                String::new(),
            ));
            probes.push((
                format!("{sector} reads an idempotency record of {them}"),
                me.clone(),
                Probe::Request,
                format!(
                    "$JS.API.DIRECT.GET.KV_henvis_idempotency.$KV.henvis_idempotency.{}",
                    henvis_bus::idempotency_record_key(them.as_str(), "police-1")
                ),
                String::new(),
            ));
        }
        for (what, kind, subject, body) in [
            ("writes a case record", Probe::Store, format!("$KV.henvis_cases.{case}"), String::new()),
            ("purges a case record", Probe::Purge, format!("$KV.henvis_cases.{case}"), String::new()),
            (
                "writes a case audit record as the router",
                Probe::Store,
                format!("henvis.audit.case.{case}.router"),
                String::new(),
            ),
            (
                "writes a routing decision",
                Probe::Store,
                henvis_bus::audit_decision_subject(&henvis_domain::CaseId::parse(&case).unwrap()),
                String::new(),
            ),
            (
                "writes an administrator alert as the router",
                Probe::Store,
                henvis_bus::audit_admin_subject("router"),
                String::new(),
            ),
            (
                "reads the audit's decisions with a consumer",
                Probe::Request,
                "$JS.API.CONSUMER.CREATE.AUDIT.spy.henvis.audit.decision.>".to_owned(),
                r#"{"stream_name":"AUDIT","config":{"name":"spy","filter_subject":"henvis.audit.decision.>","ack_policy":"none"}}"#.to_owned(),
            ),
            (
                "reads the audit by sequence",
                Probe::Request,
                "$JS.API.STREAM.MSG.GET.AUDIT".to_owned(),
                r#"{"seq":1}"#.to_owned(),
            ),
        ] {
            probes.push((format!("{sector} {what}"), me.clone(), kind, subject, body));
        }
    }
    // the router never submits; the admin service keeps rule-set governance and reads the
    // audit, nothing more (administrators themselves have no NATS user)
    let admin = Principal::Service("admin".into());
    let router = Principal::Service("router".into());
    for (what, who, kind, subject, body) in [
        (
            "the router publishes into IN",
            &router,
            Probe::Store,
            format!("henvis.in.ngo.suspected_victim_reported.{case}"),
            String::new(),
        ),
        (
            "the admin service publishes into IN",
            &admin,
            Probe::Store,
            format!("henvis.in.ngo.suspected_victim_reported.{case}"),
            String::new(),
        ),
        (
            "the admin service writes a case record",
            &admin,
            Probe::Store,
            format!("$KV.henvis_cases.{case}"),
            String::new(),
        ),
        (
            "the admin service writes a delivery",
            &admin,
            Probe::Store,
            "henvis.out.kommune-101.suspected_victim_reported".to_owned(),
            String::new(),
        ),
        (
            "the admin service writes a routing decision",
            &admin,
            Probe::Store,
            henvis_bus::audit_decision_subject(&henvis_domain::CaseId::parse(&case).unwrap()),
            String::new(),
        ),
        (
            "the admin service reads IN by sequence",
            &admin,
            Probe::Request,
            "$JS.API.STREAM.MSG.GET.IN".to_owned(),
            r#"{"seq":1}"#.to_owned(),
        ),
        (
            "the admin service reads an agency's deliveries with a consumer",
            &admin,
            Probe::Request,
            "$JS.API.CONSUMER.CREATE.OUT.spy.henvis.out.kommune-101.>".to_owned(),
            r#"{"stream_name":"OUT","config":{"name":"spy","filter_subject":"henvis.out.kommune-101.>","ack_policy":"explicit"}}"#.to_owned(),
        ),
    ] {
        probes.push((what.to_owned(), who.clone(), kind, subject, body));
    }
    let outcomes = futures::future::join_all(
        probes
            .iter()
            .map(|(what, who, kind, subject, body)| probe(&d, what, who, *kind, subject, body)),
    )
    .await;
    for (line, ok) in outcomes {
        attempts += 1;
        accepted += usize::from(ok);
        tried.push(line);
    }

    // 5. a plain TCP connection to NATS
    attempts += 1;
    let plain = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(d.nats.url())).await;
    let plain_ok = matches!(&plain, Ok(Ok(c)) if c.flush().await.is_ok() && c.connection_state() == async_nats::connection::State::Connected);
    accepted += usize::from(plain_ok);
    tried.push(format!(
        "plain TCP to NATS -> {}",
        if plain_ok { "ACCEPTED" } else { "refused" }
    ));

    assert_eq!(d.stream_messages("IN").await.unwrap(), in_before, "nothing published");
    for t in &tried {
        println!("  {t}");
    }
    println!("NATS least privilege: {attempts} attempts, {accepted} accepted");
    assert_eq!(accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sector_service_can_replace_delete_or_purge_a_case_key_nor_announce_an_erasure() {
    let d = Deployment::start().await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = crate::submit(&mut ngo, "keys-1", "", report("101")).await.unwrap();
    crate::routed(&mut ngo, &r.event_id).await;
    let case = r.case_id.clone();
    let key_subject = format!("$KV.henvis_case_keys.{case}");
    let inspector = henvis_tests::connect_as(&d.nats.url(), d.pki_dir(), &henvis_tests::inspector())
        .await
        .unwrap();
    let keys = async_nats::jetstream::new(inspector)
        .get_stream("KV_henvis_case_keys")
        .await
        .unwrap();
    let key_before = keys.get_last_raw_message_by_subject(&key_subject).await.unwrap();

    let mut attempts = 0;
    let mut accepted = Vec::new();
    for sector in Sector::ALL {
        let me = Principal::Service(sector.to_string());
        // allowed to publish there (a service makes the keys of the cases it opens), but
        // the stream keeps the one record a key has
        for (what, headers) in [
            ("replaces the key", vec![]),
            ("deletes the key", vec![("KV-Operation", "DEL")]),
            ("purges the key by publish", PURGE_MARKER.to_vec()),
        ] {
            attempts += 1;
            let (stored, _, _) = stored_as(&d, &me, &key_subject, &headers, "x").await;
            if stored {
                accepted.push(format!("{sector} {what}"));
            }
        }
        // an erasure notice would make every service treat the case as erased (its
        // referrals dead-lettered): only erasures write them
        attempts += 1;
        let (stored, errors, _connection) =
            stored_as(&d, &me, &format!("$KV.henvis_case_keys.erased.{case}"), &[], "x").await;
        if stored {
            accepted.push(format!("{sector} announces the case erased"));
        }
        refused(&errors, "the erasure notice refused").await;
        // and the purge request that removes a key for an erasure's tombstone
        attempts += 1;
        let (c, errors) = nats_as(&d, &me).await;
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            c.request(
                "$JS.API.STREAM.PURGE.KV_henvis_case_keys",
                format!(r#"{{"filter":"{key_subject}"}}"#).into(),
            ),
        )
        .await;
        if matches!(&answer, Ok(Ok(m)) if String::from_utf8_lossy(&m.payload).contains("\"success\":true")) {
            accepted.push(format!("{sector} purges the key through the stream"));
        }
        refused(&errors, "the purge request refused").await;
    }
    let key_after = keys.get_last_raw_message_by_subject(&key_subject).await.unwrap();
    assert_eq!(
        (key_after.sequence, key_after.payload.clone()),
        (key_before.sequence, key_before.payload.clone()),
        "the case's key is the one it was made with"
    );
    assert!(
        keys.get_last_raw_message_by_subject(&format!("$KV.henvis_case_keys.erased.{case}"))
            .await
            .is_err(),
        "no erasure notice for the case"
    );
    // the case's events still open: a further report on it is routed and delivered
    let again = crate::submit(&mut ngo, "keys-2", &case, report("101")).await.unwrap();
    let status = crate::routed(&mut ngo, &again.event_id).await;
    assert!(!status.recipients.is_empty(), "{status:?}");
    println!(
        "case keys: {attempts} attempts by the 4 sector services to replace, delete or purge a key or announce an erasure, {} accepted; the key unchanged (sequence {}), the case's next report routed to {} recipient(s)",
        accepted.len(),
        key_after.sequence,
        status.recipients.len()
    );
    assert!(accepted.is_empty(), "{accepted:?}");
}
