//! The audit's hash chain and checkpoints in NATS: reading audit records with their
//! sequence and time, appending links so that no two writers can fork the chain (each
//! message of links is published expecting the chain stream's last sequence to be the one
//! holding their predecessor), and the signed checkpoints.
//!
//! One message of AUDIT_CHAIN holds up to [`LINKS_PER_MESSAGE`] consecutive links, as a
//! JSON array (a message written before session 12 holds one link, as an object): the
//! links and what they prove are the same whichever way they are stored, and the chain
//! costs one stored message per batch of audit records instead of one per record.

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

/// Links per message of the chain stream (~350 bytes each: well inside NATS's 1 MB).
pub const LINKS_PER_MESSAGE: usize = 500;

/// The chain's last link and where it is stored.
#[derive(Debug, Clone)]
pub struct ChainTail {
    /// The link.
    pub link: ChainLink,
    /// The chain stream's sequence of the message holding it.
    pub seq: u64,
}

/// The links one message of the chain stream holds: an array, or one link (as written
/// before session 12).
fn links_of(payload: &[u8]) -> Result<Vec<ChainLink>, BusError> {
    let parsed = if payload.first() == Some(&b'[') {
        serde_json::from_slice(payload)
    } else {
        serde_json::from_slice(payload).map(|l| vec![l])
    };
    parsed.map_err(|e| BusError::Other(format!("chain link: {e}")))
}

/// The records of `s` from `from` on (at most `max`) through an ordered consumer `name`.
async fn read_records(
    s: &async_nats::jetstream::stream::Stream,
    name: &str,
    from: u64,
    max: usize,
) -> Result<Vec<StoredRecord>, BusError> {
    let mut consumer = s
        .create_consumer(pull::OrderedConfig {
            name: Some(name.to_owned()),
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
        let s = self.js.get_stream(stream).await.map_err(unavailable)?;
        let name = crate::reader_name();
        let read = read_records(&s, &name, from, max).await;
        // the reader goes at once: the server keeps an idle ordered consumer for 30 s, and
        // every consumer of a stream is woken by each message stored in it (the audit
        // chain reads AUDIT five times a second, which left ~150 of them on AUDIT)
        if let Err(e) = s.delete_consumer(&name).await {
            tracing::debug!(stream, error = %e, "reader not removed; it expires by itself");
        }
        read
    }

    /// The last message of `stream` with its sequence, if any: the stream's state comes
    /// with the stream lookup, so this is two round trips.
    async fn last_message(&self, stream: &str) -> Result<Option<(u64, bytes::Bytes)>, BusError> {
        let s = self.js.get_stream(stream).await.map_err(unavailable)?;
        let last = s.cached_info().state.last_sequence;
        if last == 0 {
            return Ok(None);
        }
        let m = s.get_raw_message(last).await.map_err(unavailable)?;
        Ok(Some((last, m.payload)))
    }

    /// The last message of `stream` as JSON (`what` names it in errors), if any.
    async fn last_json<T: serde::de::DeserializeOwned>(&self, stream: &str, what: &str) -> Result<Option<T>, BusError> {
        self.last_message(stream)
            .await?
            .map(|(_, payload)| serde_json::from_slice(&payload).map_err(|e| BusError::Other(format!("{what}: {e}"))))
            .transpose()
    }

    /// Every message of `stream` as JSON, in order.
    async fn all_json<T: serde::de::DeserializeOwned>(&self, stream: &str, what: &str) -> Result<Vec<T>, BusError> {
        self.stored_records(stream, 1, usize::MAX)
            .await?
            .iter()
            .map(|r| serde_json::from_slice(&r.payload).map_err(|e| BusError::Other(format!("{what}: {e}"))))
            .collect()
    }

    /// The chain's last link, if any, with the chain stream's sequence of the message
    /// holding it.
    pub async fn chain_tail(&self) -> Result<Option<ChainTail>, BusError> {
        let Some((seq, payload)) = self.last_message(STREAM_CHAIN).await? else {
            return Ok(None);
        };
        Ok(links_of(&payload)?.pop().map(|link| ChainTail { link, seq }))
    }

    /// Appends `links` (continuing `tail`, link `n` after link `n - 1`), up to
    /// [`LINKS_PER_MESSAGE`] per message: each message expects the chain stream's last
    /// sequence to be the one before it, so a concurrent writer makes this fail with
    /// [`AppendError::Conflict`] rather than fork the chain. Returns the new tail.
    pub async fn append_links(
        &self,
        tail: Option<&ChainTail>,
        links: Vec<ChainLink>,
    ) -> Result<Option<ChainTail>, AppendError> {
        let mut seq = tail.map_or(0, |t| t.seq);
        let mut acks = Vec::new();
        for block in links.chunks(LINKS_PER_MESSAGE) {
            let body = serde_json::to_vec(block).map_err(|e| AppendError::Bus(BusError::Other(e.to_string())))?;
            let publish = PublishMessage::build()
                .payload(body.into())
                .message_id(format!("link:{}", block[0].index))
                .expected_last_sequence(seq);
            seq += 1;
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
        Ok(links.into_iter().last().map(|link| ChainTail { link, seq }))
    }

    /// Every link, in order.
    pub async fn chain_links(&self) -> Result<Vec<ChainLink>, BusError> {
        let mut links = Vec::new();
        for r in self.stored_records(STREAM_CHAIN, 1, usize::MAX).await? {
            links.extend(links_of(&r.payload)?);
        }
        Ok(links)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_message_of_the_chain_holds_an_array_of_links_or_one_link_as_written_before() {
        let first = ChainLink::next(None, 1, "henvis.audit.rules", b"{}");
        let second = ChainLink::next(Some(&first), 2, "henvis.audit.rules", b"{\"n\":2}");
        let block = serde_json::to_vec(&[first.clone(), second.clone()]).unwrap();
        assert_eq!(links_of(&block).unwrap(), vec![first.clone(), second]);
        let single = serde_json::to_vec(&first).unwrap();
        assert_eq!(links_of(&single).unwrap(), vec![first]);
        assert!(links_of(b"{\"index\":1}").is_err());
        assert!(links_of(b"[{\"index\":1}]").is_err());
        // a full message stays well inside NATS's 1 MB payload limit
        let mut links = vec![ChainLink::next(
            None,
            1,
            &format!("henvis.audit.decision.{}", "c".repeat(36)),
            b"x",
        )];
        while links.len() < LINKS_PER_MESSAGE {
            let l = ChainLink::next(links.last(), links.len() as u64 + 1, &links[0].subject, b"x");
            links.push(l);
        }
        let len = serde_json::to_vec(&links).unwrap().len();
        assert!(len < 512 * 1024, "{len} bytes");
    }
}
