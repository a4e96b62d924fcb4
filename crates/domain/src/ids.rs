//! Identifiers are newtypes with a parse constructor, so an invalid one cannot exist.

use std::fmt;

/// Why a string is not a valid identifier. Names the kind and what was expected, never the
/// rejected value itself (it could carry personal data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: expected {expected}")]
pub struct IdError {
    /// Which identifier failed (e.g. `case id`).
    pub kind: &'static str,
    /// What a valid one looks like.
    pub expected: &'static str,
}

fn is_token(s: &str, max: usize, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Whether `s` is an opaque id as events carry them (consent ids, references): 1 to 64
/// characters of `[A-Za-z0-9._:@-]`.
pub fn is_opaque_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-'))
}

/// What [`is_opaque_id`] expects, in the words of a refusal.
pub const OPAQUE_ID_EXPECTED: &str = "an id of 1 to 64 characters of [A-Za-z0-9._:@-]";

/// A submitted value that is missing or malformed. Names the field path and what was
/// expected, never the submitted value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {expected}")]
pub struct FieldError {
    /// Dotted path, e.g. `event.child_missing.last_seen_at`.
    pub field: String,
    /// What a valid value looks like.
    pub expected: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, expected: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            expected: expected.into(),
        }
    }
}

/// An agency's id in the directory: 2 to 63 characters of `[a-z0-9-]`, starting with a
/// letter or digit. Safe as a NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgencyId(String);

impl AgencyId {
    /// Parses an agency id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() >= 2 && is_token(s, 63, &['-']) {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError {
                kind: "agency id",
                expected: "2 to 63 characters of [a-z0-9-], starting with a letter or digit",
            })
        }
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AgencyId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<AgencyId> for String {
    fn from(a: AgencyId) -> String {
        a.0
    }
}
impl fmt::Display for AgencyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person's pseudonymous id (a contact person, an administrator): same form as an
/// agency id, never a name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PersonId(String);

impl PersonId {
    /// Parses a person id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        AgencyId::parse(s).map(|a| Self(a.0)).map_err(|_| IdError {
            kind: "person id",
            expected: "2 to 63 characters of [a-z0-9-], starting with a letter or digit",
        })
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PersonId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<PersonId> for String {
    fn from(p: PersonId) -> String {
        p.0
    }
}
impl fmt::Display for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The opaque id of the person acting in an agency's own system (never a name): 1 to 64
/// characters of `[A-Za-z0-9._@-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ActorId(String);

impl ActorId {
    /// Parses an actor id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError {
                kind: "actor id",
                expected: "the acting person's opaque id: 1 to 64 characters of [A-Za-z0-9._@-]",
            })
        }
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ActorId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<ActorId> for String {
    fn from(a: ActorId) -> String {
        a.0
    }
}
impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The guardian's id for a consent (unique within its case): 1 to 64 characters of
/// `[A-Za-z0-9._:@-]`, the form the event schema requires of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConsentId(String);

impl ConsentId {
    /// Parses a consent id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if is_opaque_id(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError {
                kind: "consent id",
                expected: OPAQUE_ID_EXPECTED,
            })
        }
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ConsentId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<ConsentId> for String {
    fn from(c: ConsentId) -> String {
        c.0
    }
}
impl fmt::Display for ConsentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pseudonymous case id: a random UUID, carrying nothing about the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CaseId(uuid::Uuid);

impl CaseId {
    /// A new random case id.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
    /// Parses a case id in hyphenated UUID form.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        match uuid::Uuid::try_parse(s) {
            Ok(u) if s.len() == 36 && !u.is_nil() => Ok(Self(u)),
            _ => Err(IdError {
                kind: "case id",
                expected: "a hyphenated UUID such as `0b6f3a52-8c1e-4f0e-9d55-2f1c7a9e4b10`",
            }),
        }
    }
}
impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// An event id: a UUIDv7, so ids sort by the time the sector service accepted the event.
/// A police alert's id is the id of the event that raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// A new time-ordered event id.
    pub fn new_now() -> Self {
        Self(uuid::Uuid::now_v7())
    }
    /// When it was minted (at submission), unix seconds.
    pub fn unix_seconds(&self) -> i64 {
        self.0
            .get_timestamp()
            .map_or(0, |t| i64::try_from(t.to_unix().0).unwrap_or(i64::MAX))
    }
    /// Parses an event id (a hyphenated UUIDv7).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        match uuid::Uuid::try_parse(s) {
            Ok(u) if s.len() == 36 && u.get_version_num() == 7 => Ok(Self(u)),
            _ => Err(IdError {
                kind: "event id",
                expected: "a hyphenated UUIDv7 as returned by Submit",
            }),
        }
    }
}
impl TryFrom<String> for EventId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<EventId> for String {
    fn from(e: EventId) -> String {
        e.to_string()
    }
}
impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A message type: the snake_case name of an event kind (e.g. `child_missing`). Whether it
/// names a known event is for the schema to say; this only guarantees a safe token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageType(String);

impl MessageType {
    /// Parses a message type token.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if is_token(s, 64, &['_']) && s.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError {
                kind: "message type",
                expected: "a snake_case event name such as `child_missing`",
            })
        }
    }
    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for MessageType {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}
impl From<MessageType> for String {
    fn from(m: MessageType) -> String {
        m.0
    }
}
impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-chosen idempotency key: 1 to 128 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses an idempotency key.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError {
                kind: "idempotency key",
                expected: "1 to 128 characters of [A-Za-z0-9._:-]",
            })
        }
    }
    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_ids_are_opaque_tokens_never_free_text() {
        assert!(ActorId::parse("caseworker-17@kommune").is_ok());
        for bad in ["", "Jens Hansen", "a/b", &"x".repeat(65)] {
            assert!(ActorId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn agency_ids_are_subject_safe_tokens() {
        assert!(AgencyId::parse("kommune-101").is_ok());
        for bad in ["", "a", "Kommune", "a.b", "a b", "-a", "a*", "a>", &"x".repeat(64)] {
            assert!(AgencyId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn case_ids_are_hyphenated_nonnil_uuids() {
        let c = CaseId::new_random();
        assert_eq!(CaseId::parse(&c.to_string()), Ok(c));
        for bad in [
            "",
            "123",
            "00000000-0000-0000-0000-000000000000",
            "0b6f3a528c1e4f0e9d552f1c7a9e4b10",
        ] {
            assert!(CaseId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_ids_are_time_ordered_v7() {
        let a = EventId::new_now();
        let b = EventId::new_now();
        assert!(a < b);
        assert_eq!(EventId::parse(&a.to_string()), Ok(a));
        assert!(EventId::parse(&CaseId::new_random().to_string()).is_err());
    }

    #[test]
    fn message_types_and_keys_reject_unsafe_text() {
        assert!(MessageType::parse("child_missing").is_ok());
        for bad in ["", "Child", "child.missing", "1abc", "a-b"] {
            assert!(MessageType::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse("ref-2026:11.28_a").is_ok());
        for bad in ["", "a b", "æ", &"k".repeat(129)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
