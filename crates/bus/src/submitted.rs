//! The idempotency record of a submitted event, kept for days: written by the sector service
//! that stored the event and, should that service have failed before writing it, by the
//! router that routed it. It holds the stored envelope, so answering a retry never needs a
//! read of IN (which sector services may not do); keyed `<agency>.<sha256 of the key>`, so
//! NATS permissions give each sector service its own agencies' records and no others.

use crate::{Bus, BusError, idempotency_record_key};

/// What a retry with the same key is answered with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Submitted {
    /// The stored event's id.
    pub event_id: String,
    /// Its sequence in IN.
    pub in_sequence: u64,
    /// The stored envelope, protobuf, hex.
    pub envelope_hex: String,
}

impl Bus {
    /// Records that `agency`'s `key` stored `envelope` at `in_sequence`, unless a record
    /// exists (which is kept).
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
            .create_if_absent(&idempotency_record_key(agency, key), &record)
            .await
    }

    /// The envelope `agency`'s `key` stored, if any. A direct get of the record's own
    /// subject, which NATS permissions scope to the agency's records: a sector service can
    /// read the records of its own agencies only.
    pub async fn submitted(&self, agency: &str, key: &str) -> Result<Option<(Vec<u8>, u64)>, BusError> {
        let Some(record) = self
            .idempotency_bucket()
            .await?
            .get_scoped::<Submitted>(&idempotency_record_key(agency, key))
            .await?
        else {
            return Ok(None);
        };
        let envelope = hex::decode(&record.envelope_hex)
            .map_err(|e| BusError::Other(format!("idempotency record of `{}`: {e}", record.event_id)))?;
        Ok(Some((envelope, record.in_sequence)))
    }
}
