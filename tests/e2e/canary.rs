//! Events filled with canary strings: every string field of every message carries
//! `CANARY-<CLASS>-<n>`, so a test can tell, by class, what reached a recipient.

use henvis_domain::Class;
use henvis_policy::{Format, Schema};
use henvis_proto::henvis::events::v1::Event;
use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};

/// Fills every field of the event kind `kind` (recursively) with canaries, keeping
/// `fixed` fields (name → value) as given. Returns the event and the canaries by class.
pub fn canary_event(schema: &Schema, kind: &str, fixed: &[(&str, Value)]) -> (Event, Vec<(String, Class)>) {
    canary_event_tagged(schema, kind, "", fixed)
}

/// As [`canary_event`], with `tag` in every canary (to tell events apart) and valid values
/// in reference fields (agency ids, event ids, municipality codes, consent ids and
/// periods), so the event passes the services' validation.
pub fn canary_event_tagged(
    schema: &Schema,
    kind: &str,
    tag: &str,
    fixed: &[(&str, Value)],
) -> (Event, Vec<(String, Class)>) {
    let ev_desc = schema.event_descriptor().clone();
    let field = ev_desc.get_field_by_name(kind).expect("known kind");
    let Kind::Message(m) = field.kind() else {
        panic!("kind is a message")
    };
    let mut canaries = Vec::new();
    let inner = fill(schema, &m, tag, fixed, &mut canaries, 0);
    let mut ev = DynamicMessage::new(ev_desc);
    ev.set_field(&field, Value::Message(inner));
    (Event::decode(ev.encode_to_vec().as_slice()).unwrap(), canaries)
}

/// A valid value of a formatted string field.
fn valid_value(format: Format) -> &'static str {
    match format {
        Format::AgencyId => "kommune-147",
        Format::EventId => "01a220ca-9ff4-760c-a2f6-a965ae3eddc3",
        Format::MunicipalityCode => "101",
        Format::Country => "RO",
        Format::Language => "ro",
        Format::BirthDate => "2011-04-30",
        Format::MessageType => "health_assessment_completed",
        Format::Id | Format::Line | Format::Text => "c-matrix",
    }
}

fn reference_value(name: &str) -> Option<Value> {
    let s = |v: &str| Some(Value::String(v.to_owned()));
    match name {
        n if n.ends_with("agency_id") => s("kommune-147"),
        n if n.ends_with("agency_ids") => Some(Value::List(vec![Value::String("kommune-147".into())])),
        n if n.ends_with("event_id") => s("01a220ca-9ff4-760c-a2f6-a965ae3eddc3"),
        "municipality_code" => s("101"),
        "consent_id" => s("c-matrix"),
        "country_code" => s("RO"),
        "message_types" => Some(Value::List(vec![Value::String("health_assessment_completed".into())])),
        _ => None,
    }
}

fn fill(
    schema: &Schema,
    desc: &MessageDescriptor,
    tag: &str,
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
        if let Some(v) = reference_value(f.name()).filter(|_| !tag.is_empty()) {
            msg.set_field(&f, v);
            continue;
        }
        // a formatted string (a code, an id, a date) must be valid to pass validation: a
        // valid value, no canary; free text carries canaries within its length bound
        let bounds = schema.bounds_of(f.full_name());
        if let Some(format) = bounds
            .and_then(|b| b.format)
            .filter(|f| !matches!(f, Format::Line | Format::Text))
        {
            let v = Value::String(valid_value(format).to_owned());
            msg.set_field(&f, if f.is_list() { Value::List(vec![v]) } else { v });
            continue;
        }
        let max_chars = bounds.map_or(usize::MAX, |b| b.max_chars as usize);
        let class = schema.class_of(&f).expect("classified");
        let mut one = || -> Option<Value> {
            match f.kind() {
                Kind::String => {
                    let c = format!("CANARY{tag}-{}-{}#", class.as_str(), canaries.len());
                    if c.chars().count() > max_chars {
                        return None;
                    }
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
                    let seconds = if f.name() == "valid_until" {
                        2_100_000_000
                    } else {
                        1_790_000_000
                    };
                    t.set_field_by_name("seconds", Value::I64(seconds));
                    Some(Value::Message(t))
                }
                Kind::Message(m) if depth < 3 => Some(Value::Message(fill(schema, &m, tag, &[], canaries, depth + 1))),
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
