//! Case records in the case bucket, JSON-encoded, with optimistic concurrency.

use async_nats::jetstream::kv;
use henvis_domain::{CaseId, CaseRecord};

use crate::{Bus, BusError};

/// A case record and the bucket revision it was read at.
#[derive(Debug, Clone)]
pub struct VersionedCase {
    /// The record.
    pub record: CaseRecord,
    /// Its revision, for compare-and-set updates.
    pub revision: u64,
}

impl Bus {
    /// Reads a case record.
    pub async fn case(&self, id: &CaseId) -> Result<Option<VersionedCase>, BusError> {
        let store = self.cases().await?;
        let entry = store
            .entry(id.to_string())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let record =
                    serde_json::from_slice(&e.value).map_err(|e| BusError::Other(format!("case record: {e}")))?;
                Ok(Some(VersionedCase {
                    record,
                    revision: e.revision,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Creates a case record unless one exists; returns the record now stored.
    pub async fn create_case(&self, id: &CaseId, record: &CaseRecord) -> Result<VersionedCase, BusError> {
        let store = self.cases().await?;
        let value = serde_json::to_vec(record).map_err(|e| BusError::Other(e.to_string()))?;
        match store.create(id.to_string(), value.into()).await {
            Ok(revision) => Ok(VersionedCase {
                record: record.clone(),
                revision,
            }),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => self
                .case(id)
                .await?
                .ok_or_else(|| BusError::Other("case record vanished".into())),
            Err(e) => Err(BusError::Unavailable(e.to_string())),
        }
    }

    /// Replaces a case record if it is still at `revision`; `Ok(None)` when it changed.
    pub async fn update_case(&self, id: &CaseId, record: &CaseRecord, revision: u64) -> Result<Option<u64>, BusError> {
        let store = self.cases().await?;
        let value = serde_json::to_vec(record).map_err(|e| BusError::Other(e.to_string()))?;
        match store.update(id.to_string(), value.into(), revision).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(BusError::Unavailable(e.to_string())),
        }
    }
}
