//! JSON records in a key-value bucket with leader reads and compare-and-set updates: the
//! mechanism behind case records and alert records.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::LastRawMessageErrorKind};
use serde::{Serialize, de::DeserializeOwned};

use crate::BusError;

/// A record and the bucket revision it was read at.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The record.
    pub record: T,
    /// Its revision, for compare-and-set updates.
    pub revision: u64,
}

/// A key-value bucket of JSON records.
pub struct JsonBucket {
    bucket: String,
    store: kv::Store,
    stream: jetstream::stream::Stream,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// One change of a watched bucket.
#[derive(Debug, Clone)]
pub struct Change<T> {
    /// The key.
    pub key: String,
    /// The record as it is now; `None` when deleted, purged or unreadable.
    pub record: Option<T>,
    /// The bucket revision of the change.
    pub revision: u64,
    /// Changes still behind this one when the watch started (0: caught up).
    pub behind: u64,
}

impl JsonBucket {
    pub(crate) async fn open(js: &jetstream::Context, bucket: &str) -> Result<Self, BusError> {
        let store = js.get_key_value(bucket).await.map_err(unavailable)?;
        let stream = js.get_stream(format!("KV_{bucket}")).await.map_err(unavailable)?;
        Ok(Self {
            bucket: bucket.to_owned(),
            store,
            stream,
        })
    }

    /// Every key of the bucket.
    pub async fn keys(&self) -> Result<Vec<String>, BusError> {
        use futures::TryStreamExt;
        self.store
            .keys()
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)
    }

    /// The keys under `filter` (wildcards allowed) that hold a record (deleted ones
    /// included until the bucket compacts them: read each before trusting it), from one
    /// listing of the bucket stream's subjects.
    pub async fn keys_under(&self, filter: &str) -> Result<Vec<String>, BusError> {
        use futures::TryStreamExt;
        let prefix = format!("$KV.{}.", self.bucket);
        let subjects: Vec<(String, usize)> = self
            .stream
            .info_with_subjects(format!("{prefix}{filter}"))
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        Ok(subjects
            .into_iter()
            .filter_map(|(s, _)| s.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }

    /// The current record of every key under `filter` (wildcards allowed), then every
    /// change, as typed records.
    pub async fn watch<T: DeserializeOwned>(
        &self,
        filter: &str,
    ) -> Result<impl futures::Stream<Item = Result<Change<T>, BusError>> + Unpin + use<T>, BusError> {
        use futures::StreamExt;
        let watch = self.store.watch_with_history(filter).await.map_err(unavailable)?;
        Ok(watch.map(|e| {
            let e = e.map_err(unavailable)?;
            let record = match e.operation {
                kv::Operation::Put => serde_json::from_slice(&e.value).ok(),
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            Ok(Change {
                key: e.key,
                record,
                revision: e.revision,
                behind: e.delta,
            })
        }))
    }

    /// Reads a record from the stream leader (`STREAM.MSG.GET`), never a lagging replica.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>, BusError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&format!("$KV.{}.{key}", self.bucket))
            .await
        {
            Ok(m) if m.payload.is_empty() => Ok(None),
            Ok(m) => {
                let record = serde_json::from_slice(&m.payload)
                    .map_err(|e| BusError::Other(format!("{} record: {e}", self.bucket)))?;
                Ok(Some(Versioned {
                    record,
                    revision: m.sequence,
                }))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Reads a record by a direct get of its own subject, which NATS permissions can scope
    /// to a key prefix (used where a reader may see only some keys).
    pub async fn get_scoped<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, BusError> {
        match self.store.get(key).await {
            Ok(Some(v)) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| BusError::Other(format!("{} record: {e}", self.bucket))),
            Ok(None) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Stores `record` under `key` unless the key already holds one (which is kept);
    /// returns the revision it stored it at, or `None` when the key held a record.
    pub async fn create_new<T: Serialize>(&self, key: &str, record: &T) -> Result<Option<u64>, BusError> {
        let value = serde_json::to_vec(record).map_err(|e| BusError::Other(e.to_string()))?;
        match self.store.create(key, value.into()).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Stores `record` under `key` unless the key already holds one (which is kept): one
    /// round trip, for records written once.
    pub async fn create_if_absent<T: Serialize>(&self, key: &str, record: &T) -> Result<(), BusError> {
        self.create_new(key, record).await.map(|_| ())
    }

    /// Stores `record` under `key` unless the key holds any message (a record, or a delete
    /// or purge marker): one round trip whatever the outcome, where
    /// [`create_new`](Self::create_new) reads the key again after a refusal to tell a
    /// record from a marker. For buckets whose keys are never deleted, only expired (no
    /// marker stays), where the two mean the same; returns whether it stored `record`.
    pub async fn create_unless_present<T: Serialize>(&self, key: &str, record: &T) -> Result<bool, BusError> {
        Ok(self.update(key, record, 0).await?.is_some())
    }

    /// Purges `key`: every revision of it is removed, a purge marker stays.
    pub async fn purge(&self, key: &str) -> Result<(), BusError> {
        self.store.purge(key).await.map_err(unavailable)
    }

    /// Removes every record of `key` by a purge request to the bucket's stream, which
    /// leaves no marker: the way to empty a key in a bucket that refuses rollups (and so
    /// [`purge`](Self::purge)) and second records, before a record of its own goes there.
    pub async fn remove(&self, key: &str) -> Result<(), BusError> {
        self.stream
            .purge()
            .filter(format!("$KV.{}.{key}", self.bucket))
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// Deletes `key` (a delete marker; watchers see it go).
    pub async fn delete(&self, key: &str) -> Result<(), BusError> {
        self.store.delete(key).await.map_err(unavailable)
    }

    /// Stores `record` under `key`, whatever was there (for records one writer owns).
    pub async fn put<T: Serialize>(&self, key: &str, record: &T) -> Result<u64, BusError> {
        let value = serde_json::to_vec(record).map_err(|e| BusError::Other(e.to_string()))?;
        self.store.put(key, value.into()).await.map_err(unavailable)
    }

    /// Replaces the record at `key` with `record` only if the key is still at `revision`;
    /// returns the new revision, or `None` when someone else wrote it in between.
    pub async fn update<T: Serialize>(&self, key: &str, record: &T, revision: u64) -> Result<Option<u64>, BusError> {
        let value = serde_json::to_vec(record).map_err(|e| BusError::Other(e.to_string()))?;
        match self.store.update(key, value.into(), revision).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Applies `change` with compare-and-set, retrying on conflict. When the key is absent
    /// it starts from `init()` if that gives a record, else returns `None`. `change`
    /// returns whether it changed anything; nothing is written when it did not.
    pub async fn modify<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        init: impl Fn() -> Option<T>,
        change: impl FnMut(&mut T) -> bool,
    ) -> Result<Option<Versioned<T>>, BusError> {
        self.modify_from(key, None, init, change).await
    }

    /// [`modify`](Self::modify) starting from `read`, the record as the caller last read
    /// it (`Some(None)`: read as absent), which saves the first read; a conflict reads
    /// again as usual.
    pub async fn modify_from<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        mut read: Option<Option<Versioned<T>>>,
        init: impl Fn() -> Option<T>,
        mut change: impl FnMut(&mut T) -> bool,
    ) -> Result<Option<Versioned<T>>, BusError> {
        for attempt in 0..64u32 {
            let current = match read.take() {
                Some(known) => known,
                None => self.get::<T>(key).await?,
            };
            let (mut record, revision) = match current {
                Some(c) => (c.record, Some(c.revision)),
                None => match init() {
                    Some(r) => (r, None),
                    None => return Ok(None),
                },
            };
            let changed = change(&mut record);
            if let (false, Some(revision)) = (changed, revision) {
                return Ok(Some(Versioned { record, revision }));
            }
            let value = serde_json::to_vec(&record).map_err(|e| BusError::Other(e.to_string()))?;
            let written = match revision {
                Some(rev) => self.store.update(key, value.into(), rev).await.map_err(|e| {
                    if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                        None
                    } else {
                        Some(unavailable(e))
                    }
                }),
                None => self.store.create(key, value.into()).await.map_err(|e| {
                    if e.kind() == kv::CreateErrorKind::AlreadyExists {
                        None
                    } else {
                        Some(unavailable(e))
                    }
                }),
            };
            match written {
                Ok(revision) => return Ok(Some(Versioned { record, revision })),
                Err(Some(e)) => return Err(e),
                // another writer got there first: read again and re-apply
                Err(None) => tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)))).await,
            }
        }
        Err(BusError::Unavailable(format!("{} record contended", self.bucket)))
    }
}
