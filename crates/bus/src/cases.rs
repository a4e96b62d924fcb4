//! Case records in the case bucket, JSON-encoded, with optimistic concurrency.
//!
//! Reads go to the stream leader (`STREAM.MSG.GET`), never to a possibly lagging replica:
//! a decision must see every change acknowledged before it (a withdrawn consent above all).

use std::time::Duration;

use async_nats::jetstream::kv;
use henvis_domain::{CaseId, CaseRecord};

use crate::{BUCKET_CASES, Bus, BusError};

/// A case record and the bucket revision it was read at.
#[derive(Debug, Clone)]
pub struct VersionedCase {
    /// The record.
    pub record: CaseRecord,
    /// Its revision, for compare-and-set updates.
    pub revision: u64,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl Bus {
    /// Reads a case record from the stream leader.
    pub async fn case(&self, id: &CaseId) -> Result<Option<VersionedCase>, BusError> {
        let stream = self.cases_stream().await?;
        match stream
            .get_last_raw_message_by_subject(&format!("$KV.{BUCKET_CASES}.{id}"))
            .await
        {
            Ok(m) => {
                let record =
                    serde_json::from_slice(&m.payload).map_err(|e| BusError::Other(format!("case record: {e}")))?;
                Ok(Some(VersionedCase {
                    record,
                    revision: m.sequence,
                }))
            }
            Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Applies `change` to the case record with compare-and-set, retrying on conflict;
    /// creates the record from `CaseRecord::new()` when absent and `create` is set.
    /// Returns the record as stored, or `None` when absent and not created.
    pub async fn modify_case(
        &self,
        id: &CaseId,
        create: bool,
        mut change: impl FnMut(&mut CaseRecord) -> bool,
    ) -> Result<Option<VersionedCase>, BusError> {
        let store = self.cases().await?;
        for attempt in 0..64u32 {
            let current = self.case(id).await?;
            let (mut record, revision) = match current {
                Some(c) => (c.record, Some(c.revision)),
                None if create => (CaseRecord::new(), None),
                None => return Ok(None),
            };
            if !change(&mut record) && revision.is_some() {
                return Ok(revision.map(|revision| VersionedCase { record, revision }));
            }
            let value = serde_json::to_vec(&record).map_err(|e| BusError::Other(e.to_string()))?;
            let written = match revision {
                Some(rev) => store.update(id.to_string(), value.into(), rev).await.map_err(|e| {
                    if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                        None
                    } else {
                        Some(unavailable(e))
                    }
                }),
                None => store.create(id.to_string(), value.into()).await.map_err(|e| {
                    if e.kind() == kv::CreateErrorKind::AlreadyExists {
                        None
                    } else {
                        Some(unavailable(e))
                    }
                }),
            };
            match written {
                Ok(revision) => return Ok(Some(VersionedCase { record, revision })),
                Err(Some(e)) => return Err(e),
                // another writer got there first: read again and re-apply
                Err(None) => tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)))).await,
            }
        }
        Err(BusError::Unavailable("case record contended".into()))
    }
}
