//! Verifying the audit: every record, link and checkpoint read from NATS and checked by
//! the domain's verifier, checkpoint signatures with the configured public key.

use henvis_domain::{Break, Checkpoint, Verification};
use tonic::Status;

use crate::Admin;

pub(crate) fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the audit is unavailable; try again: {e}"))
}

/// The status for a failed read of typed audit records: a record that does not parse was
/// written behind the services (DATA_LOSS); anything else is NATS (UNAVAILABLE).
pub(crate) fn audit_read_error(e: henvis_bus::BusError) -> Status {
    match e {
        henvis_bus::BusError::Other(m) => Status::data_loss(format!("an audit record does not parse: {m}")),
        other => unavailable(other),
    }
}

/// Checks an Ed25519 signature over `message` with the key `c.key_id` names among `keys`.
pub(crate) fn signature_valid(keys: &[Vec<u8>], message: &[u8], c: &Checkpoint) -> bool {
    let Ok(sig) = hex::decode(&c.signature) else {
        return false;
    };
    keys.iter()
        .filter(|k| k.get(..8).is_some_and(|id| hex::encode(id) == c.key_id))
        .any(|k| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, k)
                .verify(message, &sig)
                .is_ok()
        })
}

impl Admin {
    /// Reads the whole audit, its chain and checkpoints, and verifies them (with
    /// `trusted` checkpoints held elsewhere). Returns the verification and the newest
    /// checkpoint.
    pub(crate) async fn verify_audit(
        &self,
        trusted: &[Checkpoint],
        with_completeness: bool,
    ) -> Result<(Verification, Option<Checkpoint>, Option<henvis_domain::Completeness>), Status> {
        // links first: a record stored after its link was read counts as not chained yet
        let checkpoints = self.bus.checkpoints().await.map_err(unavailable)?;
        let links = self.bus.chain_links().await.map_err(unavailable)?;
        let records = self
            .bus
            .stored_records(henvis_bus::STREAM_AUDIT, 1, usize::MAX)
            .await
            .map_err(unavailable)?;
        let expired_before = if self.audit_retention_secs > 0 {
            crate::now().saturating_sub(self.audit_retention_secs)
        } else {
            0
        };
        let v = henvis_domain::verify(&records, &links, &checkpoints, trusted, expired_before, |m, c| {
            signature_valid(&self.audit_keys, m, c)
        });
        let completeness = if with_completeness {
            let deliveries = self.bus.stored_deliveries().await.map_err(unavailable)?;
            let steps: Vec<henvis_domain::AlertStep> = self
                .bus
                .stored_alerts()
                .await
                .map_err(unavailable)?
                .iter()
                .flat_map(henvis_domain::AlertStep::of)
                .collect();
            // every record (completeness reads the decisions and the alert steps among them)
            let case_records: Vec<henvis_domain::AuditRecord> = records
                .iter()
                .map(|r| serde_json::from_slice(&r.payload))
                .collect::<Result<_, _>>()
                .map_err(|e| Status::data_loss(format!("an audit record does not parse: {e}")))?;
            // administrators' steps the audit still keeps (older records may have expired)
            let governance: Vec<henvis_domain::GovernanceStep> = henvis_domain::GovernanceStep::of(
                &records_of(self.proposals().await?),
                &records_of(self.directory_proposals().await?),
                &records_of(self.erasures().await?),
            )
            .into_iter()
            .filter(|s| s.at >= expired_before)
            .collect();
            Some(henvis_domain::completeness(
                &case_records,
                &deliveries,
                &steps,
                &governance,
            ))
        } else {
            None
        };
        Ok((v, checkpoints.last().cloned(), completeness))
    }
}

fn records_of<T>(v: Vec<henvis_bus::Versioned<T>>) -> Vec<T> {
    v.into_iter().map(|v| v.record).collect()
}

/// Where a break is: the audit sequence and time, when it is a record's.
pub(crate) fn location(b: &Break) -> (u64, i64) {
    match b {
        Break::BrokenLink { audit_seq, .. } | Break::MissingRecord { audit_seq, .. } => (*audit_seq, 0),
        Break::AlteredRecord { audit_seq, at } | Break::UnchainedRecord { audit_seq, at } => (*audit_seq, *at),
        Break::CheckpointMismatch { at, .. } => (0, *at),
        Break::ForgedCheckpoint { .. } => (0, 0),
    }
}
