//! Descriptor-driven validation of a submitted event: every field's bounds and format come
//! from its `henvis.options.v1.bounds` option (and enum fields from the proto's defined
//! values), so a field cannot be added without them — the schema check refuses it.
//!
//! The same function runs at Submit (with the time of submission) and in the router (with
//! the envelope's submission time), so an older router never routes a value it cannot
//! check. Refusals name the field and what was expected, never the value.

use std::{collections::HashMap, time::SystemTime};

use henvis_domain::{AgencyId, Directory, EventId, FieldError, MessageType};
use prost_reflect::{DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, ReflectMessage, Value};

/// The floor of every timestamp: 2000-01-01T00:00:00Z, in seconds since the epoch.
pub const TIME_FLOOR_SECONDS: i64 = 946_684_800;
/// Clock skew tolerated on a timestamp of something that has happened.
pub const CLOCK_SKEW_SECONDS: i64 = 5 * 60;
/// How far ahead a planned time may lie.
pub const PLANNED_HORIZON_SECONDS: i64 = 10 * 366 * 24 * 3600;
/// The oldest plausible birth date, in years before today.
pub const BIRTH_DATE_YEARS: i32 = 120;

/// A string field's format (the proto's `henvis.options.v1.Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line of free text.
    Line,
    /// Free text over several lines.
    Text,
    /// An opaque agency-chosen id.
    Id,
    /// A directory agency id.
    AgencyId,
    /// An event id.
    EventId,
    /// A directory municipality code.
    MunicipalityCode,
    /// An ISO 3166-1 alpha-2 code.
    Country,
    /// A BCP 47 language tag.
    Language,
    /// An ISO 8601 birth date.
    BirthDate,
    /// A henvis message type name.
    MessageType,
}

impl Format {
    fn from_number(n: i32) -> Option<Self> {
        Some(match n {
            1 => Self::Line,
            2 => Self::Text,
            3 => Self::Id,
            4 => Self::AgencyId,
            5 => Self::EventId,
            6 => Self::MunicipalityCode,
            7 => Self::Country,
            8 => Self::Language,
            9 => Self::BirthDate,
            10 => Self::MessageType,
            _ => return None,
        })
    }

    fn free_text(self) -> bool {
        matches!(self, Self::Line | Self::Text)
    }
}

/// A timestamp's plausible window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeWindow {
    /// Something that has happened.
    Past,
    /// Something planned.
    Planned,
}

/// The bounds of one field, read from its option.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bounds {
    /// String format.
    pub format: Option<Format>,
    /// Free text: at most this many characters.
    pub max_chars: u32,
    /// Repeated: at most this many items.
    pub max_items: u32,
    /// Integers: smallest accepted value.
    pub min: u32,
    /// Integers: largest accepted value.
    pub max: u32,
    /// Timestamps: the window.
    pub time: Option<TimeWindow>,
    /// Not less than this sibling field.
    pub not_less_than: Option<String>,
}

/// What the checks need besides the event: the time it was submitted and the directory.
pub struct Context<'a> {
    /// The time of submission.
    pub now: SystemTime,
    /// The deployment's agency directory.
    pub directory: &'a Directory,
    /// The message types the schema knows.
    pub message_types: &'a dyn Fn(&str) -> bool,
}

fn is_timestamp(f: &FieldDescriptor) -> bool {
    matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp")
}

fn is_integer(k: &Kind) -> bool {
    matches!(
        k,
        Kind::Uint32
            | Kind::Uint64
            | Kind::Int32
            | Kind::Int64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Fixed32
            | Kind::Fixed64
            | Kind::Sfixed32
            | Kind::Sfixed64
    )
}

/// Reads the bounds option of a field. `None` when the field carries none.
pub(crate) fn read_bounds(f: &FieldDescriptor, ext: &ExtensionDescriptor) -> Option<Bounds> {
    let options = f.options();
    if !options.has_extension(ext) {
        return None;
    }
    let value = options.get_extension(ext);
    let Value::Message(m) = value.as_ref() else {
        return None;
    };
    let u = |name: &str| match m.get_field_by_name(name).as_deref() {
        Some(Value::U32(v)) => *v,
        _ => 0,
    };
    let e = |name: &str| match m.get_field_by_name(name).as_deref() {
        Some(Value::EnumNumber(v)) => *v,
        _ => 0,
    };
    let sibling = match m.get_field_by_name("not_less_than").as_deref() {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    Some(Bounds {
        format: Format::from_number(e("format")),
        max_chars: u("max_chars"),
        max_items: u("max_items"),
        min: u("min"),
        max: u("max"),
        time: match e("time") {
            1 => Some(TimeWindow::Past),
            2 => Some(TimeWindow::Planned),
            _ => None,
        },
        not_less_than: sibling,
    })
}

/// Why a field's bounds are incomplete for its kind, if they are (the schema check).
pub(crate) fn bounds_gap(f: &FieldDescriptor, b: Option<&Bounds>) -> Option<&'static str> {
    let kind = f.kind();
    let needs_any = f.is_list() || matches!(kind, Kind::String) || is_integer(&kind) || is_timestamp(f);
    let Some(b) = b else {
        return needs_any.then_some("no bounds");
    };
    if f.is_list() && b.max_items == 0 {
        return Some("repeated without max_items");
    }
    match kind {
        Kind::String => match b.format {
            None => return Some("string without a format"),
            Some(fmt) if fmt.free_text() && b.max_chars == 0 => return Some("free text without max_chars"),
            _ => {}
        },
        k if is_integer(&k) && (b.max == 0 || b.max < b.min) => return Some("integer without a max (>= min)"),
        _ if is_timestamp(f) && b.time.is_none() => return Some("timestamp without a time window"),
        _ => {}
    }
    if let Some(sib) = &b.not_less_than {
        let ok = f
            .parent_message()
            .get_field_by_name(sib)
            .is_some_and(|s| s.kind() == f.kind() && !s.is_list() && !f.is_list());
        if !ok {
            return Some("not_less_than names no sibling of the same kind");
        }
    }
    None
}

/// Checks every field of `msg` (recursively through henvis messages) against its bounds.
pub(crate) fn check(
    msg: &DynamicMessage,
    path: &str,
    bounds: &HashMap<String, Bounds>,
    ctx: &Context<'_>,
) -> Result<(), FieldError> {
    if let Some(u) = msg.unknown_fields().next() {
        return Err(FieldError::new(
            format!("{path}.#{}", u.number()),
            "only fields the proto defines (this field number is unknown to henvis)",
        ));
    }
    let now = ctx
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for (f, value) in msg.fields() {
        let field_path = format!("{path}.{}", f.name());
        let b = bounds.get(f.full_name());
        match value {
            Value::List(items) => {
                let max = b.map(|b| b.max_items).unwrap_or(0) as usize;
                if items.len() > max {
                    return Err(FieldError::new(
                        field_path,
                        format!("at most {max} items, got {}", items.len()),
                    ));
                }
                for (i, v) in items.iter().enumerate() {
                    check_value(&f, v, &format!("{field_path}[{i}]"), b, true, bounds, ctx, now)?;
                }
            }
            v => check_value(&f, v, &field_path, b, false, bounds, ctx, now)?,
        }
        if let (Some(sib), Some(v)) = (b.and_then(|b| b.not_less_than.as_ref()), ordinal(value)) {
            let sibling = msg.descriptor().get_field_by_name(sib);
            if let Some(s) = sibling.filter(|s| msg.has_field(s))
                && ordinal(&msg.get_field(&s)).is_some_and(|sv| v < sv)
            {
                return Err(FieldError::new(field_path, format!("not less than `{path}.{sib}`")));
            }
        }
    }
    Ok(())
}

/// A comparable value of an integer or timestamp (seconds, nanos).
fn ordinal(v: &Value) -> Option<(i64, i64)> {
    match v {
        Value::U32(n) => Some((i64::from(*n), 0)),
        Value::U64(n) => Some((i64::try_from(*n).unwrap_or(i64::MAX), 0)),
        Value::I32(n) => Some((i64::from(*n), 0)),
        Value::I64(n) => Some((*n, 0)),
        Value::Message(m) if m.descriptor().full_name() == "google.protobuf.Timestamp" => Some(timestamp(m)),
        _ => None,
    }
}

fn timestamp(m: &DynamicMessage) -> (i64, i64) {
    let seconds = match m.get_field_by_name("seconds").as_deref() {
        Some(Value::I64(s)) => *s,
        _ => 0,
    };
    let nanos = match m.get_field_by_name("nanos").as_deref() {
        Some(Value::I32(n)) => i64::from(*n),
        _ => 0,
    };
    (seconds, nanos)
}

#[allow(clippy::too_many_arguments)]
fn check_value(
    f: &FieldDescriptor,
    v: &Value,
    path: &str,
    b: Option<&Bounds>,
    in_list: bool,
    bounds: &HashMap<String, Bounds>,
    ctx: &Context<'_>,
    now: i64,
) -> Result<(), FieldError> {
    match (f.kind(), v) {
        (Kind::Enum(e), Value::EnumNumber(n)) => {
            let defined = e.get_value(*n).is_some() && !(in_list && *n == 0);
            if !defined {
                let allowed = e
                    .values()
                    .filter(|v| v.number() != 0)
                    .map(|v| format!("`{}` ({})", v.name(), v.number()))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(FieldError::new(path, format!("one of {allowed}")));
            }
        }
        (Kind::String, Value::String(s)) => check_string(s, path, b, ctx)?,
        (_, Value::Message(m)) if m.descriptor().full_name() == "google.protobuf.Timestamp" => {
            check_time(m, path, b, now)?;
        }
        (_, Value::Message(m)) if m.descriptor().full_name().starts_with("henvis.") => {
            check(m, path, bounds, ctx)?;
        }
        (k, v) if is_integer(&k) => {
            let b = b.cloned().unwrap_or_default();
            if let Some((n, _)) = ordinal(v)
                && (n > i64::from(b.max) || (n != 0 && n < i64::from(b.min)))
            {
                return Err(FieldError::new(
                    path,
                    format!("a whole number from {} to {}", b.min, b.max),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_time(m: &DynamicMessage, path: &str, b: Option<&Bounds>, now: i64) -> Result<(), FieldError> {
    let (seconds, nanos) = timestamp(m);
    if !(0..=999_999_999).contains(&nanos) {
        return Err(FieldError::new(path, "a timestamp with nanos from 0 to 999999999"));
    }
    let (ceiling, what) = match b.and_then(|b| b.time) {
        Some(TimeWindow::Planned) => (now + PLANNED_HORIZON_SECONDS, "at most 10 years after now"),
        _ => (
            now + CLOCK_SKEW_SECONDS,
            "not after now (5 minutes of clock skew allowed)",
        ),
    };
    if seconds < TIME_FLOOR_SECONDS || seconds > ceiling {
        return Err(FieldError::new(
            path,
            format!("a time from 2000-01-01T00:00:00Z, {what}"),
        ));
    }
    Ok(())
}

fn check_string(s: &str, path: &str, b: Option<&Bounds>, ctx: &Context<'_>) -> Result<(), FieldError> {
    let Some(b) = b else { return Ok(()) };
    let Some(format) = b.format else { return Ok(()) };
    let refuse = |expected: String| Err(FieldError::new(path, expected));
    match format {
        Format::Line | Format::Text => {
            let n = s.chars().count();
            if n > b.max_chars as usize {
                return refuse(format!("at most {} characters, got {n}", b.max_chars));
            }
            let allowed_control = |c: char| format == Format::Text && matches!(c, '\n' | '\r' | '\t');
            if s.chars().any(|c| c.is_control() && !allowed_control(c)) {
                return refuse(match format {
                    Format::Line => "one line of text without control characters".into(),
                    _ => "text without control characters other than line breaks and tabs".into(),
                });
            }
        }
        Format::Id => {
            if !henvis_domain::is_opaque_id(s) {
                return refuse(henvis_domain::OPAQUE_ID_EXPECTED.into());
            }
        }
        Format::AgencyId => {
            let known = AgencyId::parse(s)
                .ok()
                .is_some_and(|a| ctx.directory.agency(&a).is_some());
            if !known {
                return refuse("the id of an agency in the agency directory (e.g. `kommune-101`)".into());
            }
        }
        Format::EventId => {
            if EventId::parse(s).is_err() {
                return refuse("an event id as returned by Submit (a hyphenated UUIDv7)".into());
            }
        }
        Format::MunicipalityCode => {
            if ctx.directory.municipality(s).is_none() {
                return refuse("the three-digit code of a Danish municipality (e.g. `101` for København)".into());
            }
        }
        Format::Country => {
            if !crate::iso::is_country(s) {
                return refuse("an assigned ISO 3166-1 alpha-2 country code in upper case (e.g. `RO`)".into());
            }
        }
        Format::Language => {
            if s.len() > 35 || oxilangtag::LanguageTag::parse(s).is_err() {
                return refuse("a well-formed BCP 47 language tag (e.g. `ro`, `en-GB`)".into());
            }
        }
        Format::BirthDate => {
            if !plausible_birth_date(s, ctx.now) {
                return refuse(format!(
                    "an ISO 8601 date `YYYY-MM-DD`, not after today and at most {BIRTH_DATE_YEARS} years ago"
                ));
            }
        }
        Format::MessageType => {
            let known = MessageType::parse(s).is_ok() && (ctx.message_types)(s);
            if !known {
                return refuse("the name of a henvis message type (e.g. `health_assessment_completed`)".into());
            }
        }
    }
    Ok(())
}

/// A strict `YYYY-MM-DD` calendar date between 120 years ago and today (UTC).
fn plausible_birth_date(s: &str, now: SystemTime) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (s[0..4].parse::<i32>(), s[5..7].parse::<u8>(), s[8..10].parse::<u8>()) else {
        return false;
    };
    let Ok(month) = time::Month::try_from(m) else {
        return false;
    };
    let Ok(date) = time::Date::from_calendar_date(y, month, d) else {
        return false;
    };
    let today = time::OffsetDateTime::from(now).date();
    date <= today && today.year() - date.year() <= BIRTH_DATE_YEARS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birth_dates_are_strict_and_plausible() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000); // 2026-11
        assert!(plausible_birth_date("2011-04-30", now));
        assert!(!plausible_birth_date("2011-02-30", now));
        assert!(!plausible_birth_date("1900-01-01", now));
        assert!(!plausible_birth_date("2030-01-01", now));
        assert!(!plausible_birth_date("2011-4-30", now));
        assert!(!plausible_birth_date("30/04/2011", now));
        assert!(!plausible_birth_date("２011-04-30", now));
    }
}
