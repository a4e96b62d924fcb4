//! Per-case order with several routers: the deliveries of one case reach each inbox in the
//! order the case's events were stored, although the routers share the work.

use std::collections::{BTreeMap, HashMap};

use henvis_domain::Sector;
use henvis_proto::henvis::broker::v1::Delivery;
use henvis_proto::henvis::broker::v1::GetStatusRequest;
use henvis_tests::{Deployment, Options, RouterProcess, wait_for};
use prost::Message;

use crate::{LIMIT, delivery::drain, report, routed, submit};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_with_many_events_waiting_holds_up_no_other_case() {
    // case A's events are decided one after another; case B's one event, stored after
    // all of them, must not wait for them: a router that stops taking events while one
    // case has an event in flight would decide it only once A's were nearly all done
    const BURST: usize = 80;
    const MIDDLE: usize = BURST / 2;
    let d = Deployment::start_with(Options {
        in_process_router: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let mut router = RouterProcess::spawn(&d.nats.url(), 600, d.pki_dir()).unwrap();
    let a = submit(&mut ngo, "burst-a", "", report("101")).await.unwrap();
    let b = submit(&mut ngo, "burst-b", "", report("101")).await.unwrap();
    routed(&mut ngo, &a.event_id).await;
    routed(&mut ngo, &b.event_id).await;
    // no router while the burst is stored: it waits in IN, A's before B's
    router.kill9();
    let mut burst = Vec::with_capacity(BURST);
    for i in 0..BURST {
        let r = submit(&mut ngo, &format!("burst-a-{i}"), &a.case_id, report("101"))
            .await
            .unwrap();
        burst.push(r.event_id);
    }
    let last_b = submit(&mut ngo, "burst-b-1", &b.case_id, report("101")).await.unwrap();
    let _router = RouterProcess::spawn(&d.nats.url(), 600, d.pki_dir()).unwrap();
    let status = |event_id: &str| {
        let mut c = ngo.inner.clone();
        let req = GetStatusRequest {
            event_id: event_id.to_owned(),
        };
        async move { c.get_status(req).await.map(|r| r.into_inner().routed).unwrap_or(false) }
    };
    // the moment B's event is decided, how far A has got
    wait_for("case B's event decided", LIMIT, || async {
        status(&last_b.event_id).await.then_some(())
    })
    .await
    .unwrap();
    let middle_done = status(&burst[MIDDLE]).await;
    let last_done = status(&burst[BURST - 1]).await;
    // and every one of A's is decided, in its order
    routed(&mut ngo, &burst[BURST - 1]).await;
    drain(&d).await;
    println!(
        "a burst of {BURST} events on one case and one event on another stored after it: the other's decided while event {MIDDLE} of the burst was {} and the burst's last {}",
        if middle_done { "decided" } else { "not yet decided" },
        if last_done { "decided" } else { "not yet decided" }
    );
    assert!(!middle_done, "case B's event waited for case A's burst");
}
