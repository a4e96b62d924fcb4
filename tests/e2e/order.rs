//! Per-case order with several routers: the deliveries of one case reach each inbox in the
//! order the case's events were stored, although the routers share the work.

use std::collections::{BTreeMap, HashMap};

use henvis_domain::Sector;
use henvis_proto::henvis::broker::v1::Delivery;
use henvis_tests::Deployment;
use prost::Message;

use crate::{delivery::drain, report, submit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routers_deliver_the_events_of_each_case_in_the_order_they_were_stored() {
    const CASES: usize = 24;
    const PER_CASE: usize = 12;
    let d = Deployment::start().await.unwrap();
    d.start_router().await.unwrap();
    d.start_router().await.unwrap();
    // each case's events are submitted one after another; the cases concurrently
    let mut writers = Vec::new();
    for w in 0..CASES {
        let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
        writers.push(tokio::spawn(async move {
            let first = submit(&mut ngo, &format!("order-{w}-0"), "", report("101"))
                .await
                .unwrap();
            let mut order = vec![first.event_id];
            for i in 1..PER_CASE {
                let r = submit(&mut ngo, &format!("order-{w}-{i}"), &first.case_id, report("101"))
                    .await
                    .unwrap();
                order.push(r.event_id);
            }
            (first.case_id, order)
        }));
    }
    let mut stored: HashMap<String, Vec<String>> = HashMap::new();
    for w in writers {
        let (case, order) = w.await.unwrap();
        stored.insert(case, order);
    }
    drain(&d).await;
    // the inbox order is the order of OUT (a work queue: read by sequence, not consumed)
    let js = d.jetstream().await.unwrap();
    let out = js.get_stream("OUT").await.unwrap();
    let last = out.get_info().await.unwrap().state.last_sequence;
    let mut per_agency: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for seq in 1..=last {
        let m = out.get_raw_message(seq).await.unwrap();
        let agency = m.subject.split('.').nth(2).unwrap().to_owned();
        let env = Delivery::decode(d.opened(&m.payload).await.unwrap().as_slice())
            .unwrap()
            .envelope
            .unwrap();
        per_agency
            .entry(agency)
            .or_default()
            .entry(env.case_id)
            .or_default()
            .push(env.event_id);
    }
    let mut out_of_order = 0;
    let mut delivered = 0;
    for agency in ["kommune-101", "politi-koebenhavn"] {
        let per_case = &per_agency[agency];
        for (case, events) in per_case {
            delivered += events.len();
            out_of_order += usize::from(events != &stored[case]);
        }
        assert_eq!(per_case.len(), CASES, "{agency}");
    }
    println!(
        "per-case order, 3 routers: {CASES} cases x {PER_CASE} events, {delivered} deliveries to 2 agencies; \
         cases whose deliveries left the stored order: {out_of_order}"
    );
    assert_eq!(delivered, 2 * CASES * PER_CASE);
    assert_eq!(out_of_order, 0);
}
