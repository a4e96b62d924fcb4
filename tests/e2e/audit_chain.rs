//! The audit's hash chain through the real services: more than 10,000 audit records written
//! under load by three routers (events through all four sector services), the police
//! service (alert claims and detail reads) and the admin service (accounts given), which
//! the routers chain concurrently; none is missing afterwards; the admin
//! service verifies the whole audit; then 1,000 random mutations of copies (a flipped byte,
//! a deleted, inserted or moved record, a truncation, a record replaced by a forged one with
//! the chain recomputed after it, a rollback to an older checkpoint, a forged checkpoint)
//! must each be detected.

use std::collections::BTreeMap;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use futures::StreamExt;
use henvis_domain::{ChainLink, Checkpoint, Sector, StoredRecord};
use henvis_proto::henvis::{
    admin::v1::{SubjectAccessReportRequest, VerifyAuditRequest},
    broker::v1::GetSubjectAccessReportRequest,
    police::v1::{
        AlertState, AlertsRequest, ClaimAlertRequest, FetchAlertDetailsRequest,
        alert_service_client::AlertServiceClient, alert_update,
    },
};
use henvis_tests::{Deployment, admin, wait_for};

use crate::{delivery::Lcg, report, submit};

const RECORDS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tampering_with_ten_thousand_audit_records_written_by_three_routers_is_detected() {
    let d = Deployment::start().await.unwrap();
    d.start_router().await.unwrap();
    d.start_router().await.unwrap();
    // a case with a guardian, whose account is asked for during the load
    let case = crate::policy::open_case(&d, "101").await;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    submit(&mut kbh, "appoint", &case, crate::policy::appoint("ngo-redbarnet"))
        .await
        .unwrap();
    // load: opening reports through all four sector services at once, one routing decision
    // each, written by three routers; meanwhile København's contact persons claim alerts and
    // read their details (the police service writes their records), the guardian and an
    // administrator ask for the case's account (a router and the admin service record each
    // giving)
    let senders = [
        (Sector::Ngo, "ngo-hopenow"),
        (Sector::Police, "politi-fyn"),
        (Sector::Social, "kommune-101"),
        (Sector::Health, "region-hovedstaden"),
    ];
    let per = RECORDS / senders.len() + 50;
    let done = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for (n, (sector, s)) in senders.into_iter().enumerate() {
        let mut c = d.client(sector, s).await.unwrap();
        load.push(tokio::spawn(async move {
            for i in 0..per {
                submit(
                    &mut c,
                    &format!("chain-{n}-{i}"),
                    "",
                    report(["101", "746", "461", "851"][i % 4]),
                )
                .await
                .unwrap();
            }
        }));
    }
    let mut steps = Vec::new();
    for person in ["politi-koebenhavn-kp1", "politi-koebenhavn-kp2"] {
        let mut kp = AlertServiceClient::new(d.channel_as(Sector::Police, person).await.unwrap());
        let done = done.clone();
        steps.push(tokio::spawn(async move {
            // the district's alerts as they are raised: claim and read up to 150 of them
            let mut feed = kp.alerts(AlertsRequest { resume_after: 0 }).await.unwrap().into_inner();
            let mut taken = 0u64;
            while !done.load(Ordering::Relaxed) && taken < 300 {
                let Some(Ok(update)) = feed.next().await else { break };
                let Some(alert_update::Kind::Alert(a)) = update.kind else {
                    continue;
                };
                // the other person may have claimed it first
                if a.state == AlertState::Open as i32
                    && kp
                        .claim_alert(ClaimAlertRequest {
                            alert_id: a.alert_id.clone(),
                        })
                        .await
                        .is_ok()
                {
                    kp.fetch_alert_details(FetchAlertDetailsRequest {
                        alert_id: a.alert_id.clone(),
                    })
                    .await
                    .unwrap();
                    taken += 2;
                }
            }
            taken
        }));
    }
    let mut reports = Vec::new();
    {
        let mut guardian = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
        let mut admin2 = d.admin_client(&admin("admin-2")).await.unwrap();
        let (done, case) = (done.clone(), case.clone());
        reports.push(tokio::spawn(async move {
            let mut given = 0u64;
            while !done.load(Ordering::Relaxed) {
                let r = guardian.req(GetSubjectAccessReportRequest { case_id: case.clone() });
                guardian.inner.get_subject_access_report(r).await.unwrap();
                admin2
                    .subject_access_report(SubjectAccessReportRequest { case_id: case.clone() })
                    .await
                    .unwrap();
                given += 2;
            }
            given
        }));
    }
    for l in load {
        l.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let mut alert_steps = 0;
    for s in steps {
        alert_steps += s.await.unwrap();
    }
    let mut given = 0;
    for r in reports {
        given += r.await.unwrap();
    }
    let admin1 = d.admin_client(&admin("admin-1")).await.unwrap();
    // every record chained and a checkpoint over (nearly) all of them
    let v = wait_for("the routers to chain the audit", crate::LIMIT * 6, || {
        let mut c = admin1.clone();
        async move {
            let r = c.verify_audit(VerifyAuditRequest::default()).await.ok()?.into_inner();
            assert!(r.intact, "{}", r.finding);
            (r.records as usize >= RECORDS && r.unchained_tail == 0 && r.checkpoints >= 2).then_some(r)
        }
    })
    .await
    .unwrap();
    println!("verified live: {}", v.finding);
    // nothing the writers did is missing: every event decided once with its deliveries,
    // every claim and detail read recorded, every account given recorded
    let comp = crate::delivery::audit_complete(&d, "the concurrent writers").await;
    assert_eq!(
        comp.events_decided as usize,
        senders.len() * per + 2,
        "every submitted event decided (and the case's two)"
    );
    assert_eq!(
        comp.alert_steps, alert_steps,
        "every claim and read in the alerts' histories"
    );
    let recorded_reports = d
        .read_all("AUDIT", &format!("henvis.audit.case.{case}.>"))
        .await
        .unwrap()
        .iter()
        .filter(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).unwrap()["kind"] == "subject_access_reported")
        .count() as u64;
    assert_eq!(recorded_reports, given, "every account given is recorded");
    println!(
        "concurrent writers: 3 routers decided {} events from 4 sector services, the police service recorded {alert_steps} alert steps, a router and the admin service {given} accounts given; none missing",
        comp.events_decided
    );

    // a copy of everything, as someone with the disk would see it
    let bus = henvis_bus::Bus::connect(
        &d.nats.url(),
        "auditor",
        Some(&henvis_bus::NatsIdentity::of(d.pki_dir(), &henvis_tests::inspector())),
    )
    .await
    .unwrap();
    let checkpoints = bus.checkpoints().await.unwrap();
    let links = bus.chain_links().await.unwrap();
    let records = bus
        .stored_records(henvis_bus::STREAM_AUDIT, 1, usize::MAX)
        .await
        .unwrap();
    let records: Vec<StoredRecord> = records
        .into_iter()
        .filter(|r| r.seq <= links.last().unwrap().audit_seq)
        .collect();
    let key = hex::decode(
        std::fs::read_to_string(d.pki_dir().join(henvis_pki::AUDIT_PUBLIC_KEY))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let valid = |m: &[u8], c: &Checkpoint| {
        hex::decode(&c.signature).is_ok_and(|s| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key)
                .verify(m, &s)
                .is_ok()
        })
    };
    let last_cp = checkpoints.last().unwrap().clone();
    // the checkpoint an auditor copied off the system
    let trusted = [last_cp.clone()];
    let intact = henvis_domain::verify(&records, &links, &checkpoints, &trusted, 0, valid);
    assert_eq!(intact.first_break, None);
    assert!(records.len() >= RECORDS, "{} records", records.len());

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("mutation seed {seed}");
    let mut rng = Lcg(seed);
    let covered = last_cp.index as usize; // links a checkpoint covers
    let kinds = [
        "flip a byte of a record",
        "delete a record",
        "insert a record",
        "move a record",
        "truncate",
        "replace a record with a forged one and rebuild the chain",
        "roll back to an older checkpoint",
        "flip a byte of a link",
        "forge a checkpoint",
    ];
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for m in 0..1000 {
        let kind = kinds[m % kinds.len()];
        let (mut rs, mut ls, mut cs) = (records.clone(), links.clone(), checkpoints.clone());
        let i = rng.next(covered as u64) as usize;
        match kind {
            "flip a byte of a record" => {
                let r = &mut rs[i];
                let b = rng.next(r.payload.len() as u64) as usize;
                r.payload[b] ^= 1 << rng.next(8);
            }
            "delete a record" => {
                rs.remove(i);
            }
            "insert a record" => {
                // a plausible record, renumbered in as the store would hold it
                let mut forged = rs[i].clone();
                forged.payload = br#"{"kind":"stream_full","stream":"OUT","by":"x","at_unix":1}"#.to_vec();
                rs.insert(i, forged);
                for (n, r) in rs.iter_mut().enumerate() {
                    r.seq = n as u64 + 1;
                }
            }
            "move a record" => {
                let j = (i + 1 + rng.next(50) as usize).min(rs.len() - 1);
                let j = if j == i { i - 1 } else { j };
                let (a, b) = (rs[i].clone(), rs[j].clone());
                rs[i] = StoredRecord { seq: a.seq, ..b };
                rs[j] = StoredRecord { seq: rs[j].seq, ..a };
            }
            "truncate" => {
                rs.truncate(i);
                ls.truncate(i);
            }
            "replace a record with a forged one and rebuild the chain" => {
                rs[i].payload = br#"{"kind":"routing_decision_voided","event_id":"e","case_id":"c","message_type":"t","case_revision":1}"#.to_vec();
                let mut rebuilt: Vec<ChainLink> = ls[..i].to_vec();
                for r in &rs[i..] {
                    rebuilt.push(ChainLink::next(rebuilt.last(), r.seq, &r.subject, &r.payload));
                }
                ls = rebuilt;
            }
            "roll back to an older checkpoint" => {
                let keep = cs[rng.next(cs.len() as u64 - 1) as usize].clone();
                cs.retain(|c| c.index <= keep.index);
                ls.truncate(keep.index as usize);
                rs.retain(|r| r.seq <= keep.audit_seq);
            }
            "flip a byte of a link" => {
                let l = &mut ls[i];
                let mut h = l.hash.clone().into_bytes();
                h[0] = if h[0] == b'0' { b'1' } else { b'0' };
                l.hash = String::from_utf8(h).unwrap();
            }
            _ => {
                // the newest checkpoint made to cover another link, its signature kept
                let c = cs.last_mut().unwrap();
                let i = if links[i].index == c.index { i - 1 } else { i };
                c.head = links[i].hash.clone();
                c.index = links[i].index;
                c.audit_seq = links[i].audit_seq;
            }
        }
        let found = henvis_domain::verify(&rs, &ls, &cs, &trusted, 0, valid).first_break;
        let e = counts.entry(kind).or_default();
        e.0 += 1;
        e.1 += usize::from(found.is_some());
    }
    for (kind, (tried, detected)) in &counts {
        println!("  {kind}: {detected} of {tried} detected");
    }
    let (tried, detected) = counts.values().fold((0, 0), |(t, d), (a, b)| (t + a, d + b));
    println!(
        "audit chain: {} records written while 3 routers chained them, {} links, {} checkpoints; {detected} of {tried} mutations detected",
        records.len(),
        links.len(),
        checkpoints.len()
    );
    assert_eq!(detected, tried, "{counts:?}");
}

/// The administrator alerts as JSON.
async fn admin_alerts(d: &Deployment) -> Option<Vec<serde_json::Value>> {
    let r = d
        .admin_client(&admin("admin-1"))
        .await
        .ok()?
        .admin_alerts(henvis_proto::henvis::admin::v1::AdminAlertsRequest {})
        .await
        .ok()?
        .into_inner();
    r.alerts.iter().map(|a| serde_json::from_str(a).ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_that_cannot_be_written_delivers_nothing_and_alarms_administrators_until_it_can() {
    let mut d = Deployment::start().await.unwrap();
    // the router may no longer write routing decisions (as when the audit stream refuses)
    let shipped = include_str!("../../deploy/nats/auth.conf");
    let denied = shipped.replacen(
        r#"deny: ["$JS.API.STREAM.DELETE.AUDIT""#,
        r#"deny: ["henvis.audit.decision.>", "$JS.API.STREAM.DELETE.AUDIT""#,
        1,
    );
    assert_ne!(denied, shipped, "the router's deny list found");
    d.nats.reload_authorization(&denied).await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let r = submit(&mut ngo, "unaudited", "", report("101")).await.unwrap();
    let alarm = wait_for("the router's audit alarm", crate::LIMIT * 3, || async {
        admin_alerts(&d)
            .await?
            .into_iter()
            .find(|a| a["kind"] == "audit_unwritable" && a["service"] == "router")
    })
    .await
    .unwrap();
    assert!(
        alarm["reason"].as_str().unwrap().starts_with("the audit stream"),
        "{alarm}"
    );
    // fail closed: the stored referral reaches nobody while its decision cannot be recorded
    assert_eq!(d.stream_messages("OUT").await.unwrap(), 0, "nothing delivered");
    assert!(d.audit(&r.case_id).await.unwrap().is_empty(), "nothing recorded");

    // the audit takes records again: the referral is decided, recorded and delivered, and
    // the alarm clears
    d.nats.reload_authorization(shipped).await.unwrap();
    let status = wait_for("the referral routed once the audit is back", crate::LIMIT * 3, || {
        let mut inner = ngo.inner.clone();
        let req = ngo.req(henvis_proto::henvis::broker::v1::GetStatusRequest {
            event_id: r.event_id.clone(),
        });
        async move {
            inner
                .get_status(req)
                .await
                .ok()
                .map(tonic::Response::into_inner)
                .filter(|s| s.routed)
        }
    })
    .await
    .unwrap();
    assert!(!status.recipients.is_empty());
    wait_for("the alarm cleared", crate::LIMIT, || async {
        let alerts = admin_alerts(&d).await?;
        alerts.iter().all(|a| a["kind"] != "audit_unwritable").then_some(())
    })
    .await
    .unwrap();
    let comp = crate::delivery::audit_complete(&d, "the audit came back").await;
    assert_eq!(comp.events_decided, 1);
    println!(
        "audit unwritable: referral stored, nothing delivered, administrators alarmed ({}); once writable: decided, {} delivered, alarm cleared",
        alarm["reason"], comp.deliveries
    );
}
