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
    /// read from the stream leader. False means an earlier event of the case waits (with
    /// this router or another) and this one must wait for it.
    pub async fn is_next_of_case(&self, case: &CaseId, sequence: u64) -> Result<bool, BusError> {
        let through = self
            .order_bucket()
            .await?
            .get::<u64>(&case.to_string())
            .await?
            .map_or(0, |v| v.record);
        if sequence <= through {
            return Ok(true); // routed before (a redelivery): routing again changes nothing
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
            Ok(m) => Ok(m.sequence >= sequence),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(true),
            Err(e) => Err(BusError::Unavailable(e.to_string())),
        }
    }

    /// Records that every event of `case` up to IN sequence `sequence` has been routed.
    pub async fn mark_routed(&self, case: &CaseId, sequence: u64) -> Result<(), BusError> {
        self.order_bucket()
            .await?
            .modify::<u64>(
                &case.to_string(),
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
