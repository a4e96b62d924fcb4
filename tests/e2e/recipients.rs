//! Recipient faults: agency systems that drop their inbox stream before acknowledging a
//! fifth of what they are offered, while the sector service serving them is killed with
//! SIGKILL and started again. Counted per (referral, intended recipient).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use henvis_domain::Sector;
use henvis_proto::henvis::broker::v1::{Ack, InboxRequest, inbox_request, inbox_response};
use henvis_tests::{Deployment, Options, wait_for};
use tokio::sync::mpsc;

use crate::delivery::{Counts, Lcg, drain, env_or, intended, load_reaches, start_load_in};

/// What one agency system saw: per event id, the delivery ids it was offered (an id is one
/// stored delivery; the same id offered again is a redelivery, another id a duplicate).
#[derive(Default)]
struct Seen {
    offered: HashMap<String, BTreeSet<u64>>,
    offers: usize,
    most_attempts: u32,
    acked: usize,
    drops: usize,
    broken: usize,
}

/// One agency system: reads its inbox, drops the stream instead of acknowledging one
/// delivery in five, reconnects whenever the stream breaks, until `done`.
async fn agency(
    d: &Deployment,
    sector: Sector,
    agency: &'static str,
    seed: u64,
    seen: Arc<Mutex<Seen>>,
    done: Arc<AtomicBool>,
) {
    let mut rng = Lcg(seed);
    while !done.load(Ordering::Relaxed) {
        // (re)connect: the service may be down for a moment
        let opened = wait_for("the inbox to open", Duration::from_secs(60), || async {
            let mut c = d.client(sector, agency).await.ok()?;
            let (tx, reqs) = mpsc::channel(16);
            let r = c.req(tokio_stream::wrappers::ReceiverStream::new(reqs));
            let rx = c.inner.inbox(r).await.ok()?.into_inner();
            Some((tx, rx))
        })
        .await;
        let Ok((tx, mut rx)) = opened else { continue };
        let mut waiting_for: Option<u64> = None;
        let mut queue = std::collections::VecDeque::new();
        loop {
            if done.load(Ordering::Relaxed) {
                return;
            }
            // handle the oldest delivery received: acknowledge it, or (one in five) drop the
            // stream instead
            if waiting_for.is_none()
                && let Some(id) = queue.pop_front()
            {
                if rng.next(5) == 0 {
                    seen.lock().unwrap().drops += 1;
                    break;
                }
                let ack = InboxRequest {
                    kind: Some(inbox_request::Kind::Ack(Ack { delivery_id: id })),
                };
                if tx.send(ack).await.is_err() {
                    break;
                }
                waiting_for = Some(id);
            }
            let m = match rx.message().await {
                Ok(Some(m)) => m,
                _ => {
                    seen.lock().unwrap().broken += 1;
                    break;
                }
            };
            match m.kind {
                Some(inbox_response::Kind::Delivery(del)) => {
                    let event_id = del.envelope.map(|e| e.event_id).unwrap_or_default();
                    let mut s = seen.lock().unwrap();
                    s.offers += 1;
                    s.most_attempts = s.most_attempts.max(del.attempt);
                    s.offered.entry(event_id).or_default().insert(del.delivery_id);
                    queue.push_back(del.delivery_id);
                }
                Some(inbox_response::Kind::AckConfirmed(a)) if Some(a.delivery_id) == waiting_for => {
                    seen.lock().unwrap().acked += 1;
                    waiting_for = None;
                }
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agencies_dropping_streams_and_a_killed_sector_service_lose_and_duplicate_nothing() {
    let referrals = env_or("HENVIS_RECIPIENT_REFERRALS", 600);
    let mut d = Deployment::start_with(Options {
        ack_wait_secs: 2,
        // every offer counts as an attempt, also those in the window of a stream the agency
        // drops: an agency dropping one stream in five uses up about ten attempts of an
        // unlucky delivery (the dead-letter path has its own test; here nothing may go there)
        inbox_max_attempts: 25,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut social = d.run_sector_as_process(Sector::Social).await.unwrap();
    let d = Arc::new(d);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;

    // three cases' municipalities (served by the social service, as a process) and their
    // police districts (served by the police service)
    let recipients: [(Sector, &'static str); 6] = [
        (Sector::Social, "kommune-101"),
        (Sector::Social, "kommune-751"),
        (Sector::Social, "kommune-461"),
        (Sector::Police, "politi-koebenhavn"),
        (Sector::Police, "politi-oestjylland"),
        (Sector::Police, "politi-fyn"),
    ];
    let done = Arc::new(AtomicBool::new(false));
    let mut seen: BTreeMap<&'static str, Arc<Mutex<Seen>>> = BTreeMap::new();
    let mut agencies = Vec::new();
    for (i, (sector, agency_id)) in recipients.into_iter().enumerate() {
        let s = Arc::new(Mutex::new(Seen::default()));
        seen.insert(agency_id, s.clone());
        let (d, done) = (d.clone(), done.clone());
        agencies.push(tokio::spawn(async move {
            agency(&d, sector, agency_id, seed.wrapping_add(i as u64), s, done).await;
        }));
    }

    let municipalities = ["101".to_owned(), "751".to_owned(), "461".to_owned()];
    let (load, acked, failures) = start_load_in(
        &d,
        referrals,
        &["ngo-redbarnet", "ngo-hopenow"],
        &municipalities,
        "recipients",
        true,
        None,
    )
    .await;

    // the service fault: SIGKILL the social service twice while deliveries flow
    let offers = || seen.values().map(|s| s.lock().unwrap().offers).sum::<usize>();
    let kills = AtomicUsize::new(0);
    for point in [referrals / 3, referrals * 2 / 3] {
        load_reaches(&acked, &failures, point).await;
        let before = offers();
        wait_for("deliveries to flow", Duration::from_secs(60), || async {
            (offers() > before).then_some(())
        })
        .await
        .unwrap();
        social.restart().await.unwrap();
        kills.fetch_add(1, Ordering::Relaxed);
    }
    for l in load {
        l.await.unwrap();
    }
    drain(&d).await;

    // intended: every acknowledged referral to its municipality and its police district
    let acked = acked.lock().unwrap().clone();
    let intended = intended(&d, &acked);
    // settled: every intended pair offered, every delivery acknowledged (and so removed)
    let js = d.jetstream().await.unwrap();
    let out = js.get_stream("OUT").await.unwrap();
    let offered_pairs = || {
        let mut pairs: HashMap<(String, String), usize> = HashMap::new();
        for (agency_id, s) in &seen {
            for (event_id, ids) in &s.lock().unwrap().offered {
                pairs.insert((event_id.clone(), (*agency_id).to_owned()), ids.len());
            }
        }
        pairs
    };
    let settled = wait_for(
        "every delivery offered and acknowledged",
        Duration::from_secs(300),
        || {
            let out = out.clone();
            let all_offered = intended.iter().all(|k| offered_pairs().contains_key(k));
            async move {
                let left = out.clone().get_info().await.ok()?.state.messages;
                (all_offered && left == 0).then_some(())
            }
        },
    )
    .await;
    done.store(true, Ordering::Relaxed);
    for a in agencies {
        a.await.unwrap();
    }
    let c = Counts::tally(&intended, &offered_pairs());
    let dead = d.stream_messages("DEAD").await.unwrap();
    let left = out.clone().get_info().await.unwrap().state.messages;
    let retried = *failures.lock().unwrap();
    let total = |f: fn(&Seen) -> usize| seen.values().map(|s| f(&s.lock().unwrap())).sum::<usize>();
    println!(
        "recipient faults (seed {seed}): {} SIGKILLs of the social service; referrals acknowledged {} ({} submit retries); \
         offers {}, acknowledged {}, streams dropped before the ack {}, streams broken by the service {}, most offers of one delivery {}; \
         {c}; dead letters {dead}; left in OUT {}",
        kills.load(Ordering::Relaxed),
        acked.len(),
        retried,
        total(|s| s.offers),
        total(|s| s.acked),
        total(|s| s.drops),
        total(|s| s.broken),
        seen.values()
            .map(|s| s.lock().unwrap().most_attempts)
            .max()
            .unwrap_or(0),
        left,
    );
    settled.unwrap();
    assert_eq!(acked.len(), referrals);
    assert_eq!(dead, 0, "nothing dead-lettered");
    c.assert_exactly_once();
    // the closed loop converged: every delivery acknowledged (OUT is empty) reads as
    // received for its sender, the SIGKILLed service's included ("received" is stored
    // before the acknowledgement to NATS)
    use henvis_proto::henvis::broker::v1::{DeliveryState, GetStatusResponse};
    use prost::Message;
    let mut received: BTreeSet<(String, String)> = BTreeSet::new();
    for (_, payload) in d.read_all("STATUS", "henvis.status.>").await.unwrap() {
        let rec = GetStatusResponse::decode(payload).unwrap();
        for r in rec.recipients {
            if r.state >= DeliveryState::Received as i32 && r.state != DeliveryState::Withheld as i32 {
                received.insert((rec.event_id.clone(), r.recipient_agency_id));
            }
        }
    }
    let stuck: Vec<_> = intended.iter().filter(|k| !received.contains(*k)).collect();
    println!(
        "closed loop: {} of {} deliveries read as received",
        intended.len() - stuck.len(),
        intended.len()
    );
    assert!(
        stuck.is_empty(),
        "acknowledged but never received: {:?}",
        &stuck[..stuck.len().min(5)]
    );
    assert!(
        total(|s| s.drops) >= referrals / 5,
        "the agencies dropped their streams often"
    );
}
