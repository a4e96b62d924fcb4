//! Robustness against arbitrary input: arbitrary bytes and structure-aware mutations of
//! valid events through what Submit does after the gRPC decode (protobuf decode, dynamic
//! decode, descriptor-driven validation) and through wire-level redaction; and mutated rule
//! files through the rule parser. No input may panic; every refusal names what was wrong.
//!
//! CI runs proptest's default number of cases per target. The long run recorded in
//! docs/ROBUSTNESS.md sets `PROPTEST_CASES=1000000`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../../tests/e2e/canary.rs"]
#[allow(dead_code)]
mod canary;

use std::{sync::OnceLock, time::SystemTime};

use henvis_domain::{Class, ClassSet, Directory};
use henvis_policy::{RuleSet, Schema, redact};
use henvis_proto::henvis::events::v1::Event;
use proptest::prelude::*;
use prost::Message;

fn schema() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    S.get_or_init(|| Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap())
}

fn dir() -> &'static Directory {
    static D: OnceLock<Directory> = OnceLock::new();
    D.get_or_init(|| Directory::denmark().unwrap())
}

/// One valid, fully filled event per message type, encoded: the seeds of the mutations.
fn seeds() -> &'static Vec<Vec<u8>> {
    static E: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    E.get_or_init(|| {
        schema()
            .message_types()
            .map(|mt| {
                canary::canary_event_tagged(schema(), mt.as_str(), "f", &[])
                    .0
                    .encode_to_vec()
            })
            .collect()
    })
}

const DEFAULT_RULES: &str = include_str!("../../../rules/default.toml");

fn all_classes() -> ClassSet {
    let mut s = ClassSet::EMPTY;
    for c in Class::ALL {
        s.insert(c);
    }
    s
}

/// Submit after the gRPC decode: the event must decode, then validate or be refused with a
/// field path and an expectation.
fn submit_path(bytes: &[u8]) {
    let Ok(event) = Event::decode(bytes) else {
        return; // the codec answers INVALID_ARGUMENT
    };
    let encoded = event.encode_to_vec();
    match schema().decode_event(&encoded) {
        Ok((_, dynamic)) => {
            if let Err(e) = schema().validate(&dynamic, SystemTime::now(), dir()) {
                assert!(e.field.starts_with("event"), "{e:?}");
                assert!(!e.expected.is_empty(), "{e:?}");
            }
        }
        Err(e) => assert!(e.field.starts_with("event") && !e.expected.is_empty(), "{e:?}"),
    }
}

/// Redaction keeps nothing it does not grant and always produces a decodable event from a
/// decodable one.
fn redact_path(bytes: &[u8]) {
    let decodable = Event::decode(bytes).is_ok();
    for grants in [ClassSet::EMPTY, all_classes()] {
        if let Ok(r) = redact(schema(), bytes, grants)
            && decodable
        {
            assert!(Event::decode(r.event.as_slice()).is_ok(), "redacted output decodes");
        }
    }
}

fn mutate(mut b: Vec<u8>, ops: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, byte, op) in ops {
        if b.is_empty() {
            b.push(byte);
            continue;
        }
        let i = pos % b.len();
        match op % 4 {
            0 => b[i] ^= byte.max(1),
            1 => b.insert(i, byte),
            2 => {
                b.remove(i);
            }
            _ => b.truncate(i),
        }
    }
    b
}

/// A small deterministic generator for field values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A random value of field `f`'s kind: any length, any characters (control characters and
/// non-ASCII included), any number, any enum number, any time.
fn random_value(f: &prost_reflect::FieldDescriptor, rng: &mut Rng, depth: usize) -> Option<prost_reflect::Value> {
    use prost_reflect::{Kind, Value};
    const CHARS: &[char] = &[
        'a', 'Z', '0', '-', ' ', '\n', '\0', '\u{7f}', 'é', '€', '𝄞', '_', '@', '.',
    ];
    Some(match f.kind() {
        Kind::String => {
            let len = match rng.below(4) {
                0 => rng.below(3),
                1 => rng.below(40),
                2 => rng.below(300),
                _ => rng.below(5000),
            };
            Value::String(
                (0..len)
                    .map(|_| CHARS[rng.below(CHARS.len() as u64) as usize])
                    .collect(),
            )
        }
        Kind::Uint32 => Value::U32(if rng.below(2) == 0 {
            rng.below(200) as u32
        } else {
            rng.next() as u32
        }),
        Kind::Bool => Value::Bool(rng.below(2) == 0),
        Kind::Enum(_) => Value::EnumNumber(if rng.below(2) == 0 {
            rng.below(10) as i32
        } else {
            rng.next() as i32
        }),
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            let mut t = prost_reflect::DynamicMessage::new(m);
            let seconds = rng.next() as i64 % 20_000_000_000 - 10_000_000_000;
            t.set_field_by_name("seconds", Value::I64(seconds));
            t.set_field_by_name("nanos", Value::I32(rng.next() as i32 % 1_200_000_000));
            Value::Message(t)
        }
        Kind::Message(m) if depth < 2 => {
            let mut inner = prost_reflect::DynamicMessage::new(m.clone());
            for sub in m.fields() {
                if rng.below(2) == 0
                    && let Some(v) = random_value(&sub, rng, depth + 1)
                {
                    inner.set_field(&sub, v);
                }
            }
            Value::Message(inner)
        }
        _ => return None,
    })
}

/// Structure-aware: the seed event with some of its fields replaced by random values of
/// the right kind (lists of random length), re-encoded.
fn perturb(seed: usize, picks: &[(usize, u64)]) -> Vec<u8> {
    use prost_reflect::{DynamicMessage, ReflectMessage, Value};
    let seeds = seeds();
    let bytes = &seeds[seed % seeds.len()];
    let mut event = DynamicMessage::decode(schema().event_descriptor().clone(), bytes.as_slice()).unwrap();
    let Some((kind, Value::Message(mut inner))) = event.fields().next().map(|(f, v)| (f, v.clone())) else {
        return bytes.clone();
    };
    let fields: Vec<_> = inner.descriptor().fields().collect();
    for &(pick, value_seed) in picks {
        let f = &fields[pick % fields.len()];
        let mut rng = Rng(value_seed);
        let v = if f.is_list() {
            let n = match rng.below(3) {
                0 => rng.below(3),
                1 => rng.below(30),
                _ => rng.below(60),
            };
            Value::List((0..n).filter_map(|_| random_value(f, &mut rng, 0)).collect())
        } else {
            match random_value(f, &mut rng, 0) {
                Some(v) => v,
                None => continue,
            }
        };
        inner.set_field(f, v);
    }
    event.set_field(&kind, Value::Message(inner));
    event.encode_to_vec()
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_submit_path_or_redaction(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        submit_path(&bytes);
        redact_path(&bytes);
    }

    #[test]
    fn mutated_valid_events_never_panic_the_submit_path_or_redaction(
        seed in any::<usize>(),
        ops in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let seeds = seeds();
        let b = mutate(seeds[seed % seeds.len()].clone(), &ops);
        submit_path(&b);
        redact_path(&b);
    }

    #[test]
    fn events_with_random_field_values_never_panic_and_are_valid_or_refused_by_field(
        seed in any::<usize>(),
        picks in proptest::collection::vec((any::<usize>(), any::<u64>()), 1..5),
    ) {
        let b = perturb(seed, &picks);
        submit_path(&b);
        redact_path(&b);
    }

    #[test]
    fn mutated_rule_files_are_refused_with_a_message_never_a_panic(
        ops in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let text = String::from_utf8_lossy(&mutate(DEFAULT_RULES.as_bytes().to_vec(), &ops)).into_owned();
        if let Err(e) = RuleSet::from_toml("fuzz.toml", &text, schema(), dir()) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn every_seed_is_a_valid_event() {
    for b in seeds() {
        let (_, dynamic) = schema().decode_event(b).unwrap();
        schema().validate(&dynamic, SystemTime::now(), dir()).unwrap();
    }
}

/// What the inputs of a run reached, to show they exercise more than the decoder.
#[derive(Debug, Default)]
struct Reached {
    inputs: u64,
    decoded: u64,
    valid: u64,
    refused_naming_a_field: u64,
}

fn classify(bytes: &[u8], r: &mut Reached) {
    r.inputs += 1;
    let Ok(event) = Event::decode(bytes) else { return };
    r.decoded += 1;
    let Ok((_, dynamic)) = schema().decode_event(&event.encode_to_vec()) else {
        r.refused_naming_a_field += 1;
        return;
    };
    match schema().validate(&dynamic, SystemTime::now(), dir()) {
        Ok(()) => r.valid += 1,
        Err(_) => r.refused_naming_a_field += 1,
    }
}

/// The long run (`cargo test -p henvis-policy --test fuzz -- --ignored --nocapture`, with
/// `HENVIS_FUZZ_CASES`, default 1,000,000): each target through proptest's runner, with a
/// count of what the inputs reached. Recorded in docs/ROBUSTNESS.md.
#[test]
#[ignore = "long run; see docs/ROBUSTNESS.md"]
fn long_run() {
    use proptest::test_runner::{Config, TestRunner};
    let cases: u32 = std::env::var("HENVIS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let config = || Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let started = std::time::Instant::now();
    let bytes = std::cell::RefCell::new(Reached::default());
    TestRunner::new(config())
        .run(&proptest::collection::vec(any::<u8>(), 0..1024), |b| {
            submit_path(&b);
            redact_path(&b);
            classify(&b, &mut bytes.borrow_mut());
            Ok(())
        })
        .unwrap();
    println!("arbitrary bytes: {:?} in {:.0?}", bytes.borrow(), started.elapsed());
    let started = std::time::Instant::now();
    let mutated = std::cell::RefCell::new(Reached::default());
    let strategy = (
        any::<usize>(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    );
    TestRunner::new(config())
        .run(&strategy, |(seed, ops)| {
            let seeds = seeds();
            let b = mutate(seeds[seed % seeds.len()].clone(), &ops);
            submit_path(&b);
            redact_path(&b);
            classify(&b, &mut mutated.borrow_mut());
            Ok(())
        })
        .unwrap();
    println!(
        "mutated valid events (bytes): {:?} in {:.0?}",
        mutated.borrow(),
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let fields = std::cell::RefCell::new(Reached::default());
    let strategy = (
        any::<usize>(),
        proptest::collection::vec((any::<usize>(), any::<u64>()), 1..5),
    );
    TestRunner::new(config())
        .run(&strategy, |(seed, picks)| {
            let b = perturb(seed, &picks);
            submit_path(&b);
            redact_path(&b);
            classify(&b, &mut fields.borrow_mut());
            Ok(())
        })
        .unwrap();
    println!(
        "events with random field values: {:?} in {:.0?}",
        fields.borrow(),
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let ops = proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4);
    let counts = std::cell::RefCell::new((0u64, 0u64));
    TestRunner::new(config())
        .run(&ops, |ops| {
            let text = String::from_utf8_lossy(&mutate(DEFAULT_RULES.as_bytes().to_vec(), &ops)).into_owned();
            let mut c = counts.borrow_mut();
            match RuleSet::from_toml("fuzz.toml", &text, schema(), dir()) {
                Ok(_) => c.0 += 1,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    c.1 += 1;
                }
            }
            Ok(())
        })
        .unwrap();
    let (parsed, refused) = counts.into_inner();
    println!(
        "mutated rule files: {} inputs, {parsed} still a valid rule set, {refused} refused with a message, in {:.0?}",
        parsed + refused,
        started.elapsed()
    );
}
