//! The event schema, read from the file descriptor set: which message types exist, the
//! class of every field, and which fields are required.

use std::collections::{BTreeMap, HashMap};

use henvis_domain::{Class, FieldError, MessageType};
use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    Value,
};

const EVENT_MESSAGE: &str = "henvis.events.v1.Event";
const EVENT_ONEOF: &str = "kind";
const SENSITIVITY: &str = "henvis.options.v1.sensitivity";
const REQUIRED: &str = "henvis.options.v1.required";
const BOUNDS: &str = "henvis.options.v1.bounds";

/// Why a descriptor set is not a valid henvis schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The bytes are not a descriptor set.
    #[error("schema: descriptor set does not decode: {0}")]
    Decode(#[from] prost_reflect::DescriptorError),
    /// A message, option or oneof the schema needs is missing.
    #[error("schema: `{0}` is missing from the descriptor set")]
    Missing(&'static str),
    /// Fields without a sensitivity class: secure by default, the schema is refused.
    #[error("schema: fields without a sensitivity class: {}", .0.join(", "))]
    Unclassified(Vec<String>),
    /// Fields without complete bounds (format, length, count, range or time window).
    #[error("schema: fields without complete bounds: {}", .0.join(", "))]
    Unbounded(Vec<String>),
}

/// The option extensions the schema reads.
struct Extensions<'a> {
    sensitivity: &'a ExtensionDescriptor,
    required: &'a ExtensionDescriptor,
    bounds: &'a ExtensionDescriptor,
}

/// Fields refused by the schema check.
#[derive(Default)]
struct Gaps {
    unclassified: Vec<String>,
    unbounded: Vec<String>,
}

/// One field's entry in a [`MessageTable`].
#[derive(Debug)]
pub(crate) struct FieldEntry {
    /// The field's class.
    pub class: Class,
    /// The table of a henvis message-typed field (or map entry), filtered recursively.
    pub nested: Option<std::sync::Arc<MessageTable>>,
}

/// Field number → class (and nested table) for one message, for wire-level redaction.
#[derive(Debug, Default)]
pub(crate) struct MessageTable {
    fields: Vec<Option<FieldEntry>>,
}

impl MessageTable {
    pub(crate) fn field(&self, number: u32) -> Option<&FieldEntry> {
        self.fields.get(number as usize).and_then(Option::as_ref)
    }
}

/// The henvis event schema.
#[derive(Debug, Clone)]
pub struct Schema {
    pool: DescriptorPool,
    event: MessageDescriptor,
    types: BTreeMap<MessageType, FieldDescriptor>,
    classes: HashMap<String, Class>,
    required: HashMap<String, bool>,
    bounds: HashMap<String, crate::validate::Bounds>,
    event_table: std::sync::Arc<MessageTable>,
}

fn is_henvis(m: &MessageDescriptor) -> bool {
    m.full_name().starts_with("henvis.")
}

impl Schema {
    /// Builds the schema from an encoded file descriptor set. Refuses a set in which any
    /// field of any henvis event message lacks a class.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Self, SchemaError> {
        let pool = DescriptorPool::decode(bytes)?;
        let event = pool
            .get_message_by_name(EVENT_MESSAGE)
            .ok_or(SchemaError::Missing(EVENT_MESSAGE))?;
        let sensitivity = pool
            .get_extension_by_name(SENSITIVITY)
            .ok_or(SchemaError::Missing(SENSITIVITY))?;
        let required = pool
            .get_extension_by_name(REQUIRED)
            .ok_or(SchemaError::Missing(REQUIRED))?;
        let bounds = pool.get_extension_by_name(BOUNDS).ok_or(SchemaError::Missing(BOUNDS))?;
        let oneof = event
            .oneofs()
            .find(|o| o.name() == EVENT_ONEOF)
            .ok_or(SchemaError::Missing("henvis.events.v1.Event.kind"))?;
        let mut types = BTreeMap::new();
        for f in oneof.fields() {
            let mt = MessageType::parse(f.name()).map_err(|_| SchemaError::Missing("snake_case event field names"))?;
            types.insert(mt, f);
        }
        let mut schema = Schema {
            pool,
            event: event.clone(),
            types,
            classes: HashMap::new(),
            required: HashMap::new(),
            bounds: HashMap::new(),
            event_table: Default::default(),
        };
        let mut gaps = Gaps::default();
        let mut seen = std::collections::HashSet::new();
        let ext = Extensions {
            sensitivity: &sensitivity,
            required: &required,
            bounds: &bounds,
        };
        schema.index(&event, &ext, &mut gaps, &mut seen);
        if !gaps.unclassified.is_empty() {
            return Err(SchemaError::Unclassified(gaps.unclassified));
        }
        if !gaps.unbounded.is_empty() {
            return Err(SchemaError::Unbounded(gaps.unbounded));
        }
        schema.event_table = schema.table(&event, &mut HashMap::new());
        Ok(schema)
    }

    fn index(
        &mut self,
        msg: &MessageDescriptor,
        ext: &Extensions<'_>,
        gaps: &mut Gaps,
        seen: &mut std::collections::HashSet<String>,
    ) {
        let (sensitivity, required) = (ext.sensitivity, ext.required);
        if !seen.insert(msg.full_name().to_owned()) {
            return;
        }
        for f in msg.fields() {
            let opts = f.options();
            let class = match opts.get_extension(sensitivity).as_ref() {
                Value::EnumNumber(n) => Class::from_number(*n),
                _ => None,
            };
            match class {
                Some(c) => {
                    self.classes.insert(f.full_name().to_owned(), c);
                }
                None => gaps.unclassified.push(f.full_name().to_owned()),
            }
            // the oneof `kind` of `Event` holds the event messages themselves: no bounds
            let bounds = crate::validate::read_bounds(&f, ext.bounds);
            if msg.full_name() != EVENT_MESSAGE
                && let Some(gap) = crate::validate::bounds_gap(&f, bounds.as_ref())
            {
                gaps.unbounded.push(format!("{} ({gap})", f.full_name()));
            }
            if let Some(b) = bounds {
                self.bounds.insert(f.full_name().to_owned(), b);
            }
            if matches!(opts.get_extension(required).as_ref(), Value::Bool(true)) {
                self.required.insert(f.full_name().to_owned(), true);
            }
            if let Kind::Message(m) = f.kind() {
                // a map's synthetic entry carries the map field's class; its value type,
                // if a henvis message, is classified field by field like any other
                let target = if f.is_map() {
                    m.map_entry_value_field().kind().as_message().cloned()
                } else {
                    Some(m)
                };
                if let Some(t) = target.filter(is_henvis) {
                    self.index(&t, ext, gaps, seen);
                }
            }
        }
    }

    /// The redaction table of a henvis message (memoised; henvis messages do not recurse).
    fn table(
        &self,
        msg: &MessageDescriptor,
        memo: &mut HashMap<String, std::sync::Arc<MessageTable>>,
    ) -> std::sync::Arc<MessageTable> {
        if let Some(t) = memo.get(msg.full_name()) {
            return t.clone();
        }
        let mut fields: Vec<Option<FieldEntry>> = Vec::new();
        for f in msg.fields() {
            let Some(class) = self.class_of(&f) else { continue };
            let nested = match f.kind() {
                Kind::Message(m) if f.is_map() => {
                    // a map entry: key and value take the map field's class; a henvis
                    // message value is filtered by its own table
                    let value = m.map_entry_value_field();
                    let value_table = match value.kind() {
                        Kind::Message(v) if is_henvis(&v) => Some(self.table(&v, memo)),
                        _ => None,
                    };
                    let entry = MessageTable {
                        fields: vec![
                            None,
                            Some(FieldEntry { class, nested: None }),
                            Some(FieldEntry {
                                class,
                                nested: value_table,
                            }),
                        ],
                    };
                    Some(std::sync::Arc::new(entry))
                }
                Kind::Message(m) if is_henvis(&m) => Some(self.table(&m, memo)),
                _ => None,
            };
            let n = f.number() as usize;
            if fields.len() <= n {
                fields.resize_with(n + 1, || None);
            }
            fields[n] = Some(FieldEntry { class, nested });
        }
        let t = std::sync::Arc::new(MessageTable { fields });
        memo.insert(msg.full_name().to_owned(), t.clone());
        t
    }

    pub(crate) fn event_table(&self) -> &MessageTable {
        &self.event_table
    }

    /// The message type of an encoded `Event`: the name of its first known field (the
    /// oneof `kind`), without decoding it.
    pub fn message_type_of_bytes(&self, mut bytes: &[u8]) -> Result<MessageType, FieldError> {
        let unknown = || FieldError::new("event", "exactly one known event kind");
        while !bytes.is_empty() {
            let (number, wire) = prost::encoding::decode_key(&mut bytes).map_err(|_| unknown())?;
            if let Some((mt, _)) = self.types.iter().find(|(_, f)| f.number() == number) {
                return Ok(mt.clone());
            }
            prost::encoding::skip_field(wire, number, &mut bytes, prost::encoding::DecodeContext::default())
                .map_err(|_| unknown())?;
        }
        Err(unknown())
    }

    /// The descriptor pool.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The `Event` message descriptor.
    pub fn event_descriptor(&self) -> &MessageDescriptor {
        &self.event
    }

    /// Every message type, in name order.
    pub fn message_types(&self) -> impl Iterator<Item = &MessageType> {
        self.types.keys()
    }

    /// Whether `mt` names an event kind.
    pub fn knows(&self, mt: &MessageType) -> bool {
        self.types.contains_key(mt)
    }

    /// The class of a field, by its full name. `None` only for fields outside the
    /// classified henvis event messages (e.g. inside `google.protobuf.Timestamp`).
    pub fn class_of(&self, field: &FieldDescriptor) -> Option<Class> {
        self.classes.get(field.full_name()).copied()
    }

    /// Every classified field with its class, ordered by full name (for tests and docs).
    pub fn classified_fields(&self) -> BTreeMap<&str, Class> {
        self.classes.iter().map(|(k, v)| (k.as_str(), *v)).collect()
    }

    /// Decodes an encoded `Event` and returns its message type and dynamic form.
    pub fn decode_event(&self, bytes: &[u8]) -> Result<(MessageType, DynamicMessage), FieldError> {
        let msg = DynamicMessage::decode(self.event.clone(), bytes).map_err(|_| FieldError {
            field: "event".into(),
            expected: "a valid henvis.events.v1.Event".into(),
        })?;
        let mt = self.message_type_of(&msg)?;
        Ok((mt, msg))
    }

    /// The message type of a dynamic `Event`: the name of its set `kind`.
    pub fn message_type_of(&self, event: &DynamicMessage) -> Result<MessageType, FieldError> {
        self.types
            .iter()
            .find(|(_, f)| event.has_field(f))
            .map(|(mt, _)| mt.clone())
            .ok_or_else(|| FieldError {
                field: "event".into(),
                expected: format!(
                    "exactly one event kind, one of: {}",
                    self.types
                        .keys()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// Validates a decoded event completely: required fields, then every field against its
    /// bounds and format (descriptor-driven), enums against their defined values, unknown
    /// fields refused. `now` is the time of submission.
    pub fn validate(
        &self,
        event: &DynamicMessage,
        now: std::time::SystemTime,
        directory: &henvis_domain::Directory,
    ) -> Result<(), FieldError> {
        self.check_required(event)?;
        let known = |s: &str| MessageType::parse(s).is_ok_and(|mt| self.types.contains_key(&mt));
        let ctx = crate::validate::Context {
            now,
            directory,
            message_types: &known,
        };
        crate::validate::check(event, "event", &self.bounds, &ctx)
    }

    /// Whether `name` is a BASIC boolean field of message type `mt`'s message.
    pub fn is_basic_flag(&self, mt: &MessageType, name: &str) -> bool {
        self.types
            .get(mt)
            .and_then(|f| f.kind().as_message().cloned())
            .and_then(|m| m.get_field_by_name(name))
            .is_some_and(|f| matches!(f.kind(), Kind::Bool) && !f.is_list() && self.class_of(&f) == Some(Class::Basic))
    }

    /// The BASIC boolean fields that are true in `event` (the decision's `flags`).
    pub fn flags_of(&self, event: &DynamicMessage) -> Vec<String> {
        let Some((_, field)) = self.types.iter().find(|(_, f)| event.has_field(f)) else {
            return Vec::new();
        };
        let Value::Message(inner) = event.get_field(field).into_owned() else {
            return Vec::new();
        };
        inner
            .fields()
            .filter(|(f, v)| matches!(v, Value::Bool(true)) && self.class_of(f) == Some(Class::Basic))
            .map(|(f, _)| f.name().to_owned())
            .collect()
    }

    /// The agency-id fields of message type `mt`, as paths within its message (through
    /// sub-messages: `measures.responsible_agency_id`), for `named:<path>` routes.
    pub fn agency_fields(&self, mt: &MessageType) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(Kind::Message(m)) = self.types.get(mt).map(FieldDescriptor::kind) {
            self.agency_paths(&m, "", &mut out, 0);
        }
        out
    }

    fn is_agency_field(&self, f: &FieldDescriptor) -> bool {
        self.bounds
            .get(f.full_name())
            .is_some_and(|b| b.format == Some(crate::validate::Format::AgencyId))
    }

    fn agency_paths(&self, m: &MessageDescriptor, prefix: &str, out: &mut Vec<String>, depth: usize) {
        if depth > 8 {
            return;
        }
        for f in m.fields() {
            let path = format!("{prefix}{}", f.name());
            match f.kind() {
                Kind::String if self.is_agency_field(&f) => out.push(path),
                Kind::Message(sub) if is_henvis(&sub) => self.agency_paths(&sub, &format!("{path}."), out, depth + 1),
                _ => {}
            }
        }
    }

    /// The agencies an event names in its agency-id fields, as (path within its message
    /// type's message, agency id), in field order.
    pub fn named_agencies(&self, event: &DynamicMessage) -> Vec<(String, String)> {
        let Some((_, field)) = self.types.iter().find(|(_, f)| event.has_field(f)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Value::Message(inner) = event.get_field(field).into_owned() {
            self.named_in(&inner, "", &mut out, 0);
        }
        out
    }

    fn named_in(&self, m: &DynamicMessage, prefix: &str, out: &mut Vec<(String, String)>, depth: usize) {
        if depth > 8 {
            return;
        }
        for (f, v) in m.fields() {
            let path = format!("{prefix}{}", f.name());
            let values: Vec<&Value> = match v {
                Value::List(items) => items.iter().collect(),
                other => vec![other],
            };
            for v in values {
                match v {
                    Value::String(s) if self.is_agency_field(&f) && !s.is_empty() => {
                        out.push((path.clone(), s.clone()));
                    }
                    Value::Message(sub) => self.named_in(sub, &format!("{path}."), out, depth + 1),
                    _ => {}
                }
            }
        }
    }

    /// The bounds of a field, by its full name (for docs and tests).
    pub fn bounds_of(&self, full_name: &str) -> Option<&crate::validate::Bounds> {
        self.bounds.get(full_name)
    }

    /// Checks every required field of the event (recursively through set sub-messages).
    pub fn check_required(&self, event: &DynamicMessage) -> Result<(), FieldError> {
        self.check_message(event, "event")
    }

    fn check_message(&self, msg: &DynamicMessage, path: &str) -> Result<(), FieldError> {
        for f in msg.descriptor().fields() {
            let field_path = format!("{path}.{}", f.name());
            let set = msg.has_field(&f);
            if !set && self.required.contains_key(f.full_name()) {
                let expected = match f.kind() {
                    Kind::Enum(e) => format!(
                        "required: one of {}",
                        e.values()
                            .filter(|v| v.number() != 0)
                            .map(|v| format!("`{}`", v.name()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Kind::Message(m) => format!("required: a `{}`", m.full_name()),
                    Kind::Bool => "required: `true`".to_owned(),
                    _ if f.is_list() => "required: at least one value".to_owned(),
                    _ => "required: a non-empty value".to_owned(),
                };
                return Err(FieldError {
                    field: field_path,
                    expected,
                });
            }
            if !set {
                continue;
            }
            if let Kind::Message(m) = f.kind() {
                if !is_henvis(&m) {
                    continue;
                }
                match msg.get_field(&f).as_ref() {
                    Value::Message(sub) => self.check_message(sub, &field_path)?,
                    Value::List(items) => {
                        for (i, v) in items.iter().enumerate() {
                            if let Value::Message(sub) = v {
                                self.check_message(sub, &format!("{field_path}[{i}]"))?;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_with(events_proto: &str) -> Result<Schema, SchemaError> {
        let dir = std::env::temp_dir().join(format!("henvis-schema-{}", uuid_like()));
        std::fs::create_dir_all(dir.join("henvis/events/v1")).unwrap();
        std::fs::write(dir.join("henvis/events/v1/events.proto"), events_proto).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
        let mut c = protox::Compiler::new([dir.as_path(), root.as_path()]).unwrap();
        c.include_imports(true);
        c.open_file("henvis/events/v1/events.proto").unwrap();
        let bytes = c.encode_file_descriptor_set();
        std::fs::remove_dir_all(&dir).ok();
        Schema::from_descriptor_set(&bytes)
    }

    fn uuid_like() -> String {
        format!("{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], "")
    }

    #[test]
    fn the_shipped_schema_classifies_every_field() {
        let s = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
        assert_eq!(s.message_types().count(), 19);
        // spot checks that classes come from the .proto, not a default
        let find = |name: &str| s.classified_fields().get(name).copied();
        assert_eq!(
            find("henvis.events.v1.SuspectedVictimReported.given_name"),
            Some(Class::Identity)
        );
        assert_eq!(find("henvis.events.v1.Suspect.name"), Some(Class::Criminal));
        assert_eq!(find("henvis.events.v1.Location.address"), Some(Class::Location));
    }

    #[test]
    fn a_field_without_bounds_fails_the_schema_check() {
        let proto = r#"
syntax = "proto3";
package henvis.events.v1;
import "google/protobuf/timestamp.proto";
import "henvis/options/v1/options.proto";
message Event { oneof kind { Thing thing = 1 [(henvis.options.v1.sensitivity) = SENSITIVITY_BASIC]; } }
message Thing {
  string ok = 1 [(henvis.options.v1.sensitivity) = SENSITIVITY_HEALTH, (henvis.options.v1.bounds) = {format: FORMAT_LINE, max_chars: 10}];
  string no_bounds = 2 [(henvis.options.v1.sensitivity) = SENSITIVITY_HEALTH];
  string no_length = 3 [(henvis.options.v1.sensitivity) = SENSITIVITY_HEALTH, (henvis.options.v1.bounds) = {format: FORMAT_TEXT}];
  repeated string no_count = 4 [(henvis.options.v1.sensitivity) = SENSITIVITY_HEALTH, (henvis.options.v1.bounds) = {format: FORMAT_COUNTRY}];
  uint32 no_max = 5 [(henvis.options.v1.sensitivity) = SENSITIVITY_HEALTH];
  google.protobuf.Timestamp no_window = 6 [(henvis.options.v1.sensitivity) = SENSITIVITY_HEALTH, (henvis.options.v1.bounds) = {max_chars: 3}];
  bool flag = 7 [(henvis.options.v1.sensitivity) = SENSITIVITY_HEALTH];
}
"#;
        match schema_with(proto) {
            Err(SchemaError::Unbounded(f)) => {
                let names: Vec<&str> = f.iter().map(|s| s.split(' ').next().unwrap()).collect();
                assert_eq!(
                    names,
                    [
                        "henvis.events.v1.Thing.no_bounds",
                        "henvis.events.v1.Thing.no_length",
                        "henvis.events.v1.Thing.no_count",
                        "henvis.events.v1.Thing.no_max",
                        "henvis.events.v1.Thing.no_window"
                    ]
                );
            }
            other => panic!("expected refusal, got {other:?}"),
        }
    }

    #[test]
    fn every_shipped_string_number_timestamp_and_list_has_bounds() {
        let s = Schema::from_descriptor_set(henvis_proto::FILE_DESCRIPTOR_SET).unwrap();
        let b = s.bounds_of("henvis.events.v1.SuspectedVictimReported.aliases").unwrap();
        assert_eq!((b.max_items, b.max_chars), (20, 200));
        let b = s.bounds_of("henvis.events.v1.ConsentRecorded.valid_until").unwrap();
        assert_eq!(b.not_less_than.as_deref(), Some("valid_from"));
    }

    #[test]
    fn a_field_without_a_class_fails_the_schema_check() {
        let proto = r#"
syntax = "proto3";
package henvis.events.v1;
import "henvis/options/v1/options.proto";
message Event { oneof kind { Thing thing = 1 [(henvis.options.v1.sensitivity) = SENSITIVITY_BASIC]; } }
message Thing {
  string ok = 1 [(henvis.options.v1.sensitivity) = SENSITIVITY_HEALTH];
  string forgotten = 2;
}
"#;
        match schema_with(proto) {
            Err(SchemaError::Unclassified(f)) => {
                assert_eq!(f, vec!["henvis.events.v1.Thing.forgotten".to_owned()])
            }
            other => panic!("expected refusal, got {other:?}"),
        }
    }
}
