//! The policy engine of henvis: the event schema read from descriptors, the rule set, the
//! routing decision and descriptor-driven redaction.
//!
//! Pure and synchronous, deny by default: it never performs I/O and must not know tokio,
//! tonic or NATS. The router, the administrators' tools and the tests call the same
//! functions, so a decision is the same wherever it is made.

mod decide;
mod diff;
mod guard;
mod iso;
mod redact;
mod rule_tests;
mod rules;
mod schema;
mod validate;

pub use decide::{Decision, DecisionInput, Recipient, Withheld, WithheldReason, decide};
pub use diff::{ChangeKind, RuleChange, diff};
pub use guard::{GUARDIAN_ONLY, GuardError, admit, may_add_to};
pub use henvis_domain::FieldError;
pub use redact::{Redacted, redact};
pub use rules::{
    Agreement, AppliesTo, LegalBasis, OPENING_TYPE, Route, RuleError, RuleSet, Selector, SenderFilter, TypeRules,
    Urgency,
};
pub use schema::{Schema, SchemaError};
pub use validate::{
    BIRTH_DATE_YEARS, Bounds, CLOCK_SKEW_SECONDS, Format, PLANNED_HORIZON_SECONDS, TIME_FLOOR_SECONDS, TimeWindow,
};
