//! henvis-bench: henvis measured against the raw substrate in the same run, on the same
//! host, the same nats-server (store encrypted, as shipped), the same payload size and the
//! same durability mode. Absolute figures on shared machines drift; the ratios are what
//! docs/PERFORMANCE.md tracks.
//!
//! The services run as their own release processes (router, four sector services), so each
//! one's peak resident memory is its own; the bench process holds the clients, the admin
//! service and the raw baselines.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, stream};
use futures::{StreamExt as _, stream::FuturesUnordered};
use henvis_domain::{Principal, Sector};
use henvis_proto::henvis::{
    broker::v1::{
        Ack, GetCaseDecisionsRequest, GetCaseDecisionsResponse, GetStatusRequest, GetStatusResponse,
        GetSubjectAccessReportRequest, InboxRequest, InboxResponse, StatusUpdate, SubjectAccessReport, SubmitRequest,
        SubmitResponse, SubscribeStatusRequest, inbox_request, inbox_response,
        referral_service_client::ReferralServiceClient,
        referral_service_server::{ReferralService, ReferralServiceServer},
    },
    events::v1::{Event, SuspectedVictimReported, event},
};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming, transport::Channel};

use crate::{Deployment, Options, RouterProcess, SectorProcess, connect_as, inspector, wait_for};

/// What one invocation measures.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Referrals per henvis phase (Submit, routing, inbox, end to end).
    pub referrals: usize,
    /// Messages per raw baseline.
    pub raw_messages: usize,
    /// Requests in flight (Submit and the gRPC ingest baseline) and the raw window.
    pub in_flight: usize,
    /// Messages in flight in the raw publish and relay baselines.
    pub raw_window: usize,
    /// Encoded size of each referral event, bytes (padded with free text).
    pub payload_bytes: usize,
    /// Seconds of paced load for the latency figure.
    pub latency_secs: u64,
    /// Events already in IN before anything is measured (routed: the routers' consumer
    /// starts after them), sealed and stored as a sector service stores them.
    pub prefill_events: usize,
    /// Open cases already in the broker (record and key each), the prefilled events' cases.
    pub prefill_cases: usize,
}

impl BenchConfig {
    /// The full run docs/PERFORMANCE.md records.
    pub fn full() -> Self {
        Self {
            referrals: 3000,
            raw_messages: 30_000,
            in_flight: 64,
            raw_window: 256,
            payload_bytes: 512,
            latency_secs: 10,
            prefill_events: 0,
            prefill_cases: 0,
        }
    }

    /// Seconds and a few hundred events: keeps the harness working in CI; its figures mean
    /// nothing.
    pub fn smoke() -> Self {
        Self {
            referrals: 150,
            raw_messages: 500,
            in_flight: 16,
            raw_window: 64,
            payload_bytes: 512,
            latency_secs: 1,
            prefill_events: 200,
            prefill_cases: 50,
        }
    }
}

/// One measured figure and what it is compared with.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub figure: String,
    /// The measured value, in `unit`.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// The raw figure it is divided by, and that ratio.
    pub ratio: Option<(String, f64)>,
    /// The target the issue sets, as text.
    pub target: &'static str,
}

/// What one durability mode measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// `sync_interval: always`, or the server's default.
    pub sync_always: bool,
    /// Encoded referral event, bytes.
    pub event_bytes: usize,
    /// Referrals per phase.
    pub referrals: usize,
    /// Events in IN and open cases before the run.
    pub prefilled: (usize, usize),
    /// The figures, in the order measured.
    pub rows: Vec<Row>,
    /// Peak resident memory per process, KiB.
    pub memory: Vec<(String, u64)>,
    /// CPU seconds per process over the whole run (user and system).
    pub cpu: Vec<(String, f64)>,
    /// Everything the henvis phases checked: referrals submitted, deliveries acknowledged.
    pub delivered: usize,
    /// With `HENVIS_TEST_NATS_TRACE` set: the end-to-end phase's messages by client and
    /// subject (Markdown).
    pub census: Option<String>,
}

impl Report {
    /// Markdown: the table docs/PERFORMANCE.md keeps.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let mode = if self.sync_always {
            "`sync_interval: always`"
        } else {
            "default sync (flush every 2 min)"
        };
        let _ = writeln!(
            s,
            "\n### {mode}, {} B referral events, {} referrals per phase, {} events in IN and {} open cases before\n",
            self.event_bytes,
            self.referrals,
            fmt_count(self.prefilled.0),
            fmt_count(self.prefilled.1)
        );
        let _ = writeln!(s, "| figure | value | ÷ raw baseline | ratio | target |");
        let _ = writeln!(s, "| --- | ---: | --- | ---: | --- |");
        for r in &self.rows {
            let (base, ratio) = match &r.ratio {
                Some((b, x)) => (b.clone(), format!("{x:.3}")),
                None => (String::new(), String::new()),
            };
            let _ = writeln!(
                s,
                "| {} | {} {} | {} | {} | {} |",
                r.figure,
                fmt_value(r.value),
                r.unit,
                base,
                ratio,
                r.target
            );
        }
        let _ = writeln!(s, "\n| process | peak resident memory (VmHWM) | CPU time, whole run |");
        let _ = writeln!(s, "| --- | ---: | ---: |");
        for (name, kib) in &self.memory {
            let cpu = self
                .cpu
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, secs)| format!("{secs:.1} s"))
                .unwrap_or_default();
            let _ = writeln!(s, "| {name} | {:.1} MiB | {cpu} |", *kib as f64 / 1024.0);
        }
        if let Some(census) = &self.census {
            s += census;
        }
        s
    }

    fn value(&self, figure: &str) -> f64 {
        self.rows
            .iter()
            .find(|r| r.figure == figure)
            .map(|r| r.value)
            .unwrap_or(f64::NAN)
    }
}

fn fmt_count(n: usize) -> String {
    if n >= 100 { fmt_value(n as f64) } else { n.to_string() }
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        let n = v.round() as u64;
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

const SENDER: &str = "ngo-reden-international";
const MUNICIPALITY: &str = "461";
/// Odense's municipality, police district and region (the third recipient's route).
const RECIPIENTS: [(Sector, &str); 3] = [
    (Sector::Social, "kommune-461"),
    (Sector::Police, "politi-fyn"),
    (Sector::Health, "region-syddanmark"),
];

/// The shipped rule set with the opening report routed to the municipality only, or to the
/// municipality, the police district (with its alert) and the region's hospitals.
fn rules(recipients: usize) -> anyhow::Result<String> {
    let text = henvis_router::DEFAULT_RULES;
    // the shipped rule tests expect the shipped routes
    let text = &text[..text.find("\n[[test]]").context("the default rules' tests")?];
    let start = text
        .find("[[message.route]]\nid = \"svr-police\"")
        .context("the default rules' police route")?;
    let end = text[start..]
        .find("\n# Age assessment")
        .map(|e| start + e)
        .context("the end of the police route")?;
    let middle = match recipients {
        1 => String::new(),
        _ => format!(
            "{}\n[[message.route]]\nid = \"bench-region\"\ndescription = \"henvis-bench: the region's hospitals follow the child's health.\"\nto = \"agency:region-syddanmark\"\nbasis = {{ statutory = \"sundhedsloven § 42 a\" }}\nagreement = \"health-social-cooperation\"\nclasses = [\"IDENTITY\", \"HEALTH\"]\n",
            &text[start..end]
        ),
    };
    Ok(format!("{}{}{}", &text[..start], middle, &text[end..]).replacen(
        "version = \"2026-11-28.1\"",
        &format!("version = \"bench-{recipients}\""),
        1,
    ))
}

/// A referral of `bytes` encoded bytes (free text pads it), observed an hour ago.
pub fn referral(bytes: usize) -> Event {
    let observed = std::time::SystemTime::now() - Duration::from_secs(3600);
    let secs = observed
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut r = SuspectedVictimReported {
        municipality_code: MUNICIPALITY.into(),
        observed_at: Some(prost_types::Timestamp {
            seconds: i64::try_from(secs).unwrap_or(0),
            nanos: 0,
        }),
        given_name: "Bench".into(),
        family_name: "Referral".into(),
        claimed_age_years: 14,
        exploitation_notes: "Seen selling goods at the station late at night.".into(),
        health_concerns: "Tired, a cough.".into(),
        ..Default::default()
    };
    let size = |r: &SuspectedVictimReported| {
        Event {
            kind: Some(event::Kind::SuspectedVictimReported(r.clone())),
        }
        .encoded_len()
    };
    let pad = bytes.saturating_sub(size(&r) + 3);
    r.social_situation = "x".repeat(pad);
    Event {
        kind: Some(event::Kind::SuspectedVictimReported(r)),
    }
}

/// Runs every measurement in one durability mode; the deployment is its own, fresh.
pub async fn run(config: &BenchConfig, sync_always: bool) -> anyhow::Result<Report> {
    let mut d = Deployment::start_with(Options {
        in_process_router: false,
        sync_always,
        // one sender and three recipients carry the whole load: shares far above it
        agency_quota: 100_000_000,
        recipient_share: 100_000_000,
        // room for what is prefilled (JetStream reserves it from the disk)
        stream_max_bytes: (1 << 30).max(i64::try_from(config.prefill_events * 1024).unwrap_or(i64::MAX) + (256 << 20)),
        ..Options::default()
    })
    .await?;
    d.put_live("bench-1.toml", &rules(1)?).await?;
    // the real binaries, each its own process
    let mut sectors: Vec<SectorProcess> = Vec::new();
    for sector in [Sector::Ngo, Sector::Social, Sector::Police, Sector::Health] {
        sectors.push(d.run_sector_as_process(sector).await?);
    }
    let event = referral(config.payload_bytes);
    let event_bytes = event.encoded_len();
    prefill(&d, config, &event).await?;
    let mut rows = Vec::new();
    let mut usage = Usage::default();

    // raw baselines, async-nats alone on the same server, as the router's NATS user
    let nats = connect_as(&d.nats.url(), d.pki_dir(), &inspector()).await?;
    let js = jetstream::new(nats.clone());
    let payload = bytes::Bytes::from(vec![b'x'; event_bytes]);
    let publish = raw_publish(&js, config.raw_messages, &payload, config.raw_window).await?;
    let relay = raw_relay(&js, config.raw_messages, config.raw_window).await?;
    let pull = raw_pull(&js, config.raw_messages).await?;
    let (ingest, ingest_latency) = raw_ingest(&d, &js, config, &event).await?;
    let batched = raw_atomic_batches(&nats, config.raw_messages, &payload).await?;
    rows.push(row("raw JetStream publish, pipelined", publish, "msg/s", None, ""));
    rows.push(row(
        &format!("raw atomic batches of {BATCH_RECORDS} records, {BATCHES_IN_FLIGHT} in flight"),
        batched,
        "msg/s",
        Some(("raw publish", publish)),
        "",
    ));
    rows.push(row("raw relay A→B (B's ack, then A's)", relay, "msg/s", None, ""));
    rows.push(row("raw durable pull consumer, explicit acks", pull, "msg/s", None, ""));
    rows.push(row(
        "raw gRPC ingest (mTLS unary → JetStream)",
        ingest,
        "req/s",
        None,
        "",
    ));
    rows.push(row("raw gRPC ingest p99", ingest_latency.p99, "ms", None, ""));

    // Submit alone (no router running): throughput and latency at `in_flight`
    let ngo = ReferralServiceClient::new(d.channel_as(Sector::Ngo, SENDER).await?);
    let submitted = submit_all(&ngo, config.referrals, config.in_flight, &event, "s1").await?;
    rows.push(row(
        "Submit throughput",
        submitted.rate,
        "req/s",
        Some(("raw gRPC ingest", ingest)),
        "≥ 0.7",
    ));
    rows.push(row("Submit p50", submitted.latency.p50, "ms", None, ""));
    rows.push(row("Submit p99", submitted.latency.p99, "ms", None, "≤ 10 ms"));

    // the router alone: events stored in IN, routed to one recipient each
    let router1 = route_backlog(&d, &js, config.referrals, 1, &mut usage).await?;
    rows.push(row(
        "router, 1 recipient",
        router1,
        "events/s",
        Some(("raw relay", relay)),
        "≥ 0.6",
    ));

    // one agency's inbox stream, read and acknowledged over gRPC
    let (social, kommune) = RECIPIENTS[0];
    let inbox = read_inboxes(&d, &[(social, kommune)], config.referrals).await?;
    rows.push(row(
        "one inbox stream, read and acked",
        inbox,
        "deliveries/s",
        Some(("raw pull consumer", pull)),
        "≥ 0.25",
    ));

    // three recipients
    d.put_live("bench-3.toml", &rules(3)?).await?;
    submit_all(&ngo, config.referrals, config.in_flight, &event, "s2").await?;
    let router3 = route_backlog(&d, &js, config.referrals, 3, &mut usage).await?;
    rows.push(row(
        "router, 3 recipients",
        router3,
        "events/s",
        Some(("raw relay", relay)),
        "≥ 0.6",
    ));
    rows.push(row(
        "router, 3 recipients: deliveries",
        router3 * 3.0,
        "deliveries/s",
        Some(("raw publish", publish)),
        "≥ 0.5",
    ));
    let three = read_inboxes(&d, &RECIPIENTS, config.referrals).await?;
    rows.push(row(
        "three inbox streams at once, read and acked",
        three,
        "deliveries/s",
        None,
        "",
    ));

    // end to end: Submit → every recipient's acknowledgement confirmed
    let mut router = RouterProcess::spawn(&d.nats.url(), 600, d.pki_dir())?;
    let readers = Readers::start(&d).await?;
    let cost_before = Cost::now(&d, &js).await?;
    let e2e_began = phase_mark("end to end begins");
    let e2e = end_to_end(&ngo, &readers, config, &event).await?;
    let e2e_ended = phase_mark("end to end ends");
    let (per_referral, messages_per_referral) = Cost::now(&d, &js).await?.since(&cost_before, config.referrals);
    rows.push(row(
        "end to end, 3 recipients",
        e2e,
        "referrals/s",
        Some(("raw relay", relay)),
        if sync_always { "≥ 0.35" } else { "≥ 0.15" },
    ));
    rows.push(row(
        "end to end: longest pause between one recipient's deliveries",
        readers.longest_pause_ms(),
        "ms",
        None,
        "",
    ));
    rows.push(row(
        "end to end: deliveries offered before (attempt > 1)",
        readers.late_offers() as f64,
        "",
        None,
        "",
    ));
    rows.push(row(
        "records stored per referral (every stream and bucket)",
        per_referral,
        "",
        None,
        "",
    ));
    rows.push(row(
        "NATS messages per referral (nats-server's in + out)",
        messages_per_referral,
        "",
        None,
        "",
    ));
    let half = (e2e / 2.0).max(1.0);
    let latency = paced(&ngo, &readers, config, &event, half).await?;
    rows.push(row(
        &format!("end to end p50 at {} referrals/s", fmt_value(half)),
        latency.p50,
        "ms",
        None,
        "",
    ));
    rows.push(row("end to end p99", latency.p99, "ms", None, "≤ 20 ms"));
    rows.push(row("end to end p999", latency.p999, "ms", None, ""));
    // the same referrals as follow-ups on cases already open, as most of an agency's
    // traffic is: no case, key, order mark or opening record to create, keys cached
    let follow = follow_ups(&d, &js, &ngo, &readers, config, &event).await?;
    rows.push(row(
        &format!(
            "end to end, follow-ups on {} open cases, 3 recipients",
            config.in_flight * FOLLOW_UP_CASES_PER_SUBMIT
        ),
        follow.rate,
        "referrals/s",
        Some(("raw relay", relay)),
        "",
    ));
    rows.push(row(
        "records stored per follow-up (every stream and bucket)",
        follow.records,
        "",
        None,
        "",
    ));
    rows.push(row(
        "NATS messages per follow-up (nats-server's in + out)",
        follow.messages,
        "",
        None,
        "",
    ));
    // HENVIS_TEST_NATS_TRACE=1: what the two end-to-end phases cost nats-server, message
    // by message
    let census = if crate::census::tracing() {
        let log = crate::nats_server_log();
        let mut text = String::new();
        for ((from, to), unit) in [
            ((e2e_began, e2e_ended), "referral (end to end, opening a case)"),
            (follow.phase, "follow-up (end to end, on an open case)"),
        ] {
            text += &crate::census::markdown(&crate::census::count(&log, from, to)?, config.referrals, unit);
        }
        Some(text)
    } else {
        None
    };
    let delivered = readers.total();
    rows.push(row(
        "deliveries offered again (lost acknowledgements)",
        readers.again() as f64,
        "",
        None,
        "",
    ));
    readers.stop();
    note_peak(&mut usage, "henvis-router", router.pid());
    router.kill9();
    for s in &sectors {
        note_peak(&mut usage, &format!("henvis-{}", s.sector()), s.pid());
    }
    for (i, pid) in d.nats.pids().into_iter().enumerate() {
        note_peak(&mut usage, &format!("nats-server {i}"), pid);
    }
    note_peak(
        &mut usage,
        "henvis-bench (clients, admin, raw baselines)",
        std::process::id(),
    );
    let mut memory: Vec<(String, u64)> = usage.peak_kib.clone().into_iter().collect();
    memory.sort();
    let mut cpu: Vec<(String, f64)> = usage
        .cpu_ticks
        .iter()
        .map(|(name, ticks)| (name.clone(), *ticks as f64 / 100.0))
        .collect();
    cpu.sort_by(|a, b| a.0.cmp(&b.0));
    drop(sectors);
    Ok(Report {
        sync_always,
        event_bytes,
        referrals: config.referrals,
        prefilled: (config.prefill_events, config.prefill_cases),
        rows,
        memory,
        cpu,
        delivered,
        census,
    })
}

/// Fills the broker as a long-running deployment would be: `prefill_cases` open cases
/// (record and key each) and `prefill_events` sealed events about them in IN, stored as the
/// NGO service stores them, all routed before (the routers' consumer starts after them).
async fn prefill(d: &Deployment, config: &BenchConfig, event: &Event) -> anyhow::Result<()> {
    use henvis_proto::henvis::broker::v1::{Envelope, Sender};
    if config.prefill_events == 0 && config.prefill_cases == 0 {
        return Ok(());
    }
    let cases: Vec<henvis_domain::CaseId> = (0..config.prefill_cases.max(1))
        .map(|_| henvis_domain::CaseId::new_random())
        .collect();
    // the case records, as the router writes them, and each case's key
    let opener = d.opener().await?;
    let municipality = MUNICIPALITY.to_owned();
    let sender = henvis_domain::AgencyId::parse(SENDER)?;
    futures::stream::iter(&cases)
        .map(|case| {
            let (municipality, sender) = (municipality.clone(), sender.clone());
            async move {
                let opening = henvis_domain::EventId::new_now().to_string();
                opener
                    .modify_case_from(case, None, true, |r| {
                        r.apply(
                            &henvis_domain::CaseChange::Opened {
                                municipality_code: municipality.clone(),
                            },
                            &opening,
                        );
                        r.add_participants([&sender]);
                        true
                    })
                    .await?;
                opener.seal(&case.to_string(), b"key").await.map(|_| ())
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<Result<(), henvis_bus::BusError>>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    // the events, published as the NGO service publishes them, many awaiting their ack
    let ngo = connect_as(&d.nats.url(), d.pki_dir(), &Principal::Service("ngo".into())).await?;
    let js = jetstream::new(ngo);
    let mt = henvis_domain::MessageType::parse("suspected_victim_reported")?;
    let mut acks = FuturesUnordered::new();
    for i in 0..config.prefill_events {
        // a case's events one after another, as a case's history grows
        let case = &cases[i * cases.len() / config.prefill_events];
        let envelope = Envelope {
            event_id: henvis_domain::EventId::new_now().to_string(),
            idempotency_key: format!("prefill-{i}"),
            message_type: mt.to_string(),
            sender: Some(Sender {
                agency_id: SENDER.into(),
                actor_id: "bench".into(),
                ..Default::default()
            }),
            case_id: case.to_string(),
            submitted_at: Some(std::time::SystemTime::now().into()),
            event: Some(event.clone()),
        };
        let sealed = opener.seal(&case.to_string(), &envelope.encode_to_vec()).await?;
        if acks.len() >= 256
            && let Some(r) = acks.next().await
        {
            r?;
        }
        let subject = henvis_bus::inbound_subject(Sector::Ngo, &mt, case);
        acks.push(js.publish(subject, sealed).await?.into_future());
    }
    while let Some(r) = acks.next().await {
        r?;
    }
    // a broker that has been running has its guardian index built (once per deployment,
    // by the first router of a version that keeps it): the routers started below do not
    // walk the prefilled cases for it, as no router of a running broker does
    opener.mark_guardian_index_built().await?;
    // the routers' consumer, as a router creates it, starting after what is there
    let router_js = jetstream::new(connect_as(&d.nats.url(), d.pki_dir(), &inspector()).await?);
    let mut stream = router_js.get_stream(henvis_bus::STREAM_IN).await?;
    let last = stream.info().await?.state.last_sequence;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(henvis_bus::ROUTER_CONSUMER.to_owned()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            ack_wait: Duration::from_secs(10),
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await?;
    Ok(())
}

fn row(figure: &str, value: f64, unit: &'static str, base: Option<(&str, f64)>, target: &'static str) -> Row {
    Row {
        figure: figure.to_owned(),
        value,
        unit,
        ratio: base.map(|(name, b)| (name.to_owned(), value / b)),
        target,
    }
}

/// The peak resident set of a process (VmHWM), KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time a process has used (user and system), in clock ticks of 10 ms.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after the command name, which may hold spaces, in parentheses
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Peak memory (the largest of a name's processes) and CPU time (summed over them).
#[derive(Default)]
struct Usage {
    peak_kib: HashMap<String, u64>,
    cpu_ticks: HashMap<String, u64>,
}

fn note_peak(usage: &mut Usage, name: &str, pid: u32) {
    if let Some(kib) = peak_kib(pid) {
        let e = usage.peak_kib.entry(name.to_owned()).or_default();
        *e = (*e).max(kib);
    }
    if let Some(t) = cpu_ticks(pid) {
        *usage.cpu_ticks.entry(name.to_owned()).or_default() += t;
    }
}

/// Latency quantiles, milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

fn quantiles(mut samples: Vec<Duration>) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort();
    let q = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    Latency {
        p50: q(0.50),
        p99: q(0.99),
        p999: q(0.999),
    }
}

async fn bench_stream(js: &jetstream::Context, name: &str) -> anyhow::Result<stream::Stream> {
    let _ = js.delete_stream(name).await;
    Ok(js
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("bench.{}.>", name.to_lowercase())],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?)
}

/// Pipelined JetStream publish of `n` messages into stream BENCH_A, `window` awaiting
/// their acknowledgement at a time.
async fn raw_publish(js: &jetstream::Context, n: usize, payload: &bytes::Bytes, window: usize) -> anyhow::Result<f64> {
    bench_stream(js, "BENCH_A").await?;
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    for _ in 0..n {
        if acks.len() >= window
            && let Some(r) = acks.next().await
        {
            r?;
        }
        let ack = js.publish("bench.bench_a.x", payload.clone()).await?;
        acks.push(ack.into_future());
    }
    while let Some(r) = acks.next().await {
        r?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Records in one atomic batch of [`raw_atomic_batches`]: what one referral stores.
const BATCH_RECORDS: usize = 23;
/// Atomic batches in flight at once (nats-server allows 50 per stream).
const BATCHES_IN_FLIGHT: usize = 32;

/// What storing a referral's records as one atomic batch would cost (the storage layout
/// docs/PERFORMANCE.md names): `n` records (rounded up to whole batches) into stream
/// BENCH_BATCH (`allow_atomic`), each batch's first record a write-once mark (its own
/// subject, `Nats-Expected-Last-Subject-Sequence: 0`: the batch's idempotency, since
/// atomic batches take no `Nats-Msg-Id`), the rest on one subject, the last committing;
/// [`BATCHES_IN_FLIGHT`] batches at once. Checks that every record was stored; msg/s.
async fn raw_atomic_batches(nats: &async_nats::Client, n: usize, payload: &bytes::Bytes) -> anyhow::Result<f64> {
    let js = jetstream::new(nats.clone());
    let _ = js.delete_stream("BENCH_BATCH").await;
    js.create_stream(stream::Config {
        name: "BENCH_BATCH".to_owned(),
        subjects: vec!["bench.bench_batch.>".to_owned()],
        storage: stream::StorageType::File,
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await?;
    let batches = n.div_ceil(BATCH_RECORDS);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..BATCHES_IN_FLIGHT {
        let (nats, next, payload) = (nats.clone(), next.clone(), payload.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, anyhow::Error>(());
                }
                let id = format!("bench-{b}");
                for k in 1..=BATCH_RECORDS {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Batch-Id", id.as_str());
                    headers.insert("Nats-Batch-Sequence", k.to_string().as_str());
                    let subject = if k == 1 {
                        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
                        format!("bench.bench_batch.mark.{b}")
                    } else {
                        "bench.bench_batch.record".to_owned()
                    };
                    if k < BATCH_RECORDS {
                        nats.publish_with_headers(subject, headers, payload.clone()).await?;
                    } else {
                        headers.insert("Nats-Batch-Commit", "1");
                        let ack = nats.request_with_headers(subject, headers, payload.clone()).await?;
                        let ack: serde_json::Value = serde_json::from_slice(&ack.payload)?;
                        anyhow::ensure!(
                            ack["count"].as_u64() == Some(BATCH_RECORDS as u64),
                            "atomic batch {id} not committed: {ack}"
                        );
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let rate = (batches * BATCH_RECORDS) as f64 / start.elapsed().as_secs_f64();
    let stored = js.get_stream("BENCH_BATCH").await?.info().await?.state.messages;
    anyhow::ensure!(
        stored == (batches * BATCH_RECORDS) as u64,
        "atomic batches stored {stored} of {} records",
        batches * BATCH_RECORDS
    );
    Ok(rate)
}

/// Consumes BENCH_A and publishes each message to BENCH_B, acknowledging it on A once B
/// acknowledged the copy; `window` messages in flight.
async fn raw_relay(js: &jetstream::Context, n: usize, window: usize) -> anyhow::Result<f64> {
    let a = js.get_stream("BENCH_A").await?;
    bench_stream(js, "BENCH_B").await?;
    let consumer = a
        .create_consumer(pull::Config {
            durable_name: Some("relay".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: i64::try_from(window * 2).unwrap_or(i64::MAX),
            ..Default::default()
        })
        .await?;
    let start = Instant::now();
    let mut messages = consumer.stream().max_messages_per_batch(window).messages().await?;
    let mut in_flight = FuturesUnordered::new();
    let mut done = 0;
    while done < n {
        tokio::select! {
            m = messages.next(), if in_flight.len() < window => {
                let m = m.context("the relay's consumer ended")?.map_err(|e| anyhow::anyhow!("{e}"))?;
                let ack = js.publish("bench.bench_b.x", m.payload.clone()).await?;
                in_flight.push(async move {
                    ack.await?;
                    m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))
                });
            }
            Some(r) = in_flight.next() => {
                r?;
                done += 1;
            }
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// A durable pull consumer on BENCH_B reading every message, each acknowledged.
async fn raw_pull(js: &jetstream::Context, n: usize) -> anyhow::Result<f64> {
    let b = js.get_stream("BENCH_B").await?;
    let consumer = b
        .create_consumer(pull::Config {
            durable_name: Some("reader".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let start = Instant::now();
    let mut messages = consumer.messages().await?;
    for _ in 0..n {
        let m = messages
            .next()
            .await
            .context("the reader's consumer ended")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The bare ingest: Submit answered by a service that only publishes the request to
/// JetStream and waits for its acknowledgement, on the same mutual-TLS gRPC stack (and
/// caller authentication) as the sector services.
struct BareIngest(jetstream::Context);

type BoxStream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ReferralService for BareIngest {
    async fn submit(&self, request: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let req = request.into_inner();
        let ack = self
            .0
            .publish("bench.bench_ingest.x", req.encode_to_vec().into())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(SubmitResponse {
            event_id: ack.sequence.to_string(),
            ..Default::default()
        }))
    }

    type InboxStream = BoxStream<InboxResponse>;

    async fn inbox(&self, _: Request<Streaming<InboxRequest>>) -> Result<Response<Self::InboxStream>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn get_status(&self, _: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    type SubscribeStatusStream = BoxStream<StatusUpdate>;

    async fn subscribe_status(
        &self,
        _: Request<SubscribeStatusRequest>,
    ) -> Result<Response<Self::SubscribeStatusStream>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn get_case_decisions(
        &self,
        _: Request<GetCaseDecisionsRequest>,
    ) -> Result<Response<GetCaseDecisionsResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn get_subject_access_report(
        &self,
        _: Request<GetSubjectAccessReportRequest>,
    ) -> Result<Response<SubjectAccessReport>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn list_guardian_cases(
        &self,
        _: Request<henvis_proto::henvis::broker::v1::ListGuardianCasesRequest>,
    ) -> Result<Response<henvis_proto::henvis::broker::v1::ListGuardianCasesResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn list_case_links(
        &self,
        _: Request<henvis_proto::henvis::broker::v1::ListCaseLinksRequest>,
    ) -> Result<Response<henvis_proto::henvis::broker::v1::ListCaseLinksResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }

    async fn answer_case_link(
        &self,
        _: Request<henvis_proto::henvis::broker::v1::AnswerCaseLinkRequest>,
    ) -> Result<Response<henvis_proto::henvis::broker::v1::CaseLink>, Status> {
        Err(Status::unimplemented("bench"))
    }
}

async fn raw_ingest(
    d: &Deployment,
    js: &jetstream::Context,
    config: &BenchConfig,
    event: &Event,
) -> anyhow::Result<(f64, Latency)> {
    bench_stream(js, "BENCH_INGEST").await?;
    let router = Principal::Service("router".into());
    let tls = henvis_runtime::tls::TlsServer::load(henvis_runtime::tls::PkiFiles::of(d.pki_dir(), &router))?;
    let (listener, addr) = henvis_runtime::bind("127.0.0.1:0".parse()?).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(henvis_runtime::serve_grpc(
        listener,
        tls,
        Arc::new(|_| Ok(())),
        tonic::service::Routes::new(ReferralServiceServer::new(BareIngest(js.clone()))),
        &[],
        henvis_runtime::Readiness::new(),
        async {
            let _ = stopped.await;
        },
    ));
    let channel = henvis_runtime::tls::connect_as(&addr.to_string(), d.pki_dir(), &d.principal(SENDER)?).await?;
    let client = ReferralServiceClient::new(channel);
    let r = submit_all(&client, config.referrals, config.in_flight, event, "raw").await?;
    let _ = stop.send(());
    let _ = server.await;
    Ok((r.rate, r.latency))
}

struct Submitted {
    rate: f64,
    latency: Latency,
}

fn submit_request(event: &Event, key: String) -> SubmitRequest {
    SubmitRequest {
        idempotency_key: key,
        event: Some(event.clone()),
        actor_id: "bench".into(),
        ..Default::default()
    }
}

/// Open cases the follow-up phase spreads its referrals over, per Submit in flight (more
/// cases than Submits, since a case's events are routed one after another).
const FOLLOW_UP_CASES_PER_SUBMIT: usize = 4;

/// What the follow-up phase measured.
struct FollowUps {
    /// When it began and ended.
    phase: (std::time::SystemTime, std::time::SystemTime),
    /// Referrals/s, Submit to every recipient's confirmed acknowledgement.
    rate: f64,
    /// Records stored per referral.
    records: f64,
    /// NATS messages per referral.
    messages: f64,
}

/// Opens [`FOLLOW_UP_CASES_PER_SUBMIT`] cases per Submit in flight (their deliveries read
/// before it measures), then
/// submits `config.referrals` referrals spread over them, `in_flight` at a time, until
/// every recipient confirmed its acknowledgement of each.
async fn follow_ups(
    d: &Deployment,
    js: &jetstream::Context,
    ngo: &ReferralServiceClient<Channel>,
    readers: &Readers,
    config: &BenchConfig,
    event: &Event,
) -> anyhow::Result<FollowUps> {
    let opened = config.in_flight * FOLLOW_UP_CASES_PER_SUBMIT;
    let base = readers.total() + opened * RECIPIENTS.len();
    let cases: Vec<String> = submit_each(ngo, opened, config.in_flight, |i| {
        submit_request(event, format!("follow-open-{i}"))
    })
    .await
    .context("opening the follow-up phase's cases")?
    .into_iter()
    .map(|r| r.case_id)
    .collect();
    readers
        .until_total(base, Duration::from_secs(120))
        .await
        .context("the follow-up phase's cases")?;
    let before = Cost::now(d, js).await?;
    let n = config.referrals;
    let began = phase_mark("follow-ups begin");
    let start = Instant::now();
    submit_each(ngo, n, config.in_flight, |i| SubmitRequest {
        case_id: cases[i % cases.len()].clone(),
        ..submit_request(event, format!("follow-{i}"))
    })
    .await
    .context("the follow-ups")?;
    let done = readers
        .until_total(base + n * RECIPIENTS.len(), Duration::from_secs(120 + n as u64 / 5))
        .await
        .context("follow-ups end to end")?;
    let ended = phase_mark("follow-ups end");
    let (records, messages) = Cost::now(d, js).await?.since(&before, n);
    Ok(FollowUps {
        phase: (began, ended),
        rate: n as f64 / (done - start).as_secs_f64(),
        records,
        messages,
    })
}

/// `n` Submits of `request(i)`, `in_flight` at a time; their answers, once every one was
/// stored.
async fn submit_each(
    client: &ReferralServiceClient<Channel>,
    n: usize,
    in_flight: usize,
    request: impl Fn(usize) -> SubmitRequest,
) -> anyhow::Result<Vec<SubmitResponse>> {
    futures::stream::iter(0..n)
        .map(|i| {
            let mut c = client.clone();
            let req = request(i);
            async move { c.submit(req).await.map(tonic::Response::into_inner) }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, Status>>()
        .map_err(|s| anyhow::anyhow!("a Submit failed: {s}"))
}

/// What the store and nats-server have done so far: records stored in every stream and
/// bucket, and messages nats-server received and sent (requests, replies, stored records,
/// deliveries to consumers and watches, the background work included).
struct Cost {
    records: u64,
    messages: u64,
}

impl Cost {
    async fn now(d: &Deployment, js: &jetstream::Context) -> anyhow::Result<Self> {
        Ok(Self {
            records: stored_records(js).await?,
            messages: server_messages(d).await?,
        })
    }

    /// Records and messages per referral since `before`, over `n` referrals.
    fn since(&self, before: &Self, n: usize) -> (f64, f64) {
        let n = n.max(1) as f64;
        (
            self.records.saturating_sub(before.records) as f64 / n,
            self.messages.saturating_sub(before.messages) as f64 / n,
        )
    }
}

/// `n` Submits, `in_flight` at a time; every one must be stored.
async fn submit_all(
    client: &ReferralServiceClient<Channel>,
    n: usize,
    in_flight: usize,
    event: &Event,
    prefix: &str,
) -> anyhow::Result<Submitted> {
    let start = Instant::now();
    let results: Vec<Result<Duration, Status>> = futures::stream::iter(0..n)
        .map(|i| {
            let mut c = client.clone();
            let req = submit_request(event, format!("{prefix}-{i}"));
            async move {
                let t = Instant::now();
                c.submit(req).await.map(|_| t.elapsed())
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let mut samples = Vec::with_capacity(n);
    for r in results {
        samples.push(r.map_err(|s| anyhow::anyhow!("a Submit failed: {s}"))?);
    }
    Ok(Submitted {
        rate: n as f64 / elapsed.as_secs_f64(),
        latency: quantiles(samples),
    })
}

/// Starts a router on `n` events waiting in IN, each routed to `recipients`; returns
/// events/s from its first delivery to its last. The router is stopped afterwards.
async fn route_backlog(
    d: &Deployment,
    js: &jetstream::Context,
    n: usize,
    recipients: usize,
    usage: &mut Usage,
) -> anyhow::Result<f64> {
    let last_seq = || async {
        let mut s = js.get_stream(henvis_bus::STREAM_OUT).await.ok()?;
        s.info().await.ok().map(|i| i.state.last_sequence)
    };
    let base = last_seq().await.context("OUT's state")?;
    let want = base + (n * recipients) as u64;
    let mut router = RouterProcess::spawn(&d.nats.url(), 600, d.pki_dir())?;
    let (first_at, first) = wait_for("the router's first delivery", Duration::from_secs(120), || async {
        let s = last_seq().await?;
        (s > base).then(|| (Instant::now(), s))
    })
    .await?;
    let limit = Duration::from_secs(60 + n as u64 / 5);
    let done_at = poll_until(limit, || async { last_seq().await.is_some_and(|s| s >= want) })
        .await
        .with_context(|| format!("the router routing {n} events to {recipients} recipient(s)"))?;
    // every event acknowledged in IN before the router stops: one it had not acknowledged
    // would be routed again by the next router, under the next phase's rules
    wait_for(
        "the router to acknowledge every event",
        Duration::from_secs(60),
        || async {
            let mut c: jetstream::consumer::PullConsumer = js
                .get_stream(henvis_bus::STREAM_IN)
                .await
                .ok()?
                .get_consumer(henvis_bus::ROUTER_CONSUMER)
                .await
                .ok()?;
            let info = c.info().await.ok()?;
            (info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
        },
    )
    .await?;
    note_peak(usage, "henvis-router", router.pid());
    router.kill9();
    let routed = (want - first) as f64 / recipients as f64;
    Ok(routed / (done_at - first_at).as_secs_f64().max(1e-6))
}

/// Messages ever stored in henvis's streams and buckets (the raw baselines' excepted).
async fn stored_records(js: &jetstream::Context) -> anyhow::Result<u64> {
    let mut names = js.stream_names();
    let mut total = 0;
    while let Some(name) = names.next().await {
        let name = name?;
        if name.starts_with("BENCH_") {
            continue;
        }
        total += js.get_stream(&name).await?.info().await?.state.last_sequence;
    }
    Ok(total)
}

/// Polls `done` every 2 ms until it holds; returns when it did.
async fn poll_until<F, Fut>(limit: Duration, mut done: F) -> anyhow::Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if done().await {
            return Ok(Instant::now());
        }
        anyhow::ensure!(start.elapsed() < limit, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// When each event's deliveries were acknowledged (confirmed by the service), per event id
/// and recipient: the first acknowledgement of each pair counts; a delivery offered again
/// (after a lost acknowledgement, as the inbox contract allows) is counted apart.
#[derive(Default)]
struct Tally {
    acked: HashMap<String, HashMap<usize, Instant>>,
    unique: usize,
    again: usize,
    /// Per recipient: when it last acknowledged, and its longest pause between two.
    last: HashMap<usize, Instant>,
    longest_pause: HashMap<usize, Duration>,
    /// Deliveries whose first offer this reader saw was not their first (an earlier offer
    /// went to a stream that had closed).
    late_offers: usize,
}

/// Inbox readers acknowledging every delivery at once.
struct Readers {
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Readers {
    async fn start(d: &Deployment) -> anyhow::Result<Self> {
        Self::start_for(d, &RECIPIENTS).await
    }

    async fn start_for(d: &Deployment, agencies: &[(Sector, &str)]) -> anyhow::Result<Self> {
        let tally: Arc<Mutex<Tally>> = Arc::default();
        let mut tasks = Vec::new();
        for (i, &(sector, agency)) in agencies.iter().enumerate() {
            let client = ReferralServiceClient::new(d.channel_as(sector, agency).await?);
            tasks.push(tokio::spawn(read_inbox(client, i, tally.clone())));
        }
        Ok(Self { tally, tasks })
    }

    /// Distinct (event, recipient) deliveries acknowledged so far.
    fn total(&self) -> usize {
        self.tally.lock().map(|t| t.unique).unwrap_or(0)
    }

    /// Deliveries offered and acknowledged again.
    fn again(&self) -> usize {
        self.tally.lock().map(|t| t.again).unwrap_or(0)
    }

    /// Deliveries offered more than once before this reader saw them.
    fn late_offers(&self) -> usize {
        self.tally.lock().map(|t| t.late_offers).unwrap_or(0)
    }

    /// The longest pause between two acknowledgements of one recipient, ms.
    fn longest_pause_ms(&self) -> f64 {
        self.tally
            .lock()
            .ok()
            .and_then(|t| t.longest_pause.values().max().copied())
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    }

    async fn until_total(&self, n: usize, limit: Duration) -> anyhow::Result<Instant> {
        poll_until(limit, || async {
            self.total() >= n || self.tasks.iter().any(tokio::task::JoinHandle::is_finished)
        })
        .await
        .and_then(|at| {
            anyhow::ensure!(self.total() >= n, "an inbox reader ended early");
            Ok(at)
        })
    }

    fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

async fn read_inbox(
    mut client: ReferralServiceClient<Channel>,
    recipient: usize,
    tally: Arc<Mutex<Tally>>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<InboxRequest>(4096);
    let mut stream = client
        .inbox(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut open: HashMap<u64, String> = HashMap::new();
    while let Some(r) = stream.message().await? {
        match r.kind {
            Some(inbox_response::Kind::Delivery(delivery)) => {
                if delivery.attempt > 1
                    && let Ok(mut t) = tally.lock()
                {
                    t.late_offers += 1;
                }
                let event_id = delivery.envelope.map(|e| e.event_id).unwrap_or_default();
                open.insert(delivery.delivery_id, event_id);
                tx.send(InboxRequest {
                    kind: Some(inbox_request::Kind::Ack(Ack {
                        delivery_id: delivery.delivery_id,
                    })),
                })
                .await?;
            }
            Some(inbox_response::Kind::AckConfirmed(a)) => {
                if let Some(event_id) = open.remove(&a.delivery_id)
                    && let Ok(mut t) = tally.lock()
                {
                    let first = t
                        .acked
                        .entry(event_id)
                        .or_default()
                        .insert(recipient, Instant::now())
                        .is_none();
                    if first {
                        t.unique += 1;
                        let now = Instant::now();
                        if let Some(last) = t.last.insert(recipient, now) {
                            let pause = t.longest_pause.entry(recipient).or_default();
                            *pause = (*pause).max(now - last);
                        }
                    } else {
                        t.again += 1;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads `n` deliveries from each of `agencies` at once; returns deliveries/s.
async fn read_inboxes(d: &Deployment, agencies: &[(Sector, &str)], n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let readers = Readers::start_for(d, agencies).await?;
    let want = n * agencies.len();
    let done = readers
        .until_total(want, Duration::from_secs(60 + want as u64 / 5))
        .await
        .context("reading the inboxes")?;
    readers.stop();
    Ok(want as f64 / (done - start).as_secs_f64())
}

/// Submits `referrals` at `in_flight` with the router and the readers running; returns
/// referrals/s until every recipient's acknowledgement of the last one is confirmed.
/// The time a phase begins or ends; with `HENVIS_TEST_NATS_TRACE` set also on stderr (UTC,
/// to the microsecond), to cut the server's trace by phase.
fn phase_mark(what: &str) -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    if crate::census::tracing() {
        let since = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        eprintln!("phase: {what} at {}.{:06}", since.as_secs(), since.subsec_micros());
    }
    now
}

/// Every message nats-server has received and sent so far (`/varz` `in_msgs` + `out_msgs`).
async fn server_messages(d: &Deployment) -> anyhow::Result<u64> {
    let varz = d.nats.varz().await?;
    let count = |k: &str| varz[k].as_u64().with_context(|| format!("/varz {k}"));
    Ok(count("in_msgs")? + count("out_msgs")?)
}

async fn end_to_end(
    ngo: &ReferralServiceClient<Channel>,
    readers: &Readers,
    config: &BenchConfig,
    event: &Event,
) -> anyhow::Result<f64> {
    let base = readers.total();
    let start = Instant::now();
    submit_all(ngo, config.referrals, config.in_flight, event, "e2e").await?;
    let want = base + config.referrals * RECIPIENTS.len();
    let done = readers
        .until_total(want, Duration::from_secs(120 + config.referrals as u64 / 5))
        .await
        .context("end to end")?;
    Ok(config.referrals as f64 / (done - start).as_secs_f64())
}

/// Submits at `rate` referrals/s for the configured seconds (open loop); returns the
/// latency from each Submit's start until its last recipient's acknowledgement was
/// confirmed.
async fn paced(
    ngo: &ReferralServiceClient<Channel>,
    readers: &Readers,
    config: &BenchConfig,
    event: &Event,
    rate: f64,
) -> anyhow::Result<Latency> {
    let base = readers.total();
    let count = ((rate * config.latency_secs as f64) as usize).max(10);
    let started: Arc<Mutex<Vec<(String, Instant, Instant)>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tick.tick().await;
        let mut c = ngo.clone();
        let req = submit_request(event, format!("paced-{i}"));
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = c.submit(req).await?.into_inner();
            if let Ok(mut s) = started.lock() {
                s.push((r.event_id, t, Instant::now()));
            }
            Ok::<_, Status>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|s| anyhow::anyhow!("a paced Submit failed: {s}"))?;
    }
    readers
        .until_total(base + count * RECIPIENTS.len(), Duration::from_secs(120))
        .await
        .context("the paced referrals' deliveries")?;
    let started = started.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let tally = readers.tally.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut samples = Vec::with_capacity(count);
    // HENVIS_BENCH_LATENCY_LOG=<file>: one line per paced referral (its Submit's start in
    // unix seconds, then milliseconds until Submit answered and until each recipient's
    // acknowledgement was confirmed), to see where the tail comes from
    let mut log = std::env::var_os("HENVIS_BENCH_LATENCY_LOG").map(|_| String::new());
    let (zero, unix_zero) = (Instant::now(), std::time::SystemTime::now());
    for (event_id, t, answered) in started {
        let times = tally.acked.get(&event_id).context("an acknowledged referral")?;
        anyhow::ensure!(
            times.len() == RECIPIENTS.len(),
            "event {event_id} acknowledged by {:?} of its recipients; {} pairs, {} again, {} events, base {base}, count {count}",
            times.keys().collect::<Vec<_>>(),
            tally.unique,
            tally.again,
            tally.acked.len()
        );
        let last = times.values().max().copied().unwrap_or(t);
        samples.push(last.saturating_duration_since(t));
        if let Some(log) = log.as_mut() {
            let unix = unix_zero
                .checked_sub(zero.saturating_duration_since(t))
                .and_then(|u| u.duration_since(std::time::UNIX_EPOCH).ok())
                .unwrap_or_default();
            let ms = |i: Instant| i.saturating_duration_since(t).as_secs_f64() * 1e3;
            let _ = write!(log, "{:.6} {:.3}", unix.as_secs_f64(), ms(answered));
            for r in 0..RECIPIENTS.len() {
                let _ = write!(log, " {:.3}", times.get(&r).map_or(f64::NAN, |i| ms(*i)));
            }
            log.push('\n');
        }
    }
    if let (Some(log), Some(path)) = (log, std::env::var_os("HENVIS_BENCH_LATENCY_LOG")) {
        std::fs::write(&path, log).with_context(|| format!("writing {}", std::path::Path::new(&path).display()))?;
    }
    Ok(quantiles(samples))
}

/// What the two modes' reports say together.
pub fn summary(reports: &[Report]) -> String {
    let mut s = String::new();
    if reports.len() == 2 {
        let _ = writeln!(
            s,
            "\nEnd to end, default sync ÷ always: {:.2}",
            reports[0].value("end to end, 3 recipients") / reports[1].value("end to end, 3 recipients")
        );
    }
    s
}

/// The machine and versions the figures were measured on.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let nats = run(&crate::nats_server_bin().display().to_string(), &["--version"]);
    let kernel = run("uname", &["-r"]);
    let commit = run("git", &["rev-parse", "--short", "HEAD"]);
    format!(
        "Machine: {cpu}, {cores} cores, {:.1} GiB; Linux {kernel}; {nats}; henvis {commit}; store encrypted (chachapoly), client TLS, one server",
        memory as f64 / (1024.0 * 1024.0)
    )
}
