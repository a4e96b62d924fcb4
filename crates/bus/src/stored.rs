//! Stored messages by sequence (the router's expiry scan, dead letters and reconciliation;
//! only the router may read IN and OUT this way), the max-deliveries advisories, and the
//! published rule set.

use std::time::SystemTime;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::{BUCKET_RULES, Bus, BusError, MAX_DELIVERIES_ADVISORY, RULES_KEY};

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// A message read by its sequence.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: Bytes,
    /// When it was stored.
    pub stored_at: SystemTime,
}

/// JetStream gave up offering a delivery to an agency's inbox.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct MaxDeliveries {
    /// The inbox consumer.
    pub consumer: String,
    /// The delivery's sequence in OUT.
    pub stream_seq: u64,
    /// How often it was offered.
    pub deliveries: u64,
}

impl Bus {
    /// The first and last sequence stored in `stream` (an empty range, first above last,
    /// for an empty stream).
    pub async fn stored_range(&self, stream: &str) -> Result<(u64, u64), BusError> {
        // the stream's state comes with the lookup: one round trip
        let s = self.js.get_stream(stream).await.map_err(unavailable)?;
        let state = s.cached_info().state.clone();
        if state.messages == 0 {
            return Ok((state.last_sequence + 1, state.last_sequence));
        }
        Ok((state.first_sequence.max(1), state.last_sequence))
    }

    /// The message at `sequence` of `stream`, from the leader; `None` if there is none
    /// (deleted, expired, or never stored).
    pub async fn stored_message(&self, stream: &str, sequence: u64) -> Result<Option<StoredMessage>, BusError> {
        if sequence == 0 {
            return Ok(None);
        }
        let s = self.js.get_stream(stream).await.map_err(unavailable)?;
        match s.get_raw_message(sequence).await {
            Ok(m) => Ok(Some(StoredMessage {
                subject: m.subject.to_string(),
                payload: m.payload,
                stored_at: m.time.into(),
            })),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Removes the message at `sequence` of `stream` (a dead letter from OUT, once kept in
    /// DEAD). Refused by NATS for IN and AUDIT, for everyone.
    pub async fn delete_stored(&self, stream: &str, sequence: u64) -> Result<(), BusError> {
        let s = self.js.get_stream(stream).await.map_err(unavailable)?;
        s.delete_message(sequence).await.map_err(unavailable)?;
        Ok(())
    }

    /// JetStream's max-deliveries advisories for inbox consumers, each to one of the
    /// subscribers in the queue group `group`. An unreadable advisory is logged and skipped.
    pub async fn max_deliveries_advisories(
        &self,
        group: &str,
    ) -> Result<impl Stream<Item = MaxDeliveries> + Unpin + use<>, BusError> {
        let subscription = self
            .client
            .queue_subscribe(MAX_DELIVERIES_ADVISORY, group.to_owned())
            .await
            .map_err(unavailable)?;
        Ok(subscription.filter_map(|m| {
            futures::future::ready(match serde_json::from_slice::<MaxDeliveries>(&m.payload) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable max-deliveries advisory");
                    None
                }
            })
        }))
    }

    /// The published rule set's text, if one was published.
    pub async fn published_rules(&self) -> Result<Option<String>, BusError> {
        let store = self.js.get_key_value(BUCKET_RULES).await.map_err(unavailable)?;
        Ok(store
            .get(RULES_KEY)
            .await
            .map_err(unavailable)?
            .map(|t| String::from_utf8_lossy(&t).into_owned()))
    }

    /// Every approved rule-set proposal, the latest approval first: what a router falls back
    /// on, newest first, when it cannot load the live set.
    pub async fn approved_rule_sets(&self) -> Result<Vec<henvis_domain::Proposal>, BusError> {
        let mut approved: Vec<henvis_domain::Proposal> = self
            .latest_values::<henvis_domain::Proposal>(crate::BUCKET_GOVERNANCE)
            .await?
            .into_iter()
            .filter(|(k, p)| k.starts_with("proposal.") && p.approved_at().is_some())
            .map(|(_, p)| p)
            .collect();
        approved.sort_by_key(|p| std::cmp::Reverse((p.approved_at(), p.id)));
        Ok(approved)
    }

    /// Publishes a rule set's text; returns the bucket revision.
    pub async fn put_rules(&self, text: &str) -> Result<u64, BusError> {
        let store = self.js.get_key_value(BUCKET_RULES).await.map_err(unavailable)?;
        store.put(RULES_KEY, text.to_owned().into()).await.map_err(unavailable)
    }

    /// Every rule set published from now on, as text.
    pub async fn watch_rules(&self) -> Result<impl Stream<Item = Result<String, BusError>> + Unpin + use<>, BusError> {
        let store = self.js.get_key_value(BUCKET_RULES).await.map_err(unavailable)?;
        let watch = store.watch(RULES_KEY).await.map_err(unavailable)?;
        Ok(watch.map(|e| {
            e.map(|e| String::from_utf8_lossy(&e.value).into_owned())
                .map_err(unavailable)
        }))
    }
}

impl Bus {
    /// Deliveries waiting in OUT for each agency that has any (OUT is a work queue: what
    /// is stored is unacknowledged), with when the oldest of them was stored. One listing
    /// of OUT's subjects, then one read per agency with a backlog.
    pub async fn inbox_backlog(&self) -> Result<Vec<(String, u64, SystemTime)>, BusError> {
        let stream = self.js.get_stream(crate::STREAM_OUT).await.map_err(unavailable)?;
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        let mut subjects = stream
            .info_with_subjects(format!("{}.>", crate::names::OUT_PREFIX))
            .await
            .map_err(unavailable)?;
        while let Some(entry) = subjects.next().await {
            let (subject, count) = entry.map_err(unavailable)?;
            if let Some((agency, _)) = crate::names::outbound_parts(&subject) {
                *counts.entry(agency.to_owned()).or_default() += u64::try_from(count).unwrap_or(0);
            }
        }
        let mut out = Vec::with_capacity(counts.len());
        for (agency, count) in counts.into_iter().filter(|(_, n)| *n > 0) {
            let filter = format!("{}.{agency}.>", crate::names::OUT_PREFIX);
            let oldest = match stream.get_first_raw_message_by_subject(&filter, 0).await {
                Ok(m) => m.time.into(),
                // acknowledged meanwhile
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
                Err(e) => return Err(unavailable(e)),
            };
            out.push((agency, count, oldest));
        }
        Ok(out)
    }
}
