//! Dead letters: a delivery that an agency's system was offered the configured number of
//! times without acknowledging it is never silently dropped. JetStream announces that it
//! gave up (the max-deliveries advisory); one sector service (a queue group) moves the
//! delivery to the DEAD stream, removes it from the inbox and records an administrator
//! alert in the audit. Ids only in the alert.

use std::sync::Arc;

use futures::StreamExt;
use henvis_bus::{MAX_DELIVERIES_ADVISORY, STREAM_OUT, audit_admin_subject, dead_subject};
use henvis_domain::AgencyId;
use henvis_proto::henvis::broker::v1::Delivery;
use prost::Message;

use crate::{ApiError, Core};

#[derive(serde::Deserialize)]
struct Advisory {
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

/// Handles max-deliveries advisories until `shutdown`.
pub(crate) async fn run(core: Arc<Core>, shutdown: impl std::future::Future<Output = ()> + Send) {
    let mut advisories = match core
        .bus
        .client()
        .queue_subscribe(MAX_DELIVERIES_ADVISORY, "henvis-dead-letters".into())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "dead-letter advisories unavailable");
            return;
        }
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            m = advisories.next() => {
                let Some(m) = m else { return };
                match serde_json::from_slice::<Advisory>(&m.payload) {
                    Ok(a) => {
                        if let Err(e) = dead_letter(&core, &a).await {
                            tracing::error!(seq = a.stream_seq, error = %e, "dead letter not moved; it stays in the inbox stream");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable max-deliveries advisory"),
                }
            }
        }
    }
}

async fn dead_letter(core: &Core, a: &Advisory) -> Result<(), ApiError> {
    let Some(agency) = a.consumer.strip_prefix("inbox-").and_then(|s| AgencyId::parse(s).ok()) else {
        return Ok(());
    };
    let out = core
        .bus
        .jetstream()
        .get_stream(STREAM_OUT)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let Ok(m) = out.get_raw_message(a.stream_seq).await else {
        return Ok(()); // already moved by an earlier advisory
    };
    let mt = m.subject.split('.').nth(3).unwrap_or("unknown").to_owned();
    let delivery = Delivery::decode(m.payload.clone()).ok();
    let event_id = delivery
        .as_ref()
        .and_then(|d| d.envelope.as_ref())
        .map(|e| e.event_id.clone())
        .unwrap_or_default();
    core.bus
        .publish_stored(dead_subject(&agency, &mt), &format!("dead:{}", a.stream_seq), m.payload)
        .await?;
    let alert = serde_json::json!({
        "kind": "delivery_dead_lettered",
        "agency": agency.as_str(),
        "event_id": event_id,
        "message_type": mt,
        "out_sequence": a.stream_seq,
        "attempts": a.deliveries,
    });
    core.bus
        .publish_stored(
            audit_admin_subject(),
            &format!("dead-alert:{}", a.stream_seq),
            alert.to_string().into(),
        )
        .await?;
    out.delete_message(a.stream_seq)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    tracing::warn!(agency = %agency, event_id = %event_id, attempts = a.deliveries, "delivery moved to the dead-letter stream");
    Ok(())
}
