//! The policy engine of henvis: the event schema read from descriptors, the rule set, the
//! routing decision and descriptor-driven redaction.
//!
//! Pure and synchronous, deny by default: it never performs I/O and must not know tokio,
//! tonic or NATS. The router, the administrators' tools and the tests call the same
//! functions, so a decision is the same wherever it is made.

mod decide;
mod guard;
mod redact;
mod rule_tests;
mod rules;
mod schema;

pub use decide::{Decision, DecisionInput, Recipient, Withheld, WithheldReason, decide};
pub use guard::{GUARDIAN_ONLY, GuardError, admit};
pub use henvis_domain::FieldError;
pub use redact::{Redacted, redact};
pub use rules::{
    Agreement, AppliesTo, LegalBasis, OPENING_TYPE, Route, RuleError, RuleSet, Selector, SenderFilter, TypeRules,
    Urgency,
};
pub use schema::{Schema, SchemaError};
