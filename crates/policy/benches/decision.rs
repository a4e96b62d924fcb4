//! One routing decision with redaction: a ~2 KiB event, four recipients, 1,000 rules, and
//! 100,000 or 1,000,000 cases in the router's case cache. Criterion measures the mean;
//! a plain loop afterwards prints p50 and p99 per event (docs/PERFORMANCE.md).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{collections::HashMap, hint::black_box, time::Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use henvis_domain::{AgencyId, CaseId, CaseRecord, Directory, MessageType};
use henvis_policy::{DecisionInput, RuleSet, Schema, decide, redact};
use henvis_proto::henvis::events::v1::{
    Event, ExploitationType, Location, Suspect, SuspectedVictimReported, event::Kind,
};
use prost::Message;

const AT: i64 = 1_796_000_000;

/// 1,000 routes: the shipped rules plus filler routes to named agencies on other types,
/// and the benchmarked type routed to four recipients.
fn rules(schema: &Schema, dir: &Directory) -> RuleSet {
    let mut s = String::from(
        "version = \"bench\"\n[[agreement]]\nid = \"a\"\nname = \"a\"\nvalid_from = \"2000-01-01T00:00:00Z\"\nvalid_until = \"2100-01-01T00:00:00Z\"\nparties = { sectors = [\"police\", \"health\", \"social\", \"ngo\"] }\n",
    );
    s += "[[message]]\ntype = \"suspected_victim_reported\"\nsenders = { sectors = [\"ngo\", \"police\", \"health\", \"social\"] }\n";
    for (i, (to, classes)) in [
        (
            "case_municipality",
            "\"IDENTITY\", \"LOCATION\", \"SOCIAL\", \"HEALTH\", \"EXPLOITATION\"",
        ),
        (
            "case_police_district",
            "\"IDENTITY\", \"LOCATION\", \"EXPLOITATION\", \"CRIMINAL\"",
        ),
        ("case_guardian", "\"IDENTITY\", \"HEALTH\", \"SOCIAL\""),
        ("agency:social-cmm", "\"EXPLOITATION\""),
    ]
    .iter()
    .enumerate()
    {
        s += &format!(
            "[[message.route]]\nid = \"svr-{i}\"\nto = \"{to}\"\nbasis = {{ statutory = \"s\" }}\nagreement = \"a\"\nclasses = [{classes}]\n"
        );
    }
    let agencies: Vec<String> = dir.agencies().map(|a| a.id.to_string()).collect();
    let others = [
        "child_missing",
        "action_plan_updated",
        "placement_requested",
        "return_assessed",
        "consent_recorded",
    ];
    let per_type = (1000 - 4) / others.len() + 1;
    let mut n = 4;
    for t in others {
        s += &format!("[[message]]\ntype = \"{t}\"\nsenders = {{ sectors = [\"ngo\", \"social\"] }}\n");
        for j in 0..per_type {
            if n == 1000 {
                break;
            }
            s += &format!(
                "[[message.route]]\nid = \"f-{n}\"\nto = \"agency:{}\"\nbasis = {{ consent = \"c\" }}\nagreement = \"a\"\nclasses = [\"SOCIAL\"]\n",
                agencies[j % agencies.len()]
            );
            n += 1;
        }
    }
    RuleSet::from_toml("bench.toml", &s, schema, dir).unwrap()
}

/// A ~2 KiB report with every class present.
fn event() -> Vec<u8> {
    let text = |n: usize| "x".repeat(n);
    Event {
        kind: Some(Kind::SuspectedVictimReported(SuspectedVictimReported {
            municipality_code: "101".into(),
            observed_at: Some(prost_types::Timestamp { seconds: AT, nanos: 0 }),
            given_name: text(20),
            family_name: text(20),
            aliases: vec![text(20), text(20)],
            claimed_age_years: 14,
            nationalities: vec!["RO".into()],
            languages: vec!["ro".into(), "en".into()],
            current_location: Some(Location {
                address: text(60),
                description: text(200),
                ..Default::default()
            }),
            exploitation_types: vec![ExploitationType::Sexual as i32],
            indicators: vec![1, 2, 3],
            exploitation_notes: text(600),
            suspects: vec![Suspect {
                name: text(30),
                description: text(200),
                relation_to_child: text(30),
            }],
            health_concerns: text(300),
            social_situation: text(300),
            danger_description: text(100),
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

struct Fixture {
    schema: Schema,
    dir: Directory,
    rules: RuleSet,
    cases: HashMap<CaseId, CaseRecord>,
    probe: Vec<CaseId>,
    event: Vec<u8>,
    sender: AgencyId,
    mt: MessageType,
}

fn fixture(cases: usize) -> Fixture {
    let schema = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
    let dir = Directory::denmark().unwrap();
    let rules = rules(&schema, &dir);
    let municipalities: Vec<String> = dir.municipalities().map(|m| m.code.clone()).collect();
    let mut map = HashMap::with_capacity(cases);
    let mut probe = Vec::new();
    for i in 0..cases {
        let id = CaseId::new_random();
        let mut c = CaseRecord::new();
        c.municipality_code = Some(municipalities[i % municipalities.len()].clone());
        c.guardian = Some(AgencyId::parse("ngo-redbarnet").unwrap());
        if i % (cases / 1000).max(1) == 0 {
            probe.push(id);
        }
        map.insert(id, c);
    }
    Fixture {
        schema,
        dir,
        rules,
        cases: map,
        probe,
        event: event(),
        sender: AgencyId::parse("ngo-hopenow").unwrap(),
        mt: MessageType::parse("suspected_victim_reported").unwrap(),
    }
}

/// The work per event: find the case, decide, redact and encode one copy per recipient.
fn route_one(f: &Fixture, case: &CaseId) -> usize {
    let record = &f.cases[case];
    let d = decide(
        &f.rules,
        &f.dir,
        &DecisionInput {
            mt: &f.mt,
            sender: &f.sender,
            sender_sector: henvis_domain::Sector::Ngo,
            case: record,
            at: AT,
            referral_sender: None,
            flags: &[],
            named: &[],
        },
    );
    let mut bytes = 0;
    for r in &d.recipients {
        bytes += redact(&f.schema, &f.event, r.classes).unwrap().event.len();
    }
    assert_eq!(d.recipients.len(), 4);
    bytes
}

fn percentiles(name: &str, f: &Fixture) {
    let mut samples = Vec::with_capacity(20_000);
    for i in 0..20_000 {
        let case = &f.probe[i % f.probe.len()];
        let t = Instant::now();
        black_box(route_one(f, case));
        samples.push(t.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() as f64) * q) as usize] as f64 / 1000.0;
    println!(
        "{name}: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (event {} bytes)",
        p(0.50),
        p(0.99),
        *samples.last().unwrap() as f64 / 1000.0,
        f.event.len()
    );
}

fn bench(c: &mut Criterion) {
    // under `cargo test` criterion only checks each benchmark runs; keep that quick
    let measuring = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if measuring { &[100_000, 1_000_000] } else { &[1_000] };
    for &cases in sizes {
        let f = fixture(cases);
        let name = format!("decide+redact, 4 recipients, 1000 rules, {cases} cases");
        c.bench_function(&name, |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(route_one(&f, &f.probe[i % f.probe.len()]))
            })
        });
        if measuring {
            percentiles(&name, &f);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
