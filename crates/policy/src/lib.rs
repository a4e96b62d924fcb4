//! The policy engine of henvis: the event schema read from descriptors, the rule set, the
//! routing decision and descriptor-driven redaction.
//!
//! Pure and synchronous, deny by default: it never performs I/O and must not know tokio,
//! tonic or NATS. The router, the administrators' tools and the tests call the same
//! functions, so a decision is the same wherever it is made.

mod decide;
mod redact;
mod rules;
mod schema;

pub use decide::{CaseFacts, Decision, Recipient, Withheld, WithheldReason, decide};
pub use redact::{Redacted, redact};
pub use rules::{LegalBasis, Route, RuleError, RuleSet, Selector, SenderFilter, TypeRules};
pub use schema::{FieldError, Schema, SchemaError};
