//! Dead letters: a delivery that an agency's system was offered the configured number of
//! times without acknowledging it is never silently dropped. JetStream announces that it
//! gave up (the max-deliveries advisory); one router (a queue group) moves the delivery to
//! the DEAD stream, removes it from the inbox and records an administrator alert in the
//! audit. Ids only in the alert. The router does this, not the sector services: reading
//! OUT by sequence reads every agency's deliveries, which no sector service may.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use henvis_bus::{Bus, MaxDeliveries, ROUTER_WRITER, STREAM_OUT, dead_subject, outbound_parts};
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

/// Handles max-deliveries advisories until `shutdown`.
pub(crate) async fn run(core: Arc<Core>, shutdown: impl std::future::Future<Output = ()> + Send) {
    let mut advisories = match core.bus.max_deliveries_advisories("henvis-dead-letters").await {
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
            a = advisories.next() => {
                let Some(a) = a else { return };
                if let Err(e) = dead_letter(&core, &a).await {
                    tracing::error!(seq = a.stream_seq, error = %e, "dead letter not moved; it stays in the inbox stream");
                }
            }
        }
    }
}

async fn dead_letter(core: &Core, a: &MaxDeliveries) -> Result<(), ApiError> {
    let Some(agency) = a.consumer.strip_prefix("inbox-").and_then(|s| AgencyId::parse(s).ok()) else {
        return Ok(());
    };
    let Some(m) = core.bus.stored_message(STREAM_OUT, a.stream_seq).await? else {
        return Ok(()); // already moved by an earlier advisory
    };
    let mt = outbound_parts(&m.subject).map_or("unknown", |(_, mt)| mt).to_owned();
    // the event id for the alert (none when the case was erased meanwhile)
    let delivery = match core.bus.open(&m.payload).await {
        Ok(o) => Delivery::decode(o.plaintext.as_slice()).ok(),
        Err(_) => None,
    };
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
    core.bus.delete_stored(STREAM_OUT, a.stream_seq).await?;
    henvis_runtime::metrics::metrics()
        .dead_letters
        .get_or_create(&henvis_runtime::metrics::DeadLetterLabels {
            reason: "max_deliveries".into(),
        })
        .inc();
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
    let (first, last) = core.bus.stored_range(STREAM_OUT).await?;
    let warn_age = core.retention.saturating_sub(core.expiry_warning);
    let now = std::time::SystemTime::now();
    for seq in first..=last {
        let Some(m) = core.bus.stored_message(STREAM_OUT, seq).await? else {
            continue;
        };
        let age = now.duration_since(m.stored_at).unwrap_or_default();
        if age < warn_age {
            break;
        }
        let agency = outbound_parts(&m.subject)
            .map(|(a, _)| a)
            .unwrap_or_default()
            .to_owned();
        let Ok(opened) = core.bus.open(&m.payload).await else {
            continue; // its case was erased: nothing of it is waiting for anyone
        };
        let event_id = Delivery::decode(opened.plaintext.as_slice())
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
