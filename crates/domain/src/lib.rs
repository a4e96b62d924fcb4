//! Domain types of henvis: validated identifiers, sectors, sensitivity classes and the
//! agency directory (the real Danish country by default).
//!
//! This crate is pure data and validation. It must not know tokio, tonic, NATS or the wire
//! format: services convert wire types into these at the edge.

mod class;
mod directory;
mod ids;
mod principal;
mod sector;

pub use class::{Class, ClassSet};
pub use directory::{Agency, AgencyKind, ChangeError, Directory, DirectoryChange, DirectoryError, Municipality};
pub use ids::{
    ActorId, AgencyId, CaseId, ConsentId, EventId, FieldError, IdError, IdempotencyKey, MessageType,
    OPAQUE_ID_EXPECTED, PersonId, is_opaque_id,
};
pub use principal::{PRINCIPAL_SCHEME, Principal};
pub use sector::Sector;

mod audit;
mod case;
mod chain;
pub use audit::{
    ALERT_CLAIMED, ALERT_CLOSED_AS, ALERT_DETAILS_READ, ALERT_HANDED_OVER_TO, ALERT_REOPENED, AlertStep,
    AlertStepRecord, AuditDecision, AuditRecipient, AuditRecord, AuditScope, AuditWithheld, Completeness,
    VoidedDecision, completeness, standing_decisions,
};
pub use case::{CaseChange, CaseRecord, Consent, NeverDisclose, Shielded};
pub use chain::{Break, ChainLink, Checkpoint, GENESIS, StoredRecord, Verification, link_hash, verify};

pub mod linkage;
pub mod report;
pub mod stats;

mod profile;
pub use profile::{SYSTEM_TYPES, originates};

mod alert;
pub use alert::{AlertRecord, AlertState, Urgency};

mod governance;
pub use governance::{
    AppliedChanges, BreakGlass, CaseErasure, DirectoryAmendments, DirectoryProposal, GovernanceAction, GovernanceStep,
    Proposal, ProposalDecision, ProposalState, Review, TestRun, live_of,
};
