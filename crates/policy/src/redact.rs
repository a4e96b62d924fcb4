//! Descriptor-driven redaction. A delivery is built by copying, field by field, only what
//! the route grants (an allow-list) into a fresh message: unknown fields, unclassified
//! fields and everything not granted never reach the copy. No per-message-type code.

use henvis_domain::ClassSet;
use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

use crate::Schema;

/// The redacted event and what the recipient should know about it.
#[derive(Debug, Clone)]
pub struct Redacted {
    /// The event with only granted fields.
    pub event: DynamicMessage,
    /// Classes present in the original event (set fields only).
    pub present: ClassSet,
    /// Classes present but withheld.
    pub withheld: ClassSet,
}

/// Builds the copy of `event` that a recipient granted `grants` may see.
///
/// A field is copied when its class is granted; a granted message field is copied
/// recursively (its own fields are filtered by their own classes), except well-known types
/// outside henvis (timestamps), which are copied whole. A field without a class is never
/// copied.
pub fn redact(schema: &Schema, event: &DynamicMessage, grants: ClassSet) -> Redacted {
    let mut present = ClassSet::EMPTY;
    let copy = copy_granted(schema, event, grants, &mut present, true);
    let withheld = present.difference(grants);
    Redacted {
        event: copy.unwrap_or_else(|| DynamicMessage::new(event.descriptor())),
        present,
        withheld,
    }
}

/// Walks `src`, recording the classes present; returns the granted copy when `copy`.
fn copy_granted(
    schema: &Schema,
    src: &DynamicMessage,
    grants: ClassSet,
    present: &mut ClassSet,
    copy: bool,
) -> Option<DynamicMessage> {
    let mut dst = copy.then(|| DynamicMessage::new(src.descriptor()));
    for (field, value) in src.fields() {
        let Some(class) = schema.class_of(&field) else {
            continue;
        };
        present.insert(class);
        let granted = copy && grants.contains(class);
        let nested = matches!(field.kind(), Kind::Message(ref m) if m.full_name().starts_with("henvis."));
        let out = if nested {
            map_messages(value, |m| copy_granted(schema, m, grants, present, granted))
        } else {
            granted.then(|| value.clone())
        };
        if let (Some(dst), Some(v)) = (dst.as_mut(), out)
            && granted
        {
            dst.set_field(&field, v);
        }
    }
    dst
}

/// Applies `f` to each message inside a message, list or map value, rebuilding the value.
fn map_messages(value: &Value, mut f: impl FnMut(&DynamicMessage) -> Option<DynamicMessage>) -> Option<Value> {
    match value {
        Value::Message(m) => f(m).map(Value::Message),
        Value::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut any = false;
            for v in items {
                if let Value::Message(m) = v
                    && let Some(c) = f(m)
                {
                    any = true;
                    out.push(Value::Message(c));
                }
            }
            any.then_some(Value::List(out))
        }
        Value::Map(entries) => {
            let mut out = std::collections::HashMap::with_capacity(entries.len());
            let mut any = false;
            for (k, v) in entries {
                if let Value::Message(m) = v
                    && let Some(c) = f(m)
                {
                    any = true;
                    out.insert(k.clone(), Value::Message(c));
                }
            }
            any.then_some(Value::Map(out))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use henvis_domain::Class;
    use prost::Message;

    fn with_basic(grants: ClassSet) -> ClassSet {
        let mut g = grants;
        g.insert(Class::Basic);
        g
    }

    fn schema() -> Schema {
        Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    fn report() -> henvis_proto::henvis::events::v1::Event {
        use henvis_proto::henvis::events::v1::*;
        Event {
            kind: Some(event::Kind::SuspectedVictimReported(SuspectedVictimReported {
                municipality_code: "101".into(),
                given_name: "CANARY-IDENTITY".into(),
                current_location: Some(Location {
                    address: "CANARY-LOCATION".into(),
                    ..Default::default()
                }),
                health_concerns: "CANARY-HEALTH".into(),
                exploitation_notes: "CANARY-EXPLOITATION".into(),
                suspects: vec![Suspect {
                    name: "CANARY-CRIMINAL".into(),
                    ..Default::default()
                }],
                observed_at: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
                ..Default::default()
            })),
        }
    }

    fn redact_to_bytes(grants: &[Class]) -> (Vec<u8>, Redacted) {
        let s = schema();
        let (_, ev) = s.decode_event(&report().encode_to_vec()).unwrap();
        let r = redact(&s, &ev, with_basic(grants.iter().copied().collect()));
        (r.event.encode_to_vec(), r)
    }

    #[test]
    fn only_granted_classes_survive() {
        let (bytes, r) = redact_to_bytes(&[Class::Location]);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("CANARY-LOCATION"));
        for gone in [
            "CANARY-IDENTITY",
            "CANARY-HEALTH",
            "CANARY-EXPLOITATION",
            "CANARY-CRIMINAL",
        ] {
            assert!(!text.contains(gone), "{gone} leaked");
        }
        assert!(text.contains("101"), "BASIC routing facts are kept");
        let withheld: Vec<_> = r.withheld.iter().collect();
        assert_eq!(
            withheld,
            vec![Class::Identity, Class::Health, Class::Exploitation, Class::Criminal]
        );
    }

    #[test]
    fn unknown_fields_never_pass_through() {
        let s = schema();
        let mut bytes = report().encode_to_vec();
        // field 99 of Event, length-delimited, carrying a canary
        bytes.extend_from_slice(&[0x9a, 0x06, 11]);
        bytes.extend_from_slice(b"ZZUNKNOWNZZ");
        let (_, ev) = s.decode_event(&bytes).unwrap();
        let all = Class::ALL.into_iter().collect();
        let out = redact(&s, &ev, all).event.encode_to_vec();
        assert!(!out.windows(11).any(|w| w == b"ZZUNKNOWNZZ"));
    }

    #[test]
    fn everything_granted_round_trips() {
        let s = schema();
        let original = report().encode_to_vec();
        let (_, ev) = s.decode_event(&original).unwrap();
        let out = redact(&s, &ev, Class::ALL.into_iter().collect()).event.encode_to_vec();
        assert_eq!(
            henvis_proto::henvis::events::v1::Event::decode(out.as_slice()).unwrap(),
            report()
        );
    }
}
