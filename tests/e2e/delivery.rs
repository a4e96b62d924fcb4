//! Nothing lost, nothing twice: retries after lost responses and after the JetStream
//! de-duplication window, and the router killed with SIGKILL again and again under load.
//! Counted per (referral, intended recipient) like Jepsen does.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use henvis_domain::Sector;
use henvis_proto::henvis::broker::v1::{Delivery, SubmitRequest};
use henvis_tests::{Deployment, Options, RouterProcess, wait_for};
use prost::Message;
use tonic::Code;

use crate::{report, submit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_responses_and_retries_after_the_duplicate_window_store_each_referral_once() {
    const N: usize = 30;
    let d = Deployment::start_with(Options {
        duplicate_window_secs: 1,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let started = Instant::now();
    // the response is lost: the caller gives up after a millisecond, the service goes on
    let mut lost = 0;
    for i in 0..N {
        let mut r = ngo.req(SubmitRequest {
            idempotency_key: format!("lost-{i}"),
            event: Some(report("101")),
            actor_id: "a".into(),
            ..Default::default()
        });
        r.set_timeout(Duration::from_millis(1));
        lost += usize::from(ngo.inner.submit(r).await.is_err());
    }
    // retry once the JetStream de-duplication window is long gone
    wait_for("the de-duplication window to pass", Duration::from_secs(10), || async {
        (started.elapsed() > Duration::from_secs(3)).then_some(())
    })
    .await
    .unwrap();
    let mut ids = BTreeSet::new();
    let mut retried_duplicates = 0;
    for i in 0..N {
        let r = wait_for("the retry to succeed", Duration::from_secs(10), || {
            let mut c = ngo.inner.clone();
            let req = ngo.req(SubmitRequest {
                idempotency_key: format!("lost-{i}"),
                event: Some(report("101")),
                actor_id: "a".into(),
                ..Default::default()
            });
            async move { c.submit(req).await.ok().map(tonic::Response::into_inner) }
        })
        .await
        .unwrap();
        retried_duplicates += usize::from(r.duplicate);
        ids.insert(r.event_id);
    }
    let stored = d.stream_messages("IN").await.unwrap() as usize;
    println!(
        "lost acknowledgements: {N} referrals, {lost} responses lost, {retried_duplicates} retries answered with the stored event, {} distinct event ids, {stored} stored",
        ids.len()
    );
    assert_eq!((ids.len(), stored), (N, N), "each referral stored exactly once");
    // the proof is only as good as its faults: responses were really lost, and retries
    // really answered from the idempotency record (after the window)
    assert!(lost > 0, "no response was lost");
    assert!(retried_duplicates > 0, "no retry was answered from the record");
}

/// A sector service that stored an event and failed before writing its idempotency record
/// leaves the record to the router, which writes it when it routes the event (one
/// write-once request, however often it finds the sector service's record already there):
/// a retry after the duplicate window is then answered with the stored event, and nothing
/// is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_without_its_idempotency_record_gets_it_from_the_router() {
    let d = Deployment::start_with(Options {
        duplicate_window_secs: 1,
        in_process_router: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let request = |ngo: &henvis_tests::Client| {
        ngo.req(SubmitRequest {
            idempotency_key: "failed-before-its-record".into(),
            event: Some(report("101")),
            actor_id: "a".into(),
            ..Default::default()
        })
    };
    let started = Instant::now();
    let first = ngo.inner.submit(request(&ngo)).await.unwrap().into_inner();
    // what the sector service failing between IN and its record leaves: the event, no record
    // (a purge of the stream's subjects, which leaves no marker behind)
    let js = d.jetstream().await.unwrap();
    let mut records = js.get_stream("KV_henvis_idempotency").await.unwrap();
    records
        .purge()
        .filter("$KV.henvis_idempotency.ngo-redbarnet.>")
        .await
        .unwrap();
    assert_eq!(records.info().await.unwrap().state.messages, 0);
    let _router = RouterProcess::spawn(&d.nats.url(), 1, d.pki_dir()).unwrap();
    wait_for(
        "the router to write the idempotency record",
        Duration::from_secs(30),
        || {
            let mut records = records.clone();
            async move { (records.info().await.ok()?.state.messages == 1).then_some(()) }
        },
    )
    .await
    .unwrap();
    // a retry once the JetStream de-duplication window is long gone
    wait_for("the de-duplication window to pass", Duration::from_secs(10), || async {
        (started.elapsed() > Duration::from_secs(3)).then_some(())
    })
    .await
    .unwrap();
    let retry = ngo.inner.submit(request(&ngo)).await.unwrap().into_inner();
    let stored = d.stream_messages("IN").await.unwrap();
    println!(
        "a record the sector service never wrote: written by the router; the retry after the window answered duplicate={} with the stored event: {}, {stored} stored in IN",
        retry.duplicate,
        retry.event_id == first.event_id
    );
    assert!(retry.duplicate, "the retry was answered from the router's record");
    assert_eq!(retry.event_id, first.event_id);
    assert_eq!(stored, 1, "the referral is stored once");
}

/// A size of a fault test: `$name` when set (the soak variant), else `default`.
pub(crate) fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The router's consumer on IN, as the server reports it now.
async fn router_consumer(
    in_stream: &async_nats::jetstream::stream::Stream,
) -> Option<async_nats::jetstream::consumer::Info> {
    let mut c = in_stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("router")
        .await
        .ok()?;
    c.info().await.ok().cloned()
}

/// A tiny deterministic generator for fault timing (seed printed, so a run can be replayed).
pub(crate) struct Lcg(pub(crate) u64);
impl Lcg {
    pub(crate) fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_router_again_and_again_under_load_loses_and_duplicates_nothing() {
    let referrals = env_or("HENVIS_CRASH_REFERRALS", 5000);
    let kills = env_or("HENVIS_CRASH_KILLS", 6);
    let d = Deployment::start_with(Options {
        in_process_router: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    let mut router = RouterProcess::spawn(&d.nats.url(), 600, d.pki_dir()).unwrap();
    // the load: several agencies submitting concurrently, each submit tried once; it runs
    // at least `referrals` and goes on until the last kill, so that every kill lands under
    // load however fast this machine submits and however slowly a router starts
    let senders = ["ngo-redbarnet", "ngo-hopenow", "ngo-reden-international", "politi-fyn"];
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let all: Vec<String> = d.directory.municipalities().map(|m| m.code.clone()).collect();
    let (load, acked, failed) =
        start_load_in(&d, referrals, &senders, &all, "crash", false, Some(running.clone())).await;

    // the faults: SIGKILL the router at random points while the load runs, and start it
    // again; each kill waits until the load has reached its (random) point and the router
    // has routed something since its last start, so every kill lands mid-work
    let js = d.jetstream().await.unwrap();
    let in_stream = js.get_stream("IN").await.unwrap();
    let ack_floor = || {
        let s = in_stream.clone();
        async move { Some(router_consumer(&s).await?.ack_floor.stream_sequence) }
    };
    let mut points: Vec<usize> = (0..kills)
        .map(|_| rng.next(referrals as u64 * 9 / 10) as usize)
        .collect();
    points.sort_unstable();
    let mut killed_under_load = 0;
    // while each router is down a new rule set is published (same routes, a new version):
    // the events it was routing are redelivered to a router deciding under another version,
    // and must still reach each recipient once
    let mut versions = 0;
    for point in points {
        load_reaches(&acked, &failed, point).await;
        let from = wait_for("the router to consume", Duration::from_secs(60), &ack_floor)
            .await
            .unwrap();
        // progress since the router's start, unless it has already caught up with the load
        wait_for("the router to route since its start", Duration::from_secs(60), || {
            let s = in_stream.clone();
            async move {
                let info = router_consumer(&s).await?;
                (info.ack_floor.stream_sequence > from || info.num_pending == 0).then_some(())
            }
        })
        .await
        .unwrap();
        router.kill9();
        killed_under_load += usize::from(load.iter().any(|l| !l.is_finished()));
        versions += 1;
        let text = henvis_router::DEFAULT_RULES.replacen(
            "version = \"2026-11-28.1\"",
            &format!("version = \"crash-{versions}\""),
            1,
        );
        d.put_live("crash.toml", &text).await.unwrap();
        router = RouterProcess::spawn(&d.nats.url(), 600, d.pki_dir()).unwrap();
    }
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    // the last router drains the backlog
    drain(&d).await;
    drop(router);

    let acked = acked.lock().unwrap().clone();
    let failed = *failed.lock().unwrap();
    let c = count(&d, &acked).await;
    println!(
        "router crash (seed {seed}): {kills} SIGKILLs ({killed_under_load} under load), a new rule set published during each ({versions} versions); referrals attempted {}, acknowledged {}, unknown outcome {failed}; {c}",
        acked.len() + failed,
        acked.len()
    );
    assert_eq!(killed_under_load, kills, "every kill landed while the load was running");
    c.assert_exactly_once();
    audit_complete(&d, "the router crashes").await;
}

/// After a crash run: the audit's chain unbroken, every stored delivery named by a standing
/// decision, every decided recipient's delivery stored, one standing decision per event,
/// and every alert step with its audit record.
pub(crate) async fn audit_complete(d: &Deployment, after: &str) -> henvis_proto::henvis::admin::v1::Completeness {
    let v = wait_for("the admin service to answer", Duration::from_secs(60), || async {
        let v = d
            .admin_client(&henvis_tests::admin("admin-1"))
            .await
            .ok()?
            .verify_audit(henvis_proto::henvis::admin::v1::VerifyAuditRequest {
                trusted_checkpoints: vec![],
                completeness: true,
            })
            .await
            .ok()?
            .into_inner();
        Some(v)
    })
    .await
    .unwrap();
    let comp = v.completeness.unwrap();
    println!(
        "audit after {after}: {}; completeness: {} events decided, {} deliveries stored, {} decided recipients without delivery, {} deliveries without a decision, {} events with more than one standing decision, {} alert steps without their record, {} of {} administrators' steps without their record",
        v.finding,
        comp.events_decided,
        comp.deliveries,
        comp.without_outcome,
        comp.without_decision,
        comp.decided_more_than_once,
        comp.alert_steps_without_record,
        comp.governance_steps_without_record,
        comp.governance_steps
    );
    // decisions an earlier attempt made under an older rule set are voided by version
    let mut by_kind: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, b) in d.read_all("AUDIT", "henvis.audit.>").await.unwrap() {
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        *by_kind.entry(v["kind"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    println!("audit records by kind: {by_kind:?}");
    assert!(v.intact, "{}", v.finding);
    assert_eq!(
        (
            comp.without_outcome,
            comp.without_decision,
            comp.decided_more_than_once,
            comp.alert_steps_without_record,
            comp.governance_steps_without_record
        ),
        (0, 0, 0, 0, 0)
    );
    comp
}

/// Outcome counts per (referral, intended recipient).
pub(crate) struct Counts {
    intended: usize,
    once: usize,
    duplicates: usize,
    lost: usize,
    unexpected: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "per (referral, recipient): intended {}, delivered exactly once {}, duplicates {}, lost {}, unexpected {}",
            self.intended, self.once, self.duplicates, self.lost, self.unexpected
        )
    }
}

impl Counts {
    /// Counts `delivered` (pair → how many distinct deliveries) against `intended`.
    pub(crate) fn tally(intended: &BTreeSet<(String, String)>, delivered: &HashMap<(String, String), usize>) -> Self {
        Counts {
            intended: intended.len(),
            once: intended.iter().filter(|k| delivered.get(*k) == Some(&1)).count(),
            duplicates: delivered.values().filter(|n| **n > 1).count(),
            lost: intended.iter().filter(|k| !delivered.contains_key(*k)).count(),
            unexpected: delivered.keys().filter(|k| !intended.contains(*k)).count(),
        }
    }

    pub(crate) fn assert_exactly_once(&self) {
        assert_eq!((self.lost, self.unexpected, self.duplicates), (0, 0, 0), "{self}");
        assert_eq!(self.once, self.intended, "{self}");
    }
}

/// The (referral, recipient) pairs the default rules intend for the acknowledged referrals
/// (event id → (municipality code, sender)): the case's municipality and police district,
/// never the sender.
pub(crate) fn intended(d: &Deployment, acked: &BTreeMap<String, (String, &'static str)>) -> BTreeSet<(String, String)> {
    let mut intended = BTreeSet::new();
    for (event_id, (code, sender)) in acked {
        let m = d.directory.municipality(code).unwrap();
        for recipient in [m.agency.to_string(), m.police_district.to_string()] {
            if recipient != *sender {
                intended.insert((event_id.clone(), recipient));
            }
        }
    }
    intended
}

/// Counts the deliveries in OUT against what the default rules intend for the
/// acknowledged referrals (event id → (municipality code, sender)).
async fn count(d: &Deployment, acked: &BTreeMap<String, (String, &'static str)>) -> Counts {
    let intended = intended(d, acked);
    let js = d.jetstream().await.unwrap();
    let out = js.get_stream("OUT").await.unwrap();
    let last = out.get_info().await.unwrap().state.last_sequence;
    let mut delivered: HashMap<(String, String), usize> = HashMap::new();
    for seq in 1..=last {
        if let Ok(m) = out.get_raw_message(seq).await {
            let recipient = m.subject.split('.').nth(2).unwrap_or_default().to_owned();
            let event_id = Delivery::decode(d.opened(&m.payload).await.unwrap().as_slice())
                .unwrap()
                .envelope
                .unwrap()
                .event_id;
            *delivered.entry((event_id, recipient)).or_default() += 1;
        }
    }
    Counts::tally(&intended, &delivered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_nats_under_load_loses_and_duplicates_nothing() {
    let referrals = env_or("HENVIS_RESTART_REFERRALS", 2000);
    let mut d = Deployment::start_with(Options {
        in_process_router: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let _router = RouterProcess::spawn(&d.nats.url(), 600, d.pki_dir()).unwrap();
    let senders = ["ngo-redbarnet", "ngo-hopenow", "ngo-reden-international", "politi-fyn"];
    let (load, acked, retries) = start_load(&d, referrals, &senders, "restart", true).await;
    // SIGKILL the server twice under load, restarting it on the same store
    let mut restarts = 0;
    for point in [referrals * 3 / 10, referrals * 7 / 10] {
        load_reaches(&acked, &Arc::default(), point).await;
        d.nats.restart().await.unwrap();
        restarts += 1;
    }
    let (acked, stored, c) = settle(&d, load, &acked).await;
    println!(
        "nats restart: {restarts} SIGKILL restarts; referrals attempted {referrals}, acknowledged {}, retried submits {}, stored {stored}; {c}",
        acked.len(),
        retries.lock().unwrap()
    );
    assert_eq!(
        (acked.len(), stored),
        (referrals, referrals),
        "every referral acknowledged and stored once"
    );
    c.assert_exactly_once();
    audit_complete(&d, "the NATS restarts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_never_acknowledged_goes_to_the_dead_letters_with_an_administrator_alert() {
    const ATTEMPTS: i64 = 3;
    let d = Deployment::start_with(Options {
        inbox_max_attempts: ATTEMPTS,
        ack_wait_secs: 1,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = submit(&mut ngo, "poison", "", report("101")).await.unwrap();
    crate::routed(&mut ngo, &r.event_id).await;
    // the municipality's system takes the delivery and drops it, again and again
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let mut offered = 0;
    while offered < ATTEMPTS {
        let mut inbox = crate::Inbox::open(&mut kbh).await;
        let delivery = inbox.next_delivery().await;
        assert_eq!(delivery.envelope.unwrap().event_id, r.event_id);
        // a slow machine may also see an ack-wait redelivery in between: attempts only grow
        assert!(i64::from(delivery.attempt) > offered, "each offer counts");
        offered = i64::from(delivery.attempt);
    }
    let dead = wait_for("the dead letter", Duration::from_secs(30), || async {
        let dead = d.read_all("DEAD", "henvis.dead.kommune-101.>").await.ok()?;
        (!dead.is_empty()).then_some(dead)
    })
    .await
    .unwrap();
    assert_eq!(
        Delivery::decode(d.opened(&dead[0].1).await.unwrap().as_slice())
            .unwrap()
            .envelope
            .unwrap()
            .event_id,
        r.event_id
    );
    let alerts = d.read_all("AUDIT", "henvis.audit.admin.>").await.unwrap();
    let alert: serde_json::Value = serde_json::from_slice(&alerts[0].1).unwrap();
    assert_eq!(
        (alert["kind"].as_str(), alert["agency"].as_str()),
        (Some("delivery_dead_lettered"), Some("kommune-101"))
    );
    // gone from the inbox; the police district's copy is untouched
    let out = d.subjects("OUT", "henvis.out.>").await.unwrap();
    assert!(out.keys().all(|s| !s.starts_with("henvis.out.kommune-101.")), "{out:?}");
    assert!(
        out.keys().any(|s| s.starts_with("henvis.out.politi-koebenhavn.")),
        "{out:?}"
    );
    println!("dead letter: offered {offered} times, moved to DEAD, administrator alerted");
}

/// A deployment on 3 nats-server processes (R3 streams) with the router as its own process.
async fn three_nodes_and_a_router_process() -> (Deployment, RouterProcess) {
    let d = Deployment::start_with(Options {
        in_process_router: false,
        nats_nodes: 3,
        ..Options::default()
    })
    .await
    .unwrap();
    let router = RouterProcess::spawn(&d.nats.url(), 600, d.pki_dir()).unwrap();
    (d, router)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_of_a_three_node_cluster_loses_and_duplicates_nothing() {
    let referrals = env_or("HENVIS_CLUSTER_REFERRALS", 1500);
    let (mut d, _router) = three_nodes_and_a_router_process().await;
    let senders = ["ngo-redbarnet", "ngo-hopenow", "ngo-reden-international"];
    let (load, acked, retries) = start_load(&d, referrals, &senders, "cluster", true).await;
    // kill -9 the node leading the IN stream, three times under load, restarting it each time
    let mut leaders_killed = Vec::new();
    for point in [referrals / 5, referrals / 2, referrals * 4 / 5] {
        load_reaches(&acked, &Arc::default(), point).await;
        let leader = wait_for("the IN stream's leader", Duration::from_secs(60), || {
            let url = d.nats.url();
            let pki = d.pki_dir().to_owned();
            async move {
                let c = henvis_tests::connect_as(&url, &pki, &henvis_tests::inspector())
                    .await
                    .ok()?;
                let js = async_nats::jetstream::new(c);
                let info = js.get_stream("IN").await.ok()?.get_info().await.ok()?;
                info.cluster?.leader
            }
        })
        .await
        .unwrap();
        let node: usize = leader.trim_start_matches("node-").parse().unwrap();
        d.nats.kill_node(node);
        d.nats.start_node(node).await.unwrap();
        leaders_killed.push(leader);
    }
    let (acked, stored, c) = settle(&d, load, &acked).await;
    println!(
        "3-node cluster: stream leaders killed {leaders_killed:?}; referrals attempted {referrals}, acknowledged {}, retried submits {}, stored {stored}; {c}",
        acked.len(),
        retries.lock().unwrap()
    );
    assert_eq!((acked.len(), stored), (referrals, referrals));
    c.assert_exactly_once();
    audit_complete(&d, "the stream leader kills").await;
}

/// What a load acknowledged: event id → (municipality code, sender).
pub(crate) type Acked = Arc<Mutex<BTreeMap<String, (String, &'static str)>>>;

/// Starts `referrals` opening reports spread over `senders` and the 98 municipalities.
/// With `retry`, a failed submit is retried with the same key until stored (what the API
/// tells clients to do); without, it counts as an unknown outcome. Returns the tasks, what
/// was acknowledged, and the number of failed attempts.
pub(crate) async fn start_load(
    d: &Deployment,
    referrals: usize,
    senders: &[&'static str],
    prefix: &str,
    retry: bool,
) -> (Vec<tokio::task::JoinHandle<()>>, Acked, Arc<Mutex<usize>>) {
    let all: Vec<String> = d.directory.municipalities().map(|m| m.code.clone()).collect();
    start_load_in(d, referrals, senders, &all, prefix, retry, None).await
}

/// [`start_load`] for cases in the given municipalities only; with `running`, each sender
/// goes on past its share of `referrals` for as long as the flag stays set.
pub(crate) async fn start_load_in(
    d: &Deployment,
    referrals: usize,
    senders: &[&'static str],
    municipalities: &[String],
    prefix: &str,
    retry: bool,
    running: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> (Vec<tokio::task::JoinHandle<()>>, Acked, Arc<Mutex<usize>>) {
    let acked: Acked = Arc::default();
    let failures = Arc::new(Mutex::new(0usize));
    let mut load = Vec::new();
    for (w, &sender) in senders.iter().enumerate() {
        let sector = if sender.starts_with("politi") {
            Sector::Police
        } else {
            Sector::Ngo
        };
        let c = d.client(sector, sender).await.unwrap();
        let (acked, failures, municipalities) = (acked.clone(), failures.clone(), municipalities.to_vec());
        let share = referrals / senders.len() + usize::from(w < referrals % senders.len());
        let prefix = prefix.to_owned();
        let running = running.clone();
        load.push(tokio::spawn(async move {
            let go_on = || {
                running
                    .as_ref()
                    .is_some_and(|r| r.load(std::sync::atomic::Ordering::SeqCst))
            };
            for i in 0.. {
                if i >= share && !go_on() {
                    break;
                }
                let m = municipalities[(w * 31 + i) % municipalities.len()].clone();
                let key = format!("{prefix}-{w}-{i}");
                let attempt = || {
                    let mut inner = c.inner.clone();
                    let req = c.req(SubmitRequest {
                        idempotency_key: key.clone(),
                        event: Some(report(&m)),
                        actor_id: "load".into(),
                        ..Default::default()
                    });
                    let failures = failures.clone();
                    async move {
                        match inner.submit(req).await {
                            Ok(r) => Some(r.into_inner()),
                            Err(_) => {
                                *failures.lock().unwrap() += 1;
                                None
                            }
                        }
                    }
                };
                let stored = if retry {
                    wait_for("a submit to be stored", Duration::from_secs(120), attempt)
                        .await
                        .ok()
                } else {
                    attempt().await
                };
                if let Some(r) = stored {
                    acked.lock().unwrap().insert(r.event_id, (m, sender));
                }
            }
        }));
    }
    (load, acked, failures)
}

/// Waits until the load has acknowledged at least `n` referrals.
pub(crate) async fn load_reaches(acked: &Acked, failures: &Arc<Mutex<usize>>, n: usize) {
    wait_for("the load to reach its point", Duration::from_secs(300), || {
        let done = acked.lock().unwrap().len() + *failures.lock().unwrap();
        async move { (done >= n).then_some(()) }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_leading_the_routers_consumer_loses_and_duplicates_nothing_and_routing_resumes_within_seconds()
{
    let (mut d, _router) = three_nodes_and_a_router_process().await;
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let all: Vec<String> = d.directory.municipalities().map(|m| m.code.clone()).collect();
    let senders = ["ngo-redbarnet", "ngo-hopenow"];
    let (load, acked, retries) = start_load_in(&d, 100, &senders, &all, "failover", true, Some(running.clone())).await;
    load_reaches(&acked, &Arc::default(), 100).await;
    let js = d.jetstream().await.unwrap();
    // the node leading the router's consumer on IN: where the router's pull requests wait
    let leader = wait_for("the router consumer's leader", Duration::from_secs(60), || {
        let js = js.clone();
        async move {
            let s = js.get_stream("IN").await.ok()?;
            router_consumer(&s).await?.cluster?.leader
        }
    })
    .await
    .unwrap();
    let node: usize = leader.trim_start_matches("node-").parse().unwrap();
    // the node the router's connection is on: when it is not the one killed, nothing tells
    // the router its pull requests died with the leader
    let mut router_on = None;
    for i in 0..3 {
        let connz = d.nats.monitor(i, "/connz").await.unwrap_or_default();
        if connz["connections"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["name"].as_str().is_some_and(|n| n.contains("router")))
        }) {
            router_on = Some(i);
        }
    }
    let killed_at = acked.lock().unwrap().len();
    d.nats.kill_node(node);
    d.nats.start_node(node).await.unwrap();
    // routing goes on: 200 more referrals acknowledged after the kill, then the load ends
    load_reaches(&acked, &Arc::default(), killed_at + 200).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    let (acked, stored, c) = settle(&d, load, &acked).await;
    // how long each event waited in IN: from when IN stored it to when OUT stored its
    // first delivery (the servers' clocks, one machine)
    let (in_stream, out) = (js.get_stream("IN").await.unwrap(), js.get_stream("OUT").await.unwrap());
    let mut submitted = HashMap::new();
    for seq in 1..=in_stream.get_info().await.unwrap().state.last_sequence {
        let m = in_stream.get_raw_message(seq).await.unwrap();
        let env =
            henvis_proto::henvis::broker::v1::Envelope::decode(d.opened(&m.payload).await.unwrap().as_slice()).unwrap();
        submitted.insert(env.event_id, m.time);
    }
    let mut routed: HashMap<String, time::OffsetDateTime> = HashMap::new();
    for seq in 1..=out.get_info().await.unwrap().state.last_sequence {
        let m = out.get_raw_message(seq).await.unwrap();
        let event_id = Delivery::decode(d.opened(&m.payload).await.unwrap().as_slice())
            .unwrap()
            .envelope
            .unwrap()
            .event_id;
        let at = routed.entry(event_id).or_insert(m.time);
        *at = (*at).min(m.time);
    }
    let longest = routed
        .iter()
        .filter_map(|(e, at)| Some(*at - *submitted.get(e)?))
        .max()
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default();
    println!(
        "router consumer's leader {leader} killed after {killed_at} referrals (the router connected to node {router_on:?}): an event waited in IN at most {longest:.1?}; acknowledged {}, retried submits {}, stored {stored}; {c}",
        acked.len(),
        retries.lock().unwrap()
    );
    assert_eq!(acked.len(), stored);
    c.assert_exactly_once();
    // what the router held when the leader died comes back after its ack wait (10 s), with
    // a new leader elected meanwhile; a pull request lost with the leader would show as a
    // wait of its expiry (30 s) and more
    assert!(
        longest < Duration::from_secs(25),
        "the router took nothing from IN for {longest:?} after the consumer's leader died"
    );
}

/// Waits for the load and the router to finish; returns what was acknowledged, how many
/// events IN holds, and the delivery counts.
async fn settle(
    d: &Deployment,
    load: Vec<tokio::task::JoinHandle<()>>,
    acked: &Acked,
) -> (BTreeMap<String, (String, &'static str)>, usize, Counts) {
    for l in load {
        l.await.unwrap();
    }
    drain(d).await;
    let acked = acked.lock().unwrap().clone();
    let stored = d.stream_messages("IN").await.unwrap() as usize;
    let c = count(d, &acked).await;
    (acked, stored, c)
}

/// Waits until the router has decided and acknowledged everything in IN.
pub(crate) async fn drain(d: &Deployment) {
    let js = d.jetstream().await.unwrap();
    // the stream is looked up on every check: right after a leader was killed the API may
    // not answer for a while
    wait_for("the router to drain IN", Duration::from_secs(300), || {
        let js = js.clone();
        async move {
            let s = js.get_stream("IN").await.ok()?;
            let info = router_consumer(&s).await?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_finds_and_redrives_deliveries_deleted_behind_the_brokers_back() {
    let d = Deployment::start().await.unwrap();
    let (load, acked, failed) = start_load(&d, 40, &["ngo-redbarnet", "ngo-hopenow"], "reconcile", false).await;
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(*failed.lock().unwrap(), 0);
    drain(&d).await;
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let acked = acked.lock().unwrap().clone();
    for (event_id, (_, sender)) in &acked {
        if *sender == "ngo-redbarnet" {
            crate::routed(&mut ngo, event_id).await;
        }
    }
    // an operator (or a disk) loses five stored deliveries
    let js = d.jetstream().await.unwrap();
    let out = js.get_stream("OUT").await.unwrap();
    let mut deleted = 0;
    for seq in (1..=out.get_info().await.unwrap().state.last_sequence).step_by(7) {
        if deleted < 5 && out.delete_message(seq).await.unwrap_or(false) {
            deleted += 1;
        }
    }
    let router = henvis_router::build(&d.router_config(1)).await.unwrap();
    let found = router.reconcile(false).await.unwrap();
    let fixed = router.reconcile(true).await.unwrap();
    let after = router.reconcile(false).await.unwrap();
    let c = count(&d, &acked).await;
    println!(
        "reconciliation: {} events, {} deliveries decided; deleted {deleted}; found missing {}, re-driven {}, missing afterwards {}; {c}",
        found.events,
        found.deliveries,
        found.missing.len(),
        fixed.redriven,
        after.missing.len()
    );
    assert!(deleted > 0, "deliveries were really deleted");
    assert_eq!(
        (found.missing.len(), fixed.redriven, after.missing.len()),
        (deleted, deleted, 0)
    );
    assert!(found.undecided.is_empty());
    c.assert_exactly_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_redrives_a_lost_referral_response_to_the_referrer() {
    use henvis_proto::henvis::events::v1::{Event, ReferralOutcome, ReferralResponse, event};
    let d = Deployment::start().await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let r = submit(&mut ngo, "refer", "", report("101")).await.unwrap();
    crate::routed(&mut ngo, &r.event_id).await;
    let mut kbh = d.client(Sector::Social, "kommune-101").await.unwrap();
    let response = Event {
        kind: Some(event::Kind::ReferralResponse(ReferralResponse {
            in_response_to_event_id: r.event_id.clone(),
            outcome: ReferralOutcome::Accepted as i32,
            reason: String::new(),
        })),
    };
    let answer = submit(&mut kbh, "accept", &r.case_id, response).await.unwrap();
    crate::routed(&mut kbh, &answer.event_id).await;
    // the response's delivery to the referrer is lost behind the broker's back
    let js = d.jetstream().await.unwrap();
    let out = js.get_stream("OUT").await.unwrap();
    let mut deleted = 0;
    for seq in 1..=out.get_info().await.unwrap().state.last_sequence {
        let Ok(m) = out.get_raw_message(seq).await else {
            continue;
        };
        if m.subject.as_str() == "henvis.out.ngo-hopenow.referral_response" {
            assert!(out.delete_message(seq).await.unwrap());
            deleted += 1;
        }
    }
    assert_eq!(deleted, 1, "the response's delivery was really deleted");
    let router = henvis_router::build(&d.router_config(1)).await.unwrap();
    let found = router.reconcile(false).await.unwrap();
    assert!(
        found
            .missing
            .contains(&(answer.event_id.clone(), "ngo-hopenow".to_owned())),
        "{found:?}"
    );
    let fixed = router.reconcile(true).await.unwrap();
    assert_eq!(
        (fixed.redriven, fixed.no_longer_entitled),
        (1, 0),
        "decided with the referral's sender, as the router did"
    );
    assert!(router.reconcile(false).await.unwrap().missing.is_empty());
    // the referrer receives the answer
    let mut inbox = crate::Inbox::open(&mut ngo).await;
    let got = loop {
        let delivery = inbox.next_delivery().await;
        if delivery.envelope.as_ref().unwrap().message_type == "referral_response" {
            break delivery;
        }
        inbox.ack(delivery.delivery_id).await;
    };
    assert_eq!(got.envelope.unwrap().event_id, answer.event_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_delivery_raises_an_administrator_alert_before_it_expires() {
    // retention 60 s, warning 58 s before expiry: a delivery 2 s old is about to expire
    let d = Deployment::start_with(Options {
        retention_secs: 60,
        expiry_warning_secs: 58,
        duplicate_window_secs: 30,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let r = submit(&mut ngo, "old", "", report("101")).await.unwrap();
    crate::routed(&mut ngo, &r.event_id).await;
    let alerts = wait_for("the expiry alerts", Duration::from_secs(30), || async {
        let alerts: Vec<serde_json::Value> = d
            .read_all("AUDIT", "henvis.audit.admin.>")
            .await
            .ok()?
            .into_iter()
            .filter_map(|(_, b)| serde_json::from_slice(&b).ok())
            .filter(|a: &serde_json::Value| a["kind"] == "delivery_expiring")
            .collect();
        (alerts.len() == 2).then_some(alerts)
    })
    .await
    .unwrap();
    let agencies: BTreeSet<_> = alerts
        .iter()
        .map(|a| a["agency"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        agencies,
        BTreeSet::from(["kommune-101".to_owned(), "politi-koebenhavn".to_owned()])
    );
    assert!(
        alerts
            .iter()
            .all(|a| a["event_id"] == r.event_id.as_str() && a["expires_in_secs"].as_u64().unwrap() <= 58)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_refuses_new_submissions_keeps_the_old_and_alerts() {
    let d = Deployment::start_with(Options {
        stream_max_bytes: 16 * 1024,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let first = submit(&mut ngo, "full-0", "", report("101")).await.unwrap();
    let mut refused = None;
    for i in 1..200 {
        match submit(&mut ngo, &format!("full-{i}"), "", report("101")).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, e) = refused.expect("the stream fills up");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("retry later"), "{}", e.message());
    // nothing old was evicted: the first referral is still there and still answers a retry
    let again = submit(&mut ngo, "full-0", "", report("101")).await.unwrap();
    assert_eq!(again.event_id, first.event_id);
    assert_eq!(d.stream_messages("IN").await.unwrap() as usize, at);
    let alerts: Vec<serde_json::Value> = d
        .read_all("AUDIT", "henvis.audit.admin.>")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(_, b)| serde_json::from_slice(&b).ok())
        .collect();
    assert!(
        alerts.iter().any(|a| a["kind"] == "stream_full" && a["stream"] == "IN"),
        "{alerts:?}"
    );
    println!("stream full after {at} referrals: RESOURCE_EXHAUSTED, nothing evicted, administrator alerted");
}

/// Submits `n` opening reports from one NGO; returns their event ids.
async fn submit_referrals(
    d: &Deployment,
    n: usize,
    key: &str,
    event: impl Fn() -> henvis_proto::henvis::events::v1::Event,
) -> BTreeSet<String> {
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let mut submitted = BTreeSet::new();
    for i in 0..n {
        submitted.insert(
            submit(&mut ngo, &format!("{key}-{i}"), "", event())
                .await
                .unwrap()
                .event_id,
        );
    }
    submitted
}

/// An agency reads and acknowledges its inbox until it has seen `n` distinct events;
/// returns how often it saw each, and how many more deliveries wait behind them (up to the
/// next heartbeat: anything more would be a duplicate).
async fn take_deliveries(d: &Deployment, sector: Sector, agency: &str, n: usize) -> (BTreeMap<String, usize>, usize) {
    let mut c = d.client(sector, agency).await.unwrap();
    let mut inbox = crate::Inbox::open(&mut c).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while seen.len() < n {
        let del = inbox.next_delivery().await;
        *seen.entry(del.envelope.unwrap().event_id).or_default() += 1;
        inbox.ack(del.delivery_id).await;
    }
    let extra = inbox.deliveries_before_heartbeat().await;
    (seen, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_deliveries_stream_holds_events_back_alerts_and_delivers_once_there_is_room() {
    const N: usize = 24;
    let d = Deployment::start_with(Options {
        stream_max_bytes: 16 * 1024,
        ..Options::default()
    })
    .await
    .unwrap();
    // each referral makes two deliveries (municipality, police district): OUT fills long
    // before IN does
    let submitted = submit_referrals(&d, N, "out-full", || report("101")).await;
    let admin_alerts = || async {
        let alerts: Vec<serde_json::Value> = d
            .read_all("AUDIT", "henvis.audit.admin.>")
            .await
            .ok()?
            .into_iter()
            .filter_map(|(_, b)| serde_json::from_slice(&b).ok())
            .collect();
        Some(alerts)
    };
    wait_for("a stream_full alert for OUT", crate::LIMIT, || async {
        let alerts = admin_alerts().await?;
        alerts
            .iter()
            .any(|a| a["kind"] == "stream_full" && a["stream"] == "OUT")
            .then_some(())
    })
    .await
    .unwrap();
    let waiting_in_out = d.stream_messages("OUT").await.unwrap();
    // the agencies take their deliveries (both at once: each one's backlog waits for room
    // the other makes); the held-back events are routed
    let ((municipality, _), (police, _)) = tokio::join!(
        take_deliveries(&d, Sector::Social, "kommune-101", N),
        take_deliveries(&d, Sector::Police, "politi-koebenhavn", N)
    );
    let mut per_recipient = Vec::new();
    for seen in [municipality, police] {
        assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), submitted);
        assert!(seen.values().all(|n| *n == 1), "{seen:?}");
        per_recipient.push(seen.len());
    }
    drain(&d).await;
    let full_alerts = admin_alerts()
        .await
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "stream_full" && a["stream"] == "OUT")
        .count();
    println!(
        "deliveries stream full (16 KiB) with {waiting_in_out} deliveries waiting: {full_alerts} administrator alert(s), \
         nothing evicted; after the agencies took theirs, delivered per recipient {per_recipient:?} of {N}, each once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_router_can_never_route_is_kept_in_the_dead_letters_with_an_alert() {
    let d = Deployment::start().await.unwrap();
    // not written by the sector service's checked path (a buggy one): undecodable
    let ngo_service = henvis_domain::Principal::Service("ngo".into());
    let js = async_nats::jetstream::new(
        henvis_tests::connect_as(&d.nats.url(), d.pki_dir(), &ngo_service)
            .await
            .unwrap(),
    );
    let case = "0196f3a0-7b5c-7cc0-8000-000000000001";
    let sealed = d.sealed(case, b"\xff\xff not an envelope").await.unwrap();
    js.publish(format!("henvis.in.ngo.report.{case}"), sealed.clone())
        .await
        .unwrap()
        .await
        .unwrap();
    // and one not sealed with a case key at all
    js.publish(
        format!("henvis.in.ngo.report.{case}"),
        bytes::Bytes::from_static(b"\xff\xff not sealed"),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    wait_for("the events in DEAD", crate::LIMIT, || async {
        let dead = d.read_all("DEAD", "henvis.dead.router.inbound").await.ok()?;
        (dead.len() == 2 && dead[0].1 == sealed && dead[1].1.as_ref() == b"\xff\xff not sealed").then_some(())
    })
    .await
    .unwrap();
    let alerts = d.read_all("AUDIT", "henvis.audit.admin.>").await.unwrap();
    let reasons: Vec<(String, String)> = alerts
        .iter()
        .map(|(_, a)| {
            let alert: serde_json::Value = serde_json::from_slice(a).unwrap();
            (
                alert["kind"].as_str().unwrap().to_owned(),
                alert["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("unroutable_event".to_owned(), "undecodable envelope".to_owned()),
            (
                "unroutable_event".to_owned(),
                "not sealed with its case's key".to_owned()
            )
        ]
    );
    drain(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliveries_stream_full_for_longer_than_the_duplicate_window_still_delivers_each_once() {
    const N: usize = 24;
    const WINDOW: u64 = 2;
    let pad = 100;
    // the municipality's copy (published first) carries the health concerns, the police
    // district's does not: sized so that OUT fills between the two deliveries of an event
    let padded = || {
        use henvis_proto::henvis::events::v1::{Event, SuspectedVictimReported, event};
        Event {
            kind: Some(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
                municipality_code: "101".into(),
                observed_at: Some(prost_types::Timestamp {
                    seconds: 1_790_000_000,
                    nanos: 0,
                }),
                health_concerns: "h".repeat(pad),
                ..Default::default()
            })),
        }
    };
    let d = Deployment::start_with(Options {
        stream_max_bytes: 16 * 1024,
        duplicate_window_secs: WINDOW,
        ..Options::default()
    })
    .await
    .unwrap();
    let submitted = submit_referrals(&d, N, "long-full", padded).await;
    wait_for("OUT to fill", crate::LIMIT, || async {
        let alerts = d.read_all("AUDIT", "henvis.audit.admin.>").await.ok()?;
        alerts
            .iter()
            .any(|(_, b)| String::from_utf8_lossy(b).contains("stream_full"))
            .then_some(())
    })
    .await
    .unwrap();
    // OUT stays full for several duplicate windows while the router retries the events
    // it holds back (some of them with one of their two deliveries already stored)
    let full_since = Instant::now();
    // an event with one of its two deliveries stored when OUT filled: the one whose other
    // delivery is retried after the duplicate window
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    let out = d.jetstream().await.unwrap().get_stream("OUT").await.unwrap();
    for seq in 1..=out.get_info().await.unwrap().state.last_sequence {
        let Ok(m) = out.get_raw_message(seq).await else {
            continue;
        };
        let delivery = Delivery::decode(d.opened(&m.payload).await.unwrap().as_slice()).unwrap();
        *per_event.entry(delivery.envelope.unwrap().event_id).or_default() += 1;
    }
    let partial = per_event.values().filter(|n| **n == 1).count();
    assert!(
        partial > 0,
        "OUT filled between the two deliveries of an event: {per_event:?}"
    );
    let held = Duration::from_secs(WINDOW * 6);
    wait_for("OUT to have been full for six duplicate windows", held * 2, || async {
        (full_since.elapsed() >= held).then_some(())
    })
    .await
    .unwrap();
    let ((municipality, extra_m), (police, extra_p)) = tokio::join!(
        take_deliveries(&d, Sector::Social, "kommune-101", N),
        take_deliveries(&d, Sector::Police, "politi-koebenhavn", N)
    );
    for (seen, extra) in [(&municipality, extra_m), (&police, extra_p)] {
        assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), submitted);
        assert!(seen.values().all(|n| *n == 1), "{seen:?}");
        assert_eq!(extra, 0, "no duplicate waits behind");
    }
    // every event routed, and nothing left over in OUT: no late duplicate either
    drain(&d).await;
    assert_eq!(d.stream_messages("OUT").await.unwrap(), 0);
    println!(
        "deliveries stream full for {:?} (duplicate window {WINDOW} s), {partial} event(s) with one of two deliveries stored: {N} referrals, each delivered once to each of its 2 recipients",
        full_since.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_past_its_share_of_in_is_refused_alone_and_nothing_of_it_is_stored() {
    const QUOTA: i64 = 5;
    let d = Deployment::start_with(Options {
        agency_quota: QUOTA,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut flooding = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let mut stored = Vec::new();
    for i in 0..QUOTA {
        stored.push(
            submit(&mut flooding, &format!("share-{i}"), "", report("101"))
                .await
                .unwrap(),
        );
    }
    let in_before = d.stream_messages("IN").await.unwrap();
    let refused = submit(&mut flooding, "share-over", "", report("101"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("ngo-redbarnet") && refused.message().contains("HENVIS_AGENCY_QUOTA"),
        "{}",
        refused.message()
    );
    assert_eq!(d.stream_messages("IN").await.unwrap(), in_before, "nothing stored");
    // a retry of a stored submission is still answered, from its record
    let retry = submit(&mut flooding, "share-0", "", report("101")).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.event_id, stored[0].event_id);
    // everyone else goes on: another agency of the same sector, and another sector
    let mut other_ngo = d.client(Sector::Ngo, "ngo-hopenow").await.unwrap();
    let mut police = d.client(Sector::Police, "politi-koebenhavn").await.unwrap();
    let mut others = 0;
    for i in 0..QUOTA {
        submit(&mut other_ngo, &format!("other-{i}"), "", report("101"))
            .await
            .unwrap();
        submit(&mut police, &format!("police-{i}"), "", report("101"))
            .await
            .unwrap();
        others += 2;
    }
    let alerted = wait_for("a share alert for the agency", crate::LIMIT, || async {
        let alerts = d.read_all("AUDIT", "henvis.audit.admin.>").await.ok()?;
        alerts
            .iter()
            .filter_map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).ok())
            .find(|a| a["kind"] == "stream_full" && a["stream"] == "QUOTA" && a["by"] == "ngo-redbarnet")
    })
    .await
    .unwrap();
    println!(
        "agency share of IN {QUOTA}: {} stored, the next refused RESOURCE_EXHAUSTED with nothing stored; \
         {others} submissions of two other agencies stored meanwhile; alert {alerted}",
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_recipient_fills_only_its_own_share_of_out_and_everyone_else_is_delivered() {
    const SHARE: i64 = 3;
    const N: usize = 10;
    let d = Deployment::start_with(Options {
        recipient_share: SHARE,
        ..Options::default()
    })
    .await
    .unwrap();
    // København's municipality takes nothing while its referrals arrive
    let held = submit_referrals(&d, N, "absent", || report("101")).await;
    // its police district takes all of them at once: it is not held back by the municipality
    let (police, _) = take_deliveries(&d, Sector::Police, "politi-koebenhavn", N).await;
    assert_eq!(police.keys().cloned().collect::<BTreeSet<_>>(), held);
    wait_for("the municipality's share of OUT full", crate::LIMIT, || async {
        let subjects = d.subjects("OUT", "henvis.out.kommune-101.>").await.ok()?;
        (subjects.values().sum::<usize>() == SHARE as usize).then_some(())
    })
    .await
    .unwrap();
    // another municipality's referrals flow meanwhile
    let flowing = submit_referrals(&d, N, "present", || report("751")).await;
    let (aarhus, _) = take_deliveries(&d, Sector::Social, "kommune-751", N).await;
    assert_eq!(aarhus.keys().cloned().collect::<BTreeSet<_>>(), flowing);
    let waiting = d.subjects("OUT", "henvis.out.kommune-101.>").await.unwrap();
    assert_eq!(
        waiting.values().sum::<usize>(),
        SHARE as usize,
        "never more than its share"
    );
    let alerts = d.read_all("AUDIT", "henvis.audit.admin.>").await.unwrap();
    let named = alerts
        .iter()
        .filter_map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).ok())
        .filter(|a| a["kind"] == "stream_full" && a["stream"] == "OUT" && a["by"] == "kommune-101")
        .count();
    assert!(named > 0, "an administrator alert names the recipient");
    // once it comes back, it gets every referral, each once
    let (municipality, extra) = take_deliveries(&d, Sector::Social, "kommune-101", N).await;
    assert_eq!(municipality.keys().cloned().collect::<BTreeSet<_>>(), held);
    assert!(municipality.values().all(|n| *n == 1), "{municipality:?}");
    assert_eq!(extra, 0);
    println!(
        "recipient share of OUT {SHARE}: the absent municipality held {SHARE} in OUT and the rest in IN \
         ({named} alert(s) naming it); meanwhile its police district took {} and another municipality {}; \
         on return it took {} of {N}, each once",
        police.len(),
        aarhus.len(),
        municipality.len()
    );
}

/// An inbox stream that closes with deliveries it did not acknowledge gives them back at
/// once, and to the next stream: its NATS pull must not stay registered to take them (or
/// deliveries arriving meanwhile) into the void until the ack wait (30 s here, longer than
/// this test's limit), a delivery on its second offer must not wait out the consumer's
/// back-off, and nothing is fetched that a stream cannot pass on, so a delivery nobody saw
/// uses up no attempt. Three streams in a row each take a window's worth and go away; the
/// fourth gets every delivery at once, each on exactly the attempt its offers account for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_a_closed_inbox_held_go_to_the_next_stream_at_once_not_to_the_closed_ones_pull() {
    const N: usize = 20;
    let d = Deployment::start().await.unwrap();
    let mut ngo = d.client(Sector::Ngo, "ngo-redbarnet").await.unwrap();
    let mut ids = BTreeSet::new();
    for i in 0..N {
        let r = submit(&mut ngo, &format!("stale-pull-{i}"), "", report("101"))
            .await
            .unwrap();
        ids.insert(r.event_id);
    }
    for id in &ids {
        crate::routed(&mut ngo, id).await;
    }
    let mut municipality = d.client(Sector::Social, "kommune-101").await.unwrap();
    // how often each delivery was offered to a client
    let mut offers: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..3 {
        let mut inbox = crate::Inbox::open(&mut municipality).await;
        for _ in 0..8 {
            let delivery = inbox.next_delivery().await;
            let id = delivery.envelope.unwrap().event_id;
            let before = offers.entry(id).or_default();
            *before += 1;
            assert_eq!(delivery.attempt, *before, "attempts count the offers to clients");
        }
        drop(inbox);
    }
    // while the last stream is going away, more arrive
    let mut late = BTreeSet::new();
    for i in 0..4 {
        let r = submit(&mut ngo, &format!("stale-pull-late-{i}"), "", report("101"))
            .await
            .unwrap();
        late.insert(r.event_id);
    }
    let started = Instant::now();
    let mut inbox = crate::Inbox::open(&mut municipality).await;
    let mut seen = BTreeMap::new();
    let want = ids.len() + late.len();
    while seen.len() < want {
        // next_delivery waits at most the test's limit (20 s), less than the ack wait
        let delivery = inbox.next_delivery().await;
        let id = delivery.envelope.as_ref().unwrap().event_id.clone();
        assert!(ids.contains(&id) || late.contains(&id), "{id}");
        let expected = offers.get(&id).copied().unwrap_or(0) + 1;
        assert_eq!(
            delivery.attempt, expected,
            "{id}: no attempt used but by offers to a client"
        );
        seen.insert(id, delivery.attempt);
        inbox.ack(delivery.delivery_id).await;
    }
    println!(
        "{want} deliveries read by the fourth stream in {:.2} s; {} offered three times before (attempt 4), {} never (attempt 1)",
        started.elapsed().as_secs_f64(),
        seen.values().filter(|a| **a == 4).count(),
        seen.values().filter(|a| **a == 1).count()
    );
}
