//! The durable consumers henvis works through, and the handle of a message offered by one:
//! the routers' consumer of submitted events on IN (shared, so each event goes to one
//! router) and each agency's inbox consumer on OUT (only its own deliveries).

use std::time::Duration;

use async_nats::jetstream::{
    AckKind,
    consumer::{AckPolicy, Consumer, DeliverPolicy, pull},
};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::{Bus, BusError, ROUTER_CONSUMER, STREAM_IN, STREAM_OUT, inbox_consumer, outbound_filter};

/// How an agency's inbox consumer behaves.
#[derive(Debug, Clone)]
pub struct InboxConsumer {
    /// Deliveries fetched ahead.
    pub window: usize,
    /// How long an offered delivery may stay unacknowledged before it is offered again.
    pub ack_wait: Duration,
    /// Offers before the delivery is given up (and dead-lettered by the router).
    pub max_attempts: i64,
    /// Pauses between offers nobody acknowledged, one per attempt.
    pub backoff: Vec<Duration>,
}

/// How the routers' consumer of IN behaves.
#[derive(Debug, Clone, Copy)]
pub struct RoutingConsumer {
    /// Events fetched at once.
    pub batch: usize,
    /// How long an unacknowledged event stays with one router before another gets it.
    pub ack_wait: Duration,
    /// Events in flight across all routers, those waiting for a retry included.
    pub max_ack_pending: i64,
}

/// A message offered by a durable consumer: a submitted event handed to a router, or a
/// delivery offered to an agency's inbox.
pub struct Offered(async_nats::jetstream::Message);

impl Offered {
    /// Its subject.
    pub fn subject(&self) -> &str {
        self.0.subject.as_str()
    }

    /// Its payload.
    pub fn payload(&self) -> &Bytes {
        &self.0.payload
    }

    /// A span continuing the trace it carries (see [`crate::trace`]).
    pub fn span(&self, name: &'static str) -> tracing::Span {
        crate::trace::continue_trace(name, self.0.headers.as_ref())
    }

    /// Its sequence in its stream (0 if unknown).
    pub fn sequence(&self) -> u64 {
        self.0.info().map(|i| i.stream_sequence).unwrap_or(0)
    }

    /// How often it has been handed out, this time included.
    pub fn attempt(&self) -> i64 {
        self.0.info().map(|i| i.delivered).unwrap_or(1)
    }

    /// Whether this is its first offer (when unknown: not).
    pub fn first_offer(&self) -> bool {
        self.0.info().is_ok_and(|i| i.delivered == 1)
    }

    /// Acknowledged (everything it produced is stored, or the agency took it), and the
    /// acknowledgement confirmed by the server.
    pub async fn done(&self) -> Result<(), BusError> {
        self.0
            .double_ack()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    /// Still being worked on: the consumer's ack wait starts again, so it is not handed to
    /// anyone else meanwhile.
    pub async fn working(&self) {
        if let Err(e) = self.0.ack_with(AckKind::Progress).await {
            tracing::debug!(error = %e, "progress not signalled; the ack wait runs on");
        }
    }

    /// Handed out again after `pause` (to this router or another).
    pub async fn retry_after(&self, pause: Duration) {
        if let Err(e) = self.0.ack_with(AckKind::Nak(Some(pause))).await {
            tracing::warn!(error = %e, "negative acknowledgement not sent; the event comes back after the ack wait");
        }
    }

    /// Handed out again at once, whatever the consumer's back-off, and so after a restart
    /// of the server too. Two NAKs: one with a (tiny) delay, which the server stores as
    /// "due now" (so a restarted server offers it at once), and a plain one, which puts it
    /// on the redelivery queue. The delayed one alone does not do that on a consumer with a
    /// back-off: the server counts the delay from one ack wait ago but waits the attempt's
    /// back-off, so a delivery on its second offer would wait a whole ack wait. The plain
    /// one alone lives only in the server's memory.
    pub async fn offer_again(&self) {
        let sent = match self.0.ack_with(AckKind::Nak(Some(Duration::from_millis(1)))).await {
            Ok(()) => self.0.ack_with(AckKind::Nak(None)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "negative acknowledgement not sent; offered again after the ack wait");
        }
    }

    /// Never handed out again (it is kept in DEAD with an alert first).
    pub async fn finish_unroutable(&self) {
        if let Err(e) = self.0.ack_with(AckKind::Term).await {
            tracing::warn!(error = %e, "termination not sent; the event comes back and is dead-lettered again (idempotent)");
        }
    }
}

impl Bus {
    /// The routers' consumer of IN, created on first use.
    pub async fn routing_consumer(
        &self,
        how: RoutingConsumer,
    ) -> Result<impl Stream<Item = Result<Offered, BusError>> + Unpin, BusError> {
        let consumer = self
            .durable(
                STREAM_IN,
                pull::Config {
                    durable_name: Some(ROUTER_CONSUMER.to_owned()),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: how.ack_wait,
                    max_ack_pending: how.max_ack_pending,
                    ..Default::default()
                },
            )
            .await?;
        offered(consumer.stream().max_messages_per_batch(how.batch).messages().await)
    }

    /// An agency's inbox consumer on OUT (created on first use), from which deliveries are
    /// pulled in batches no larger than what the inbox stream can offer now (see
    /// [`InboxPuller::fetch`]).
    pub async fn inbox(&self, agency: &henvis_domain::AgencyId, how: &InboxConsumer) -> Result<InboxPuller, BusError> {
        let consumer = self
            .durable(
                STREAM_OUT,
                pull::Config {
                    durable_name: Some(inbox_consumer(agency)),
                    filter_subject: outbound_filter(agency),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: how.ack_wait,
                    max_deliver: how.max_attempts,
                    backoff: how.backoff.clone(),
                    max_ack_pending: 1000,
                    ..Default::default()
                },
            )
            .await?;
        Ok(InboxPuller(consumer))
    }

    /// The durable consumer `config` names on `stream`, created on first use.
    async fn durable(&self, stream: &str, config: pull::Config) -> Result<Consumer<pull::Config>, BusError> {
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        let name = config.durable_name.clone().unwrap_or_default();
        self.js
            .get_stream(stream)
            .await
            .map_err(|e| unavailable(&e))?
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| unavailable(&e))
    }
}

/// An agency's inbox consumer, pulled from one batch at a time.
pub struct InboxPuller(Consumer<pull::Config>);

impl InboxPuller {
    /// One pull of at most `n` deliveries, ending when `n` came or after 5 s (then the next
    /// one starts: a pull lost with a server's restart is replaced within seconds). No idle
    /// heartbeats: async-nats' batch answers a heartbeat with `Pending` without asking to be
    /// woken again, so the delivery after a heartbeat waited for something else to wake the
    /// stream (seconds, under load more than a test's limit). Pulling exactly what can be offered means
    /// nothing is fetched that the stream cannot pass on, so a client that goes away uses
    /// up no attempt of a delivery it never saw, and what a stream holds when it closes is
    /// what it offered (plus, at most, what is in flight at that very moment).
    pub async fn fetch(
        &self,
        n: usize,
    ) -> Result<impl Stream<Item = Result<Offered, BusError>> + Unpin + Send + use<>, BusError> {
        let batch = self
            .0
            .batch()
            .max_messages(n)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(batch.map(|m| m.map(Offered).map_err(|e| BusError::Unavailable(e.to_string()))))
    }
}

/// A durable consumer's messages as [`Offered`] handles.
fn offered<E: std::fmt::Display>(
    messages: Result<pull::Stream, E>,
) -> Result<impl Stream<Item = Result<Offered, BusError>> + Unpin + use<E>, BusError> {
    let messages = messages.map_err(|e| BusError::Unavailable(e.to_string()))?;
    Ok(messages.map(|m| m.map(Offered).map_err(|e| BusError::Unavailable(e.to_string()))))
}
