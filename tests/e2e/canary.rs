//! Events filled with canary strings: every string field of every message carries
//! `CANARY-<CLASS>-<n>`, so a test can tell, by class, what reached a recipient.

use henvis_domain::Class;
use henvis_policy::Schema;
use henvis_proto::henvis::events::v1::Event;
use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};

/// Fills every field of the event kind `kind` (recursively) with canaries, keeping
/// `fixed` fields (name → value) as given. Returns the event and the canaries by class.
pub fn canary_event(schema: &Schema, kind: &str, fixed: &[(&str, Value)]) -> (Event, Vec<(String, Class)>) {
    let ev_desc = schema.event_descriptor().clone();
    let field = ev_desc.get_field_by_name(kind).expect("known kind");
    let Kind::Message(m) = field.kind() else {
        panic!("kind is a message")
    };
    let mut canaries = Vec::new();
    let inner = fill(schema, &m, fixed, &mut canaries, 0);
    let mut ev = DynamicMessage::new(ev_desc);
    ev.set_field(&field, Value::Message(inner));
    (Event::decode(ev.encode_to_vec().as_slice()).unwrap(), canaries)
}

fn fill(
    schema: &Schema,
    desc: &MessageDescriptor,
    fixed: &[(&str, Value)],
    canaries: &mut Vec<(String, Class)>,
    depth: usize,
) -> DynamicMessage {
    let mut msg = DynamicMessage::new(desc.clone());
    for f in desc.fields() {
        if let Some((_, v)) = fixed.iter().find(|(n, _)| *n == f.name()) {
            msg.set_field(&f, v.clone());
            continue;
        }
        let class = schema.class_of(&f).expect("classified");
        let mut one = || -> Option<Value> {
            match f.kind() {
                Kind::String => {
                    let c = format!("CANARY-{}-{}#", class.as_str(), canaries.len());
                    canaries.push((c.clone(), class));
                    Some(Value::String(c))
                }
                Kind::Enum(e) => e
                    .values()
                    .find(|v| v.number() != 0)
                    .map(|v| Value::EnumNumber(v.number())),
                Kind::Bool => Some(Value::Bool(true)),
                Kind::Uint32 => Some(Value::U32(7)),
                Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
                    let mut t = DynamicMessage::new(m.clone());
                    t.set_field_by_name("seconds", Value::I64(1_790_000_000));
                    Some(Value::Message(t))
                }
                Kind::Message(m) if depth < 3 => Some(Value::Message(fill(schema, &m, &[], canaries, depth + 1))),
                _ => None,
            }
        };
        if f.is_list() {
            let items: Vec<Value> = (0..2).filter_map(|_| one()).collect();
            if !items.is_empty() {
                msg.set_field(&f, Value::List(items));
            }
        } else if let Some(v) = one() {
            msg.set_field(&f, v);
        }
    }
    let _ = msg.descriptor();
    msg
}

/// The classes whose canaries appear in `bytes`, and every canary found.
pub fn found(bytes: &[u8], canaries: &[(String, Class)]) -> Vec<(String, Class)> {
    let text = String::from_utf8_lossy(bytes);
    canaries
        .iter()
        .filter(|(c, _)| text.contains(c.as_str()))
        .cloned()
        .collect()
}
