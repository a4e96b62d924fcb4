//! The idempotency record of a submitted event, kept for days: written by the sector service
//! that stored the event and, should that service have failed before writing it, by the
//! router that routed it. It holds the stored envelope, so answering a retry never needs a
//! read of IN (which sector services may not do); keyed `<agency>.<sha256 of the key>`, so
//! NATS permissions give each sector service its own agencies' records and no others.

use henvis_domain::CaseId;

use crate::{Bus, BusError, idempotency_record_key, opening_record_key};

/// That an agency opened a case whose opening report the router may not have routed yet:
/// the case record (which only the router writes) does not exist until it has, and the
/// sender's own follow-ups are admitted from this in the meantime.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Opening {
    /// The opening report's event id.
    pub event_id: String,
    /// The municipality the case belongs to.
    pub municipality_code: String,
}

/// What a retry with the same key is answered with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Submitted {
    /// The stored event's id.
    pub event_id: String,
    /// Its sequence in IN.
    pub in_sequence: u64,
    /// The stored envelope as stored in IN (sealed with its case's key), hex.
    pub envelope_hex: String,
}

impl Bus {
    /// Records that `agency`'s `key` stored `envelope` (sealed, as stored in IN) at
    /// `in_sequence`, unless a record exists (which is kept): one round trip either way
    /// (the router's write after every routed event mostly finds the sector service's
    /// record; idempotency records are never deleted, they expire).
    pub async fn remember_submitted(
        &self,
        agency: &str,
        key: &str,
        event_id: &str,
        envelope: &[u8],
        in_sequence: u64,
    ) -> Result<(), BusError> {
        let record = Submitted {
            event_id: event_id.to_owned(),
            in_sequence,
            envelope_hex: hex::encode(envelope),
        };
        self.idempotency_bucket()
            .await?
            .create_unless_present(&idempotency_record_key(agency, key), &record)
            .await
            .map(drop)
    }

    /// The envelope `agency`'s `key` stored (opened with its case's key), if any. A direct
    /// get of the record's own subject, which NATS permissions scope to the agency's
    /// records: a sector service can read the records of its own agencies only.
    pub async fn submitted(&self, agency: &str, key: &str) -> Result<Option<(Vec<u8>, u64)>, BusError> {
        let Some(record) = self
            .idempotency_bucket()
            .await?
            .get_scoped::<Submitted>(&idempotency_record_key(agency, key))
            .await?
        else {
            return Ok(None);
        };
        let sealed = hex::decode(&record.envelope_hex)
            .map_err(|e| BusError::Other(format!("idempotency record of `{}`: {e}", record.event_id)))?;
        Ok(Some((self.open(&sealed).await?.plaintext, record.in_sequence)))
    }

    /// Records that `agency` opened `case` (kept if recorded already).
    pub async fn remember_opening(&self, agency: &str, case: &CaseId, opening: &Opening) -> Result<(), BusError> {
        self.idempotency_bucket()
            .await?
            .create_if_absent(&opening_record_key(agency, case), opening)
            .await
    }

    /// Whether `agency` opened `case`, from its own records only.
    pub async fn opening(&self, agency: &str, case: &CaseId) -> Result<Option<Opening>, BusError> {
        self.idempotency_bucket()
            .await?
            .get_scoped::<Opening>(&opening_record_key(agency, case))
            .await
    }
}
