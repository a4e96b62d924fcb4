//! Checks on an event beyond the schema's required fields: references to agencies,
//! events and municipalities must resolve. Driven by field names, so every event type
//! gets them without per-type code: `*_agency_id(s)` name directory agencies,
//! `*_event_id` name events, `municipality_code` names a municipality.

use henvis_domain::{AgencyId, Directory, EventId};
use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

use crate::ApiError;

/// Checks every reference field of `msg` (recursively), naming the first bad one.
pub fn references(dir: &Directory, msg: &DynamicMessage, path: &str) -> Result<(), ApiError> {
    for (field, value) in msg.fields() {
        let name = field.name();
        let field_path = format!("{path}.{name}");
        match value {
            Value::String(s) => check_string(dir, name, s, &field_path)?,
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    let p = format!("{field_path}[{i}]");
                    match v {
                        Value::String(s) => check_string(dir, name, s, &p)?,
                        Value::Message(m) => references(dir, m, &p)?,
                        _ => {}
                    }
                }
            }
            Value::Message(m) if matches!(field.kind(), Kind::Message(ref d) if d.full_name().starts_with("henvis.")) =>
            {
                references(dir, m, &field_path)?;
            }
            _ => {}
        }
    }
    let _ = msg.descriptor();
    Ok(())
}

fn check_string(dir: &Directory, name: &str, s: &str, path: &str) -> Result<(), ApiError> {
    if name.ends_with("agency_id") || name.ends_with("agency_ids") {
        let ok = AgencyId::parse(s).ok().is_some_and(|a| dir.agency(&a).is_some());
        if !ok {
            return Err(ApiError::field(
                path,
                "the id of an agency in the agency directory (e.g. `kommune-101`)",
            ));
        }
    } else if name.ends_with("event_id") {
        if EventId::parse(s).is_err() {
            return Err(ApiError::field(
                path,
                "an event id as returned by Submit (a hyphenated UUIDv7)",
            ));
        }
    } else if name == "municipality_code" && dir.municipality(s).is_none() {
        return Err(ApiError::field(
            path,
            "the three-digit code of a Danish municipality (e.g. `101` for København)",
        ));
    }
    Ok(())
}
