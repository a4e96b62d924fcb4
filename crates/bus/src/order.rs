//! Per-case routing order across router replicas: an event is routed only when every
//! earlier event of its case in IN has been routed.

use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use henvis_domain::CaseId;

use crate::{BUCKET_ORDER, Bus, BusError, STREAM_IN, inbound_case_filter};

impl Bus {
    async fn in_stream(&self) -> Result<&Stream, BusError> {
        self.in_stream
            .get_or_try_init(|| async {
                self.js
                    .get_stream(STREAM_IN)
                    .await
                    .map_err(|e| BusError::Unavailable(e.to_string()))
            })
            .await
    }

    async fn order_bucket(&self) -> Result<&crate::JsonBucket, BusError> {
        self.order
            .get_or_try_init(|| crate::JsonBucket::open(&self.js, BUCKET_ORDER))
            .await
    }

    /// Whether the event at IN sequence `sequence` is the oldest of `case` not yet routed,
    /// read from the stream leader: `Some` (its turn, with the routed mark as read, for
    /// [`mark_routed`](Self::mark_routed)), or `None` when an earlier event of the case
    /// waits (with this router or another) and this one must wait for it.
    pub async fn turn_of_case(&self, case: &CaseId, sequence: u64) -> Result<Option<CaseTurn>, BusError> {
        let mark = self.order_bucket().await?.get::<u64>(&case.to_string()).await?;
        let through = mark.as_ref().map_or(0, |v| v.record);
        let turn = Some(CaseTurn(mark));
        if sequence <= through {
            return Ok(turn); // routed before (a redelivery): routing again changes nothing
        }
        let oldest = self
            .in_stream()
            .await?
            .raw_message_builder()
            .sequence(through + 1)
            .next_by_subject(inbound_case_filter(case))
            .send()
            .await;
        match oldest {
            Ok(m) if m.sequence < sequence => Ok(None),
            Ok(_) => Ok(turn),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(turn),
            Err(e) => Err(BusError::Unavailable(e.to_string())),
        }
    }

    /// Records that every event of `case` up to IN sequence `sequence` has been routed,
    /// starting from the mark read for its turn (one write unless the mark moved since).
    pub async fn mark_routed(&self, case: &CaseId, sequence: u64, turn: CaseTurn) -> Result<(), BusError> {
        self.order_bucket()
            .await?
            .modify_from::<u64>(
                &case.to_string(),
                Some(turn.0),
                || Some(0),
                |through| {
                    let changed = sequence > *through;
                    *through = (*through).max(sequence);
                    changed
                },
            )
            .await
            .map(|_| ())
    }
}

/// An event's turn in its case's routing order: the routed mark as read when the turn was
/// given.
#[derive(Debug)]
pub struct CaseTurn(Option<crate::Versioned<u64>>);

impl CaseTurn {
    /// Whether the case's routed mark already covers IN sequence `sequence` (the event was
    /// routed before).
    pub fn covers(&self, sequence: u64) -> bool {
        self.0.as_ref().is_some_and(|m| m.record >= sequence)
    }
}
