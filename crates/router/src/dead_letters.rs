//! Dead letters: a delivery that an agency's system was offered the configured number of
//! times without acknowledging it is never silently dropped. JetStream announces that it
//! gave up (the max-deliveries advisory); one router (a queue group) moves the delivery to
//! the DEAD stream, removes it from the inbox and records an administrator alert in the
//! audit. Ids only in the alert. The router does this, not the sector services: reading
//! OUT by sequence reads every agency's deliveries, which no sector service may.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use henvis_bus::{Bus, MAX_DELIVERIES_ADVISORY, ROUTER_WRITER, STREAM_OUT, dead_subject};
use henvis_domain::{AgencyId, AuditRecord};
use henvis_proto::henvis::broker::v1::Delivery;
use prost::Message;

/// What the dead-letter mover and the expiry scan need.
pub(crate) struct Keeper {
    pub(crate) bus: Bus,
    /// How long deliveries are kept.
    pub(crate) retention: Duration,
    /// How long before expiry an unacknowledged delivery raises an alert.
    pub(crate) expiry_warning: Duration,
    /// How often OUT is scanned for deliveries about to expire.
    pub(crate) expiry_scan: Duration,
}

type Core = Keeper;
type ApiError = anyhow::Error;

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
        .map_err(anyhow::Error::from)?;
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
    let alert = AuditRecord::DeliveryDeadLettered {
        agency: agency.to_string(),
        event_id: event_id.clone(),
        message_type: mt.to_string(),
        out_sequence: a.stream_seq,
        attempts: a.deliveries,
    };
    core.bus
        .audit(ROUTER_WRITER, &format!("dead-alert:{}", a.stream_seq), &alert)
        .await?;
    out.delete_message(a.stream_seq).await.map_err(anyhow::Error::from)?;
    tracing::warn!(agency = %agency, event_id = %event_id, attempts = a.deliveries, "delivery moved to the dead-letter stream");
    Ok(())
}

/// Raises an administrator alert for every delivery still unacknowledged when it is within
/// the warning period of its expiry, until `shutdown`. OUT is in stream order, so the scan
/// stops at the first delivery too young to warn about. Every router runs it; the alerts'
/// message ids keep one per delivery.
pub(crate) async fn watch_expiry(core: Arc<Core>, shutdown: impl std::future::Future<Output = ()> + Send) {
    let mut tick = tokio::time::interval(core.expiry_scan);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {
                if let Err(e) = warn_expiring(&core).await {
                    tracing::warn!(error = %e, "expiry scan failed; retrying next time");
                }
            }
        }
    }
}

async fn warn_expiring(core: &Core) -> Result<(), ApiError> {
    let unavailable = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let out = core
        .bus
        .jetstream()
        .get_stream(STREAM_OUT)
        .await
        .map_err(|e| unavailable(&e))?;
    let state = out.get_info().await.map_err(|e| unavailable(&e))?.state;
    let warn_age = core.retention.saturating_sub(core.expiry_warning);
    let now = std::time::SystemTime::now();
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(m) = out.get_raw_message(seq).await else {
            continue;
        };
        let stored: std::time::SystemTime = m.time.into();
        let age = now.duration_since(stored).unwrap_or_default();
        if age < warn_age {
            break;
        }
        let agency = m.subject.split('.').nth(2).unwrap_or_default().to_owned();
        let event_id = Delivery::decode(m.payload)
            .ok()
            .and_then(|d| d.envelope)
            .map(|e| e.event_id)
            .unwrap_or_default();
        let alert = AuditRecord::DeliveryExpiring {
            agency,
            event_id,
            out_sequence: seq,
            age_secs: age.as_secs(),
            expires_in_secs: core.retention.saturating_sub(age).as_secs(),
        };
        core.bus
            .audit(ROUTER_WRITER, &format!("expiring:{seq}"), &alert)
            .await?;
    }
    Ok(())
}
