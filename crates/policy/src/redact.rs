//! Descriptor-driven redaction on the wire format. A delivery is built by copying, field by
//! field, only what the route grants (an allow-list) into a fresh buffer: each field's class
//! comes from a table precomputed from the descriptors, a field the table does not know
//! (unknown, unclassified, from a newer client) is never copied, and a granted henvis
//! message field is itself filtered by its own fields' classes. Repeated and packed fields,
//! oneofs and maps are all sequences of tagged fields on the wire, so one rule covers them.
//! No per-message-type code, and no decoding into typed structs on the hot path.

use henvis_domain::{ClassSet, FieldError};
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};

use crate::{Schema, schema::MessageTable};

/// The redacted event and what the recipient should know about it.
#[derive(Debug, Clone)]
pub struct Redacted {
    /// The encoded `Event` with only granted fields.
    pub event: Vec<u8>,
    /// Classes present in the original event (fields present on the wire).
    pub present: ClassSet,
    /// Classes present but withheld.
    pub withheld: ClassSet,
}

/// Builds the copy of the encoded `event` that a recipient granted `grants` may see.
pub fn redact(schema: &Schema, event: &[u8], grants: ClassSet) -> Result<Redacted, FieldError> {
    let mut out = Vec::with_capacity(event.len());
    let mut present = ClassSet::EMPTY;
    copy(schema.event_table(), event, grants, &mut present, Some(&mut out))
        .map_err(|()| FieldError::new("event", "a valid protobuf encoding of henvis.events.v1.Event"))?;
    Ok(Redacted {
        event: out,
        present,
        withheld: present.difference(grants),
    })
}

/// Walks one encoded message, recording the classes present and, when `out` is given,
/// appending the granted fields.
fn copy(
    table: &MessageTable,
    mut buf: &[u8],
    grants: ClassSet,
    present: &mut ClassSet,
    mut out: Option<&mut Vec<u8>>,
) -> Result<(), ()> {
    while !buf.is_empty() {
        let start = buf;
        let (number, wire_type) = decode_key(&mut buf).map_err(|_| ())?;
        let value_start = buf;
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(|_| ())?;
            }
            WireType::SixtyFourBit => buf = buf.get(8..).ok_or(())?,
            WireType::ThirtyTwoBit => buf = buf.get(4..).ok_or(())?,
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).map_err(|_| ())?).map_err(|_| ())?;
                buf = buf.get(len..).ok_or(())?;
            }
            // proto3 has no groups; refuse rather than guess where they end
            WireType::StartGroup | WireType::EndGroup => return Err(()),
        }
        let Some(field) = table.field(number) else { continue };
        present.insert(field.class);
        let granted = grants.contains(field.class);
        match (&field.nested, wire_type) {
            (Some(nested), WireType::LengthDelimited) => {
                let mut body = value_start;
                let len = usize::try_from(decode_varint(&mut body).map_err(|_| ())?).map_err(|_| ())?;
                let body = body.get(..len).ok_or(())?;
                match (granted, out.as_deref_mut()) {
                    (true, Some(out)) => {
                        let mut sub = Vec::with_capacity(len);
                        copy(nested, body, grants, present, Some(&mut sub))?;
                        encode_key(number, WireType::LengthDelimited, out);
                        encode_varint(sub.len() as u64, out);
                        out.extend_from_slice(&sub);
                    }
                    _ => copy(nested, body, grants, present, None)?,
                }
            }
            _ => {
                if let (true, Some(out)) = (granted, out.as_deref_mut()) {
                    out.extend_from_slice(&start[..start.len() - buf.len()]);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use henvis_domain::Class;
    use prost::Message;

    fn with_basic(grants: &[Class]) -> ClassSet {
        let mut g: ClassSet = grants.iter().copied().collect();
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
                    kind: 2,
                    ..Default::default()
                }),
                health_concerns: "CANARY-HEALTH".into(),
                exploitation_notes: "CANARY-EXPLOITATION".into(),
                exploitation_types: vec![1, 3],
                suspects: vec![
                    Suspect {
                        name: "CANARY-CRIMINAL".into(),
                        ..Default::default()
                    },
                    Suspect {
                        name: "CANARY-CRIMINAL-2".into(),
                        ..Default::default()
                    },
                ],
                observed_at: Some(prost_types::Timestamp { seconds: 1, nanos: 5 }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn only_granted_classes_survive() {
        let r = redact(&schema(), &report().encode_to_vec(), with_basic(&[Class::Location])).unwrap();
        let text = String::from_utf8_lossy(&r.event);
        assert!(text.contains("CANARY-LOCATION"));
        for gone in [
            "CANARY-IDENTITY",
            "CANARY-HEALTH",
            "CANARY-EXPLOITATION",
            "CANARY-CRIMINAL",
        ] {
            assert!(!text.contains(gone), "{gone} leaked");
        }
        let decoded = henvis_proto::henvis::events::v1::Event::decode(r.event.as_slice()).unwrap();
        let Some(henvis_proto::henvis::events::v1::event::Kind::SuspectedVictimReported(s)) = decoded.kind else {
            panic!()
        };
        assert_eq!(s.municipality_code, "101", "BASIC routing facts are kept");
        assert_eq!(s.observed_at.unwrap().nanos, 5, "a granted timestamp is copied whole");
        assert!(
            s.exploitation_types.is_empty(),
            "packed repeated fields follow their class"
        );
        let withheld: Vec<_> = r.withheld.iter().collect();
        assert_eq!(
            withheld,
            vec![Class::Identity, Class::Health, Class::Exploitation, Class::Criminal]
        );
    }

    #[test]
    fn unknown_fields_never_pass_through() {
        let mut bytes = report().encode_to_vec();
        // field 99 of Event, length-delimited, carrying a canary
        bytes.extend_from_slice(&[0x9a, 0x06, 11]);
        bytes.extend_from_slice(b"ZZUNKNOWNZZ");
        let all = Class::ALL.into_iter().collect();
        let out = redact(&schema(), &bytes, all).unwrap().event;
        assert!(!out.windows(11).any(|w| w == b"ZZUNKNOWNZZ"));
    }

    #[test]
    fn everything_granted_round_trips_and_garbage_is_refused() {
        let original = report().encode_to_vec();
        let out = redact(&schema(), &original, Class::ALL.into_iter().collect())
            .unwrap()
            .event;
        assert_eq!(
            henvis_proto::henvis::events::v1::Event::decode(out.as_slice()).unwrap(),
            report()
        );
        assert!(redact(&schema(), &[0x0a, 0xff], Class::ALL.into_iter().collect()).is_err());
    }
}
