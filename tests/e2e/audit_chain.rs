//! The audit's hash chain through the real services: more than 10,000 audit records written
//! under load by three routers, which chain them concurrently; the admin
//! service verifies the whole audit; then 1,000 random mutations of copies (a flipped byte,
//! a deleted, inserted or moved record, a truncation, a record replaced by a forged one with
//! the chain recomputed after it, a rollback to an older checkpoint, a forged checkpoint)
//! must each be detected.

use std::collections::BTreeMap;

use henvis_domain::{ChainLink, Checkpoint, StoredRecord};
use henvis_proto::henvis::admin::v1::VerifyAuditRequest;
use henvis_tests::{Deployment, admin, wait_for};

use crate::{delivery::Lcg, report, submit};

const RECORDS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tampering_with_ten_thousand_audit_records_written_by_three_routers_is_detected() {
    let d = Deployment::start().await.unwrap();
    d.start_router().await.unwrap();
    d.start_router().await.unwrap();
    // load: opening reports from four agencies at once, one routing decision each
    let senders = ["ngo-hopenow", "ngo-redbarnet", "ngo-hopenow", "ngo-redbarnet"];
    let per = RECORDS / senders.len() + 50;
    let mut load = Vec::new();
    for (n, s) in senders.iter().enumerate() {
        let mut c = d.client(henvis_domain::Sector::Ngo, s).await.unwrap();
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
    for l in load {
        l.await.unwrap();
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
    let intact = henvis_domain::verify(&records, &links, &checkpoints, &trusted, valid);
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
        let found = henvis_domain::verify(&rs, &ls, &cs, &trusted, valid).first_break;
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
