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
