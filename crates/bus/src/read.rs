//! Reading every message of one subject, oldest first; and following one as it grows.

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use futures::StreamExt;

use crate::{Bus, BusError};

impl Bus {
    /// Every payload stored under `subject` in `stream`, oldest first.
    pub async fn read_subject(&self, stream: &str, subject: &str) -> Result<Vec<Bytes>, BusError> {
        Ok(self
            .read_messages(stream, subject)
            .await?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// Every message stored under `filter` (wildcards allowed) in `stream`, oldest first,
    /// with its subject.
    pub async fn read_messages(&self, stream: &str, subject: &str) -> Result<Vec<(String, Bytes)>, BusError> {
        self.read_from(stream, subject, DeliverPolicy::All).await
    }

    /// Every payload stored under `filter` in `stream` at or after `since_unix` (seconds),
    /// oldest first: the server skips what is older.
    pub async fn read_subject_since(
        &self,
        stream: &str,
        filter: &str,
        since_unix: i64,
    ) -> Result<Vec<Bytes>, BusError> {
        let start_time = time::OffsetDateTime::from_unix_timestamp(since_unix)
            .map_err(|e| BusError::Other(format!("start time: {e}")))?;
        Ok(self
            .read_from(stream, filter, DeliverPolicy::ByStartTime { start_time })
            .await?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    async fn read_from(
        &self,
        stream: &str,
        subject: &str,
        deliver: DeliverPolicy,
    ) -> Result<Vec<(String, Bytes)>, BusError> {
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        let mut consumer = self.ordered(stream, subject, deliver).await?;
        let pending = consumer.info().await.map_err(|e| unavailable(&e))?.num_pending;
        let mut out = Vec::with_capacity(pending as usize);
        if pending == 0 {
            return Ok(out);
        }
        // an ordered consumer that is recreated before it delivered anything (a stream
        // leader change) starts again from the stream's first message: what is before the
        // start, or delivered already, is skipped
        let since = match deliver {
            DeliverPolicy::ByStartTime { start_time } => Some(start_time),
            _ => None,
        };
        let mut last = 0;
        let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
        while let Some(m) = messages.next().await {
            let m = m.map_err(|e| unavailable(&e))?;
            let info = m.info().map_err(|e| unavailable(&e))?;
            let (seq, left) = (info.stream_sequence, info.pending);
            if seq > last && since.is_none_or(|t| info.published >= t) {
                last = seq;
                out.push((m.subject.to_string(), m.payload.clone()));
            }
            if left == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// A fresh ordered consumer of `filter` (wildcards allowed) in `stream`, from where
    /// `deliver` says.
    async fn ordered(
        &self,
        stream: &str,
        filter: &str,
        deliver: DeliverPolicy,
    ) -> Result<async_nats::jetstream::consumer::Consumer<pull::OrderedConfig>, BusError> {
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        self.jetstream()
            .get_stream(stream)
            .await
            .map_err(|e| unavailable(&e))?
            .create_consumer(pull::OrderedConfig {
                name: Some(crate::reader_name()),
                filter_subject: filter.to_owned(),
                deliver_policy: deliver,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))
    }

    /// Follows `filter` in `stream`: how many messages are stored now, then each of them
    /// and every later one, in order.
    pub async fn follow(
        &self,
        stream: &str,
        filter: &str,
    ) -> Result<
        (
            u64,
            impl futures::Stream<Item = Result<Followed, BusError>> + Unpin + use<>,
        ),
        BusError,
    > {
        let consumer = self.ordered(stream, filter, DeliverPolicy::All).await?;
        let stored = consumer.cached_info().num_pending;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok((
            stored,
            messages.map(|m| {
                let m = m.map_err(|e| BusError::Unavailable(e.to_string()))?;
                let info = m.info().map(|i| (i.stream_sequence, i.pending)).unwrap_or((0, 0));
                Ok(Followed {
                    subject: m.subject.to_string(),
                    payload: m.payload.clone(),
                    sequence: info.0,
                    caught_up: info.1 == 0,
                })
            }),
        ))
    }
}

/// A message of a followed subject.
#[derive(Debug, Clone)]
pub struct Followed {
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: Bytes,
    /// Its stream sequence.
    pub sequence: u64,
    /// Whether it is the last message stored when it was read.
    pub caught_up: bool,
}
