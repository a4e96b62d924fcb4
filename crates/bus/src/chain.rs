//! The audit's hash chain and checkpoints in NATS: reading audit records with their
//! sequence and time, appending links so that no two writers can fork the chain (each link
//! is published expecting the chain stream's last sequence to be its predecessor's), and
//! the signed checkpoints.

use async_nats::jetstream::{
    consumer::{DeliverPolicy, pull},
    context::PublishErrorKind,
    message::PublishMessage,
};
use futures::StreamExt;
use henvis_domain::{ChainLink, Checkpoint, StoredRecord};

use crate::{Bus, BusError, CHAIN_SUBJECT, CHECKPOINT_SUBJECT, STREAM_CHAIN, STREAM_CHECKPOINTS};

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// Appending links failed because another writer appended first.
#[derive(Debug)]
pub enum AppendError {
    /// The chain moved on: read its tail again.
    Conflict,
    /// NATS failed.
    Bus(BusError),
}

impl Bus {
    /// The messages of `stream` from sequence `from` on (at most `max`), with sequence and
    /// time, in order.
    pub async fn stored_records(&self, stream: &str, from: u64, max: usize) -> Result<Vec<StoredRecord>, BusError> {
        let mut consumer = self
            .js
            .get_stream(stream)
            .await
            .map_err(unavailable)?
            .create_consumer(pull::OrderedConfig {
                name: Some(crate::reader_name()),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let pending = consumer.info().await.map_err(unavailable)?.num_pending;
        let mut out = Vec::with_capacity(usize::try_from(pending).unwrap_or(0).min(max));
        if pending == 0 || max == 0 {
            return Ok(out);
        }
        // an ordered consumer recreated before it delivered anything (a stream leader
        // change) starts again from the stream's first message (async-nats resets to
        // DeliverPolicy::All): only records from `from` on, each once, in order, are kept
        let mut next = from.max(1);
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        while let Some(m) = messages.next().await {
            let m = m.map_err(unavailable)?;
            let info = m.info().map_err(unavailable)?;
            if info.stream_sequence < next {
                if info.pending == 0 {
                    break;
                }
                continue;
            }
            next = info.stream_sequence + 1;
            out.push(StoredRecord {
                seq: info.stream_sequence,
                at: info.published.unix_timestamp(),
                subject: m.subject.to_string(),
                payload: m.payload.to_vec(),
            });
            if info.pending == 0 || out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// The last message of `stream` as JSON (`what` names it in errors), if any: the
    /// stream's state comes with the stream lookup, so this is two round trips.
    async fn last_json<T: serde::de::DeserializeOwned>(&self, stream: &str, what: &str) -> Result<Option<T>, BusError> {
        let s = self.js.get_stream(stream).await.map_err(unavailable)?;
        let last = s.cached_info().state.last_sequence;
        if last == 0 {
            return Ok(None);
        }
        let m = s.get_raw_message(last).await.map_err(unavailable)?;
        serde_json::from_slice(&m.payload)
            .map(Some)
            .map_err(|e| BusError::Other(format!("{what}: {e}")))
    }

    /// Every message of `stream` as JSON, in order.
    async fn all_json<T: serde::de::DeserializeOwned>(&self, stream: &str, what: &str) -> Result<Vec<T>, BusError> {
        self.stored_records(stream, 1, usize::MAX)
            .await?
            .iter()
            .map(|r| serde_json::from_slice(&r.payload).map_err(|e| BusError::Other(format!("{what}: {e}"))))
            .collect()
    }

    /// The chain's last link, if any.
    pub async fn chain_tail(&self) -> Result<Option<ChainLink>, BusError> {
        self.last_json(STREAM_CHAIN, "chain link").await
    }

    /// Appends `links` (continuing the tail, link `n` at chain sequence `n`): each expects
    /// its predecessor to be the chain's last, so a concurrent writer makes this fail with
    /// [`AppendError::Conflict`] rather than fork the chain.
    pub async fn append_links(&self, links: &[ChainLink]) -> Result<(), AppendError> {
        let mut acks = Vec::with_capacity(links.len());
        for l in links {
            let body = serde_json::to_vec(l).map_err(|e| AppendError::Bus(BusError::Other(e.to_string())))?;
            let publish = PublishMessage::build()
                .payload(body.into())
                .message_id(format!("link:{}", l.index))
                .expected_last_sequence(l.index - 1);
            acks.push(
                self.js
                    .send_publish(CHAIN_SUBJECT, publish)
                    .await
                    .map_err(|e| AppendError::Bus(unavailable(e)))?,
            );
        }
        for ack in acks {
            match ack.await {
                Ok(a) if a.duplicate => return Err(AppendError::Conflict),
                Ok(_) => {}
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => return Err(AppendError::Conflict),
                Err(e) => return Err(AppendError::Bus(unavailable(e))),
            }
        }
        Ok(())
    }

    /// Every link, in order.
    pub async fn chain_links(&self) -> Result<Vec<ChainLink>, BusError> {
        self.all_json(STREAM_CHAIN, "chain link").await
    }

    /// Stores a signed checkpoint (once per covered length).
    pub async fn publish_checkpoint(&self, c: &Checkpoint) -> Result<(), BusError> {
        let body = serde_json::to_vec(c).map_err(|e| BusError::Other(e.to_string()))?;
        self.publish_stored(
            CHECKPOINT_SUBJECT.to_owned(),
            &format!("checkpoint:{}", c.index),
            body.into(),
        )
        .await
        .map(|_| ())
    }

    /// Every checkpoint, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, BusError> {
        self.all_json(STREAM_CHECKPOINTS, "checkpoint").await
    }

    /// The newest checkpoint.
    pub async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, BusError> {
        self.last_json(STREAM_CHECKPOINTS, "checkpoint").await
    }
}
