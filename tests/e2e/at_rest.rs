//! Children's data at rest: after canary-filled events of every kind a case goes through
//! have been stored, routed, alerted and left waiting in inboxes, a scan of every file under
//! the JetStream store finds none of them when the store is encrypted (as shipped), and none
//! when the store's encryption is off either, because every payload is sealed with its
//! case's key. The scan can fail: with the store unencrypted it finds the case id (which
//! subjects carry in the clear), and the canaries are in the payloads once opened.

use std::collections::BTreeSet;

use henvis_domain::Sector;
use henvis_policy::Schema;
use henvis_tests::{Deployment, Options};
use prost_reflect::Value;

use crate::{canary, policy::appoint, routed, submit};

/// Stores a case's worth of canary-filled events; returns the case and the canaries (the
/// string ones: a number or a flag cannot be told apart in a file).
async fn store_canaries(d: &Deployment) -> (String, Vec<String>) {
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut all = Vec::new();
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let (report, c) = canary::canary_event(
        &schema,
        "suspected_victim_reported",
        &[
            ("municipality_code", Value::String("101".into())),
            ("immediate_danger", Value::Bool(false)),
        ],
    );
    all.extend(c);
    let opened = submit(&mut ngo, "open", "", report).await.unwrap();
    let case = opened.case_id.clone();
    routed(&mut ngo, &opened.event_id).await;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let a = submit(&mut kbh, "appoint", &case, appoint("ngo-redbarnet"))
        .await
        .unwrap();
    routed(&mut kbh, &a.event_id).await;
    let mut guardian = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let mut guardian2 = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let mut region = d.client(Sector::Health, "region-hovedstaden").await.unwrap();
    let mut police = d.client(Sector::Police, "politi-koebenhavn").await.unwrap();
    for (n, (client, kind)) in [
        (&mut region, "health_assessment_completed"),
        (&mut guardian, "action_plan_updated"),
        (&mut guardian2, "placement_requested"),
        (&mut police, "investigation_update"),
        (&mut kbh, "child_missing"),
    ]
    .into_iter()
    .enumerate()
    {
        let (event, c) = canary::canary_event_tagged(&schema, kind, &format!("rest{n}"), &[]);
        all.extend(c);
        let r = submit(client, &format!("rest-{n}"), &case, event).await.unwrap();
        routed(client, &r.event_id).await;
    }
    // nobody reads their inbox: every delivery waits in OUT; alerts keep their details
    let canaries = all
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| c.starts_with("CANARY-"))
        .collect();
    (case, canaries)
}

fn found_in_store(d: &Deployment, canaries: &[String]) -> (usize, BTreeSet<String>) {
    let files = d.nats.store_files();
    let mut found = BTreeSet::new();
    for f in &files {
        let Ok(bytes) = std::fs::read(f) else { continue };
        for c in canaries {
            if bytes.windows(c.len()).any(|w| w == c.as_bytes()) {
                found.insert(c.clone());
            }
        }
    }
    (files.len(), found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_childs_data_lies_in_plaintext_in_the_store_and_the_scan_finds_it_when_encryption_is_off() {
    let encrypted = Deployment::start().await.unwrap();
    let (case, canaries) = store_canaries(&encrypted).await;
    let (files, found) = found_in_store(&encrypted, &canaries);
    assert!(
        canaries.len() >= 10 && files > 20,
        "{} canaries, {files} files",
        canaries.len()
    );
    assert!(found.is_empty(), "plaintext in the encrypted store: {found:?}");
    let (_, ids) = found_in_store(&encrypted, std::slice::from_ref(&case));
    assert!(ids.is_empty(), "subjects are encrypted too");
    drop(encrypted);

    // the store's encryption off: the payloads are still sealed with the case's key
    let plain = Deployment::start_with(Options {
        store_encryption: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let (case_plain, canaries_plain) = store_canaries(&plain).await;
    let (files_plain, found_plain) = found_in_store(&plain, &canaries_plain);
    assert!(
        found_plain.is_empty(),
        "plaintext in sealed payloads of an unencrypted store: {found_plain:?}"
    );
    // the scan can fail: it finds what lies in the clear (the case id in subjects) …
    let (_, ids_plain) = found_in_store(&plain, std::slice::from_ref(&case_plain));
    assert_eq!(ids_plain.len(), 1, "the scan finds the case id in an unencrypted store");
    // … and the canaries are in the stored payloads, once opened with the case's key
    let mut opened = BTreeSet::new();
    for (_, p) in plain
        .read_all("IN", &format!("henvis.in.*.*.{case_plain}"))
        .await
        .unwrap()
    {
        let bytes = plain.opened(&p).await.unwrap();
        for c in &canaries_plain {
            if bytes.windows(c.len()).any(|w| w == c.as_bytes()) {
                opened.insert(c.clone());
            }
        }
    }
    assert_eq!(opened.len(), canaries_plain.len(), "every canary is in a stored event");
    println!(
        "at rest: encrypted store: 0 of {} canaries in {files} files; unencrypted store: {} of {} canaries in {files_plain} files (sealed per case), the case id found in the clear, {} of {} canaries in the opened IN payloads",
        canaries.len(),
        found_plain.len(),
        canaries_plain.len(),
        opened.len(),
        canaries_plain.len()
    );
}
