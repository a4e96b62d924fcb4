//! The inbox stream: deliveries routed to the calling agency, from its durable consumer on
//! OUT. Each acknowledgement is recorded on its own (the sender's "received" status, then
//! the acknowledgement to NATS) and confirmed to the client when both are stored; many are
//! recorded at once, so a client acknowledging as it reads is not held up by each one's
//! round trips. An acknowledged delivery is removed from the broker; one left
//! unacknowledged when the client goes away is offered again at once.
//!
//! Every offer counts as an attempt towards the dead-letter limit, so a stream holds at
//! most `inbox_window` unacknowledged deliveries (and fetches no more than that ahead): a
//! client that drops its stream does not use up attempts of deliveries it never saw.
//!
//! Deliveries are opened (a case's key read, the first time this service sees the case)
//! several at once and offered in the order they were pulled: one delivery waiting for its
//! key holds up none pulled before it, and the order of a case's deliveries stays.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::{
    StreamExt,
    stream::{FuturesOrdered, FuturesUnordered},
};
use henvis_bus::{InboxConsumer, Offered, status_subject};
use henvis_domain::AgencyId;
use henvis_proto::henvis::broker::v1::{
    AckConfirmed, Delivery, DeliveryState, GetStatusResponse, Heartbeat, InboxRequest, InboxResponse, RecipientStatus,
    inbox_request, inbox_response,
};
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::{ApiError, Caller, Core, submit::BoxStream};

struct Open {
    message: Offered,
    sender: Option<AgencyId>,
    event_id: String,
    /// When the event was submitted (unix seconds, fractional), for the delivery latency.
    submitted_at: Option<f64>,
}

pub(crate) async fn open(
    core: Arc<Core>,
    caller: Caller,
    mut requests: Streaming<InboxRequest>,
) -> Result<BoxStream<InboxResponse>, ApiError> {
    let window = core.inbox_window;
    // offered again after ack_wait, then less and less often; after the last attempt the
    // delivery goes to the dead-letter stream (the router's dead_letters.rs)
    let puller = core
        .bus
        .inbox(
            &caller.agency,
            &InboxConsumer {
                window,
                ack_wait: core.ack_wait,
                max_attempts: core.inbox_max_attempts,
                backoff: backoff(core.ack_wait, core.inbox_max_attempts),
            },
        )
        .await?;
    let (tx, rx) = mpsc::channel::<Result<InboxResponse, Status>>(window);
    tracing::info!(agency = %caller.agency, "inbox opened");
    tokio::spawn(async move {
        let mut open: HashMap<u64, Open> = HashMap::new();
        // acknowledgements being recorded: many at once, each "received" status before its
        // acknowledgement to NATS; they still count against the window until confirmed
        let mut acking = FuturesUnordered::new();
        // deliveries pulled and being opened, several at once, offered in pull order
        let mut opening = FuturesOrdered::new();
        let mut heartbeat = tokio::time::interval(core.heartbeat);
        heartbeat.tick().await;
        // the pulls under way, each of at most what the stream could offer when it was
        // made (what each may still bring, by pull), a new one as soon as half the window
        // is free of them, so the next deliveries are on their way while these are read
        let mut pulls = futures::stream::SelectAll::new();
        let mut pulling: HashMap<u64, usize> = HashMap::new();
        let mut pull_id = 0u64;
        loop {
            let free =
                window.saturating_sub(open.len() + acking.len() + opening.len() + pulling.values().sum::<usize>());
            if free > 0 && (pulling.is_empty() || free >= window.div_ceil(2)) {
                match puller.fetch(free).await {
                    Ok(b) => {
                        pull_id += 1;
                        let id = pull_id;
                        pulling.insert(id, free);
                        pulls.push(
                            b.map(move |m| Pulled::Offer(id, Box::new(m)))
                                .chain(futures::stream::once(std::future::ready(Pulled::End(id)))),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(agency = %caller.agency, error = %e, "inbox pull failed");
                        let _ = tx
                            .send(Err(ApiError::Unavailable(
                                "the deliveries cannot be read now; open the inbox again".into(),
                            )
                            .into()))
                            .await;
                        break;
                    }
                }
            }
            tokio::select! {
                Some(p) = pulls.next(), if !pulls.is_empty() => {
                    let m = match p {
                        // the pull ended (filled, or 5 s without deliveries)
                        Pulled::End(id) => { pulling.remove(&id); continue; }
                        Pulled::Offer(id, m) => match *m {
                            Ok(m) => {
                                if let Some(n) = pulling.get_mut(&id) {
                                    *n = n.saturating_sub(1);
                                }
                                m
                            }
                            Err(e) => { tracing::warn!(agency = %caller.agency, error = %e, "inbox pull error"); continue; }
                        },
                    };
                    let core = core.clone();
                    opening.push_back(async move {
                        let opened = core.bus.open(m.payload()).await;
                        (m, opened)
                    });
                }
                Some((m, opened)) = opening.next(), if !opening.is_empty() => {
                    let info = (m.sequence(), m.attempt());
                    // sealed with its case's key; an erased case's delivery is gone for
                    // good: it leaves the inbox unread
                    let opened = match opened {
                        Ok(o) => o,
                        Err(henvis_bus::BusError::Erased(case)) => {
                            tracing::info!(agency = %caller.agency, seq = info.0, case_id = %case, "delivery of an erased case removed unread");
                            if let Err(e) = m.done().await {
                                tracing::warn!(agency = %caller.agency, seq = info.0, error = %e, "removal not confirmed");
                            }
                            continue;
                        }
                        Err(e) => {
                            // offered again once the key can be read
                            tracing::warn!(agency = %caller.agency, seq = info.0, error = %e, "delivery not opened");
                            continue;
                        }
                    };
                    let mut delivery = match Delivery::decode(opened.plaintext.as_slice()) {
                        Ok(d) => d,
                        Err(e) => {
                            // never silently drop: leave it unacked for an administrator to see
                            tracing::error!(agency = %caller.agency, seq = info.0, error = %e, "undecodable delivery");
                            continue;
                        }
                    };
                    delivery.delivery_id = info.0;
                    delivery.attempt = u32::try_from(info.1).unwrap_or(u32::MAX);
                    let env = delivery.envelope.as_ref();
                    let sender = env.and_then(|e| e.sender.as_ref()).and_then(|s| AgencyId::parse(&s.agency_id).ok());
                    let event_id = env.map(|e| e.event_id.clone()).unwrap_or_default();
                    let submitted_at = env.and_then(|e| e.submitted_at.as_ref()).map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9);
                    if info.1 > 1 {
                        henvis_runtime::metrics::metrics().redeliveries.get_or_create(&henvis_runtime::metrics::sector(core.profile.sector)).inc();
                    }
                    m.span("offer").in_scope(|| tracing::debug!(agency = %caller.agency, seq = info.0, attempt = info.1, "delivery offered"));
                    open.insert(info.0, Open { message: m, sender, event_id, submitted_at });
                    if tx.send(Ok(InboxResponse { kind: Some(inbox_response::Kind::Delivery(delivery)) })).await.is_err() {
                        break;
                    }
                }
                r = requests.next() => {
                    let Some(Ok(r)) = r else { break };
                    let Some(inbox_request::Kind::Ack(ack)) = r.kind else {
                        let _ = tx.send(Err(ApiError::field("kind", "an `ack`").into())).await;
                        break;
                    };
                    let Some(o) = open.remove(&ack.delivery_id) else {
                        let _ = tx.send(Err(ApiError::field("ack.delivery_id", format!("an open delivery of this inbox; `{}` is not", ack.delivery_id)).into())).await;
                        break;
                    };
                    let core = core.clone();
                    let agency = caller.agency.clone();
                    acking.push(async move {
                        // the acknowledgement ends the delivery's part of the referral's trace
                        let span = o.message.span("acknowledge");
                        let outcome = tracing::Instrument::instrument(acknowledge(&core, &agency, &o), span).await;
                        (ack.delivery_id, o, outcome)
                    });
                }
                Some((delivery_id, o, outcome)) = acking.next(), if !acking.is_empty() => {
                    if let Err(e) = outcome {
                        // offered again: the stream ends, and what it held is given back
                        open.insert(delivery_id, o);
                        let _ = tx.send(Err(e.into())).await;
                        break;
                    }
                    if tx.send(Ok(InboxResponse { kind: Some(inbox_response::Kind::AckConfirmed(AckConfirmed { delivery_id })) })).await.is_err() {
                        break;
                    }
                }
                _ = heartbeat.tick() => {
                    let hb = InboxResponse { kind: Some(inbox_response::Kind::Heartbeat(Heartbeat { at: Some(std::time::SystemTime::now().into()) })) };
                    if tx.send(Ok(hb)).await.is_err() {
                        break;
                    }
                }
            }
        }
        // acknowledgements under way finish (each either confirmed or left for redelivery)
        while let Some((delivery_id, o, outcome)) = acking.next().await {
            if outcome.is_err() {
                open.insert(delivery_id, o);
            }
        }
        // the client went away: offer what it did not acknowledge again at once (a plain
        // NAK, which skips the back-off), and what was fetched for it but not sent. First
        // the pull's interest ends (dropping the stream unsubscribes, on the same
        // connection and so before the NAKs below): while it stood, the server would hand
        // what is given back, and what arrives meanwhile, to this stream's still-registered
        // pull request, into the void until the ack wait.
        let mut pulled = Vec::new();
        while let Ok(Some(p)) = tokio::time::timeout(Duration::ZERO, pulls.next()).await {
            if let Pulled::Offer(_, m) = p
                && let Ok(m) = *m
            {
                pulled.push(m);
            }
        }
        drop(pulls);
        // those being opened were pulled before the rest: given back first
        let mut unsent = Vec::new();
        while let Some((m, _)) = opening.next().await {
            unsent.push(m);
        }
        unsent.extend(pulled);
        for o in open.into_values() {
            o.message.offer_again().await;
        }
        for m in unsent {
            m.offer_again().await;
        }
        tracing::info!(agency = %caller.agency, "inbox closed");
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// What a pull brings: a delivery (by pull), or its end.
enum Pulled {
    Offer(u64, Box<Result<henvis_bus::Offered, henvis_bus::BusError>>),
    End(u64),
}

/// Redelivery intervals after an offer nobody acknowledged: ack_wait, doubling up to eight
/// times ack_wait (at most an hour), one per attempt. A connected client that does not
/// acknowledge is retried less and less often, but never left waiting for long once it is
/// well again.
fn backoff(ack_wait: Duration, attempts: i64) -> Vec<Duration> {
    (0..attempts.clamp(1, 20))
        .map(|i| (ack_wait * 2u32.pow(i.min(3) as u32)).min(Duration::from_secs(3600)))
        .collect()
}

/// Records the sender's "received" first, then the acknowledgement to NATS: a service
/// killed between the two offers the delivery again, and the status (idempotent per event
/// and recipient) has already converged.
async fn acknowledge(core: &Core, agency: &AgencyId, o: &Open) -> Result<(), ApiError> {
    if let Err(e) = record_received(core, agency, o).await {
        tracing::warn!(agency = %agency, event_id = %o.event_id, error = %e, "received status not stored; delivery offered again");
        return Err(ApiError::Unavailable("acknowledgement not recorded".into()));
    }
    if let Err(e) = o.message.done().await {
        tracing::warn!(agency = %agency, event_id = %o.event_id, error = %e, "ack not confirmed");
        return Err(ApiError::Unavailable("acknowledgement not confirmed".into()));
    }
    if let Some(at) = o.submitted_at {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(at);
        henvis_runtime::metrics::metrics()
            .delivery_latency
            .get_or_create(&henvis_runtime::metrics::sector(core.profile.sector))
            .observe((now - at).max(0.0));
    }
    Ok(())
}

/// Appends "received" to the sender's status of the event, before the delivery is
/// acknowledged to NATS, so the closed loop cannot stay at "stored" after a crash.
async fn record_received(core: &Core, recipient: &AgencyId, o: &Open) -> Result<(), henvis_bus::BusError> {
    let Some(sender) = &o.sender else { return Ok(()) };
    let record = GetStatusResponse {
        event_id: o.event_id.clone(),
        routed: true,
        recipients: vec![RecipientStatus {
            recipient_agency_id: recipient.to_string(),
            state: DeliveryState::Received as i32,
            reason: String::new(),
            at: Some(std::time::SystemTime::now().into()),
            rule_id: String::new(),
        }],
    };
    let msg_id = format!("received:{}:{recipient}", o.event_id);
    core.bus
        .publish_stored(
            status_subject(sender, &o.event_id, recipient.as_str()),
            &msg_id,
            record.encode_to_vec().into(),
        )
        .await
        .map(|_| ())
}
